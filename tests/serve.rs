//! `mcpvisor serve` with the real binary: a daemon supervising servers from a file, clients that
//! reach them with `mcpvisor connect NAME`, and the control commands on a daemon's servers.

mod support;

use nix::sys::signal::Signal;
use serde_json::{json, Value};
use support::daemon::Daemon;
use support::*;

fn server_table(name: &str, extra: &str) -> String {
    format!(
        "[servers.{name}]\ncommand = [{:?}]\nbackoff-initial = \"10ms\"\n{extra}\n",
        test_server_bin().display().to_string()
    )
}

fn pid_of(r: &Value) -> i64 {
    r["result"]["pid"].as_i64().unwrap_or_else(|| panic!("no pid in {r}"))
}

#[test]
fn each_client_of_a_per_client_server_gets_its_own_process_and_survives_the_others_crash() {
    let daemon = Daemon::start(&server_table("echo", ""), &["echo"]);
    let idle = daemon.status("echo");
    assert_eq!((idle["state"].clone(), idle["share"].clone()), (json!("idle"), json!("per-client")), "{idle}");

    let mut a = daemon.connect("echo");
    let mut b = daemon.connect("echo");
    a.initialize();
    b.initialize();
    let pid_a = pid_of(&a.request(1, "echo", json!({})));
    let pid_b = pid_of(&b.request(1, "echo", json!({})));
    assert_ne!(pid_a, pid_b, "each client has a process of its own");
    let status = daemon.wait_status("echo", "two clients", |s| s["clients"] == json!(2));
    assert_eq!(status["processes"].as_array().map(Vec::len), Some(2), "{status}");
    assert_eq!(status["state"], json!("ready"), "{status}");

    // A's server crashes: A gets the error and a new process; B never notices.
    let e = a.request(2, "crash", json!({"code": 3}));
    assert_eq!(e["error"]["data"]["reason"], json!("server_crashed"), "{e}");
    let again = pid_of(&a.request(3, "echo", json!({})));
    assert_ne!(again, pid_a);
    assert_eq!(pid_of(&b.request(2, "echo", json!({}))), pid_b);
    let status = daemon.status("echo");
    assert_eq!(status["restarts"]["in_window"], json!(1), "{status}");

    a.close_stdin();
    assert_eq!(a.wait_exit(TIMEOUT).code(), Some(0));
    b.close_stdin();
    assert_eq!(b.wait_exit(TIMEOUT).code(), Some(0));
    let status = daemon.wait_status("echo", "no clients", |s| s["clients"] == json!(0) && s["state"] == json!("idle"));
    assert_eq!(status["processes"], json!([]), "{status}");
    for pid in [pid_a, again, pid_b] {
        wait_for("the client's server to stop", TIMEOUT, || (!process_alive(pid as i32)).then_some(()));
    }
}

#[test]
fn the_restart_limit_is_the_servers_and_holds_across_a_restart_of_the_daemon() {
    let state = tempfile::tempdir().expect("tempdir");
    let env = [("XDG_STATE_HOME", state.path().to_str().expect("utf-8"))];
    let config = server_table("flaky", "max-restarts = 2\nrestart-window = \"1h\"\n");
    let mut daemon = Daemon::start_with_env(&config, &["flaky"], &env);
    let mut a = daemon.connect("flaky");
    let mut b = daemon.connect("flaky");
    a.initialize();
    b.initialize();
    // One crash each: two restarts of the server, its whole allowance.
    for client in [&mut a, &mut b] {
        let e = client.request(2, "crash", json!({"code": 3}));
        assert_eq!(e["error"]["data"]["reason"], json!("server_crashed"), "{e}");
        pid_of(&client.request(3, "echo", json!({})));
    }
    let status = daemon.status("flaky");
    assert_eq!(status["restarts"]["in_window"], json!(2), "{status}");
    // A third crash, in either process, finds the limit reached.
    a.request(4, "crash", json!({"code": 3}));
    let e = a.request(5, "echo", json!({}));
    assert_eq!(e["error"]["data"]["reason"], json!("restart_limit"), "{e}");
    a.close_stdin();
    b.close_stdin();
    // The server's history outlives its clients in status ...
    let status = daemon.wait_status("flaky", "no clients", |s| s["clients"] == json!(0));
    assert_eq!(status["restarts"]["in_window"], json!(2), "{status}");
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(TIMEOUT).code(), Some(0));
    assert!(state.path().join("mcpvisor/flaky.restarts").exists(), "the history is kept on disk");

    // ... and the daemon: the next one starts with the limit already reached.
    let daemon = Daemon::start_with_env(&config, &["flaky"], &env);
    let status = daemon.status("flaky");
    assert_eq!(status["restarts"]["in_window"], json!(2), "{status}");
    let mut c = daemon.connect("flaky");
    c.initialize();
    pid_of(&c.request(1, "echo", json!({})));
    c.request(2, "crash", json!({"code": 3}));
    let e = c.request(3, "echo", json!({}));
    assert_eq!(e["error"]["data"]["reason"], json!("restart_limit"), "{e}");
    // An operator's restart gives the server its allowance back, on disk too.
    assert!(daemon.ctl(&["restart", "flaky"]).status.success());
    pid_of(&c.request(4, "echo", json!({})));
    assert_eq!(daemon.status("flaky")["restarts"]["in_window"], json!(0));
    wait_for("the cleared history on disk", TIMEOUT, || {
        std::fs::read_to_string(state.path().join("mcpvisor/flaky.restarts")).ok().filter(|t| t.is_empty())
    });
}

