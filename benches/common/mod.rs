//! What the benches share (`benches/serve.rs`, `http.rs`, `standby.rs`): the echo MCP server
//! that each bench binary becomes with `MCPVISOR_BENCH_ECHO=1`, the messages of the handshake,
//! and small helpers. Each bench uses only part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mcpvisor::process::procfs;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub const ECHO_ENV: &str = "MCPVISOR_BENCH_ECHO";
/// Milliseconds the echo server sleeps before it reads its input: a server that takes that long
/// to start (unset: none).
pub const START_DELAY_ENV: &str = "MCPVISOR_BENCH_START_DELAY_MS";
pub const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}"#;
pub const INITIALIZE_RESULT: &str =
    r#"{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"echo","version":"1"}}"#;
pub const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
/// How long anything may take before a bench gives up (a daemon that never answers).
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A small `tools/call` (about 100 bytes), the request every round trip is timed with.
pub fn tools_call(id: u64) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"x":"abcdefgh"}}}}}}"#
    )
}

/// Whether a smoke run was asked for: `--quick` on the command line or `MCPVISOR_BENCH_QUICK` set.
pub fn quick() -> bool {
    std::env::args().any(|a| a == "--quick") || std::env::var_os("MCPVISOR_BENCH_QUICK").is_some()
}

/// The release build of mcpvisor, the one `cargo bench` builds.
pub fn mcpvisor_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mcpvisor"))
}

/// What the benches say of the machine they ran on, in their JSON: its cores and CPU model (the
/// machines these benches run on change from one day to the next, and so do their figures).
pub fn machine() -> serde_json::Value {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo.lines().find_map(|l| l.strip_prefix("model name")).and_then(|l| l.split_once(':'));
    serde_json::json!({ "cores": cores, "cpu": model.map_or("unknown", |(_, name)| name.trim()) })
}

/// The CPU time of process `pid`'s threads so far, in ns (`/proc/PID/task/*/schedstat`: user and
/// system time together, to the nanosecond).
pub fn cpu_ns(pid: i32) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten();
    let schedstat = |task: std::fs::DirEntry| std::fs::read_to_string(task.path().join("schedstat")).ok();
    let first = |text: String| text.split_whitespace().next().and_then(|n| n.parse::<u64>().ok());
    tasks.filter_map(|t| schedstat(t).and_then(first)).sum()
}

/// Polls `done` every 10 ms for up to `timeout`; whether it came true.
pub fn poll(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn wait_for(what: &str, done: impl FnMut() -> bool) {
    assert!(poll(PATIENCE, done), "timed out waiting for {what}");
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The value at fraction `p` (0.5: the median, 0.99: p99) of `v`.
pub fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

/// VmRSS once idle and no longer moving (the same in two readings 50 ms apart).
pub fn settled_rss_kib(pid: i32) -> u64 {
    settled_kib(pid, "VmRSS")
}

/// A memory figure of /proc/PID/status (`VmRSS`, `RssAnon`) once idle and no longer moving.
pub fn settled_kib(pid: i32, field: &str) -> u64 {
    let read = || procfs::status_kib(pid, field).unwrap_or_else(|| panic!("no {field} for process {pid}"));
    // Idle means past the moment mcpvisor drops its start-up code from the resident set.
    std::thread::sleep(mcpvisor::resident::SETTLE + Duration::from_millis(100));
    let mut last = read();
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(50));
        let now = read();
        if now == last {
            break;
        }
        last = now;
    }
    last
}

/// Whether `cmd` is a file in one of the PATH directories.
pub fn which(cmd: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(cmd).is_file()))
}

/// A port of 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("its address").port()
}

/// A process started in a process group of its own (`process_group(0)`); on drop, SIGTERM to
/// the group (mcpvisor drains its servers, other bridges stop theirs), SIGKILL after 5 s.
pub struct Process {
    pub child: Child,
}

impl Process {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let group = Pid::from_raw(-self.pid());
        let _ = kill(group, Signal::SIGTERM);
        poll(Duration::from_secs(5), || self.child.try_wait().ok().flatten().is_some());
        let _ = kill(group, Signal::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes the bench the subreaper of every process it starts (a server whose front died comes
/// back to it rather than to init), and on drop kills and reaps whatever is still there.
pub struct Reaper;

impl Reaper {
    pub fn install() -> Reaper {
        // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer and touches no memory.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        Reaper
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        let me = std::process::id() as i32;
        let descendants = |pid| {
            let mut all = Vec::new();
            let mut next = vec![pid];
            while let Some(p) = next.pop() {
                let children = procfs::children(p).unwrap_or_default();
                all.extend(&children);
                next.extend(children);
            }
            all
        };
        poll(Duration::from_secs(5), || {
            let left = descendants(me);
            for pid in &left {
                let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
            }
            while nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG))
                .is_ok_and(|s| s != nix::sys::wait::WaitStatus::StillAlive)
            {}
            left.is_empty()
        });
    }
}

/// Lifts the soft limit on open files to the hard one: a thousand streams are a thousand
/// sockets on each side (the daemon inherits the limit).
pub fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// A process spoken to one line per message over its stdin and stdout. On drop its stdin is
/// closed (an echo server or `mcpvisor run` then exits) and it is killed if it has not exited
/// within its grace period.
pub struct Piped {
    pub child: Child,
    stdin: Option<ChildStdin>,
    pub stdout: BufReader<ChildStdout>,
    grace: Duration,
}

impl Piped {
    pub fn spawn(mut cmd: Command, grace: Duration) -> Piped {
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("spawn a process to talk to");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("its stdout"));
        Piped { child, stdin, stdout, grace }
    }

