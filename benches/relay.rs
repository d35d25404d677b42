//! Relay benchmark: `cargo bench --bench relay` (add `-- --quick` for a smoke run).
//!
//! Drives a fast echo MCP server through the real protocol (initialize, then requests) three ways,
//! interleaved round by round: **direct** (pipes to the server), **mcpvisor** (`mcpvisor run --
//! server`) and, when `socat` is installed, **socat** (`socat - EXEC:server`) as the dumb-relay
//! reference. Reports medians over the rounds as an aligned table with ratios to direct, and
//! writes the same numbers as JSON to `target/bench-relay.json`. Also timed: start-up (spawn to the
//! answer to `initialize`) each way, and mcpvisor's crash recovery (SIGKILL of the server to the
//! next successful request, with `--backoff-initial 0`), to compare with the server's start-up.
//! Pipelined throughput is measured for both protocol eras: handshake-era requests after
//! `initialize`, and stateless-era ones (`_meta` in each, no handshake) on a session of their own;
//! with it, the relay process's CPU time per pipelined request (what decides its throughput when
//! the client, the relay and the server share the cores).
//!
//! `MCPVISOR_BENCH_BASELINE=/path/to/an/older/mcpvisor` adds that binary as a column of its own
//! (`baseline`), interleaved with the others, to compare two builds in one run.
//!
//! The bench binary is its own echo server: run with `MCPVISOR_BENCH_ECHO=1` it answers every
//! request line with `{"jsonrpc":"2.0","id":ID,"result":{"echo":PARAMS}}`. The client side writes
//! and reads on separate threads, so large messages cannot deadlock and the client is not the
//! bottleneck.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;

mod common;

use common::{cpu_ns, machine, ECHO_ENV};

fn main() {
    if std::env::var_os(ECHO_ENV).is_some() {
        echo_server();
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick") || std::env::var_os("MCPVISOR_BENCH_QUICK").is_some();
    let cfg = if quick { Config::quick() } else { Config::full() };
    let socat = which("socat");
    let mut kinds = vec![Kind::Direct, Kind::Mcpvisor];
    if baseline().is_some() {
        kinds.push(Kind::Baseline);
    }
    if socat {
        kinds.push(Kind::Socat);
    } else {
        eprintln!("socat not installed: skipping the dumb-relay reference");
    }
    let mut results: Vec<Vec<Figures>> = vec![Vec::new(); kinds.len()];
    // Warm-up round, not counted.
    for k in &kinds {
        run_round(*k, &Config::quick());
    }
    for round in 0..cfg.rounds {
        for (i, k) in kinds.iter().enumerate() {
            let f = run_round(*k, &cfg);
            eprintln!("round {round} {:>8}: rtt p50 {:.1}us", k.name(), f.rtt_p50_us);
            results[i].push(f);
        }
    }
    let medians: Vec<Figures> = results.iter().map(|r| Figures::median(r)).collect();
    print_table(&kinds, &medians);
    let json = serde_json::json!({
        "machine": machine(),
        "rounds": cfg.rounds,
        "results": kinds.iter().zip(&medians).map(|(k, f)| (k.name().to_owned(), f.to_json())).collect::<serde_json::Map<_, _>>(),
    });
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-relay.json");
    match std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap_or_default()) {
        Ok(()) => println!("\nJSON: {}", path.display()),
        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Direct,
    Mcpvisor,
    /// Another mcpvisor build (`MCPVISOR_BENCH_BASELINE`).
    Baseline,
    Socat,
}

fn baseline() -> Option<PathBuf> {
    std::env::var_os("MCPVISOR_BENCH_BASELINE").filter(|p| !p.is_empty()).map(PathBuf::from)
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Mcpvisor => "mcpvisor",
            Kind::Baseline => "baseline",
            Kind::Socat => "socat",
        }
    }

    /// Whether this is an mcpvisor (which has crash recovery and its own RSS to report).
    fn supervises(self) -> bool {
        matches!(self, Kind::Mcpvisor | Kind::Baseline)
    }
}

struct Config {
    rounds: usize,
    rtt_requests: usize,
    pipelined_requests: usize,
    big_requests: usize,
    /// Start-ups (and, for mcpvisor, crash recoveries) timed per round.
    restarts: usize,
}

impl Config {
    fn full() -> Config {
        Config { rounds: 5, rtt_requests: 2000, pipelined_requests: 20000, big_requests: 40, restarts: 10 }
    }
    fn quick() -> Config {
        Config { rounds: 1, rtt_requests: 200, pipelined_requests: 2000, big_requests: 4, restarts: 3 }
    }
}

