//! HTTP front benchmark: `cargo bench --bench http` (add `-- --quick` for a smoke run).
//!
//! Measures `mcpvisor serve --http` as the HTTP front's issue asks, beside two other bridges from
//! stdio to Streamable HTTP, supergateway and mcp-proxy (npm; `scripts/bench-peers` installs them
//! into `target/bench-peers`, and a peer that is not there is skipped). Every front serves this
//! bench binary, which with `MCPVISOR_BENCH_ECHO=1` is an echo MCP server (`benches/common`), and
//! is driven by a hand-written HTTP/1.1 client over keep-alive connections, as a handshake-era
//! client (initialize, `notifications/initialized`, then requests with `Mcp-Session-Id`). These
//! 2-core machines are noisy, so the fronts and direct pipes to the echo server take turns
//! within each round (5 rounds, each with a new session on every front and a new direct server),
//! and the figures are medians over the rounds, latencies as differences against direct timed in
//! the same round:
//!
//! 1. **Round trip**: one small `tools/call` at a time on one session, p50 and p99, against the
//!    same request over stdio pipes to the server (in blocks of 50 per path, paths in turn).
//! 2. **Throughput**: one session, 16 keep-alive connections each POSTing its next request when
//!    the previous answer arrives (16 in flight), requests per second; direct: 16 in flight on
//!    the pipes. Also the front process's CPU time per request meanwhile (all its threads).
//! 3. **Memory of the fronts**: each front process's VmRSS after those runs (not its children's).
//! 4. **Many sessions** (mcpvisor only): a daemon with one shared server (`--share shared`);
//!    10,000 sessions initialized one after the other (nothing kept open), then the daemon's
//!    VmRSS; then 1,000 GET event streams held open on 1,000 of them (the default `max-streams`),
//!    each checked to answer 200 with `text/event-stream` and still open after the reading, and
//!    the VmRSS again. For information: how much one busy session of a per-client server grows
//!    the daemon (2,000 requests; a session keeps its last 1,000 messages for resumption).
//!
//! Results are printed as a table with each figure's target and written as JSON to
//! `target/bench-http.json`. The bench makes itself the subreaper of everything it starts and
//! kills whatever is left on the way out, also when it fails half way.

#[path = "common/mod.rs"]
mod common;
#[path = "common/http1.rs"]
mod http1;

use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use mcpvisor::process::procfs;
use serde_json::{json, Value};

use common::{
    cpu_ns, free_port, machine, median, percentile, poll, raise_nofile, settled_rss_kib, tools_call, Direct, Process,
    Reaper, ECHO_ENV, PATIENCE,
};
use http1::Conn;

/// Round trips timed in a row on one path before the next path's turn.
const RTT_BLOCK: usize = 50;
/// Requests in flight in the throughput figure (one connection each for the HTTP fronts).
const IN_FLIGHT: usize = 16;

fn main() {
    if std::env::var_os(ECHO_ENV).is_some() {
        common::echo_server();
        return;
    }
    let cfg = if common::quick() { Config::quick() } else { Config::full() };
    let _reaper = Reaper::install();
    raise_nofile();
    let dir = tempfile::Builder::new().prefix("mcpvisor-bench-http").tempdir().expect("temporary directory");

    let mut fronts = vec![Front::mcpvisor(dir.path(), "rtt", &[])];
    if cfg.peers {
        fronts.extend(peers(dir.path()));
    } else {
        eprintln!("quick run: no peers");
    }
    let names: Vec<&str> = fronts.iter().map(|f| f.name).collect();
    eprintln!("round trips and throughput: {} rounds, fronts {names:?}", cfg.rounds);
    let runs = run_rounds(&cfg, &fronts);
    if runs[0].sse_answers > 0 {
        eprintln!("note: mcpvisor answered {} requests with an event stream, not JSON", runs[0].sse_answers);
    }
    let front_rss: Vec<Option<u64>> = fronts.iter().map(|f| procfs::status_kib(f.process.pid(), "VmRSS")).collect();
    drop(fronts);

    eprintln!("memory: {} sessions, {} streams on one shared server", cfg.sessions, cfg.streams);
    let memory = memory(dir.path(), &cfg);
    let busy = busy_session(dir.path());
    let rows = rows(&names, &runs, &front_rss, &memory, &busy);
    print_table(&names, &rows);
    write_json(&cfg, &names, &runs, &front_rss, (&memory, &busy), &rows);
}

