//! Hot standby (`--standby N`): spares started once the session exists, warmed with the replayed
//! `initialize`, promoted on a crash, a hang or a requested restart with the rest of the session
//! replayed on them exactly once; spares that die are replaced under their own limit, and a
//! server that cannot run twice has standby turned off.

mod support;

use serde_json::{json, Value};
use support::*;

const NAME: &str = "standby";

fn status(v: &Visor) -> Value {
    status_json(&v.runtime_dir, NAME).1
}

/// Waits until the instance has a warm spare; returns its pid.
fn warm_spare(v: &Visor) -> i64 {
    wait_for("a warm spare", TIMEOUT, || {
        let s = status(v);
        s["spares"].as_array()?.iter().find(|p| p["state"] == json!("warm"))?["pid"].as_i64()
    })
}

/// The methods a process with `pid` received, from its own record file.
fn methods_of(record: &str, pid: i64) -> Vec<String> {
    let path = record.replace("{pid}", &pid.to_string());
    recorded(&path).iter().map(|m| m["method"].as_str().unwrap_or("<response>").to_owned()).collect()
}

fn record_per_pid() -> (tempfile::TempDir, String) {
    let (dir, path) = record_file();
    (dir, format!("{path}-{{pid}}"))
}

#[test]
fn a_crash_is_taken_over_by_the_warm_spare_with_the_session_replayed_once() {
    let (_dir, rec) = record_per_pid();
    // A backoff far above the test's patience: only a spare can answer in time.
    let mut v = Visor::test_server(["--record", &rec])
        .args(["--name", NAME, "--standby", "1", "--backoff-initial", "1h", "--backoff-max", "1h"])
        .spawn();
    v.initialize();
    v.request(1, "logging/setLevel", json!({"level": "debug"}));
    v.request(2, "resources/subscribe", json!({"uri": "test://a"}));
    let first = v.request(3, "echo", json!({}))["result"]["pid"].as_i64().expect("pid");
    let spare = warm_spare(&v);
    assert_ne!(spare, first);
    assert_eq!(methods_of(&rec, spare), ["initialize"], "a spare gets nothing but the replayed initialize");

    let e = v.request(4, "crash", json!({"code": 7}));
    assert_eq!(e["error"]["code"], json!(-32603), "{e}");
    let r = v.request(5, "echo", json!({"after": "crash"}));
    assert_eq!(r["result"]["pid"].as_i64(), Some(spare), "the spare answers: {r}");
    assert_eq!(
        methods_of(&rec, spare),
        ["initialize", "notifications/initialized", "logging/setLevel", "resources/subscribe", "echo"],
        "the handshake replayed on the spare exactly once, before the client's call"
    );
    let s = status(&v);
    assert_eq!(s["child"]["pid"].as_i64(), Some(spare), "{s}");
    assert_eq!(s["restarts"]["in_window"], json!(1), "a promotion counts as a restart: {s}");
    let metrics = String::from_utf8_lossy(&v.ctl(&["metrics", NAME]).stdout).into_owned();
    assert!(metrics.contains(&format!("mcpvisor_promotions_total{{name=\"{NAME}\"}} 1")), "{metrics}");
    // A new spare takes the promoted one's place.
    let next = warm_spare(&v);
    assert!(next != spare && next != first);
}

#[test]
fn a_hung_server_is_replaced_at_once_while_its_stop_sequence_runs() {
    let mut v = Visor::test_server(Vec::<String>::new())
        .args(["--name", NAME, "--standby", "1", "--ping-interval", "100ms", "--ping-timeout", "100ms"])
        .args(["--ping-failures", "1", "--stop-grace", "20s", "--kill-after", "20s"])
        .spawn();
    v.initialize();
    let first = v.request(1, "echo", json!({}))["result"]["pid"].as_i64().expect("pid");
    let spare = warm_spare(&v);
    v.send(&json!({"jsonrpc": "2.0", "id": 2, "method": "hang"}));
    let e = v.response(&json!(2));
    assert_eq!(e["error"]["data"]["cause"], json!("hung"), "{e}");
    let r = v.request(3, "echo", json!({}));
    assert_eq!(r["result"]["pid"].as_i64(), Some(spare), "{r}");
    assert!(process_alive(first as i32), "the hung server is still in its stop sequence (20 s)");
    // A second SIGTERM skips the waits: the retiring server is killed too.
    v.signal(nix::sys::signal::Signal::SIGTERM);
    v.wait_log("draining and shutting down");
    v.signal(nix::sys::signal::Signal::SIGTERM);
    v.wait_exit(TIMEOUT);
    wait_for("the hung server gone", TIMEOUT, || (!process_alive(first as i32)).then_some(()));
}