#[derive(Clone, Default)]
struct Figures {
    rtt_p50_us: f64,
    rtt_p99_us: f64,
    pipelined_per_sec: f64,
    /// The same, with stateless-era (2026-07-28) requests: no handshake, `_meta` in every one.
    stateless_per_sec: f64,
    big_mb_per_sec: f64,
    /// The relay process's CPU time (all its threads, user and system) per pipelined request and
    /// its response; none for direct pipes, which have no relay.
    relay_cpu_ns: Option<f64>,
    /// Spawn to the answer to `initialize`.
    startup_ms: f64,
    /// mcpvisor only: SIGKILL of the server to the next successful request.
    recovery_ms: Option<f64>,
    /// mcpvisor only: peak RSS during the run and RSS when idle with one child.
    peak_rss_kib: Option<u64>,
    idle_rss_kib: Option<u64>,
}

impl Figures {
    fn median(rounds: &[Figures]) -> Figures {
        let med = |f: &dyn Fn(&Figures) -> f64| {
            let mut v: Vec<f64> = rounds.iter().map(f).collect();
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        };
        let med_opt = |f: &dyn Fn(&Figures) -> Option<u64>| {
            let mut v: Vec<u64> = rounds.iter().filter_map(f).collect();
            v.sort_unstable();
            v.get(v.len() / 2).copied()
        };
        Figures {
            rtt_p50_us: med(&|f| f.rtt_p50_us),
            rtt_p99_us: med(&|f| f.rtt_p99_us),
            pipelined_per_sec: med(&|f| f.pipelined_per_sec),
            stateless_per_sec: med(&|f| f.stateless_per_sec),
            big_mb_per_sec: med(&|f| f.big_mb_per_sec),
            relay_cpu_ns: rounds
                .iter()
                .any(|f| f.relay_cpu_ns.is_some())
                .then(|| med(&|f| f.relay_cpu_ns.unwrap_or(0.0))),
            startup_ms: med(&|f| f.startup_ms),
            recovery_ms: rounds.iter().any(|f| f.recovery_ms.is_some()).then(|| med(&|f| f.recovery_ms.unwrap_or(0.0))),
            peak_rss_kib: med_opt(&|f| f.peak_rss_kib),
            idle_rss_kib: med_opt(&|f| f.idle_rss_kib),
        }
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "rtt_p50_us": self.rtt_p50_us, "rtt_p99_us": self.rtt_p99_us,
            "pipelined_requests_per_sec": self.pipelined_per_sec,
            "stateless_pipelined_requests_per_sec": self.stateless_per_sec,
            "mib_messages_mb_per_sec": self.big_mb_per_sec,
            "relay_cpu_ns_per_request": self.relay_cpu_ns,
            "startup_ms": self.startup_ms, "crash_recovery_ms": self.recovery_ms,
            "peak_rss_kib": self.peak_rss_kib, "idle_rss_kib": self.idle_rss_kib,
        })
    }
}

fn print_table(kinds: &[Kind], m: &[Figures]) {
    let direct = &m[0];
    println!("\n{:<28}{}", "figure (median)", kinds.iter().map(|k| format!("{:>22}", k.name())).collect::<String>());
    let row = |label: &str, get: &dyn Fn(&Figures) -> f64, unit: &str| {
        let cells: String = m
            .iter()
            .map(|f| {
                let v = get(f);
                let ratio = v / get(direct);
                format!("{:>22}", format!("{v:.1}{unit} ({ratio:.2}x)"))
            })
            .collect();
        println!("{label:<28}{cells}");
    };
    row("rtt p50", &|f| f.rtt_p50_us, "us");
    row("rtt p99", &|f| f.rtt_p99_us, "us");
    row("pipelined small req/s", &|f| f.pipelined_per_sec, "");
    row("  stateless era", &|f| f.stateless_per_sec, "");
    row("1 MiB messages MB/s", &|f| f.big_mb_per_sec, "");
    let cpu: String =
        m.iter().map(|f| format!("{:>22}", f.relay_cpu_ns.map_or("-".to_owned(), |ns| format!("{ns:.0}ns")))).collect();
    println!("{:<28}{cpu}", "relay CPU per pipelined req");
    row("startup (spawn to init)", &|f| f.startup_ms, "ms");
    for (k, f) in kinds.iter().zip(m) {
        if let Some(r) = f.recovery_ms {
            println!(
                "{} crash recovery (SIGKILL to next success, --backoff-initial 0): {r:.1}ms = server start-up + {:.1}ms",
                k.name(),
                r - direct.startup_ms
            );
        }
    }
    for (k, f) in kinds.iter().zip(m) {
        if let (Some(peak), Some(idle)) = (f.peak_rss_kib, f.idle_rss_kib) {
            println!("{} RSS: idle {:.1} MiB, peak {:.1} MiB", k.name(), idle as f64 / 1024.0, peak as f64 / 1024.0);
        }
    }
}