struct Config {
    rounds: usize,
    /// Round trips per path per round.
    round_trips: usize,
    /// How long each path's throughput is measured per round.
    throughput_for: Duration,
    sessions: usize,
    streams: usize,
    peers: bool,
}

impl Config {
    fn full() -> Config {
        let throughput_for = Duration::from_secs(2);
        Config { rounds: 5, round_trips: 1000, throughput_for, sessions: 10_000, streams: 1000, peers: true }
    }
    fn quick() -> Config {
        let throughput_for = Duration::from_millis(300);
        Config { rounds: 1, round_trips: 200, throughput_for, sessions: 500, streams: 100, peers: false }
    }
}

// ---------------------------------------------------------------------------------------------
// Figures 1 and 2: round trips and throughput, the fronts and direct pipes in turn

/// What one front (or direct, the last) measured in each round.
#[derive(Default, Clone, serde::Serialize)]
struct Run {
    p50_us: Vec<f64>,
    p99_us: Vec<f64>,
    per_sec: Vec<f64>,
    /// The front process's CPU time (all its threads) per request of the throughput run, µs.
    cpu_us: Vec<f64>,
    /// Answers that came as an event stream rather than JSON.
    sse_answers: u64,
    /// Why the front was left out of later rounds.
    failed: Option<String>,
}

/// A warm-up pass (not counted), then `cfg.rounds` rounds: round trips in blocks, the paths in
/// turn, then each path's throughput; the order rotates from round to round. Each round has a
/// session of its own on every front (a server process of its own behind it) and a direct echo
/// server of its own: where the scheduler puts the processes moves these figures more than
/// anything the fronts do, so every round is a new draw.
fn run_rounds(cfg: &Config, fronts: &[Front]) -> Vec<Run> {
    let ids = AtomicU64::new(1);
    let paths = fronts.len() + 1;
    let mut runs = vec![Run::default(); paths];
    let warm_up = Config { round_trips: 100, throughput_for: Duration::from_millis(200), ..Config::quick() };
    for round in 0..=cfg.rounds {
        let c = if round == 0 { &warm_up } else { cfg };
        let mut sessions: Vec<Option<(Conn, String)>> = fronts
            .iter()
            .zip(&mut runs)
            .map(|(front, run)| {
                run.failed.is_none().then_some(())?;
                let session = Conn::open(front.addr).map_err(|e| e.to_string()).and_then(|mut conn| {
                    let id = conn.handshake()?;
                    Ok((conn, id))
                });
                session.map_err(|e| run.failed = Some(format!("a new session: {e}"))).ok()
            })
            .collect();
        let mut direct = Direct::spawn();
        let mut rtts: Vec<Vec<f64>> = vec![Vec::new(); paths];
        for block in 0..c.round_trips.div_ceil(RTT_BLOCK) {
            for j in (0..paths).map(|k| (block + round + k) % paths) {
                for _ in 0..RTT_BLOCK {
                    let id = ids.fetch_add(1, Ordering::Relaxed);
                    let t = Instant::now();
                    if j == fronts.len() {
                        direct.call(&tools_call(id));
                    } else if let (Some((conn, session)), None) = (&mut sessions[j], &runs[j].failed) {
                        match conn.call(session, id) {
                            Ok(sse) => runs[j].sse_answers += sse as u64,
                            Err(e) => runs[j].failed = Some(e),
                        }
                    }
                    rtts[j].push(t.elapsed().as_secs_f64() * 1e6);
                }
            }
        }
        let (mut per_sec, mut cpu_us) = (vec![0.0; paths], vec![0.0; paths]);
        for j in (0..paths).map(|k| (round + k) % paths) {
            if j == fronts.len() {
                per_sec[j] = direct.throughput(c.throughput_for, IN_FLIGHT, &ids);
            } else if let (Some((_, session)), None) = (&sessions[j], &runs[j].failed) {
                match http_throughput(&fronts[j], session, c.throughput_for, &ids) {
                    Ok((rate, sse, cpu)) => {
                        (per_sec[j], cpu_us[j]) = (rate, cpu);
                        runs[j].sse_answers += sse;
                    }
                    Err(e) => runs[j].failed = Some(e),
                }
            }
        }
        for (conn, session) in sessions.iter_mut().flatten() {
            let _ = conn.delete(session);
        }
        for (j, run) in runs.iter_mut().enumerate() {
            match &run.failed {
                Some(e) if j == 0 => panic!("mcpvisor failed: {e}"),
                Some(_) => {}
                None if round > 0 => {
                    run.p50_us.push(percentile(rtts[j].clone(), 0.5));
                    run.p99_us.push(percentile(rtts[j].clone(), 0.99));
                    run.per_sec.push(per_sec[j]);
                    run.cpu_us.push(cpu_us[j]);
                }
                None => {}
            }
        }
        if round > 0 {
            let names = fronts.iter().map(|f| f.name).chain(["direct"]);
            let line: Vec<String> = names
                .zip(&runs)
                .filter_map(|(name, r)| Some(format!("{name} {:.1}us {:.0}/s", r.p50_us.last()?, r.per_sec.last()?)))
                .collect();
            eprintln!("round {round}: {}", line.join(", "));
        }
    }
    for (front, run) in fronts.iter().zip(&runs) {
        if let Some(e) = &run.failed {
            eprintln!("{} failed and was left out: {e}", front.name);
        }
    }
    runs
}

