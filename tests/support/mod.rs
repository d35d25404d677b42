//! Shared helpers for integration tests: run the real `mcpvisor` binary around the test server
//! (or any command), talk JSON-RPC to it, and wait for events with deadlines instead of sleeps.
#![allow(dead_code)]

pub mod daemon;
pub mod http;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

/// Generous: these tests must pass on a loaded 2-core machine.
pub const TIMEOUT: Duration = Duration::from_secs(20);

pub fn mcpvisor_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mcpvisor"))
}

pub fn test_server_bin() -> PathBuf {
    let bin = mcpvisor_bin();
    let dir = bin.parent().expect("target dir");
    let path = dir.join("examples").join("test-server");
    assert!(path.exists(), "test server not built at {}: run `cargo test` (it builds examples)", path.display());
    path
}

/// Polls `f` until it returns `Some` or the deadline passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn process_alive(pid: i32) -> bool {
    // A zombie still answers kill(0); look at /proc for its state.
    mcpvisor::process::procfs::processes().iter().any(|p| p.pid == pid && !p.is_zombie())
}

/// Processes (not zombies) whose process group is `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    mcpvisor::process::procfs::processes()
        .into_iter()
        .filter(|p| p.pgrp == pgid && !p.is_zombie())
        .map(|p| p.pid)
        .collect()
}

/// A running `mcpvisor run`.
pub struct Visor {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    backlog: VecDeque<Value>,
    pub dir: tempfile::TempDir,
    pub log_path: PathBuf,
    /// Where the control socket lives (`MCPVISOR_RUNTIME_DIR`).
    pub runtime_dir: PathBuf,
    /// Every stdout line, raw, for hygiene checks.
    pub stdout_seen: Vec<String>,
}

pub struct VisorBuilder {
    /// The subcommand and its own arguments: `run` (with a log file) unless told otherwise.
    subcommand: Vec<String>,
    args: Vec<String>,
    command: Vec<String>,
    stdin_null: bool,
    runtime_dir: Option<PathBuf>,
}