#[test]
fn a_requested_restart_promotes_the_spare() {
    let mut v = Visor::test_server(Vec::<String>::new()).args(["--name", NAME, "--standby", "1"]).spawn();
    v.initialize();
    let first = v.request(1, "echo", json!({}))["result"]["pid"].as_i64().expect("pid");
    let spare = warm_spare(&v);
    assert!(v.ctl(&["restart", NAME]).status.success());
    wait_for("the spare promoted", TIMEOUT, || (status(&v)["child"]["pid"].as_i64() == Some(spare)).then_some(()));
    assert_eq!(v.request(2, "echo", json!({}))["result"]["pid"].as_i64(), Some(spare));
    wait_for("the old server stopped", TIMEOUT, || (!process_alive(first as i32)).then_some(()));
    assert_eq!(status(&v)["restarts"]["in_window"], json!(0), "a requested restart is not counted");
}

#[test]
fn a_spare_that_dies_is_replaced_and_the_server_goes_on() {
    let mut v = Visor::test_server(Vec::<String>::new())
        .args(["--name", NAME, "--standby", "1", "--backoff-initial", "10ms"])
        .spawn();
    v.initialize();
    let first = v.request(1, "echo", json!({}))["result"]["pid"].as_i64().expect("pid");
    let spare = warm_spare(&v);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(spare as i32), nix::sys::signal::Signal::SIGKILL).expect("kill");
    let next = wait_for("a new spare", TIMEOUT, || Some(warm_spare(&v)).filter(|p| *p != spare));
    assert_ne!(next, first);
    assert_eq!(v.request(2, "echo", json!({}))["result"]["pid"].as_i64(), Some(first), "the active one is untouched");
    let metrics = String::from_utf8_lossy(&v.ctl(&["metrics", NAME]).stdout).into_owned();
    assert!(metrics.contains(&format!("mcpvisor_spare_failures_total{{name=\"{NAME}\"}} 1")), "{metrics}");
    assert!(metrics.contains(&format!("mcpvisor_restarts_total{{name=\"{NAME}\"}} 0")), "{metrics}");
}

#[test]
fn a_server_that_cannot_run_twice_has_standby_turned_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lock = temp_path(dir.path(), "lock");
    let mut v = Visor::test_server(["--lock", lock.as_str()])
        .args(["--name", NAME, "--standby", "1", "--backoff-initial", "10ms"])
        .spawn();
    v.initialize();
    let s = wait_for("standby off", TIMEOUT, || Some(status(&v)).filter(|s| s["standby_off"].is_string()));
    let why = s["standby_off"].as_str().unwrap_or_default();
    assert!(why.contains("exclusive lock or port") && why.contains("exit code 75"), "{why}");
    assert!(v.log().contains("standby is off for this server"), "a WARN says why");
    let text = String::from_utf8_lossy(&v.ctl(&["status", NAME]).stdout).into_owned();
    assert!(text.lines().any(|l| l.starts_with("standby ") && l.contains(" off: ")), "{text}");
    assert!(v.request(1, "echo", json!({}))["result"].is_object(), "the server itself is fine");
}