/// Requests per second through `front`, [`IN_FLIGHT`] connections on its session, each sending
/// its next request when the answer to the previous one has come; how many answers were event
/// streams; the front process's CPU time per request (µs).
fn http_throughput(front: &Front, session: &str, time: Duration, ids: &AtomicU64) -> Result<(f64, u64, f64), String> {
    let start = Barrier::new(IN_FLIGHT + 1);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..IN_FLIGHT)
            .map(|_| {
                s.spawn(|| {
                    let conn = Conn::open(front.addr);
                    start.wait();
                    let mut conn = conn.map_err(|e| format!("connect: {e}"))?;
                    let (deadline, mut done, mut sse) = (Instant::now() + time, 0u64, 0u64);
                    while Instant::now() < deadline {
                        sse += conn.call(session, ids.fetch_add(1, Ordering::Relaxed))? as u64;
                        done += 1;
                    }
                    Ok::<_, String>((done, sse))
                })
            })
            .collect();
        let cpu = cpu_ns(front.process.pid());
        start.wait();
        let t = Instant::now();
        let results: Vec<Result<(u64, u64), String>> =
            workers.into_iter().map(|w| w.join().unwrap_or_else(|_| Err("a worker panicked".into()))).collect();
        let elapsed = t.elapsed().as_secs_f64();
        let cpu = cpu_ns(front.process.pid()).saturating_sub(cpu);
        let (mut done, mut sse) = (0, 0);
        for r in results {
            let (d, s) = r?;
            (done, sse) = (done + d, sse + s);
        }
        Ok((done as f64 / elapsed, sse, cpu as f64 / 1e3 / done as f64))
    })
}

// ---------------------------------------------------------------------------------------------
// Figure 4: many sessions and streams on one shared server

#[derive(serde::Serialize)]
struct Memory {
    sessions: usize,
    /// The daemon's VmRSS with one session (which started the server).
    one_session_kib: u64,
    sessions_kib: u64,
    sessions_per_sec: f64,
    streams: usize,
    streams_open: usize,
    streams_kib: u64,
    /// What the streams that did not open got, first few.
    stream_failures: Vec<String>,
}

fn memory(dir: &Path, cfg: &Config) -> Memory {
    let front = Front::mcpvisor(dir, "sessions", &["--share", "shared"]);
    let pid = front.process.pid();
    let one_session_kib = settled_rss_kib(pid);
    let mut conn = Conn::open(front.addr).expect("connect");
    let mut sessions = vec![front.session.clone()];
    let t = Instant::now();
    while sessions.len() < cfg.sessions {
        sessions.push(conn.handshake().unwrap_or_else(|e| panic!("session {}: {e}", sessions.len() + 1)));
    }
    let sessions_per_sec = (cfg.sessions - 1) as f64 / t.elapsed().as_secs_f64();
    drop(conn);
    let sessions_kib = settled_rss_kib(pid);

    let mut open = Vec::with_capacity(cfg.streams);
    let mut stream_failures = Vec::new();
    for session in &sessions[..cfg.streams] {
        match Conn::open(front.addr).and_then(|mut c| c.open_stream(session).map(|head| (c, head))) {
            Ok((c, head)) if head.status == 200 && head.event_stream => open.push(c),
            Ok((_, head)) => {
                stream_failures.push(format!("status {} ({})", head.status, String::from_utf8_lossy(&head.body)))
            }
            Err(e) => stream_failures.push(e.to_string()),
        }
    }
    let streams_kib = settled_rss_kib(pid);
    // Still open after the measurement: the daemon has not closed any of them.
    let streams_open = open.iter().filter(|c| c.still_open()).count();
    stream_failures.truncate(5);
    Memory {
        sessions: cfg.sessions,
        one_session_kib,
        sessions_kib,
        sessions_per_sec,
        streams: cfg.streams,
        streams_open,
        streams_kib,
        stream_failures,
    }
}