/// A running setup: the client's ends of the pipes and the process(es).
struct Setup {
    child: Child,
    stdin: mpsc::Sender<Vec<u8>>,
    lines: mpsc::Receiver<Vec<u8>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

fn spawn(kind: Kind) -> Setup {
    let me = std::env::current_exe().expect("bench exe");
    let mut cmd = match kind {
        Kind::Direct => Command::new(&me),
        Kind::Mcpvisor | Kind::Baseline => {
            let bin = match kind {
                Kind::Baseline => baseline().expect("MCPVISOR_BENCH_BASELINE"),
                _ => PathBuf::from(env!("CARGO_BIN_EXE_mcpvisor")),
            };
            let mut c = Command::new(bin);
            c.args(["run", "--ping-interval", "0", "--backoff-initial", "0", "--log-level", "warn", "--"]).arg(&me);
            c
        }
        Kind::Socat => {
            let mut c = Command::new("socat");
            c.arg("-").arg(format!("EXEC:{}", me.display()));
            c
        }
    };
    cmd.env(ECHO_ENV, "1")
        .env("MCPVISOR_RUNTIME_DIR", std::env::temp_dir().join("mcpvisor-bench"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let rundir = std::env::temp_dir().join("mcpvisor-bench");
    let _ = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&rundir);
    let mut child = cmd.spawn().expect("spawn");
    let stdin: ChildStdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let writer = std::thread::spawn(move || {
        let mut w = BufWriter::with_capacity(1 << 16, stdin);
        while let Ok(first) = rx.recv() {
            // Write everything queued, then flush once, so pipelined sends batch.
            let mut ok = w.write_all(&first).is_ok();
            while let (true, Ok(more)) = (ok, rx.try_recv()) {
                ok = w.write_all(&more).is_ok();
            }
            if !ok || w.flush().is_err() {
                break;
            }
        }
    });
    let (ltx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::with_capacity(1 << 16, stdout);
        loop {
            let mut line = Vec::new();
            if !r.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) || ltx.send(line).is_err() {
                break;
            }
        }
    });
    Setup { child, stdin: tx, lines, writer: Some(writer) }
}

impl Setup {
    fn send(&self, line: String) {
        let _ = self.stdin.send(line.into_bytes());
    }

    fn recv(&self) -> usize {
        self.recv_line().len()
    }

    fn recv_line(&self) -> Vec<u8> {
        self.lines.recv_timeout(Duration::from_secs(60)).expect("response")
    }

    fn initialize(&self) {
        self.send(r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}"#.to_owned() + "\n");
        self.recv();
        self.send("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n".to_owned());
    }

    fn close(mut self) {
        drop(std::mem::replace(&mut self.stdin, mpsc::channel().0));
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        let _ = self.child.wait();
    }
}

fn run_round(kind: Kind, cfg: &Config) -> Figures {
    let startup_ms = median((0..cfg.restarts).map(|_| startup(kind)).collect());
    let recovery_ms = kind.supervises().then(|| median((0..cfg.restarts).map(|_| recovery(kind)).collect()));
    let s = spawn(kind);
    s.initialize();
    // Idle: the handshake answered and no traffic since, past the moment mcpvisor drops its
    // start-up code from the resident set.
    let idle_rss_kib = kind.supervises().then(|| {
        std::thread::sleep(mcpvisor::resident::SETTLE + Duration::from_millis(200));
        mcpvisor::process::procfs::status_kib(s.child.id() as i32, "VmRSS")
    });
    let idle_rss_kib = idle_rss_kib.flatten();

    let mut lat = Vec::with_capacity(cfg.rtt_requests);
    for i in 0..cfg.rtt_requests {
        let t = Instant::now();
        s.send(format!("{{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"tools/call\",\"params\":{{\"name\":\"echo\",\"arguments\":{{\"x\":\"abcdefgh\"}}}}}}\n", i + 1));
        s.recv();
        lat.push(t.elapsed());
    }
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e6;

    // The relay's CPU over the pipelined run: at these rates the client, the relay and the server
    // share the two cores, so what the relay spends per message decides its throughput.
    let relay = (kind != Kind::Direct).then(|| s.child.id() as i32);
    let cpu_before = relay.map(cpu_ns);
    let t = Instant::now();
    for i in 0..cfg.pipelined_requests {
        s.send(format!("{{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"tools/call\",\"params\":{{\"name\":\"echo\",\"arguments\":{{\"x\":\"abcdefgh\"}}}}}}\n", 1_000_000 + i));
    }
    for _ in 0..cfg.pipelined_requests {
        s.recv();
    }
    let pipelined_per_sec = cfg.pipelined_requests as f64 / t.elapsed().as_secs_f64();
    let relay_cpu_ns = relay
        .zip(cpu_before)
        .map(|(pid, before)| cpu_ns(pid).saturating_sub(before) as f64 / cfg.pipelined_requests as f64);
    let stateless_per_sec = stateless_pipelined(kind, cfg.pipelined_requests);

    let payload = "y".repeat(1 << 20);
    let t = Instant::now();
    let mut bytes = 0usize;
    for i in 0..cfg.big_requests {
        let line = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"tools/call\",\"params\":{{\"data\":\"{payload}\"}}}}\n",
            2_000_000 + i
        );
        bytes += line.len();
        s.send(line);
    }
    for _ in 0..cfg.big_requests {
        bytes += s.recv();
    }
    let big_mb_per_sec = bytes as f64 / 1e6 / t.elapsed().as_secs_f64();
    let peak_rss_kib =
        kind.supervises().then(|| mcpvisor::process::procfs::status_kib(s.child.id() as i32, "VmHWM")).flatten();
    s.close();
    Figures {
        rtt_p50_us: pct(0.5),
        rtt_p99_us: pct(0.99),
        pipelined_per_sec,
        stateless_per_sec,
        big_mb_per_sec,
        relay_cpu_ns,
        startup_ms,
        recovery_ms,
        peak_rss_kib,
        idle_rss_kib,
    }
}

