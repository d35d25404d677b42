//! Daemon benchmark: `cargo bench --bench serve` (add `-- --quick` for a smoke run).
//!
//! Measures what `mcpvisor serve` costs, as the figures of the daemon's issue ask for them. These
//! 2-core machines are noisy, so every figure is a difference or a ratio against a baseline taken
//! in the same run, never an absolute time from another run:
//!
//! 1. **Idle memory**: the daemon's VmRSS with 50 configured lazy per-client servers, once every
//!    `NAME.mcp` endpoint exists (no server process runs yet) and the daemon has dropped its
//!    start-up code from the resident set. (`--quick`: fewer of everything.)
//! 2. **Memory per started server**: 20 clients, each on a server of its own, connected straight to
//!    the `NAME.mcp` sockets (which speak newline-delimited JSON-RPC like stdio, so no `connect`
//!    process is counted) and initialized; (RssAnon after − RssAnon idle) / 20: the heap and
//!    stacks sessions take, without code pages, which come and go with what the daemon runs. Only
//!    the daemon's own memory counts, not its children's. The idle baseline is taken after one warm-up connection, so
//!    that one-off costs of the first client are not spread over the 20.
//! 3. **`connect` to a running shared server against `run`**: the round trip of a request after
//!    the handshake through `mcpvisor connect NAME` → daemon → shared server (kept running by an
//!    earlier client) against `mcpvisor run -- server` (already started): the median over 5 rounds
//!    of the difference of the medians. For information: the round trip of a direct client of the
//!    `NAME.mcp` socket (no connect hop), and spawn to the answer to `initialize` of `connect`
//!    (answered from the shared server's cached result) against `run` (which starts its server).
//! 4. **Connection churn**: 1000 connect/initialize/disconnect cycles on a per-client server; the
//!    daemon's descriptors, threads, child processes and RssAnon before and after (once every
//!    session is gone).
//!
//! The servers are this bench binary itself: with `MCPVISOR_BENCH_ECHO=1` it is an echo MCP server
//! (`benches/common`). Each daemon runs in a temporary directory (`MCPVISOR_RUNTIME_DIR`,
//! `--state-dir`, `--log-file`) at the default log level. Results are printed as a table with each
//! figure's target, and written as JSON to `target/bench-serve.json`. Every process started is
//! killed on the way out, also when the bench fails half way.

#[path = "common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mcpvisor::process::procfs;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use common::{echo_server, machine, mcpvisor_bin, median, poll, wait_for, ECHO_ENV, INITIALIZE, INITIALIZED, PATIENCE};

/// Round trips timed in a row on one path before the next path's turn.
const RTT_BLOCK: usize = 50;

fn main() {
    if std::env::var_os(ECHO_ENV).is_some() {
        echo_server();
        return;
    }
    let cfg = if common::quick() { Config::quick() } else { Config::full() };
    let dir = tempfile::Builder::new().prefix("mcpvisor-bench-serve").tempdir().expect("temporary directory");

    eprintln!("memory: {} lazy servers, {} clients", cfg.servers, cfg.clients);
    let memory = memory(dir.path(), &cfg);
    let (trips, rounds, startups) = (cfg.round_trips, cfg.rtt_rounds, cfg.startups);
    eprintln!("shared server: {trips} round trips in {rounds} rounds, {startups} start-ups each way");
    let shared = shared(dir.path(), &cfg);
    eprintln!("churn: {} cycles", cfg.cycles);
    let churn = churn(dir.path(), &cfg);

    let rows = rows(&cfg, &memory, &shared, &churn);
    print_table(&rows);
    write_json(&cfg, &memory, &shared, &churn, &rows);
}

struct Config {
    /// Lazy per-client servers in the daemon's file.
    servers: usize,
    /// Clients connected at once, each to a server of its own.
    clients: usize,
    /// Round trips per path, spread over `rtt_rounds`.
    round_trips: usize,
    rtt_rounds: usize,
    startups: usize,
    cycles: usize,
}

impl Config {
    fn full() -> Config {
        Config { servers: 50, clients: 20, round_trips: 2000, rtt_rounds: 5, startups: 20, cycles: 1000 }
    }
    fn quick() -> Config {
        Config { servers: 10, clients: 5, round_trips: 200, rtt_rounds: 1, startups: 5, cycles: 100 }
    }
}

// ---------------------------------------------------------------------------------------------
// The figures