/// A busy session: one session of a per-client server, [`BUSY_REQUESTS`] requests one at a
/// time, and how much the daemon's VmRSS and VmData grew meanwhile (KiB). A session keeps its
/// last 1,000 messages for clients that resume a stream.
#[derive(serde::Serialize)]
struct Busy {
    requests: u64,
    rss_growth_kib: i64,
    data_growth_kib: i64,
}

const BUSY_REQUESTS: u64 = 2000;

fn busy_session(dir: &Path) -> Busy {
    let front = Front::mcpvisor(dir, "busy", &[]);
    let pid = front.process.pid();
    let data = || procfs::status_kib(pid, "VmData").unwrap_or(0) as i64;
    let (rss, data_before) = (settled_rss_kib(pid) as i64, data());
    let mut conn = Conn::open(front.addr).expect("connect");
    for id in 1..=BUSY_REQUESTS {
        conn.call(&front.session, id).unwrap_or_else(|e| panic!("busy session: {e}"));
    }
    let rss_growth_kib = settled_rss_kib(pid) as i64 - rss;
    Busy { requests: BUSY_REQUESTS, rss_growth_kib, data_growth_kib: data() - data_before }
}

// ---------------------------------------------------------------------------------------------
// The fronts

/// A front on a port of 127.0.0.1, with one session initialized.
struct Front {
    name: &'static str,
    process: Process,
    addr: SocketAddr,
    session: String,
}

impl Front {
    /// `mcpvisor serve --http 127.0.0.1:PORT [ARGS] -- <echo server>` in `dir/NAME`.
    fn mcpvisor(dir: &Path, name: &str, args: &[&str]) -> Front {
        let dir = dir.join(name);
        let mut cmd = Command::new(common::mcpvisor_bin());
        let port = free_port();
        cmd.arg("serve").arg("--http").arg(format!("127.0.0.1:{port}")).args(args);
        cmd.arg("--state-dir").arg(dir.join("state")).arg("--log-file").arg(dir.join("serve.log"));
        cmd.arg("--").arg(std::env::current_exe().expect("bench exe"));
        cmd.env("MCPVISOR_RUNTIME_DIR", dir.join("run"));
        Front::start("mcpvisor", cmd, port, &dir)
    }

    fn start(name: &'static str, mut cmd: Command, port: u16, dir: &Path) -> Front {
        std::fs::create_dir_all(dir).expect("the front's directory");
        let log = dir.join("stderr.log");
        let stderr = std::fs::File::create(&log).expect("the front's log");
        cmd.env(ECHO_ENV, "1").stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr).process_group(0);
        let process = Process { child: cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}")) };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if !poll(PATIENCE, || TcpStream::connect(addr).is_ok()) {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("{name} did not listen on {addr}: {text}");
        }
        let session = Conn::open(addr)
            .map_err(|e| e.to_string())
            .and_then(|mut c| c.handshake())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        Front { name, process, addr, session }
    }
}

