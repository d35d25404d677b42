//! The control socket and the client subcommands: status in each state, exit codes, restart,
//! stop, logs, metrics, naming, stale sockets, malformed requests and peer credentials.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{json, Value};
use support::*;

fn state_of(v: &Visor, name: &str) -> String {
    status_json(&v.runtime_dir, name).1["state"].as_str().unwrap_or("").to_owned()
}

fn wait_state(v: &Visor, name: &str, state: &str) -> Value {
    wait_for(&format!("state {state}"), TIMEOUT, || {
        let (_, s) = status_json(&v.runtime_dir, name);
        (s["state"] == json!(state)).then_some(s)
    })
}

#[test]
fn status_when_ready_lists_and_details_the_instance() {
    let mut v = Visor::test_server(["--stderr-lines", "1"]).args(["--name", "alpha"]).spawn();
    v.initialize();
    v.request(1, "stray", json!({"text": "noise"}));
    v.wait_control();
    let (code, s) = status_json(&v.runtime_dir, "alpha");
    assert_eq!(code, Some(0));
    assert_eq!(s["state"], json!("ready"));
    assert_eq!(s["name"], json!("alpha"));
    assert_eq!(s["child"]["generation"], json!(1));
    assert!(s["child"]["pid"].as_u64().unwrap() > 0);
    assert_eq!(s["restarts"]["limit"], json!(10));
    assert_eq!(s["protocol"]["era"], json!("handshake"));
    assert_eq!(s["protocol"]["version"], json!("2025-06-18"));
    assert_eq!(s["protocol"]["server_name"], json!("test-server"));
    assert_eq!(s["diverted_stdout_lines"], json!(1));
    assert!(s["messages_to_server"].as_u64().unwrap() >= 3);
    assert_eq!(s["stderr_tail"], json!([]));

    let out = v.ctl(&["status"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("NAME"), "{text}");
    assert!(text.lines().nth(1).unwrap().starts_with("alpha  ready"), "{text}");
    let out = v.ctl(&["status", "alpha"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("state         ready") && text.contains("test-server 1.0.0"), "{text}");
}

#[test]
fn status_in_backoff_and_after_restart_command() {
    let mut v = Visor::test_server(Vec::<String>::new()).args(["--name", "b", "--backoff-initial", "30s"]).spawn();
    v.initialize();
    v.request(1, "crash", json!({"code": 4}));
    let s = wait_state(&v, "b", "backoff");
    assert_eq!(s["last_exit"]["code"], json!(4));
    assert_eq!(s["last_exit"]["cause"], json!("exited"));
    assert!(s["next_restart_in_secs"].as_f64().unwrap() > 5.0, "{s}");
    assert_eq!(s["child"], Value::Null);
    assert_eq!(status_json(&v.runtime_dir, "b").0, Some(1), "not ready: exit status 1");
    // `restart` starts it now instead of in 30 s.
    let out = v.ctl(&["restart", "b"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let s = wait_state(&v, "b", "ready");
    assert_eq!(s["child"]["generation"], json!(2));
    assert!(v.request(2, "echo", json!({}))["result"].is_object());
}

#[test]
fn status_when_failed_and_restart_clears_it() {
    let dir = tempfile::tempdir().unwrap();
    let marker = temp_path(dir.path(), "fixed");
    // Fails until the marker exists.
    let script = format!("[ -e {marker} ] || {{ echo broken >&2; exit 7; }}; exec {}", test_server_bin().display());
    let v = Visor::command(["sh", "-c", &script])
        .args(["--name", "f", "--max-restarts", "2", "--backoff-initial", "1ms"])
        .spawn();
    let s = wait_state(&v, "f", "failed");
    assert_eq!(s["restarts"]["in_window"], json!(2));
    assert_eq!(s["last_exit"]["code"], json!(7));
    assert!(s["stderr_tail"].as_array().unwrap().iter().any(|l| l == "broken"), "{s}");
    assert!(s["restarts"]["oldest_leaves_in_secs"].as_f64().unwrap() > 3000.0);
    let text = String::from_utf8_lossy(&v.ctl(&["status", "f"]).stdout).into_owned();
    assert!(text.contains("state         failed") && text.contains("broken"), "{text}");
    std::fs::write(&marker, "").unwrap();
    assert_eq!(v.ctl(&["restart", "f"]).status.code(), Some(0));
    let s = wait_state(&v, "f", "ready");
    assert_eq!(s["restarts"]["in_window"], json!(0), "the Failed state and its history were cleared");
}

#[test]
fn status_while_draining_then_stop_command_exits() {
    let mut v = Visor::test_server(Vec::<String>::new()).args(["--name", "d"]).spawn();
    v.initialize();
    v.send(&json!({"jsonrpc":"2.0","id":"s","method":"slow","params":{"ms":1500}}));
    v.request("sync", "echo", json!({}));
    v.signal(Signal::SIGTERM);
    let s = wait_state(&v, "d", "draining");
    assert_eq!(s["in_flight"], json!(1));
    assert_eq!(v.wait_exit(TIMEOUT).code(), Some(0));

    let mut w = Visor::test_server(Vec::<String>::new()).args(["--name", "e"]).spawn();
    w.initialize();
    w.wait_control();
    assert_eq!(w.ctl(&["stop", "e"]).status.code(), Some(0));
    assert_eq!(w.wait_exit(TIMEOUT).code(), Some(0));
    assert!(!w.runtime_dir.join("e.sock").exists(), "socket removed at exit");
}

#[test]
fn no_instance_is_status_3() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(ctl(dir.path(), &["status"]).status.code(), Some(3));
    assert_eq!(ctl(dir.path(), &["status", "ghost"]).status.code(), Some(3));
    assert_eq!(ctl(dir.path(), &["logs", "ghost"]).status.code(), Some(3));
    let out = ctl(dir.path(), &["status", "--json"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
}

#[test]
fn logs_and_metrics_commands() {
    let mut v = Visor::test_server(["--stderr-lines", "5"]).args(["--name", "m"]).spawn();
    v.initialize();
    v.request(1, "echo", json!({}));
    v.wait_control();
    let out = v.ctl(&["logs", "m", "-n", "2"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let out = v.ctl(&["metrics", "m"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(r#"mcpvisor_child_up{name="m"} 1"#), "{text}");
    assert!(text.contains(r#"mcpvisor_requests_total{name="m"} 2"#), "{text}");
    assert!(text.contains(r#"mcpvisor_request_duration_seconds_count{name="m"} 2"#), "{text}");
    assert!(text.contains(r#"mcpvisor_state{name="m",state="ready"} 1"#), "{text}");
}

#[test]
fn two_instances_with_one_name_and_a_stale_socket() {
    use std::os::unix::fs::PermissionsExt;
    let shared = tempfile::tempdir().unwrap();
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    // A socket file left by a dead instance.
    drop(std::os::unix::net::UnixListener::bind(shared.path().join("same.sock")).unwrap());
    let mut a = Visor::test_server(Vec::<String>::new()).args(["--name", "same"]).runtime_dir(shared.path()).spawn();
    a.initialize();
    a.wait_log("control socket ready");
    let mut b = Visor::test_server(Vec::<String>::new()).args(["--name", "same"]).runtime_dir(shared.path()).spawn();
    b.initialize();
    b.wait_log("control socket ready");
    assert!(b.log().contains("this one is same-2"), "{}", b.log());
    let out = ctl(shared.path(), &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("same ") && text.contains("same-2 "), "{text}");
    assert_eq!(status_json(shared.path(), "same").1["mcpvisor_pid"], json!(a.pid()));
    assert_eq!(status_json(shared.path(), "same-2").1["mcpvisor_pid"], json!(b.pid()));
}

#[test]
fn default_name_comes_from_the_command() {
    let mut v = Visor::test_server(Vec::<String>::new()).spawn();
    v.initialize();
    v.wait_control();
    assert_eq!(state_of(&v, "test-server"), "ready");
}

fn raw_request(path: &std::path::Path, bytes: &[u8]) -> Value {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(bytes);
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

#[test]
fn malformed_control_requests_get_errors_and_the_relay_goes_on() {
    let mut v = Visor::test_server(Vec::<String>::new()).args(["--name", "x"]).spawn();
    v.initialize();
    v.wait_control();
    let sock = v.runtime_dir.join("x.sock");
    let r = raw_request(&sock, b"garbage\n");
    assert_eq!((r["ok"].clone(), r["v"].clone()), (json!(false), json!(1)));
    assert!(r["error"].as_str().unwrap().contains("malformed"));
    let r = raw_request(&sock, b"{\"v\":1,\"cmd\":\"self-destruct\"}\n");
    assert!(r["error"].as_str().unwrap().contains("unknown"), "{r}");
    let r = raw_request(&sock, b"{\"v\":2,\"cmd\":\"status\"}\n");
    assert!(r["error"].as_str().unwrap().contains("version"), "{r}");
    let huge = vec![b'x'; 200_000];
    let r = raw_request(&sock, &huge);
    assert!(r["error"].as_str().unwrap().contains("larger"), "{r}");
    let r = raw_request(&sock, b"{\"v\":1,\"cmd\":\"status\"}\n");
    assert_eq!(r["status"]["state"], json!("ready"));
    assert!(v.request(1, "echo", json!({}))["result"].is_object());
}

#[test]
fn listing_instances_leaves_no_warnings_in_their_logs() {
    // `mcpvisor status` connects to every socket to see whether it is live, then hangs up.
    let mut v = Visor::test_server(Vec::<String>::new()).args(["--name", "quiet"]).spawn();
    v.initialize();
    v.wait_control();
    for _ in 0..3 {
        assert_eq!(v.ctl(&["status"]).status.code(), Some(0));
    }
    // A real malformed request afterwards: once its warning is in the log, the log has caught up.
    raw_request(&v.runtime_dir.join("quiet.sock"), b"garbage\n");
    v.wait_log("malformed request");
    assert_eq!(v.log_count("control request failed"), 1, "{}", v.log());
}

#[test]
fn socket_and_directory_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let mut v = Visor::test_server(Vec::<String>::new()).args(["--name", "p"]).spawn();
    v.initialize();
    v.wait_control();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&v.runtime_dir), 0o700);
    assert_eq!(mode(&v.runtime_dir.join("p.sock")), 0o600);
}

#[test]
fn another_uid_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    if !nix::unistd::Uid::effective().is_root() {
        println!("skipping: refusing another uid needs root to act as one");
        return;
    }
    let mut v = Visor::test_server(Vec::<String>::new()).args(["--name", "u"]).spawn();
    v.initialize();
    v.wait_control();
    // Open the file permissions so that only the peer-credential check stands in the way.
    std::fs::set_permissions(&v.runtime_dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    let sock = v.runtime_dir.join("u.sock");
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = std::process::Command::new(mcpvisor_bin())
        .args(["status", "u", "--json"])
        .env("MCPVISOR_RUNTIME_DIR", &v.runtime_dir)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("\"state\""), "a stranger got the status");
    v.wait_log("control connection from another user refused");
    assert!(v.request(1, "echo", json!({}))["result"].is_object());
}

#[test]
fn http_metrics_healthz_and_readyz() {
    let mut v = Visor::test_server(Vec::<String>::new())
        .args(["--name", "h", "--metrics-addr", "127.0.0.1:0", "--backoff-initial", "30s"])
        .spawn();
    v.initialize();
    let log = v.wait_log("metrics endpoint ready");
    let addr = log.split("metrics endpoint ready addr=").nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    let (code, body) = http_get(&addr, "/metrics");
    assert_eq!(code, 200);
    assert!(body.contains(r#"mcpvisor_child_up{name="h"} 1"#), "{body}");
    assert_eq!(http_get(&addr, "/healthz").0, 200);
    assert_eq!(http_get(&addr, "/readyz"), (200, "ready\n".to_owned()));
    assert_eq!(http_get(&addr, "/nope").0, 404);
    v.request(1, "crash", json!({}));
    wait_for("readyz to report backoff", TIMEOUT, || {
        let (code, body) = http_get(&addr, "/readyz");
        (code == 503 && body.trim() == "backoff").then_some(())
    });
    assert_eq!(http_get(&addr, "/healthz").0, 200, "the process is alive even when the server is not");
}

#[test]
fn a_bad_metrics_address_is_a_usage_error() {
    let out = ctl(std::path::Path::new("/nonexistent"), &["run", "--metrics-addr", "nonsense", "--", "x"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_slow_control_client_is_cut_off_without_blocking_anything() {
    let mut v = Visor::test_server(Vec::<String>::new()).args(["--name", "slow"]).spawn();
    v.initialize();
    v.wait_control();
    let sock = v.runtime_dir.join("slow.sock");
    let mut idle = UnixStream::connect(&sock).unwrap();
    idle.write_all(b"{\"v\":1,").unwrap(); // and then nothing more
                                           // Meanwhile the relay and other control clients are served.
    assert!(v.request(1, "echo", json!({}))["result"].is_object());
    assert_eq!(raw_request(&sock, b"{\"v\":1,\"cmd\":\"status\"}\n")["ok"], json!(true));
    idle.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut line = String::new();
    BufReader::new(&idle).read_line(&mut line).unwrap();
    let r: Value = serde_json::from_str(&line).unwrap();
    assert!(r["error"].as_str().unwrap().contains("no complete request"), "{r}");
}

#[test]
fn environment_values_reach_the_server_but_never_logs_status_or_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("mcpvisor.toml");
    let server = test_server_bin().display().to_string();
    std::fs::write(&cfg, format!("command = [{server:?}]\n[env]\nFILE_TOKEN = \"file-secret-4711\"\n")).unwrap();
    let mut v = Visor::command(Vec::<String>::new())
        .args(["--config", cfg.to_str().unwrap(), "--env", "CLI_TOKEN=cli-secret-0815", "--name", "sec"])
        .args(["--log-level", "debug", "--backoff-initial", "10ms"])
        .spawn_without_command();
    v.initialize();
    let got =
        |v: &mut Visor, id: i64, name: &str| v.request(id, "env", json!({ "name": name }))["result"]["value"].clone();
    assert_eq!(got(&mut v, 1, "FILE_TOKEN"), json!("file-secret-4711"));
    assert_eq!(got(&mut v, 2, "CLI_TOKEN"), json!("cli-secret-0815"));
    // A crash and a restart go through the paths that describe the server.
    v.request(3, "crash", json!({}));
    assert_eq!(got(&mut v, 4, "CLI_TOKEN"), json!("cli-secret-0815"));
    v.wait_control();
    let status = String::from_utf8_lossy(&v.ctl(&["status", "sec", "--json"]).stdout).into_owned();
    let keys: Value = serde_json::from_str::<Value>(&status).unwrap()["env_keys"].clone();
    assert_eq!(keys, json!(["FILE_TOKEN", "CLI_TOKEN"]), "{status}");
    let human = String::from_utf8_lossy(&v.ctl(&["status", "sec"]).stdout).into_owned();
    assert!(human.contains("FILE_TOKEN, CLI_TOKEN"), "{human}");
    let metrics = String::from_utf8_lossy(&v.ctl(&["metrics", "sec"]).stdout).into_owned();
    for text in [&status, &human, &metrics, &v.log()] {
        assert!(!text.contains("file-secret-4711") && !text.contains("cli-secret-0815"), "a value leaked:\n{text}");
    }
    // A malformed --env is refused without repeating what may be a secret.
    let out = std::process::Command::new(mcpvisor_bin())
        .args(["run", "--env", "ghp_notakey", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("ghp_notakey"));
}
