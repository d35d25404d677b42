//! An in-process harness: instances run inside the test process, as `mcpvisor serve` will host
//! them, each fed by an in-memory client and supervising the real test server. Tests learn what
//! happened from the instance's status snapshot (through its handle), never from log text.
//!
//! Every test of a binary shares one host: one runtime and one reaper, as in mcpvisor itself
//! (two reapers in one process would reap each other's servers). The runtime is mcpvisor's own
//! kind, current-thread, driven by a thread of its own; each test's body runs on its test thread
//! with the runtime's I/O and timers. (A multi-threaded runtime would need a tokio feature that
//! dev-dependencies would then also switch on in the benchmarked binary.)
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use mcpvisor::cli::{Cli, Command as CliCommand};
use mcpvisor::config::InstanceConfig;
use mcpvisor::instance::{Command, Instance, InstanceHandle, Outcome, Reply, Services, Summary};
use mcpvisor::io::Inbox;
use mcpvisor::observe::status::Status;
use mcpvisor::port::memory;
use mcpvisor::process::Reaper;

/// Generous: these tests must pass on a loaded 2-core machine.
pub const TIMEOUT: Duration = Duration::from_secs(20);

struct Host {
    runtime: tokio::runtime::Handle,
    reaper: Reaper,
}

fn host() -> &'static Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            let reaper = runtime.block_on(async { Reaper::start(true) }).expect("a reaper");
            tx.send(Host { runtime: runtime.handle().clone(), reaper }).expect("the test waits");
            // Drives the runtime's I/O and timers for every test, for as long as the process lives.
            runtime.block_on(std::future::pending::<()>());
        });
        rx.recv().expect("the host starts")
    })
}

/// Runs one test's body on the shared host.
pub fn run<F: std::future::Future<Output = ()>>(body: F) {
    host().runtime.block_on(body)
}

/// The settings of `mcpvisor run [options] -- test-server [server_args]`.
pub fn config(options: &[&str], server_args: &[&str]) -> InstanceConfig {
    let server = crate::support::test_server_bin().display().to_string();
    let mut argv: Vec<&str> = vec!["mcpvisor", "run"];
    argv.extend_from_slice(options);
    argv.extend_from_slice(&["--", &server]);
    argv.extend_from_slice(server_args);
    let CliCommand::Run(args) = Cli::try_parse_from(argv).expect("options parse").command else { unreachable!() };
    args.instance_config().expect("a valid config")
}

/// An instance running in this process, and its in-memory client.
pub struct Harness {
    pub handle: InstanceHandle,
    pub summary: watch::Receiver<Summary>,
    tx: Option<mpsc::UnboundedSender<Bytes>>,
    rx: Inbox,
    backlog: VecDeque<Value>,
    task: Option<JoinHandle<Outcome>>,
}

impl Harness {
    /// Starts an instance named `name`. Must be called inside [`run`].
    pub fn start(name: &str, cfg: InstanceConfig) -> Harness {
        let (port, client) = memory::pair(cfg.max_message_size);
        let services = Services::alone(host().reaper.scope());
        let Ok((mut instance, handle)) = Instance::start(cfg, name.to_owned(), port, services) else {
            panic!("the server does not start")
        };
        let summary = instance.watch_summary();
        let task = tokio::spawn(instance.run());
        Harness { handle, summary, tx: Some(client.tx), rx: client.rx, backlog: VecDeque::new(), task: Some(task) }
    }

    pub fn send(&self, msg: &Value) {
        self.send_raw(msg.to_string());
    }

    pub fn send_raw(&self, msg: impl Into<Bytes>) {
        self.tx.as_ref().expect("input open").send(msg.into()).expect("the instance takes input");
    }

    /// The next message from the instance.
    pub async fn recv(&mut self) -> Value {
        if let Some(v) = self.backlog.pop_front() {
            return v;
        }
        self.recv_new(TIMEOUT).await.unwrap_or_else(|| panic!("no message within {TIMEOUT:?}"))
    }

    async fn recv_new(&mut self, timeout: Duration) -> Option<Value> {
        let line = tokio::time::timeout(timeout, self.rx.recv()).await.ok()??;
        Some(serde_json::from_slice(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}")))
    }

    /// Waits for the message matching `pred`, keeping the others for later.
    pub async fn recv_matching(&mut self, what: &str, mut pred: impl FnMut(&Value) -> bool) -> Value {
        if let Some(pos) = self.backlog.iter().position(&mut pred) {
            return self.backlog.remove(pos).expect("present");
        }
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_new(left).await {
                Some(v) if pred(&v) => return v,
                Some(v) => self.backlog.push_back(v),
                None => panic!("timed out waiting for {what}; got meanwhile: {:?}", self.backlog),
            }
        }
    }

    pub async fn response(&mut self, id: &Value) -> Value {
        let id = id.clone();
        self.recv_matching(&format!("response to {id}"), |v| v.get("id") == Some(&id) && v.get("method").is_none())
            .await
    }

    pub async fn request(&mut self, id: impl Into<Value>, method: &str, params: Value) -> Value {
        let id = id.into();
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        self.response(&id).await
    }

    pub fn notify(&self, method: &str, params: Value) {
        self.send(&json!({"jsonrpc": "2.0", "method": method, "params": params}));
    }

    /// A handshake-era initialize + initialized; returns the initialize response.
    pub async fn initialize(&mut self) -> Value {
        let r = self
            .request(
                0,
                "initialize",
                json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "harness", "version": "1"}}),
            )
            .await;
        self.notify("notifications/initialized", json!({}));
        r
    }

    pub async fn status(&self) -> Status {
        self.handle.status().await.expect("the instance answers")
    }

    /// Polls the status snapshot until `pred` holds.
    pub async fn wait_status(&self, what: &str, mut pred: impl FnMut(&Status) -> bool) -> Status {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let status = self.status().await;
            if pred(&status) {
                return status;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; last status: {status:#?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The running server's pid and generation, once it is ready.
    pub async fn ready_server(&self) -> (u32, u64) {
        let status = self.wait_status("a ready server", |s| s.is_ready() && s.child.is_some()).await;
        let child = status.child.expect("a child");
        (child.pid, child.generation)
    }

    pub async fn call(&self, command: Command) -> Reply {
        self.handle.call(command).await.expect("the instance answers")
    }

    /// Closes the client's input (EOF) and waits for the instance to end.
    pub async fn close(mut self) -> Outcome {
        self.tx = None;
        self.finish().await
    }

    /// Waits for the instance to end on its own.
    pub async fn finish(&mut self) -> Outcome {
        let task = self.task.take().expect("still running");
        tokio::time::timeout(TIMEOUT, task).await.expect("the instance ends").expect("the instance did not panic")
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // A test that failed half way: dropping the instance kills its server's group.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Polls `f` until it returns `Some` or the deadline passes.
pub async fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
