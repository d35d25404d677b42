//! A controllable, misbehaving MCP stdio server for mcpvisor's tests and benchmarks.
//!
//! Flags:
//!   --era handshake|stateless|dual   which protocol era to speak (dual locks on the first message)
//!   --record PATH                    append every line received to PATH (`{pid}` in it: its pid)
//!   --banner TEXT                    print TEXT on stdout at start (stdout noise)
//!   --stderr-lines N                 print N lines on stderr at start
//!   --exit-at-start CODE             exit with CODE right away (a server that cannot start)
//!   --crash-after N                  exit with code 3 on the Nth request
//!   --ignore-sigterm                 survive SIGTERM (needs a group SIGKILL)
//!   --ignore-eof                     keep running after stdin closes
//!   --grandchild                     start a `sleep` that keeps stdout open, at start
//!   --start-delay MS                 take MS milliseconds to start (before reading stdin)
//!   --lock PATH                      hold an exclusive lock on PATH; exit with 75 at start if
//!                                    another process holds it (a server that cannot run twice)
//!
//! Methods (besides initialize, ping, server/discover, tools/list, resources/*, logging/setLevel):
//!   echo {..}                 → {"echo": params, "pid": pid}
//!   env {"name"}              → {"value": the variable's value or null}
//!   setsid_grandchild         → starts `setsid sleep 1000` (its own session, holding stdout)
//!   daemon                    → double-forks `setsid sleep 1000` (its parent exits at once), answers
//!                               {"pid": the daemon's pid}
//!   close_stdout              → answers, then closes stdout and keeps running
//!   half_line                 → writes half of its answer, then exits with code 4
//!   alloc {"mb": n}           → allocates, touches and keeps n MiB more
//!   limits                    → {"nofile": n, "as": bytes}: its soft RLIMIT_NOFILE and RLIMIT_AS
//!   slow {"ms": n}            → answers after n ms (other requests keep flowing)
//!   huge {"bytes": n}         → a result with an n-byte string
//!   crash {"code": n} | {"signal": "KILL"|"SEGV"|...} ["after_ms": n] → dies without answering
//!                             (after stalling n ms without reading, so later requests are in flight)
//!   hang                      → stops reading and answering forever
//!   stray {"text": s}         → writes s as a raw stdout line, then answers
//!   stderr {"lines": n}       → writes n lines to stderr, then answers
//!   bad_utf8                  → answers with a response containing invalid UTF-8
//!   grandchild                → starts `sleep 1000` holding stdout, answers {"pid": its pid}
//!   ask_client {"method", "params"} → sends a request to the client, answers with its response
//!   notify {"method", "params"}     → sends a notification to the client, then answers
//!   subscriptions/listen      → (stateless) never answers; sends one notification tagged with its id

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Era {
    Handshake,
    Stateless,
    Dual,
}

struct Opts {
    era: Era,
    record: Option<String>,
    banner: Option<String>,
    stderr_lines: usize,
    exit_at_start: Option<i32>,
    crash_after: Option<u64>,
    ignore_sigterm: bool,
    ignore_eof: bool,
    grandchild: bool,
    start_delay: Option<u64>,
    lock: Option<String>,
}

fn parse_opts() -> Opts {
    let mut o = Opts {
        era: Era::Dual,
        record: None,
        banner: None,
        stderr_lines: 0,
        exit_at_start: None,
        crash_after: None,
        ignore_sigterm: false,
        ignore_eof: false,
        grandchild: false,
        start_delay: None,
        lock: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_default();
        match a.as_str() {
            "--era" => {
                o.era = match val().as_str() {
                    "handshake" => Era::Handshake,
                    "stateless" => Era::Stateless,
                    _ => Era::Dual,
                }
            }
            "--record" => o.record = Some(val()),
            "--banner" => o.banner = Some(val()),
            "--stderr-lines" => o.stderr_lines = val().parse().unwrap_or(0),
            "--exit-at-start" => o.exit_at_start = val().parse().ok(),
            "--crash-after" => o.crash_after = val().parse().ok(),
            "--ignore-sigterm" => o.ignore_sigterm = true,
            "--ignore-eof" => o.ignore_eof = true,
            "--grandchild" => o.grandchild = true,
            "--start-delay" => o.start_delay = val().parse().ok(),
            "--lock" => o.lock = Some(val()),
            other => {
                eprintln!("test-server: unknown flag {other}");
                std::process::exit(64);
            }
        }
    }
    o
}