#[test]
fn with_a_log_dir_each_server_logs_to_a_file_of_its_own_rotated_by_size() {
    let config =
        format!("log-max-size = \"4KiB\"\nlog-max-files = 2\n{}{}", server_table("a", ""), server_table("b", ""));
    let mut daemon = Daemon::start_with_log_dir(&config, &["a", "b"]);
    let logs = daemon.dir.path().join("logs");
    let mut a = daemon.connect("a");
    let mut b = daemon.connect("b");
    a.initialize();
    b.initialize();
    a.request(1, "stderr", json!({"lines": 300}));
    b.request(1, "stray", json!({"text": "only-in-b"}));
    let read = |name: &str| std::fs::read_to_string(logs.join(name)).unwrap_or_default();
    wait_for("b's stray line in b.log", TIMEOUT, || read("b.log").contains("only-in-b").then_some(()));
    wait_for("a's last stderr line in a.log", TIMEOUT, || read("a.log").contains("log line 299").then_some(()));
    // a's 300 lines (about 30 KiB) went through many 4 KiB files, of which two are kept.
    assert!(!logs.join("a.log.2").exists(), "only log-max-files files are kept");
    for name in ["a.log", "a.log.1"] {
        let text = read(name);
        assert!(!text.is_empty() && text.len() <= 4096, "{name}: {} bytes", text.len());
        assert!(!text.contains("only-in-b"), "{name} has b's line: {text}");
    }
    assert!(!read("b.log").contains("test-server: log line"), "b.log has a's lines");
    let daemon_log = read("mcpvisor.log");
    assert!(daemon_log.contains("mcpvisor serve ready"), "{daemon_log}");
    assert!(!daemon_log.contains("test-server: log line") && !daemon_log.contains("only-in-b"), "{daemon_log}");
    // The log's writer thread lets the daemon exit.
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(TIMEOUT).code(), Some(0));
}

#[test]
fn clients_beyond_max_clients_get_an_error_that_says_so() {
    let daemon = Daemon::start(&server_table("one", "max-clients = 1"), &["one"]);
    let mut first = daemon.connect("one");
    first.initialize();
    daemon.wait_status("one", "the first client", |s| s["clients"] == json!(1));
    let mut second = daemon.connect("one");
    let e = second.request(0, "initialize", json!({"protocolVersion": "2025-06-18", "capabilities": {}}));
    assert_eq!(e["error"]["data"]["reason"], json!("max_clients"), "{e}");
    assert!(e["error"]["message"].as_str().unwrap_or("").contains("max-clients"), "{e}");
    assert_eq!(second.wait_exit(TIMEOUT).code(), Some(0), "the daemon closes the connection");
    assert!(first.request(1, "echo", json!({}))["result"].is_object(), "the first client is served on");
}

