//! `mcpvisor connect` against a socket-activated service, emulated the way systemd runs one with
//! `Accept=yes` and `StandardInput=socket`: each accepted connection becomes the stdin and stdout
//! of its own `mcpvisor run`.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use support::*;

#[test]
fn a_stdio_client_uses_a_socket_activated_server_through_connect() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("svc.sock");
    let log = dir.path().join("svc.log");
    let listener = UnixListener::bind(&sock).unwrap();
    let (log2, rundir) = (log.clone(), dir.path().join("run"));
    let service = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let input = OwnedFd::from(conn.try_clone().unwrap());
        let output = OwnedFd::from(conn);
        Command::new(mcpvisor_bin())
            .args(["run", "--backoff-initial", "10ms", "--log-file"])
            .arg(&log2)
            .arg("--")
            .arg(test_server_bin())
            .env("MCPVISOR_RUNTIME_DIR", rundir)
            .stdin(Stdio::from(input))
            .stdout(Stdio::from(output))
            .status()
            .unwrap()
    });

    let mut client = Command::new(mcpvisor_bin())
        .arg("connect")
        .arg(&sock)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = client.stdin.take().unwrap();
    let mut stdout = BufReader::new(client.stdout.take().unwrap());
    let mut call = |msg: Value| -> Value {
        writeln!(stdin, "{msg}").unwrap();
        if msg.get("id").is_none() {
            return Value::Null; // a notification: nothing comes back
        }
        loop {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
            if v.get("id") == msg.get("id") {
                return v;
            }
        }
    };
    let init = call(json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}));
    assert_eq!(init["result"]["serverInfo"]["name"], json!("test-server"));
    call(json!({"jsonrpc":"2.0","method":"notifications/initialized"}));
    let pid = wait_for("server pid", TIMEOUT, || pids_in_log(&std::fs::read_to_string(&log).ok()?).first().copied());
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    // tools/list is safe to repeat, so it succeeds whether it races the crash or follows it.
    let r = call(json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}));
    assert!(r["result"]["tools"].is_array(), "{r}");
    drop(stdin);
    let status = wait_for("connect to exit", TIMEOUT, || client.try_wait().unwrap());
    assert_eq!(status.code(), Some(0));
    assert_eq!(service.join().unwrap().code(), Some(0));
}

#[test]
fn connect_to_a_missing_socket_is_status_3() {
    let out =
        Command::new(mcpvisor_bin()).args(["connect", "/nonexistent/x.sock"]).stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(out.stdout.is_empty());
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim_end().lines().count(), 1);
}