type Out = Arc<Mutex<std::io::Stdout>>;

fn write_line(out: &Out, line: &str) {
    let mut o = out.lock().unwrap();
    let _ = o.write_all(line.as_bytes());
    let _ = o.write_all(b"\n");
    let _ = o.flush();
}

fn send(out: &Out, v: &Value) {
    write_line(out, &v.to_string());
}

fn result(id: &Value, r: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": r})
}

fn error(id: &Value, code: i64, msg: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": msg}})
}

fn die(signal: &str) -> ! {
    let _ = Command::new("kill").arg(format!("-{signal}")).arg(std::process::id().to_string()).status();
    std::thread::sleep(Duration::from_secs(5));
    std::process::exit(99)
}

fn take_lock(path: &str) -> nix::fcntl::Flock<std::fs::File> {
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path).expect("lock file");
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err(_) => {
            eprintln!("test-server: {path} is locked by another process");
            std::process::exit(75);
        }
    }
}

fn spawn_grandchild() -> u32 {
    // Inherits our stdout (and stderr), so the pipe stays open after we die.
    Command::new("sleep").arg("1000").stdin(Stdio::null()).spawn().map(|c| c.id()).unwrap_or(0)
}

fn main() {
    let o = parse_opts();
    if let Some(code) = o.exit_at_start {
        eprintln!("test-server: exiting at start with {code}");
        std::process::exit(code);
    }
    if o.ignore_sigterm {
        ignore_sigterm();
    }
    // Held for the process's life.
    let _lock = o.lock.as_deref().map(take_lock);
    if let Some(ms) = o.start_delay {
        std::thread::sleep(Duration::from_millis(ms));
    }
    let out: Out = Arc::new(Mutex::new(std::io::stdout()));
    let pid = std::process::id();
    if let Some(b) = &o.banner {
        write_line(&out, b);
    }
    for i in 0..o.stderr_lines {
        eprintln!("test-server: startup log line {i}");
    }
    if o.grandchild {
        spawn_grandchild();
    }
    let mut record = o
        .record
        .as_ref()
        .map(|p| p.replace("{pid}", &pid.to_string()))
        .map(|p| std::fs::OpenOptions::new().create(true).append(true).open(p).expect("record file"));
    let pending: Arc<Mutex<HashMap<String, mpsc::Sender<Value>>>> = Arc::default();
    let next_id = Arc::new(AtomicU64::new(0));
    let mut era = o.era;
    let mut initialized = false;
    let mut requests = 0u64;
    let mut hoard: Vec<Vec<u8>> = Vec::new();

    let stdin = std::io::stdin();
    for line in stdin.lock().split(b'\n') {
        let Ok(line) = line else { break };
        if let Some(f) = record.as_mut() {
            let _ = f.write_all(&line);
            let _ = f.write_all(b"\n");
            let _ = f.flush();
        }
        let Ok(msg) = serde_json::from_slice::<Value>(&line) else {
            eprintln!("test-server: not JSON: {}", String::from_utf8_lossy(&line));
            continue;
        };
        if msg.is_array() {
            // Like real servers: batches are ignored.
            eprintln!("test-server: ignoring a batch");
            continue;
        }
        let id = msg.get("id").cloned();
        let method = msg.get("method").and_then(Value::as_str).map(str::to_owned);
        let params = msg.get("params").cloned().unwrap_or(Value::Null);
        let Some(method) = method else {
            // A response from the client to one of our requests.
            if let Some(id) = id.as_ref().and_then(Value::as_str) {
                if let Some(tx) = pending.lock().unwrap().remove(id) {
                    let _ = tx.send(msg.clone());
                }
            }
            continue;
        };
        if era == Era::Dual {
            let stateless = params.pointer("/_meta/io.modelcontextprotocol~1protocolVersion").is_some();
            era = if method == "initialize" || !stateless { Era::Handshake } else { Era::Stateless };
            eprintln!("test-server: era locked to {era:?} by {method}");
        }
        let Some(id) = id else {
            if method == "notifications/initialized" {
                initialized = true;
            }
            continue;
        };
        requests += 1;
        if o.crash_after == Some(requests) {
            eprintln!("test-server: crashing on request {requests} as told");
            std::process::exit(3);
        }
        let reply = |v: Value| send(&out, &v);
        match method.as_str() {
            "initialize" if era == Era::Stateless => reply(error(&id, -32601, "Method not found")),
            "initialize" => {
                let version = params.get("protocolVersion").cloned().unwrap_or(json!("2025-06-18"));
                reply(result(
                    &id,
                    json!({
                        "protocolVersion": version,
                        "capabilities": {"tools": {"listChanged": true}, "resources": {"subscribe": true}, "logging": {}},
                        "serverInfo": {"name": "test-server", "version": "1.0.0"}
                    }),
                ));
            }
            "server/discover" if era == Era::Handshake => reply(error(&id, -32601, "Method not found")),
            "server/discover" => reply(result(
                &id,
                json!({
                    "resultType": "complete",
                    "supportedVersions": ["2026-07-28"],
                    "capabilities": {"tools": {"listChanged": true}},
                    "serverInfo": {"name": "test-server", "version": "1.0.0"}
                }),
            )),
            "ping" => reply(result(&id, json!({}))),
            _ if era == Era::Handshake && !initialized => {
                reply(error(&id, -32602, "Invalid request parameters: not initialized"))
            }
            "tools/list" => {
                reply(result(&id, json!({"tools": [{"name": "echo", "inputSchema": {"type": "object"}}], "pid": pid})))
            }
            "logging/setLevel" | "resources/subscribe" | "resources/unsubscribe" => reply(result(&id, json!({}))),
            "resources/read" => reply(result(&id, json!({"contents": [], "pid": pid}))),
            "echo" | "tools/call" => reply(result(&id, json!({"echo": params, "pid": pid}))),
            "setsid_grandchild" => {
                // A new session: out of the server's process group, holding stdout and stderr.
                let gc = Command::new("setsid").arg("sleep").arg("1000").stdin(Stdio::null()).spawn();
                reply(result(&id, json!({"pid": gc.map(|c| c.id()).unwrap_or(0)})))
            }
            "close_stdout" => {
                // Answer, then close stdout (by pointing fd 1 at /dev/null) and keep running.
                reply(result(&id, json!({})));
                if let Ok(null) = std::fs::File::open("/dev/null") {
                    let _ = nix::unistd::dup2_stdout(&null);
                }
            }
            "half_line" => {
                // Die in the middle of writing the answer.
                let text = format!("{{\"jsonrpc\":\"2.0\",\"id\":{},\"result\":{{\"partial\":", id);
                let mut stdout = std::io::stdout().lock();
                let _ = stdout.write_all(text.as_bytes());
                let _ = stdout.flush();
                std::process::exit(4);
            }
            "alloc" => {
                // Allocate and touch this many MiB, and keep them.
                let mb = params.get("mb").and_then(Value::as_u64).unwrap_or(10) as usize;
                hoard.push(vec![1u8; mb << 20]);
                reply(result(&id, json!({"held_mb": hoard.iter().map(Vec::len).sum::<usize>() >> 20})))
            }
            "limits" => {
                let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
                let soft = |name: &str| {
                    let line = limits.lines().find(|l| l.starts_with(name))?;
                    line[name.len()..].split_whitespace().next()?.parse::<u64>().ok()
                };
                reply(result(&id, json!({"nofile": soft("Max open files"), "as": soft("Max address space")})))
            }
            "env" => {
                let name = params.get("name").and_then(Value::as_str).unwrap_or("");
                reply(result(&id, json!({"value": std::env::var(name).ok()})))
            }
            "slow" => {
                let ms = params.get("ms").and_then(Value::as_u64).unwrap_or(100);
                let out = out.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(ms));
                    send(&out, &result(&id, json!({"slept_ms": ms, "pid": pid})));
                });
            }
            "huge" => {
                let n = params.get("bytes").and_then(Value::as_u64).unwrap_or(1 << 20) as usize;
                reply(result(&id, json!({"data": "x".repeat(n)})));
            }
            "crash" => {
                // Stalling first leaves whatever the client sends next unread, i.e. in flight.
                if let Some(ms) = params.get("after_ms").and_then(Value::as_u64) {
                    std::thread::sleep(Duration::from_millis(ms));
                }
                if let Some(sig) = params.get("signal").and_then(Value::as_str) {
                    die(sig);
                }
                std::process::exit(params.get("code").and_then(Value::as_i64).unwrap_or(1) as i32);
            }
            "hang" => loop {
                std::thread::sleep(Duration::from_secs(3600));
            },
            "stray" => {
                write_line(&out, params.get("text").and_then(Value::as_str).unwrap_or("stray output"));
                reply(result(&id, json!({})));
            }
            "stderr" => {
                let n = params.get("lines").and_then(Value::as_u64).unwrap_or(1);
                for i in 0..n {
                    eprintln!("test-server: log line {i}");
                }
                reply(result(&id, json!({})));
            }
            "bad_utf8" => {
                // A response with invalid UTF-8 inside: not a valid MCP message.
                let mut o = out.lock().unwrap();
                let _ = o.write_all(format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{{\"s\":\"").as_bytes());
                let _ = o.write_all(b"\xff\xfe\"}}\n");
                let _ = o.flush();
            }
            "grandchild" => reply(result(&id, json!({"pid": spawn_grandchild()}))),
            "daemon" => {
                // The shell exits after starting it: the daemon is orphaned while the server runs.
                let out = Command::new("sh")
                    .args(["-c", "setsid sleep 1000 </dev/null >/dev/null 2>&1 & echo $!"])
                    .stdin(Stdio::null())
                    .stderr(Stdio::null())
                    .output();
                let pid = out.ok().and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<u32>().ok());
                reply(result(&id, json!({"pid": pid.unwrap_or(0)})))
            }
            "ask_client" => {
                let n = next_id.fetch_add(1, Ordering::Relaxed);
                let req_id = format!("srv-{n}");
                let (tx, rx) = mpsc::channel();
                pending.lock().unwrap().insert(req_id.clone(), tx);
                let out = out.clone();
                let method = params.get("method").and_then(Value::as_str).unwrap_or("roots/list").to_owned();
                let p = params.get("params").cloned().unwrap_or(json!({}));
                std::thread::spawn(move || {
                    send(&out, &json!({"jsonrpc": "2.0", "id": req_id, "method": method, "params": p}));
                    match rx.recv_timeout(Duration::from_secs(30)) {
                        Ok(resp) => send(&out, &result(&id, json!({"client_said": resp}))),
                        Err(_) => send(&out, &error(&id, -32603, "client never answered")),
                    }
                });
            }
            "notify" => {
                let m = params.get("method").and_then(Value::as_str).unwrap_or("notifications/message");
                let p = params.get("params").cloned().unwrap_or(json!({}));
                send(&out, &json!({"jsonrpc": "2.0", "method": m, "params": p}));
                reply(result(&id, json!({})));
            }
            "subscriptions/listen" => {
                send(
                    &out,
                    &json!({"jsonrpc": "2.0", "method": "notifications/resources/list_changed",
                    "params": {"_meta": {"io.modelcontextprotocol/subscriptionId": id}}}),
                );
            }
            _ => reply(error(&id, -32601, "Method not found")),
        }
    }
    eprintln!("test-server: stdin closed");
    if o.ignore_eof {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

fn ignore_sigterm() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: SIG_IGN installs no handler code, so no async-signal-safety concerns arise.
    let _ = unsafe { signal(Signal::SIGTERM, SigHandler::SigIgn) };
}
