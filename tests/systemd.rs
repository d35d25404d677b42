//! sd_notify: a test-owned NOTIFY_SOCKET receives READY, STATUS, WATCHDOG and STOPPING in order,
//! and the watchdog stops while the server is Failed.

mod support;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::daemon::Daemon;
use support::*;

struct NotifySocket {
    _dir: tempfile::TempDir,
    path: String,
    sock: UnixDatagram,
}

impl NotifySocket {
    fn new() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = temp_path(dir.path(), "notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        NotifySocket { _dir: dir, path, sock }
    }

    /// Messages received until `done` says so (or the deadline passes).
    fn collect_until(&self, mut done: impl FnMut(&[String]) -> bool) -> Vec<String> {
        let mut msgs = Vec::new();
        let deadline = Instant::now() + TIMEOUT;
        let mut buf = [0u8; 4096];
        while !done(&msgs) {
            assert!(Instant::now() < deadline, "timed out; got {msgs:?}");
            if let Ok(n) = self.sock.recv(&mut buf) {
                for line in String::from_utf8_lossy(&buf[..n]).lines() {
                    msgs.push(line.to_owned());
                }
            }
        }
        msgs
    }
}

fn position(msgs: &[String], prefix: &str) -> Option<usize> {
    msgs.iter().position(|m| m.starts_with(prefix))
}

#[test]
fn ready_status_watchdog_and_stopping_arrive_in_order() {
    let notify = NotifySocket::new();
    let mut v = Visor::test_server(Vec::<String>::new())
        .spawn_with_env(&[("NOTIFY_SOCKET", &notify.path), ("WATCHDOG_USEC", "200000")]);
    v.initialize();
    let msgs = notify
        .collect_until(|m| position(m, "READY=1").is_some() && m.iter().filter(|x| *x == "WATCHDOG=1").count() >= 2);
    let ready = position(&msgs, "READY=1").unwrap();
    let status = position(&msgs, "STATUS=").expect("a STATUS line");
    assert!(msgs[status..].iter().any(|m| m.starts_with("STATUS=ready")), "{msgs:?}");
    assert!(ready <= msgs.iter().rposition(|m| m == "WATCHDOG=1").unwrap());
    v.signal(Signal::SIGTERM);
    let rest = notify.collect_until(|m| position(m, "STOPPING=1").is_some());
    assert!(!rest.iter().any(|m| m == "READY=1"), "READY only once: {rest:?}");
    assert_eq!(v.wait_exit(TIMEOUT).code(), Some(0));
}

#[test]
fn ready_is_reported_as_soon_as_the_server_is_up_before_any_client_message() {
    // No watchdog and a silent client: nothing but the server starting can trigger READY.
    let notify = NotifySocket::new();
    let mut v = Visor::test_server(Vec::<String>::new()).spawn_with_env(&[("NOTIFY_SOCKET", &notify.path)]);
    let msgs = notify.collect_until(|m| position(m, "READY=1").is_some() && position(m, "STATUS=").is_some());
    assert!(msgs.iter().any(|m| m.starts_with("STATUS=ready: server pid ")), "{msgs:?}");
    v.close_stdin();
    assert_eq!(v.wait_exit(TIMEOUT).code(), Some(0));
}

#[test]
fn a_failed_server_stops_the_watchdog() {
    let notify = NotifySocket::new();
    let v = Visor::test_server(["--exit-at-start", "1"])
        .args(["--max-restarts", "1", "--backoff-initial", "1ms"])
        .spawn_with_env(&[("NOTIFY_SOCKET", &notify.path), ("WATCHDOG_USEC", "100000")]);
    notify.collect_until(|m| m.iter().any(|x| x.starts_with("STATUS=failed")));
    v.wait_log("restart limit reached");
    // Half a second is five watchdog periods: none may come while Failed.
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    while start.elapsed() < Duration::from_millis(500) {
        if let Ok(n) = notify.sock.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            assert!(!text.contains("WATCHDOG=1"), "watchdog ping while failed: {text}");
        }
    }
}

#[test]
fn a_daemon_reports_ready_status_watchdog_and_stopping() {
    let notify = NotifySocket::new();
    let server = test_server_bin().display().to_string();
    let table = format!(
        "[servers.x]\ncommand = [{server:?}]\n[servers.y]\ncommand = [{server:?}]\nshare = \"shared\"\nstart = \"eager\"\n"
    );
    let env = [("NOTIFY_SOCKET", notify.path.as_str()), ("WATCHDOG_USEC", "200000")];
    let mut daemon = Daemon::start_with_env(&table, &["x", "y"], &env);
    let msgs = notify
        .collect_until(|m| position(m, "READY=1").is_some() && m.iter().filter(|x| *x == "WATCHDOG=1").count() >= 2);
    // READY=1 waits for the eager server's process: the status sent right after it counts it.
    let ready = position(&msgs, "READY=1").unwrap_or_default();
    let status = msgs[ready..].iter().find(|m| m.starts_with("STATUS=2 servers"));
    assert_eq!(
        status.map(String::as_str),
        Some("STATUS=2 servers: 1 ready, 1 idle, 0 failed, 0 starting or restarting; 0 clients"),
        "{msgs:?}"
    );
    daemon.signal(Signal::SIGTERM);
    notify.collect_until(|m| position(m, "STOPPING=1").is_some());
    assert_eq!(daemon.wait_exit(TIMEOUT).code(), Some(0));
}