    /// One write per message, newline included, as a client would send it.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("its stdin");
        stdin.write_all(format!("{line}\n").as_bytes()).expect("write to the process");
    }
}

impl Drop for Piped {
    fn drop(&mut self) {
        self.stdin.take();
        poll(self.grace, || self.child.try_wait().ok().flatten().is_some());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The echo server on stdio pipes, initialized: the baseline that relays are measured against.
pub struct Direct {
    process: Piped,
    line: String,
}

impl Direct {
    pub fn spawn() -> Direct {
        let mut cmd = Command::new(std::env::current_exe().expect("bench exe"));
        cmd.env(ECHO_ENV, "1");
        let mut direct = Direct { process: Piped::spawn(cmd, Duration::from_secs(2)), line: String::new() };
        direct.call(INITIALIZE);
        direct.send(INITIALIZED);
        direct
    }

    pub fn send(&mut self, message: &str) {
        self.process.send(message);
    }

    pub fn receive(&mut self) {
        self.line.clear();
        self.process.stdout.read_line(&mut self.line).expect("read from the echo server");
        assert!(self.line.contains("\"result\""), "not an answer: {:?}", self.line);
    }

    pub fn call(&mut self, message: &str) {
        self.send(message);
        self.receive();
    }

    /// Requests per second for `time` with `in_flight` requests in flight (ids from `ids`).
    pub fn throughput(&mut self, time: Duration, in_flight: usize, ids: &AtomicU64) -> f64 {
        let t = Instant::now();
        let mut done = 0u64;
        for _ in 0..in_flight {
            self.send(&tools_call(ids.fetch_add(1, Ordering::Relaxed)));
        }
        while t.elapsed() < time {
            self.receive();
            done += 1;
            self.send(&tools_call(ids.fetch_add(1, Ordering::Relaxed)));
        }
        for _ in 0..in_flight {
            self.receive();
        }
        (done + in_flight as u64) as f64 / t.elapsed().as_secs_f64()
    }
}

/// Answers `initialize` with a real result (a shared server's is cached by protocol version) and
/// every other request with `{"echo": PARAMS}` (as `benches/relay.rs` does), until its input ends.
/// With `MCPVISOR_BENCH_START_DELAY_MS` it first sleeps that long, like a server that is slow to
/// start (its input waits in the pipe meanwhile).
pub fn echo_server() {
    #[derive(serde::Deserialize)]
    struct Request<'a> {
        #[serde(borrow)]
        id: Option<&'a serde_json::value::RawValue>,
        #[serde(borrow)]
        method: Option<&'a str>,
        #[serde(borrow)]
        params: Option<&'a serde_json::value::RawValue>,
    }
    let delay_ms = std::env::var(START_DELAY_ENV).ok().and_then(|ms| ms.parse().ok()).unwrap_or(0);
    std::thread::sleep(Duration::from_millis(delay_ms));
    let stdin = std::io::stdin();
    let mut input = BufReader::new(stdin.lock());
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut line = Vec::new();
    while input.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
        if let Ok(Request { id: Some(id), method, params }) = serde_json::from_slice::<Request<'_>>(&line) {
            let result = match method {
                Some("initialize") => INITIALIZE_RESULT.to_owned(),
                _ => format!(r#"{{"echo":{}}}"#, params.map_or("null", |p| p.get())),
            };
            let _ = writeln!(out, r#"{{"jsonrpc":"2.0","id":{},"result":{result}}}"#, id.get());
        }
        if input.buffer().is_empty() && out.flush().is_err() {
            break;
        }
        line.clear();
    }
    let _ = out.flush();
}

/// Starts `mcpvisor serve` in `dir` on the configuration `config` (its state and log in `dir`)
/// and waits until the endpoint of each of `servers` exists; the daemon and its runtime
/// directory.
pub fn start_serve<'a>(dir: &Path, config: &str, servers: impl IntoIterator<Item = &'a str>) -> (Child, PathBuf) {
    std::fs::create_dir_all(dir).expect("the daemon's directory");
    let config_path = dir.join("servers.toml");
    std::fs::write(&config_path, config).expect("write the config");
    let runtime_dir = dir.join("run");
    let child = Command::new(mcpvisor_bin())
        .arg("serve")
        .arg("--config")
        .arg(&config_path)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--log-file")
        .arg(dir.join("serve.log"))
        .env("MCPVISOR_RUNTIME_DIR", &runtime_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn mcpvisor serve");
    for name in servers {
        let endpoint = runtime_dir.join(format!("{name}.mcp"));
        wait_for(&endpoint.display().to_string(), || endpoint.exists());
    }
    (child, runtime_dir)
}