#[derive(serde::Serialize)]
struct Memory {
    idle_kib: u64,
    /// After one warm-up client came and went: the baseline of the per-server figure.
    warm_idle_kib: u64,
    loaded_kib: u64,
}

/// Figures 1 and 2: one daemon, `servers` lazy servers, then `clients` of them started.
fn memory(dir: &Path, cfg: &Config) -> Memory {
    let names: Vec<String> = (0..cfg.servers).map(|i| format!("s{i:02}")).collect();
    let daemon = Daemon::start(&dir.join("memory"), &names, &[]);
    let idle_kib = daemon.settled_rss_kib();

    // Warm-up: one client on the last server, gone again before the baseline.
    let warm_up = names.last().expect("at least one server");
    Client::socket(&daemon.endpoint(warm_up)).initialize();
    daemon.wait_idle(warm_up);
    let warm_idle_kib = daemon.settled_anon_kib();

    let mut clients: Vec<Client> =
        names.iter().cycle().take(cfg.clients).map(|n| Client::socket(&daemon.endpoint(n))).collect();
    for c in &mut clients {
        c.initialize();
    }
    let loaded_kib = daemon.settled_anon_kib();
    let started = daemon.children().len();
    assert!(started >= cfg.clients, "only {started} server processes for {} clients", cfg.clients);
    Memory { idle_kib, warm_idle_kib, loaded_kib }
}

#[derive(serde::Serialize)]
struct Shared {
    /// Medians over the rounds of each round's median.
    connect_rtt_us: f64,
    run_rtt_us: f64,
    socket_rtt_us: f64,
    /// Median over the rounds of each round's connect − run.
    rtt_difference_ms: f64,
    rtt_difference_per_round_ms: Vec<f64>,
    connect_startup_ms: f64,
    run_startup_ms: f64,
}

/// Figure 3: a shared server kept running by a first client, reached through `connect`, against
/// `mcpvisor run` of the same server.
fn shared(dir: &Path, cfg: &Config) -> Shared {
    let daemon = Daemon::start(&dir.join("shared"), &[], &["shared".to_owned()]);
    // The first client starts the server and keeps it running; it is also the direct socket client.
    let mut holder = Client::socket(&daemon.endpoint("shared"));
    holder.initialize();
    let per_round = cfg.round_trips / cfg.rtt_rounds;
    let rounds: Vec<[f64; 3]> = (0..cfg.rtt_rounds).map(|_| rtt_round(&daemon, &mut holder, per_round)).collect();
    let differences: Vec<f64> = rounds.iter().map(|[connect, run, _]| (connect - run) / 1e3).collect();

    let mut startups: [Vec<f64>; 2] = Default::default();
    for i in 0..cfg.startups {
        for j in [i % 2, 1 - i % 2] {
            let cmd = if j == 0 { daemon.command(&["connect", "shared"]) } else { run_command(&daemon.runtime_dir) };
            startups[j].push(startup_ms(cmd));
        }
    }
    let [connect_startup, run_startup] = startups;
    Shared {
        connect_rtt_us: median(rounds.iter().map(|r| r[0]).collect()),
        run_rtt_us: median(rounds.iter().map(|r| r[1]).collect()),
        socket_rtt_us: median(rounds.iter().map(|r| r[2]).collect()),
        rtt_difference_ms: median(differences.clone()),
        rtt_difference_per_round_ms: differences,
        connect_startup_ms: median(connect_startup),
        run_startup_ms: median(run_startup),
    }
}

/// Median round trips (µs) through a fresh `connect`, a fresh `run` and the socket client `holder`,
/// `n` each. Interleaved in blocks, in a rotating order: one request per path in turn would time
/// every hop waking an idle vCPU (about twice as slow on every path); blocks time warm paths, as
/// `benches/relay.rs` does. Fresh processes each round, because where the scheduler puts them
/// moves these figures more than anything mcpvisor does.
fn rtt_round(daemon: &Daemon, holder: &mut Client, n: usize) -> [f64; 3] {
    let mut via_connect = Client::process(daemon.command(&["connect", "shared"]));
    let mut via_run = Client::process(run_command(&daemon.runtime_dir));
    via_connect.initialize();
    via_run.initialize();
    let paths = [&mut via_connect, &mut via_run, holder];
    let mut rtts: [Vec<f64>; 3] = Default::default();
    for block in 0..n.div_ceil(RTT_BLOCK) {
        for j in (0..3).map(|k| (block + k) % 3) {
            for i in block * RTT_BLOCK..(block + 1) * RTT_BLOCK {
                rtts[j].push(paths[j].round_trip_us(i));
            }
        }
    }
    rtts.map(median)
}