#[test]
fn the_restart_limit_counts_promotions() {
    let mut v = Visor::test_server(Vec::<String>::new())
        .args(["--name", NAME, "--standby", "1", "--max-restarts", "1", "--backoff-initial", "10ms"])
        .spawn();
    v.initialize();
    let spare = warm_spare(&v);
    assert_eq!(v.request(1, "crash", json!({}))["error"]["code"], json!(-32603));
    assert_eq!(v.request(2, "echo", json!({}))["result"]["pid"].as_i64(), Some(spare), "promoted");
    let second_spare = warm_spare(&v);
    v.request(3, "crash", json!({}));
    let e = v.request(4, "echo", json!({}));
    assert_eq!(e["error"]["data"]["reason"], json!("restart_limit"), "no promotion past the limit: {e}");
    let s = status(&v);
    assert_eq!(s["state"], json!("failed"), "{s}");
    assert!(s["spares"].as_array().is_some_and(|a| a.iter().any(|p| p["pid"].as_i64() == Some(second_spare))), "{s}");
}

#[test]
fn stateless_era_spares_are_only_probed_and_take_over_open_subscriptions() {
    let (_dir, rec) = record_per_pid();
    let mut v = Visor::test_server(["--record", &rec, "--era", "stateless"])
        .args(["--name", NAME, "--standby", "1", "--backoff-initial", "1h", "--backoff-max", "1h"])
        .spawn();
    let meta = json!({"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                                "io.modelcontextprotocol/clientCapabilities": {}}});
    let first = v.request(1, "tools/list", meta.clone())["result"]["pid"].as_i64().expect("pid");
    v.send(&json!({"jsonrpc": "2.0", "id": "sub-1", "method": "subscriptions/listen", "params": meta}));
    v.recv_matching("the subscription's notification", |m| m["method"].is_string());
    let spare = warm_spare(&v);
    // Nothing of the session: only the probe that tells when it can answer.
    assert_eq!(methods_of(&rec, spare), ["server/discover"]);
    v.send(&json!({"jsonrpc": "2.0", "id": 2, "method": "crash", "params": meta}));
    let r = v.request(3, "tools/list", meta.clone());
    assert_eq!(r["result"]["pid"].as_i64(), Some(spare), "{r}");
    assert_ne!(spare, first);
    let got = methods_of(&rec, spare);
    assert!(got.contains(&"subscriptions/listen".to_owned()), "the open subscription is sent again: {got:?}");
}

/// A daemon with one server `name` running the test server with `args` and `extra` keys.
fn daemon_with(name: &str, args: &[&str], extra: &str) -> support::daemon::Daemon {
    let mut command = vec![test_server_bin().display().to_string()];
    command.extend(args.iter().map(|a| a.to_string()));
    let backoff = if extra.contains("backoff-initial") { "" } else { "backoff-initial = \"10ms\"\n" };
    let table = format!("[servers.{name}]\ncommand = {command:?}\n{backoff}{extra}\n");
    support::daemon::Daemon::start(&table, &[name])
}

/// Waits until server `name` of `daemon` has a spare in `state`; returns its pid.
fn daemon_spare(daemon: &support::daemon::Daemon, name: &str, state: &str) -> i64 {
    let s = daemon.wait_status(name, "a spare", |s| {
        s["spares"].as_array().is_some_and(|a| a.iter().any(|p| p["state"] == json!(state)))
    });
    let spares = s["spares"].as_array().cloned().unwrap_or_default();
    spares.iter().find(|p| p["state"] == json!(state)).and_then(|p| p["pid"].as_i64()).expect("a pid")
}

#[test]
fn a_new_client_of_a_per_client_server_gets_a_process_from_the_pool() {
    // A server that takes 3 s to start: a pooled one has started before its client comes.
    let mut daemon = daemon_with("p", &["--start-delay", "3000"], "standby = 1");
    let pooled = daemon_spare(&daemon, "p", "pooled");
    let mut client = daemon.connect("p");
    let r = client.initialize();
    assert!(r["result"].is_object(), "{r}");
    assert_eq!(client.request(1, "echo", json!({}))["result"]["pid"].as_i64(), Some(pooled), "the pooled process");
    // The pool is topped up for the next client.
    let next = daemon_spare(&daemon, "p", "pooled");
    assert_ne!(next, pooled);
    let s = daemon.status("p");
    assert!(s["spares"].as_array().is_some_and(|a| a.len() == 1), "{s}");
    // The daemon's stop sequence stops the pooled process too.
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    drop(client);
    assert_eq!(daemon.wait_exit(TIMEOUT).code(), Some(0));
    assert!(!process_alive(next as i32), "no pooled process is left behind");
}

#[test]
fn a_pooled_process_that_dies_is_replaced() {
    let daemon = daemon_with("p", &[], "standby = 1");
    let pooled = daemon_spare(&daemon, "p", "pooled");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pooled as i32), nix::sys::signal::Signal::SIGKILL).expect("kill");
    let next = wait_for("a new pooled process", TIMEOUT, || {
        Some(daemon_spare(&daemon, "p", "pooled")).filter(|p| *p != pooled)
    });
    let mut client = daemon.connect("p");
    client.initialize();
    assert_eq!(client.request(1, "echo", json!({}))["result"]["pid"].as_i64(), Some(next));
}