/// supergateway and mcp-proxy, those of them installed (by `scripts/bench-peers`).
fn peers(dir: &Path) -> Vec<Front> {
    let root = std::env::var_os("MCPVISOR_BENCH_PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-peers"));
    let exe = std::env::current_exe().expect("bench exe");
    let modules = root.join("node_modules");
    let mut fronts = Vec::new();
    if !common::which("node") {
        eprintln!("node is not installed: skipping supergateway and mcp-proxy");
        return fronts;
    }
    let supergateway = modules.join("supergateway/dist/index.js");
    if supergateway.exists() {
        let port = free_port();
        let mut cmd = Command::new("node");
        // Stateful, so that one session is one client of one server process, as with mcpvisor.
        cmd.arg(&supergateway).arg("--stdio").arg(format!("'{}'", exe.display()));
        cmd.args(["--outputTransport", "streamableHttp", "--stateful", "--logLevel", "none", "--port"]);
        cmd.arg(port.to_string());
        fronts.push(Front::start("supergateway", cmd, port, &dir.join("supergateway")));
    } else {
        eprintln!("supergateway is not installed ({}): run scripts/bench-peers", supergateway.display());
    }
    let mcp_proxy = modules.join("mcp-proxy/dist/bin/mcp-proxy.mjs");
    if mcp_proxy.exists() {
        let port = free_port();
        let mut cmd = Command::new("node");
        cmd.arg(&mcp_proxy).args(["--host", "127.0.0.1", "--server", "stream", "--port"]).arg(port.to_string());
        cmd.arg("--").arg(&exe);
        fronts.push(Front::start("mcp-proxy", cmd, port, &dir.join("mcp-proxy")));
    } else {
        eprintln!("mcp-proxy is not installed ({}): run scripts/bench-peers", mcp_proxy.display());
    }
    fronts
}

// ---------------------------------------------------------------------------------------------
// Reporting

struct Row {
    key: &'static str,
    figure: String,
    /// One cell per front, then direct.
    cells: Vec<String>,
    target: &'static str,
    /// mcpvisor's figure against the target; `None`: information only.
    met: Option<bool>,
    value: f64,
}

fn rows(names: &[&str], runs: &[Run], front_rss: &[Option<u64>], m: &Memory, busy: &Busy) -> Vec<Row> {
    let direct = runs.last().expect("direct");
    let ok = |r: &Run| r.failed.is_none() && !r.p50_us.is_empty();
    let added = |r: &Run, pick: fn(&Run) -> &Vec<f64>| {
        let diffs: Vec<f64> = pick(r).iter().zip(pick(direct)).map(|(f, d)| f - d).collect();
        (median(diffs), median(pick(r).clone()))
    };
    let latency = |pick: fn(&Run) -> &Vec<f64>| -> Vec<String> {
        let mut cells: Vec<String> = runs[..names.len()]
            .iter()
            .map(|r| if ok(r) { format!("{:+.1} us ({:.1})", added(r, pick).0, added(r, pick).1) } else { "-".into() })
            .collect();
        cells.push(format!("{:.1} us", median(pick(direct).clone())));
        cells
    };
    let rate = |r: &Run| median(r.per_sec.clone());
    let mut throughput: Vec<String> =
        runs.iter().map(|r| if ok(r) { format!("{:.0}/s", rate(r)) } else { "-".into() }).collect();
    let last = throughput.len() - 1;
    throughput[last] = format!("{:.0}/s", rate(direct));
    let cpu = |r: &Run| median(r.cpu_us.clone());
    let mut cpu_cells: Vec<String> =
        runs.iter().map(|r| if ok(r) { format!("{:.1} us", cpu(r)) } else { "-".into() }).collect();
    cpu_cells[last] = String::new();
    let mib = |kib: u64| kib as f64 / 1024.0;
    let mut rss: Vec<String> =
        front_rss.iter().map(|k| k.map_or("-".into(), |k| format!("{:.1} MiB", mib(k)))).collect();
    rss.push(String::new());
    let only_mcpvisor = |cell: String| {
        let mut cells = vec![cell];
        cells.resize(names.len() + 1, String::new());
        cells
    };
    let p50 = added(&runs[0], |r| &r.p50_us).0;
    let p99 = added(&runs[0], |r| &r.p99_us).0;
    let per_session = (m.sessions_kib as f64 - m.one_session_kib as f64) / (m.sessions - 1) as f64;
    let per_stream = (m.streams_kib as f64 - m.sessions_kib as f64) / m.streams as f64;
    let (sessions, streams) = (m.sessions, m.streams);
    let row = |key, figure: String, cells, target, met, value| Row { key, figure, cells, target, met, value };
    vec![
        row(
            "rtt_p50_added_us",
            "round trip p50, added (1 at a time)".into(),
            latency(|r| &r.p50_us),
            "<= +150 us",
            Some(p50 <= 150.0),
            p50,
        ),
        row("rtt_p99_added_us", "round trip p99, added".into(), latency(|r| &r.p99_us), "", None, p99),
        row(
            "requests_per_sec_16",
            format!("req/s, {IN_FLIGHT} in flight, 1 session"),
            throughput,
            ">= 15000/s",
            Some(rate(&runs[0]) >= 15_000.0),
            rate(&runs[0]),
        ),
        row(
            "front_cpu_us_per_request",
            "front's CPU per request (16 in flight)".into(),
            cpu_cells,
            "",
            None,
            cpu(&runs[0]),
        ),
        row("front_rss_mib", "front's RSS after the runs".into(), rss, "", None, front_rss[0].map_or(0.0, mib)),
        row(
            "sessions_rss_mib",
            format!("RSS, {sessions} idle sessions (shared)"),
            only_mcpvisor(format!("{:.1} MiB ({per_session:.2} KiB each)", mib(m.sessions_kib))),
            "<= 64 MiB",
            Some(mib(m.sessions_kib) <= 64.0),
            mib(m.sessions_kib),
        ),
        row(
            "streams_rss_mib",
            format!("RSS, + {streams} open SSE streams"),
            only_mcpvisor(format!("{:.1} MiB ({per_stream:.2} KiB each)", mib(m.streams_kib))),
            "",
            None,
            mib(m.streams_kib),
        ),
        row(
            "streams_open",
            "SSE streams open (200)".into(),
            only_mcpvisor(format!("{} of {streams}", m.streams_open)),
            "all",
            Some(m.streams_open == streams),
            m.streams_open as f64,
        ),
        row(
            "sessions_per_sec",
            "sessions initialized per second".into(),
            only_mcpvisor(format!("{:.0}", m.sessions_per_sec)),
            "",
            None,
            m.sessions_per_sec,
        ),
        row(
            "busy_session_rss_growth_kib",
            format!("RSS growth, 1 session x {} requests", busy.requests),
            only_mcpvisor(format!("{:+} KiB (VmData {:+} KiB)", busy.rss_growth_kib, busy.data_growth_kib)),
            "",
            None,
            busy.rss_growth_kib as f64,
        ),
    ]
}