/// `mcpvisor run -- <echo server>`, its control socket beside the daemon's.
fn run_command(runtime_dir: &Path) -> Command {
    let mut cmd = Command::new(mcpvisor_bin());
    cmd.arg("run").arg("--").arg(std::env::current_exe().expect("bench exe"));
    cmd.env(ECHO_ENV, "1").env("MCPVISOR_RUNTIME_DIR", runtime_dir);
    cmd
}

/// Milliseconds from spawning `cmd` to the answer to `initialize`.
fn startup_ms(cmd: Command) -> f64 {
    let t = Instant::now();
    let mut client = Client::process(cmd);
    client.call(INITIALIZE);
    t.elapsed().as_secs_f64() * 1e3
}

#[derive(serde::Serialize)]
struct Churn {
    before: Snapshot,
    after: Snapshot,
    cycles_per_sec: f64,
}

/// Figure 4: `cycles` short sessions on one per-client server.
fn churn(dir: &Path, cfg: &Config) -> Churn {
    let daemon = Daemon::start(&dir.join("churn"), &["churn".to_owned()], &[]);
    let endpoint = daemon.endpoint("churn");
    let cycle = || Client::socket(&endpoint).call(INITIALIZE);
    // Warm up (allocator pools, the first log lines), then measure.
    for _ in 0..20 {
        cycle();
    }
    daemon.wait_idle("churn");
    let before = daemon.snapshot();
    let t = Instant::now();
    for _ in 0..cfg.cycles {
        cycle();
    }
    let cycles_per_sec = cfg.cycles as f64 / t.elapsed().as_secs_f64();
    daemon.wait_idle("churn");
    Churn { before, after: daemon.snapshot(), cycles_per_sec }
}

/// What the daemon holds: descriptors, threads, child processes (zombies included), RssAnon.
#[derive(Clone, Copy, serde::Serialize)]
struct Snapshot {
    fds: usize,
    threads: u64,
    children: usize,
    rss_kib: u64,
}

// ---------------------------------------------------------------------------------------------
// The daemon

/// A running `mcpvisor serve --config FILE` in a directory of its own; stopped on drop.
struct Daemon {
    child: Child,
    pid: i32,
    runtime_dir: PathBuf,
}

/// A configuration file: `per_client` lazy per-client servers and `shared` lazy shared ones, each
/// running this bench binary as an echo server.
fn config_file(per_client: &[String], shared: &[String]) -> String {
    let exe = std::env::current_exe().expect("bench exe");
    let table = |name: &String, share: &str| {
        format!(
            "[servers.{name}]\ncommand = [{:?}]\nshare = \"{share}\"\nenv = {{ {ECHO_ENV} = \"1\" }}\n\n",
            exe.display().to_string()
        )
    };
    per_client.iter().map(|n| table(n, "per-client")).chain(shared.iter().map(|n| table(n, "shared"))).collect()
}

impl Daemon {
    /// Starts the daemon in `dir` on a file of `per_client` and `shared` servers (see
    /// [`config_file`]) and waits until every server's endpoint exists.
    fn start(dir: &Path, per_client: &[String], shared: &[String]) -> Daemon {
        let names = per_client.iter().chain(shared).map(String::as_str);
        let (child, runtime_dir) = common::start_serve(dir, &config_file(per_client, shared), names);
        Daemon { pid: child.id() as i32, child, runtime_dir }
    }

    fn endpoint(&self, name: &str) -> PathBuf {
        self.runtime_dir.join(format!("{name}.mcp"))
    }