#[test]
fn connect_with_no_daemon_answers_with_what_to_start_and_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let mut client = Visor::connect("nothing-here", dir.path());
    let e = client.request(0, "initialize", json!({"protocolVersion": "2025-06-18", "capabilities": {}}));
    assert_eq!(e["error"]["data"]["reason"], json!("no_daemon"), "{e}");
    let message = e["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("systemctl --user start mcpvisor") && message.contains("[servers.nothing-here]"), "{e}");
    assert_eq!(client.wait_exit(TIMEOUT).code(), Some(3));
    assert!(client.stderr_text().starts_with("mcpvisor: no mcpvisor daemon serves `nothing-here`"));
}

#[test]
fn sigterm_drains_every_client_then_stops_the_daemon() {
    let mut daemon = Daemon::start(&format!("{}{}", server_table("a", ""), server_table("b", "")), &["a", "b"]);
    let mut a = daemon.connect("a");
    let mut b = daemon.connect("b");
    a.initialize();
    b.initialize();
    let pids = [pid_of(&a.request(1, "echo", json!({}))), pid_of(&b.request(1, "echo", json!({})))];
    a.send(&json!({"jsonrpc": "2.0", "id": "slow", "method": "slow", "params": {"ms": 400}}));
    daemon.wait_status("a", "the slow request in flight", |s| s["in_flight"] == json!(1));
    daemon.signal(Signal::SIGTERM);
    assert_eq!(a.response(&json!("slow"))["result"]["slept_ms"], json!(400), "in-flight work finishes");
    assert_eq!(daemon.wait_exit(TIMEOUT).code(), Some(0));
    for pid in pids {
        assert!(group_members(pid as i32).is_empty(), "server {pid} survived the daemon");
    }
    assert!(!daemon.runtime_dir.join("a.mcp").exists(), "the endpoint is removed");
    assert_eq!(a.wait_exit(TIMEOUT).code(), Some(0));
    assert_eq!(b.wait_exit(TIMEOUT).code(), Some(0));
}