fn print_table(names: &[&str], rows: &[Row]) {
    let columns = rows[0].cells.len();
    let w_figure = rows.iter().map(|r| r.figure.len()).max().unwrap_or(0);
    let w: Vec<usize> =
        (0..columns).map(|c| rows.iter().map(|r| r.cells[c].len()).max().unwrap_or(0).max(12)).collect();
    let w_target = rows.iter().map(|r| r.target.len()).max().unwrap_or(0).max(6);
    let mut header = format!("\n{:<w_figure$}", "figure");
    for (c, width) in w.iter().enumerate() {
        let name = if c == columns - 1 { "direct" } else { names[c] };
        header += &format!("  {name:<width$}");
    }
    println!("{header}  {:<w_target$}", "target");
    for r in rows {
        let mut line = format!("{:<w_figure$}", r.figure);
        for (cell, width) in r.cells.iter().zip(&w) {
            line += &format!("  {cell:<width$}");
        }
        let met = r.met.map_or("", |met| if met { "met" } else { "not met" });
        println!("{line}  {:<w_target$}  {met}", r.target);
    }
}

fn write_json(cfg: &Config, names: &[&str], runs: &[Run], rss: &[Option<u64>], m: (&Memory, &Busy), rows: &[Row]) {
    let figures: serde_json::Map<String, Value> = rows
        .iter()
        .map(|r| (r.key.to_owned(), json!({ "mcpvisor": r.value, "cells": r.cells, "target": r.target, "met": r.met })))
        .collect();
    let per_front: serde_json::Map<String, Value> = names
        .iter()
        .chain(&["direct"])
        .zip(runs)
        .enumerate()
        .map(|(i, (name, run))| (name.to_string(), json!({ "rounds": run, "rss_kib": rss.get(i).copied().flatten() })))
        .collect();
    let json = json!({
        "machine": machine(),
        "config": { "rounds": cfg.rounds, "round_trips": cfg.round_trips, "throughput_secs": cfg.throughput_for.as_secs_f64(), "in_flight": IN_FLIGHT, "sessions": cfg.sessions, "streams": cfg.streams },
        "fronts": per_front, "memory": m.0, "busy_session": m.1, "figures": figures,
    });
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-http.json");
    match std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap_or_default()) {
        Ok(()) => println!("\nJSON: {}", path.display()),
        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
    }
}