impl VisorBuilder {
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, a: I) -> Self {
        self.args.extend(a.into_iter().map(Into::into));
        self
    }

    /// Shares a control socket directory (default: one of its own per instance).
    pub fn runtime_dir(mut self, dir: &Path) -> Self {
        self.runtime_dir = Some(dir.to_owned());
        self
    }

    pub fn spawn(self) -> Visor {
        self.spawn_with_env(&[])
    }

    /// Spawns without `--` (the command comes from `--config`).
    pub fn spawn_without_command(mut self) -> Visor {
        self.command.clear();
        self.spawn_with_env(&[])
    }

    pub fn spawn_with_env(self, env: &[(&str, &str)]) -> Visor {
        let dir = tempfile::tempdir().expect("tempdir");
        let log_path = dir.path().join("mcpvisor.log");
        let runtime_dir = self.runtime_dir.clone().unwrap_or_else(|| dir.path().join("run"));
        let mut cmd = Command::new(mcpvisor_bin());
        if self.subcommand.is_empty() {
            cmd.arg("run").arg("--log-file").arg(&log_path).arg("--log-level").arg("debug");
        } else {
            cmd.args(&self.subcommand);
        }
        cmd.args(&self.args);
        if !self.command.is_empty() {
            cmd.arg("--").args(&self.command);
        }
        cmd.env("MCPVISOR_RUNTIME_DIR", &runtime_dir);
        cmd.envs(env.iter().copied());
        cmd.stdin(if self.stdin_null { Stdio::null() } else { Stdio::piped() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn mcpvisor");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                if tx.send(std::mem::take(&mut line)).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Visor { child, stdin, lines, backlog: VecDeque::new(), dir, log_path, runtime_dir, stdout_seen: Vec::new() }
    }
}

impl Visor {
    /// `mcpvisor run [args] -- test-server [server_args]`.
    pub fn test_server<S: Into<String>>(server_args: impl IntoIterator<Item = S>) -> VisorBuilder {
        let mut command = vec![test_server_bin().display().to_string()];
        command.extend(server_args.into_iter().map(Into::into));
        VisorBuilder { subcommand: Vec::new(), args: Vec::new(), command, stdin_null: false, runtime_dir: None }
    }

    /// `mcpvisor connect NAME`, a client of a daemon whose sockets are in `runtime_dir`.
    pub fn connect(name: &str, runtime_dir: &Path) -> Visor {
        VisorBuilder {
            subcommand: vec!["connect".into(), name.into()],
            args: Vec::new(),
            command: Vec::new(),
            stdin_null: false,
            runtime_dir: Some(runtime_dir.to_owned()),
        }
        .spawn()
    }

    pub fn command<S: Into<String>>(command: impl IntoIterator<Item = S>) -> VisorBuilder {
        VisorBuilder {
            subcommand: Vec::new(),
            args: Vec::new(),
            command: command.into_iter().map(Into::into).collect(),
            stdin_null: false,
            runtime_dir: None,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn send(&mut self, msg: &Value) {
        self.send_raw(format!("{msg}\n").as_bytes());
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(bytes).expect("write to mcpvisor");
        stdin.flush().expect("flush");
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The next message on stdout (from the backlog first). Panics on timeout or on a line that
    /// is not a JSON-RPC message: stdout must carry protocol messages only.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Option<Value> {
        if let Some(v) = self.backlog.pop_front() {
            return Some(v);
        }
        self.recv_line(timeout)
    }

    fn recv_line(&mut self, timeout: Duration) -> Option<Value> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => {
                self.stdout_seen.push(line.clone());
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("stdout carried a non-JSON line ({e}): {line:?}\nlog:\n{}", self.log()));
                let ok = v.get("jsonrpc") == Some(&json!("2.0")) || v.is_array();
                assert!(ok, "stdout carried a non-JSON-RPC message: {line}");
                Some(v)
            }
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    pub fn recv(&mut self) -> Value {
        match self.recv_timeout(TIMEOUT) {
            Some(v) => v,
            None => panic!("no message from mcpvisor within {TIMEOUT:?}\nlog:\n{}", self.log()),
        }
    }

    /// Waits for the message matching `pred`, keeping the others for later.
    pub fn recv_matching(&mut self, what: &str, mut pred: impl FnMut(&Value) -> bool) -> Value {
        if let Some(pos) = self.backlog.iter().position(&mut pred) {
            return self.backlog.remove(pos).expect("present");
        }
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_line(left) {
                Some(v) if pred(&v) => return v,
                Some(v) => self.backlog.push_back(v),
                None => panic!("timed out waiting for {what}; got meanwhile: {:?}\nlog:\n{}", self.backlog, self.log()),
            }
        }
    }

    /// The response to request `id`.
    pub fn response(&mut self, id: &Value) -> Value {
        let id = id.clone();
        self.recv_matching(&format!("response to {id}"), |v| v.get("id") == Some(&id) && v.get("method").is_none())
    }

    pub fn request(&mut self, id: impl Into<Value>, method: &str, params: Value) -> Value {
        let id = id.into();
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        self.response(&id)
    }

    pub fn notify(&mut self, method: &str, params: Value) {
        self.send(&json!({"jsonrpc": "2.0", "method": method, "params": params}));
    }

    /// A handshake-era initialize + initialized; returns the initialize result.
    pub fn initialize(&mut self) -> Value {
        let r = self.request(
            0,
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "tests", "version": "1"}}),
        );
        self.notify("notifications/initialized", json!({}));
        r
    }

    /// Messages received and not yet consumed.
    pub fn drain_pending(&mut self, quiet: Duration) -> Vec<Value> {
        let mut out: Vec<Value> = self.backlog.drain(..).collect();
        while let Some(v) = self.recv_line(quiet) {
            out.push(v);
        }
        out
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn wait_log(&self, needle: &str) -> String {
        wait_for(&format!("log line containing {needle:?}"), TIMEOUT, || {
            let log = self.log();
            log.contains(needle).then_some(log)
        })
    }

    /// How many times `needle` appears in the log.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }

    /// Pids of every server generation started so far, from the log.
    pub fn server_pids(&self) -> Vec<i32> {
        pids_in_log(&self.log())
    }

    /// Waits until `n` server generations have started; returns the newest pid.
    pub fn wait_generation(&self, n: usize) -> i32 {
        wait_for(&format!("server generation {n}"), TIMEOUT, || {
            let pids = self.server_pids();
            (pids.len() >= n).then(|| pids[n - 1])
        })
    }

    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid()), sig).expect("signal mcpvisor");
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let log = self.log_path.clone();
        wait_exit(&mut self.child, timeout, &log)
    }

    /// Runs `mcpvisor ARGS` against this instance's socket directory.
    pub fn ctl(&self, args: &[&str]) -> std::process::Output {
        ctl(&self.runtime_dir, args)
    }

    /// Waits until the control socket answers.
    pub fn wait_control(&self) {
        wait_for("control socket", TIMEOUT, || self.ctl(&["status"]).status.code().filter(|c| *c != 3));
    }

    pub fn stderr_text(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut s);
        }
        s
    }
}

impl Drop for Visor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Leave nothing behind, even when a test failed half way.
        for pid in self.server_pids() {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Waits for `child` (an mcpvisor) to exit; on a timeout the panic shows its log.
pub fn wait_exit(child: &mut Child, timeout: Duration, log: &Path) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        let log = || std::fs::read_to_string(log).unwrap_or_default();
        assert!(Instant::now() < deadline, "mcpvisor did not exit within {timeout:?}\nlog:\n{}", log());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Pids of the server generations an mcpvisor log reports starting, in order.
pub fn pids_in_log(log: &str) -> Vec<i32> {
    log.lines()
        .filter(|l| l.contains("server started"))
        .filter_map(|l| l.split("pid=").nth(1)?.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Runs `mcpvisor ARGS` with `MCPVISOR_RUNTIME_DIR=dir`.
pub fn ctl(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(mcpvisor_bin())
        .args(args)
        .env("MCPVISOR_RUNTIME_DIR", dir)
        .stdin(Stdio::null())
        .output()
        .expect("run mcpvisor")
}

/// `mcpvisor status NAME --json`, parsed.
pub fn status_json(dir: &Path, name: &str) -> (Option<i32>, Value) {
    let out = ctl(dir, &["status", name, "--json"]);
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code(), v)
}

pub fn temp_path(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

/// A fresh path for the test server's `--record` (the dir must outlive the test).
pub fn record_file() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = temp_path(dir.path(), "record");
    (dir, path)
}

/// Reads a file of recorded lines (the test server's --record) as JSON values.
pub fn recorded(path: &str) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// A plain HTTP/1.1 GET; the status code and the body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    let code = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (code, body)
}