    /// `mcpvisor ARGS` with this daemon's runtime directory.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(mcpvisor_bin());
        cmd.args(args).env("MCPVISOR_RUNTIME_DIR", &self.runtime_dir);
        cmd
    }

    /// VmRSS once idle and no longer moving.
    fn settled_rss_kib(&self) -> u64 {
        common::settled_rss_kib(self.pid)
    }

    /// Anonymous memory (heap, stacks) once idle and no longer moving: what sessions cost the
    /// daemon, without the code pages that come and go with what it runs.
    fn settled_anon_kib(&self) -> u64 {
        common::settled_kib(self.pid, "RssAnon")
    }

    fn children(&self) -> Vec<procfs::ProcStat> {
        procfs::child_processes(self.pid)
    }

    /// Read once memory has settled, so that late closes and reaps are in.
    fn snapshot(&self) -> Snapshot {
        let rss_kib = self.settled_anon_kib();
        Snapshot {
            fds: std::fs::read_dir(format!("/proc/{}/fd", self.pid)).expect("the daemon's fds").count(),
            // Not a size, but `status_kib` reads any number field of /proc/PID/status.
            threads: procfs::status_kib(self.pid, "Threads").expect("the daemon's threads"),
            children: self.children().len(),
            rss_kib,
        }
    }

    /// Waits until the daemon says server `name` has no client and no process, then gives its
    /// children up to 2 s to be gone (any left are what [`Daemon::snapshot`] counts).
    fn wait_idle(&self, name: &str) {
        wait_for(&format!("{name} to have no client and no process"), || {
            let out =
                self.command(&["status", name, "--json"]).stderr(Stdio::null()).output().expect("mcpvisor status");
            let status: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            status["clients"] == json!(0) && status["processes"] == json!([])
        });
        poll(Duration::from_secs(2), || self.children().is_empty());
    }
}