#[test]
fn a_shared_server_keeps_a_warm_spare_for_all_its_clients() {
    let daemon =
        daemon_with("s", &[], "share = \"shared\"\nstandby = 1\nbackoff-initial = \"1h\"\nbackoff-max = \"1h\"");
    let mut a = daemon.connect("s");
    a.initialize();
    let spare = daemon_spare(&daemon, "s", "warm");
    let mut b = daemon.connect("s");
    b.initialize();
    assert!(a.request(1, "crash", json!({}))["error"].is_object());
    assert_eq!(b.request(1, "echo", json!({}))["result"]["pid"].as_i64(), Some(spare), "the spare serves everyone");
    assert_eq!(a.request(2, "echo", json!({}))["result"]["pid"].as_i64(), Some(spare));
}

#[test]
fn a_client_that_initializes_again_gets_a_spare_warmed_for_its_new_session() {
    let (_dir, rec) = record_per_pid();
    let mut v = Visor::test_server(["--record", &rec])
        .args(["--name", NAME, "--standby", "1", "--backoff-initial", "1h", "--backoff-max", "1h"])
        .spawn();
    v.initialize();
    let old = warm_spare(&v);
    let again =
        json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "again", "version": "2"}});
    assert!(v.request(1, "initialize", again)["result"].is_object());
    v.notify("notifications/initialized", json!({}));
    let new = wait_for("a spare for the new session", TIMEOUT, || Some(warm_spare(&v)).filter(|p| *p != old));
    let path = rec.replace("{pid}", &new.to_string());
    assert_eq!(recorded(&path)[0]["params"]["clientInfo"]["name"], json!("again"));
    assert!(v.request(2, "crash", json!({}))["error"].is_object());
    let r = v.request(3, "echo", json!({}));
    assert_eq!(r["result"]["pid"].as_i64(), Some(new), "{r}");
}

#[test]
fn sigterm_stops_the_spares_with_the_server() {
    let mut v = Visor::test_server(Vec::<String>::new()).args(["--name", NAME, "--standby", "2"]).spawn();
    v.initialize();
    let active = v.request(1, "echo", json!({}))["result"]["pid"].as_i64().expect("pid");
    let s = wait_for("two warm spares", TIMEOUT, || {
        Some(status(&v)).filter(|s| {
            s["spares"].as_array().is_some_and(|a| a.iter().filter(|p| p["state"] == json!("warm")).count() == 2)
        })
    });
    let spares: Vec<i64> = s["spares"].as_array().into_iter().flatten().filter_map(|p| p["pid"].as_i64()).collect();
    v.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(v.wait_exit(TIMEOUT).code(), Some(0));
    for pid in spares.into_iter().chain([active]) {
        assert!(!process_alive(pid as i32), "{pid} outlived mcpvisor");
    }
    // The server and both spares saw their stdin close (a graceful stop, not a SIGKILL).
    assert_eq!(v.log_count("test-server: stdin closed"), 3, "{}", v.log());
}