#[test]
fn a_bad_file_is_refused_with_its_file_and_line() {
    for (text, expected) in [
        (format!("{}bogus = 1\n", server_table("x", "")), "servers.toml:5: unknown key `bogus`"),
        ("max-starting = 0\n[servers.x]\ncommand = [\"x\"]\n".to_owned(), "servers.toml:1: `max-starting`"),
        ("[servers.x]\nshare = \"sideways\"\n".to_owned(), "servers.toml:2: `share`"),
        ("[servers.x]\nmax-restarts = 3\n".to_owned(), "servers.toml:1: [servers.x] has no `command"),
        ("[defaults]\ncommand = [\"x\"]\n".to_owned(), "servers.toml:2: unknown key `command`"),
        ("log-level = \"loud\"\n".to_owned(), "servers.toml:1: `log-level`"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("servers.toml");
        std::fs::write(&path, &text).unwrap();
        let out = std::process::Command::new(mcpvisor_bin())
            .args(["serve", "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{text}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
}

#[test]
fn serve_with_a_command_runs_one_server_named_as_run_names_it() {
    let server = test_server_bin().display().to_string();
    let daemon = Daemon::spawn_args(&["--", &server, "--stderr-lines", "2"]);
    daemon.wait_endpoints(&["test-server"]);
    let mut client = daemon.connect("test-server");
    client.initialize();
    assert!(client.request(1, "echo", json!({}))["result"].is_object());

    // The control commands work on a daemon's server as on a `run` instance.
    let list = String::from_utf8_lossy(&daemon.ctl(&["status"]).stdout).into_owned();
    assert!(
        list.contains("CLIENTS") && list.lines().any(|l| l.starts_with("test-server") && l.contains("ready")),
        "{list}"
    );
    let logs = String::from_utf8_lossy(&daemon.ctl(&["logs", "test-server"]).stdout).into_owned();
    assert!(logs.contains("startup log line 1"), "{logs}");
    let metrics = String::from_utf8_lossy(&daemon.ctl(&["metrics", "test-server"]).stdout).into_owned();
    assert!(metrics.contains("mcpvisor_child_up{name=\"test-server\"} 1"), "{metrics}");
    assert!(metrics.contains("mcpvisor_state{name=\"test-server\",state=\"idle\"} 0"), "{metrics}");
    let restart = daemon.ctl(&["restart", "test-server"]);
    assert!(String::from_utf8_lossy(&restart.stdout).contains("restarting 1 server process"), "{restart:?}");
    daemon.wait_status("test-server", "the restarted process", |s| s["processes"][0]["generation"] == json!(2));
    assert!(client.request(2, "echo", json!({}))["result"].is_object(), "the session goes on after the restart");
}

#[test]
fn the_daemon_serves_metrics_health_and_readiness_for_every_server() {
    let file = format!("metrics-addr = \"127.0.0.1:0\"\n{}{}", server_table("a", ""), server_table("b", ""));
    let daemon = Daemon::start(&file, &["a", "b"]);
    let addr = metrics_addr(&daemon);
    let mut client = daemon.connect("a");
    client.initialize();
    let (code, body) = http_get(&addr, "/metrics");
    assert_eq!(code, 200);
    assert_eq!(body.matches("# TYPE mcpvisor_child_up gauge").count(), 1, "one header per family: {body}");
    assert!(
        body.contains("mcpvisor_child_up{name=\"a\"} 1") && body.contains("mcpvisor_child_up{name=\"b\"} 0"),
        "{body}"
    );
    assert_eq!(http_get(&addr, "/healthz").0, 200);
    assert_eq!(http_get(&addr, "/readyz"), (200, "ready\n".to_owned()), "ready and idle servers are ready");
}

/// The address of a daemon's metrics endpoint, from its log.
fn metrics_addr(daemon: &Daemon) -> String {
    wait_for("the metrics endpoint", TIMEOUT, || {
        let log = daemon.log();
        let rest = log.split("metrics endpoint ready addr=").nth(1)?;
        Some(rest.split_whitespace().next()?.to_owned())
    })
}

#[test]
fn readiness_waits_for_eager_servers_and_not_for_lazy_ones() {
    let crashing = format!("[{:?}, \"--exit-at-start\", \"3\"]", test_server_bin().display().to_string());
    // A lazy server whose process fails does not hold the daemon's readiness back.
    let lazy = format!(
        "metrics-addr = \"127.0.0.1:0\"\n[servers.lazy]\ncommand = {crashing}\nmax-restarts = 0\n{}",
        server_table("fine", "share = \"shared\"\nstart = \"eager\"")
    );
    let daemon = Daemon::start(&lazy, &["lazy", "fine"]);
    let addr = metrics_addr(&daemon);
    let mut client = daemon.connect("lazy");
    client.send(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}));
    daemon.wait_status("lazy", "the lazy server to fail", |s| s["state"] == json!("failed"));
    assert_eq!(http_get(&addr, "/readyz"), (200, "ready\n".to_owned()));
    drop((client, daemon));

    // An eager one that cannot start does.
    let eager = format!(
        "metrics-addr = \"127.0.0.1:0\"\n[servers.eager]\ncommand = {crashing}\nshare = \"shared\"\nstart = \"eager\"\nmax-restarts = 0\n"
    );
    let daemon = Daemon::start(&eager, &["eager"]);
    let addr = metrics_addr(&daemon);
    daemon.wait_status("eager", "the eager server to fail", |s| s["state"] == json!("failed"));
    assert_eq!(http_get(&addr, "/readyz"), (503, "failed\n".to_owned()));
}

fn initialize_as(client: &mut Visor, version: &str) -> Value {
    let r = client.request(
        0,
        "initialize",
        json!({"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}),
    );
    client.notify("notifications/initialized", json!({}));
    r
}

#[test]
fn clients_of_a_shared_server_use_the_same_ids_at_once_on_one_process() {
    let (_rec_dir, record) = record_file();
    let table = format!(
        "[servers.shared]\ncommand = [{:?}, \"--record\", {record:?}]\nshare = \"shared\"\n",
        test_server_bin().display().to_string()
    );
    let daemon = Daemon::start(&table, &["shared"]);
    assert_eq!(daemon.status("shared")["state"], json!("idle"), "lazy: no process before a client");
    let mut a = daemon.connect("shared");
    let mut b = daemon.connect("shared");
    let first = initialize_as(&mut a, "2025-06-18");
    let second = initialize_as(&mut b, "2025-06-18");
    assert_eq!(first["result"], second["result"], "the second client is answered from the first");
    // Both use id 1 at the same time; each gets its own answer.
    a.send(&json!({"jsonrpc": "2.0", "id": 1, "method": "slow", "params": {"ms": 300}}));
    b.send(&json!({"jsonrpc": "2.0", "id": 1, "method": "echo", "params": {"who": "b"}}));
    let rb = b.response(&json!(1));
    let ra = a.response(&json!(1));
    assert_eq!((ra["result"]["slept_ms"].clone(), rb["result"]["echo"]["who"].clone()), (json!(300), json!("b")));
    let pid_a = pid_of(&a.request(2, "echo", json!({})));
    assert_eq!(pid_of(&b.request(2, "echo", json!({}))), pid_a, "one process for both");
    let status = daemon.status("shared");
    assert_eq!((status["share"].clone(), status["clients"].clone()), (json!("shared"), json!(2)), "{status}");
    assert_eq!(status["processes"].as_array().map(Vec::len), Some(1), "{status}");
    let initializes = recorded(&record).iter().filter(|m| m["method"] == json!("initialize")).count();
    assert_eq!(initializes, 1, "the server was initialized once");

    // Broadcasts reach everyone; resources/updated only its subscribers.
    a.request(3, "resources/subscribe", json!({"uri": "file:///a"}));
    b.request(3, "notify", json!({"method": "notifications/tools/list_changed"}));
    b.request(4, "notify", json!({"method": "notifications/resources/updated", "params": {"uri": "file:///a"}}));
    a.recv_matching("list_changed", |m| m["method"] == json!("notifications/tools/list_changed"));
    a.recv_matching("updated", |m| m["method"] == json!("notifications/resources/updated"));
    b.recv_matching("list_changed", |m| m["method"] == json!("notifications/tools/list_changed"));
    b.request(5, "echo", json!({}));
    assert!(b
        .drain_pending(std::time::Duration::from_millis(200))
        .iter()
        .all(|m| m["method"] != json!("notifications/resources/updated")));

    // A crash is recovered for every client, on one new process, with the handshake replayed once.
    let e = a.request(6, "crash", json!({"code": 3}));
    assert_eq!(e["error"]["data"]["reason"], json!("server_crashed"), "{e}");
    let after = pid_of(&b.request(6, "echo", json!({})));
    assert_ne!(after, pid_a);
    assert_eq!(pid_of(&a.request(7, "echo", json!({}))), after);
    let initializes = recorded(&record).iter().filter(|m| m["method"] == json!("initialize")).count();
    assert_eq!(initializes, 2, "one replay for the new process");
}

#[test]
fn a_client_of_a_shared_server_that_closes_its_input_still_gets_its_answers() {
    let daemon = Daemon::start(&server_table("shared", "share = \"shared\""), &["shared"]);
    let mut a = daemon.connect("shared");
    a.send(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}));
    a.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    a.send(&json!({"jsonrpc": "2.0", "id": 2, "method": "slow", "params": {"ms": 300}}));
    a.close_stdin();
    assert!(a.response(&json!(1))["result"]["serverInfo"].is_object());
    let slow = a.response(&json!(2));
    assert_eq!(slow["result"]["slept_ms"], json!(300), "{slow}");
    assert_eq!(a.wait_exit(TIMEOUT).code(), Some(0));
    daemon.wait_status("shared", "the client gone", |s| s["clients"] == json!(0));
}

#[test]
fn a_client_of_another_protocol_version_gets_a_process_of_its_own() {
    let daemon = Daemon::start(&server_table("mixed", "share = \"shared\""), &["mixed"]);
    let mut a = daemon.connect("mixed");
    let mut b = daemon.connect("mixed");
    initialize_as(&mut a, "2025-06-18");
    let r = initialize_as(&mut b, "2025-03-26");
    assert!(r["result"].is_object(), "{r}");
    let (pa, pb) = (pid_of(&a.request(1, "echo", json!({}))), pid_of(&b.request(1, "echo", json!({}))));
    assert_ne!(pa, pb);
    let status = daemon.wait_status("mixed", "two processes", |s| s["processes"].as_array().map(Vec::len) == Some(2));
    assert_eq!(status["clients"], json!(2), "{status}");
}

#[test]
fn a_lazy_shared_server_stops_when_idle_and_an_eager_one_starts_with_the_daemon() {
    let file = format!(
        "{}{}",
        server_table("lazy", "share = \"shared\"\nidle-timeout = \"300ms\""),
        server_table("eager", "share = \"shared\"\nstart = \"eager\"")
    );
    let daemon = Daemon::start(&file, &["lazy", "eager"]);
    daemon.wait_status("eager", "the eager server running", |s| s["processes"].as_array().map(Vec::len) == Some(1));
    assert_eq!(daemon.status("lazy")["state"], json!("idle"));
    let mut client = daemon.connect("lazy");
    client.initialize();
    let pid = pid_of(&client.request(1, "echo", json!({})));
    client.close_stdin();
    assert_eq!(client.wait_exit(TIMEOUT).code(), Some(0));
    daemon
        .wait_status("lazy", "the idle server stopped", |s| s["state"] == json!("idle") && s["processes"] == json!([]));
    wait_for("the idle process gone", TIMEOUT, || (!process_alive(pid as i32)).then_some(()));
    // The next client starts it again.
    let mut again = daemon.connect("lazy");
    again.initialize();
    assert_ne!(pid_of(&again.request(1, "echo", json!({}))), pid);
}

#[test]
fn sigterm_drains_a_shared_server_once() {
    let mut daemon = Daemon::start(&server_table("s", "share = \"shared\""), &["s"]);
    let mut a = daemon.connect("s");
    a.initialize();
    let pid = pid_of(&a.request(1, "echo", json!({})));
    a.send(&json!({"jsonrpc": "2.0", "id": "slow", "method": "slow", "params": {"ms": 300}}));
    daemon.wait_status("s", "the slow request in flight", |s| s["in_flight"] == json!(1));
    daemon.signal(Signal::SIGTERM);
    assert_eq!(a.response(&json!("slow"))["result"]["slept_ms"], json!(300), "drained, not forced");
    assert_eq!(daemon.wait_exit(TIMEOUT).code(), Some(0));
    assert!(group_members(pid as i32).is_empty());
    assert!(!daemon.log().contains("skipping the waits"), "{}", daemon.log());
}

#[test]
fn sigterm_stops_a_shared_server_with_no_clients_gracefully() {
    let mut daemon = Daemon::start(&server_table("s", "share = \"shared\""), &["s"]);
    let mut a = daemon.connect("s");
    a.initialize();
    let pid = pid_of(&a.request(1, "echo", json!({})));
    a.close_stdin();
    assert_eq!(a.wait_exit(TIMEOUT).code(), Some(0));
    daemon.wait_status("s", "the process idle without clients", |s| s["clients"] == json!(0));
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(TIMEOUT).code(), Some(0));
    // Its stdin was closed and it exited by itself, not killed with the daemon.
    let log = daemon.log();
    assert!(log.contains("test-server: stdin closed"), "{log}");
    assert!(log.contains("server stopped: exit code 0"), "{log}");
    assert!(!process_alive(pid as i32));
}

fn env_of(client: &mut Visor, id: i64) -> Value {
    client.request(id, "env", json!({"name": "MARK"}))["result"]["value"].clone()
}

#[test]
fn reload_adds_removes_changes_and_leaves_the_rest_alone() {
    let before = format!("{}{}{}", server_table("keep", ""), server_table("change", ""), server_table("remove", ""));
    let mut daemon = Daemon::start(&before, &["keep", "change", "remove"]);
    let mut clients: Vec<Visor> = ["keep", "change", "remove"].iter().map(|n| daemon.connect(n)).collect();
    let mut pids = Vec::new();
    for c in &mut clients {
        c.initialize();
        pids.push(pid_of(&c.request(1, "echo", json!({}))));
    }
    let after = format!(
        "{}{}[servers.change.env]\nMARK = \"2\"\n{}",
        server_table("keep", ""),
        server_table("change", ""),
        server_table("added", "")
    );
    std::fs::write(daemon.config_path(), after).unwrap();
    let out = daemon.ctl(&["reload"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("1 added, 1 removed, 1 changed, 1 unchanged"), "{said}");

    let [keep, change, remove] = &mut clients[..] else { unreachable!() };
    assert_eq!(pid_of(&keep.request(2, "echo", json!({}))), pids[0], "unchanged: the same process");
    assert_eq!(env_of(change, 2), json!("2"), "changed: restarted under the new settings");
    assert_ne!(pid_of(&change.request(3, "echo", json!({}))), pids[1]);
    assert_eq!(remove.wait_exit(TIMEOUT).code(), Some(0), "removed: its client is let go");
    assert!(!daemon.runtime_dir.join("remove.mcp").exists());
    wait_for("the removed server's process to stop", TIMEOUT, || (!process_alive(pids[2] as i32)).then_some(()));
    let mut added = daemon.connect("added");
    added.initialize();
    assert!(added.request(1, "echo", json!({}))["result"].is_object());
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(TIMEOUT).code(), Some(0));
}

#[test]
fn a_bad_file_on_reload_is_rejected_whole_and_nothing_changes() {
    let daemon = Daemon::start(&server_table("a", ""), &["a"]);
    let mut client = daemon.connect("a");
    client.initialize();
    let pid = pid_of(&client.request(1, "echo", json!({})));
    std::fs::write(daemon.config_path(), format!("{}{}nonsense = 1\n", server_table("a", ""), server_table("b", "")))
        .unwrap();
    let out = daemon.ctl(&["reload"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("servers.toml:9: unknown key `nonsense`"), "{err}");
    daemon.signal(Signal::SIGHUP);
    wait_for("the SIGHUP reload refused", TIMEOUT, || {
        daemon.log().contains("SIGHUP: the file was not reloaded").then_some(())
    });
    assert!(!daemon.runtime_dir.join("b.mcp").exists(), "nothing was added");
    assert_eq!(pid_of(&client.request(2, "echo", json!({}))), pid);
}

#[test]
fn reload_without_a_daemon_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = ctl(dir.path(), &["reload"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no `mcpvisor serve` daemon is running"));
}

#[test]
fn connection_churn_leaves_no_process_descriptor_or_memory_behind() {
    use std::io::{BufRead, BufReader, Write};
    let cycles: usize = std::env::var("MCPVISOR_CHURN_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let daemon = Daemon::start(&server_table("churn", ""), &["churn"]);
    let pid = daemon.child.id() as i32;
    let fds = || std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
    let children = || mcpvisor::process::procfs::child_processes(pid).into_iter().filter(|p| !p.is_zombie()).count();
    let endpoint = daemon.runtime_dir.join("churn.mcp");
    let cycle = |i: usize| {
        let stream = std::os::unix::net::UnixStream::connect(&endpoint).expect("connect");
        let mut writer = stream.try_clone().expect("clone");
        let init = json!({"jsonrpc": "2.0", "id": i, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}}});
        writeln!(writer, "{init}").expect("write");
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).expect("read");
        assert!(line.contains("\"result\""), "{line}");
    };
    // Warm up (allocator pools, the first log lines), then measure.
    for i in 0..20 {
        cycle(i);
    }
    daemon.wait_status("churn", "the warm-up sessions gone", |s| s["clients"] == json!(0));
    // Anonymous memory, where a leak shows (code pages come and go with what the daemon runs).
    let anon_kib = || mcpvisor::process::procfs::status_kib(pid, "RssAnon").unwrap_or(0);
    let (fds_before, rss_before) = (fds(), anon_kib());
    for i in 0..cycles {
        cycle(i);
    }
    daemon.wait_status("churn", "every session gone", |s| s["clients"] == json!(0) && s["processes"] == json!([]));
    wait_for("no server process left", TIMEOUT, || (children() == 0).then_some(()));
    let (fds_after, rss_after) = (fds(), anon_kib());
    println!("churn: {cycles} cycles, fds {fds_before} -> {fds_after}, anonymous rss {rss_before} -> {rss_after} KiB");
    assert_eq!(fds_after, fds_before, "descriptors leaked");
    assert!(rss_after < rss_before + 2048, "memory grew from {rss_before} to {rss_after} KiB");
}