impl Drop for Daemon {
    /// SIGTERM (the daemon drains and stops its servers), SIGKILL if it takes too long, and then
    /// SIGKILL to whatever children it had left.
    fn drop(&mut self) {
        let children = self.children();
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGTERM);
        poll(Duration::from_secs(5), || self.child.try_wait().ok().flatten().is_some());
        let _ = self.child.kill();
        let _ = self.child.wait();
        for c in children {
            let _ = kill(Pid::from_raw(c.pid), Signal::SIGKILL);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Clients

/// An MCP client over newline-delimited JSON-RPC: a Unix socket, or a process's stdin/stdout
/// (on drop: its stdin is closed, and it is killed if it has not exited within 2 s).
struct Client {
    writer: Box<dyn Write>,
    reader: BufReader<Box<dyn Read>>,
    child: Option<Child>,
}

impl Client {
    fn socket(path: &Path) -> Client {
        let stream = UnixStream::connect(path).unwrap_or_else(|e| panic!("connect to {}: {e}", path.display()));
        stream.set_read_timeout(Some(PATIENCE)).expect("read timeout");
        let writer = stream.try_clone().expect("clone the stream");
        Client { writer: Box::new(writer), reader: BufReader::new(Box::new(stream)), child: None }
    }

    fn process(mut cmd: Command) -> Client {
        let mut child =
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn a client");
        let writer = child.stdin.take().expect("stdin");
        let reader: Box<dyn Read> = Box::new(child.stdout.take().expect("stdout"));
        Client { writer: Box::new(writer), reader: BufReader::new(reader), child: Some(child) }
    }

    fn send(&mut self, line: &str) {
        // One write per message, newline included, as a client would send it.
        self.writer.write_all(format!("{line}\n").as_bytes()).expect("send");
    }

    fn call(&mut self, line: &str) -> String {
        self.send(line);
        let mut answer = String::new();
        self.reader.read_line(&mut answer).expect("receive");
        assert!(answer.contains("\"result\""), "not an answer: {answer:?}");
        answer
    }

    fn initialize(&mut self) {
        self.call(INITIALIZE);
        self.send(INITIALIZED);
    }

    /// Microseconds for one small `tools/call` and its answer.
    fn round_trip_us(&mut self, i: usize) -> f64 {
        let request = common::tools_call(i as u64 + 1);
        let t = Instant::now();
        self.call(&request);
        t.elapsed().as_secs_f64() * 1e6
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.writer = Box::new(std::io::sink());
        if let Some(child) = &mut self.child {
            poll(Duration::from_secs(2), || child.try_wait().ok().flatten().is_some());
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reporting

struct Row {
    key: &'static str,
    figure: String,
    measured: String,
    target: &'static str,
    /// `None`: information only, no target.
    met: Option<bool>,
    value: f64,
}

impl Row {
    /// A figure for information, without a target.
    fn new(key: &'static str, figure: impl Into<String>, measured: String, value: f64) -> Row {
        Row { key, figure: figure.into(), measured, target: "", met: None, value }
    }

    /// With a target, met when the value is at most `limit`.
    fn goal(self, target: &'static str, limit: f64) -> Row {
        Row { target, met: Some(self.value <= limit), ..self }
    }
}

fn rows(cfg: &Config, m: &Memory, s: &Shared, c: &Churn) -> Vec<Row> {
    let idle_mib = m.idle_kib as f64 / 1024.0;
    let per_server = (m.loaded_kib as f64 - m.warm_idle_kib as f64) / cfg.clients as f64;
    let (warm_mib, loaded_mib) = (m.warm_idle_kib as f64 / 1024.0, m.loaded_kib as f64 / 1024.0);
    let rtt_diff = s.rtt_difference_ms;
    let startup_diff = s.connect_startup_ms - s.run_startup_ms;
    let mut rows = vec![
        Row::new(
            "idle_rss_mib",
            format!("idle RSS, {} lazy servers", cfg.servers),
            format!("{idle_mib:.1} MiB"),
            idle_mib,
        )
        .goal("<= 16 MiB", 16.0),
        Row::new(
            "rss_per_started_server_kib",
            format!("RssAnon per started server ({} clients)", cfg.clients),
            format!("{per_server:.0} KiB ({warm_mib:.1} -> {loaded_mib:.1} MiB)"),
            per_server,
        )
        .goal("<= 256 KiB", 256.0),
        Row::new(
            "shared_rtt_connect_minus_run_ms",
            "round trip, connect (shared) - run",
            format!("{rtt_diff:+.3} ms ({:.1} vs {:.1} us)", s.connect_rtt_us, s.run_rtt_us),
            rtt_diff,
        )
        .goal("<= 0.2 ms", 0.2),
        Row::new(
            "shared_rtt_socket_us",
            "round trip, NAME.mcp socket (shared)",
            format!("{:.1} us", s.socket_rtt_us),
            s.socket_rtt_us,
        ),
        Row::new(
            "startup_connect_minus_run_ms",
            "spawn to initialize answer",
            format!("connect {:.2} ms, run {:.2} ms ({startup_diff:+.2})", s.connect_startup_ms, s.run_startup_ms),
            startup_diff,
        ),
    ];
    let (b, a) = (c.before, c.after);
    let counts = [
        ("churn_fd_growth", "descriptors", b.fds as f64, a.fds as f64),
        ("churn_thread_growth", "threads", b.threads as f64, a.threads as f64),
        ("churn_child_growth", "child processes", b.children as f64, a.children as f64),
    ];
    for (key, what, before, after) in counts {
        let figure = format!("churn {}: {what}", cfg.cycles);
        rows.push(Row::new(key, figure, format!("{before} -> {after}"), after - before).goal("no growth", 0.0));
    }
    let rss_growth = a.rss_kib as f64 - b.rss_kib as f64;
    let measured = format!("{rss_growth:+.0} KiB ({} -> {} KiB)", b.rss_kib, a.rss_kib);
    rows.push(
        Row::new("churn_rss_growth_kib", format!("churn {}: RssAnon", cfg.cycles), measured, rss_growth)
            .goal("<= 1 MiB", 1024.0),
    );
    let per_sec = c.cycles_per_sec;
    rows.push(Row::new("churn_cycles_per_sec", "churn: cycles per second", format!("{per_sec:.0}"), per_sec));
    rows
}

fn print_table(rows: &[Row]) {
    let width = |f: &dyn Fn(&Row) -> usize| rows.iter().map(f).max().unwrap_or(0);
    let (w1, w2, w3) = (width(&|r| r.figure.len()), width(&|r| r.measured.len()), width(&|r| r.target.len()));
    println!("\n{:<w1$}  {:<w2$}  {:<w3$}", "figure", "measured", "target");
    for r in rows {
        let met = r.met.map_or("", |met| if met { "met" } else { "not met" });
        println!("{:<w1$}  {:<w2$}  {:<w3$}  {met}", r.figure, r.measured, r.target);
    }
}

fn write_json(cfg: &Config, m: &Memory, s: &Shared, c: &Churn, rows: &[Row]) {
    let figures: serde_json::Map<String, Value> = rows
        .iter()
        .map(|r| (r.key.to_owned(), json!({ "value": r.value, "target": r.target, "met": r.met })))
        .collect();
    let json = json!({
        "machine": machine(),
        "config": { "servers": cfg.servers, "clients": cfg.clients, "round_trips": cfg.round_trips, "rtt_rounds": cfg.rtt_rounds, "startups": cfg.startups, "cycles": cfg.cycles },
        "memory": m, "shared": s, "churn": c,
        "figures": figures,
    });
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-serve.json");
    match std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap_or_default()) {
        Ok(()) => println!("\nJSON: {}", path.display()),
        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
    }
}