/// Requests per second, `n` stateless-era requests written back to back on a session of their own
/// (no `initialize`; each carries the 2026-07-28 `_meta`, about 290 bytes), then all answers read.
fn stateless_pipelined(kind: Kind, n: usize) -> f64 {
    const META: &str = r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"bench","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}"#;
    let s = spawn(kind);
    let t = Instant::now();
    for i in 0..n {
        s.send(format!("{{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"tools/call\",\"params\":{{\"name\":\"echo\",\"arguments\":{{\"x\":\"abcdefgh\"}},{META}}}}}\n", i + 1));
    }
    for _ in 0..n {
        s.recv();
    }
    let per_sec = n as f64 / t.elapsed().as_secs_f64();
    s.close();
    per_sec
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Milliseconds from spawning to the answer to `initialize`.
fn startup(kind: Kind) -> f64 {
    let t = Instant::now();
    let s = spawn(kind);
    s.initialize();
    let ms = t.elapsed().as_secs_f64() * 1e3;
    s.close();
    ms
}

/// Milliseconds from a SIGKILL of mcpvisor's server to the next request that succeeds.
fn recovery(kind: Kind) -> f64 {
    let s = spawn(kind);
    s.initialize();
    s.send("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"bench/pid\"}\n".to_owned());
    let reply: serde_json::Value = serde_json::from_slice(&s.recv_line()).expect("pid reply");
    let pid = reply["result"]["pid"].as_i64().expect("pid") as i32;
    let t = Instant::now();
    let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    for i in 2.. {
        s.send(format!("{{\"jsonrpc\":\"2.0\",\"id\":{i},\"method\":\"tools/call\",\"params\":{{}}}}\n"));
        let line = s.recv_line();
        if !line.windows(8).any(|w| w == b"\"error\":") {
            break;
        }
    }
    let ms = t.elapsed().as_secs_f64() * 1e3;
    s.close();
    ms
}

/// The echo server: answers each request with its params, as fast as a line-oriented server can.
fn echo_server() {
    #[derive(serde::Deserialize)]
    struct Req<'a> {
        #[serde(borrow)]
        id: Option<&'a RawValue>,
        #[serde(borrow)]
        method: Option<&'a str>,
        #[serde(borrow)]
        params: Option<&'a RawValue>,
    }
    let stdin = std::io::stdin();
    let mut input = BufReader::with_capacity(1 << 16, stdin.lock());
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut line = Vec::new();
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let Ok(req) = serde_json::from_slice::<Req<'_>>(&line) else { continue };
        let Some(id) = req.id else { continue };
        let params = req.params.map_or("null", |p| p.get());
        let _ = if req.method == Some("bench/pid") {
            writeln!(out, "{{\"jsonrpc\":\"2.0\",\"id\":{},\"result\":{{\"pid\":{}}}}}", id.get(), std::process::id())
        } else {
            writeln!(out, "{{\"jsonrpc\":\"2.0\",\"id\":{},\"result\":{{\"echo\":{params}}}}}", id.get())
        };
        if input.buffer().is_empty() && out.flush().is_err() {
            break;
        }
    }
    let _ = out.flush();
}

fn which(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
