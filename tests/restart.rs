//! Keeping the session alive: crash errors, session rebuild in both eras, the restart queue,
//! retries, the restart limit, liveness and later spawn failures.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

fn methods(rec: &str) -> Vec<String> {
    recorded(rec).iter().map(|m| m["method"].as_str().unwrap_or("<response>").to_owned()).collect()
}

#[test]
fn crash_mid_request_errors_then_the_session_continues_with_the_handshake_replayed() {
    let (_rec_dir, rec) = record_file();
    let mut v = Visor::test_server(["--record", &rec]).args(["--backoff-initial", "50ms"]).spawn();
    v.initialize();
    v.request(1, "logging/setLevel", json!({"level": "debug"}));
    v.request(2, "resources/subscribe", json!({"uri": "test://a"}));
    let first_pid = v.request(3, "echo", json!({}))["result"]["pid"].clone();
    v.request(4, "stderr", json!({"lines": 2}));

    let e = v.request(5, "crash", json!({"code": 7}));
    assert_eq!(e["error"]["code"], json!(-32603));
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(msg.contains("crashed") && msg.contains("restarting"), "{msg}");
    assert_eq!(e["error"]["data"]["exit"], json!({"code": 7}), "{e}");
    let stderr = e["error"]["data"]["stderr"].as_array().unwrap();
    assert!(stderr.iter().any(|l| l.as_str().unwrap().contains("log line 1")), "{e}");

    // The client carries on as if nothing happened.
    let r = v.request(6, "echo", json!({"after": "crash"}));
    assert_eq!(r["result"]["echo"]["after"], json!("crash"));
    assert_ne!(r["result"]["pid"], first_pid, "served by a new process");

    // The new child saw the session rebuilt, with mcpvisor's own ids, before the client's call.
    let m = methods(&rec);
    let second_start = m.iter().rposition(|x| x == "initialize").unwrap();
    assert_eq!(
        &m[second_start..],
        ["initialize", "notifications/initialized", "logging/setLevel", "resources/subscribe", "echo"],
        "{m:?}"
    );
    let replayed = &recorded(&rec)[second_start];
    assert!(replayed["id"].as_str().unwrap().starts_with("mcpvisor-"), "{replayed}");
    assert_eq!(replayed["params"]["clientInfo"]["name"], json!("tests"));
    // The server declared tools.listChanged: the client is told the list may have changed, and
    // never sees the replayed calls' responses.
    let rest = v.drain_pending(Duration::from_millis(200));
    assert!(rest.iter().any(|m| m["method"] == json!("notifications/tools/list_changed")), "{rest:?}");
    for line in &v.stdout_seen {
        assert!(!line.contains("mcpvisor-"), "an answer to mcpvisor's own request leaked: {line}");
    }
}

#[test]
fn kill_dash_nine_of_the_server_is_reported_with_the_signal() {
    let mut v = Visor::test_server(Vec::<String>::new()).args(["--backoff-initial", "10ms"]).spawn();
    v.initialize();
    v.send(&json!({"jsonrpc":"2.0","id":"s","method":"slow","params":{"ms":5000}}));
    let pid = v.wait_generation(1);
    v.request("probe", "echo", json!({})); // answered in order, so "s" has reached the server
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    let e = v.response(&json!("s"));
    assert_eq!(e["error"]["data"]["exit"]["signal"], json!("SIGKILL"), "{e}");
    let r = v.request(1, "tools/list", json!({}));
    assert!(r["result"]["tools"].is_array(), "{r}");
}

#[test]
fn stateless_era_resends_open_subscriptions_with_their_ids() {
    let (_rec_dir, rec) = record_file();
    let mut v = Visor::test_server(["--record", &rec, "--era", "dual"]).args(["--backoff-initial", "10ms"]).spawn();
    let meta = json!({"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                                "io.modelcontextprotocol/clientCapabilities": {}}});
    let r = v.request(1, "server/discover", meta.clone());
    assert_eq!(r["result"]["supportedVersions"], json!(["2026-07-28"]));
    v.send(&json!({"jsonrpc":"2.0","id":"sub-1","method":"subscriptions/listen","params":meta}));
    let n = v.recv_matching("subscription notification", |m| m.get("method").is_some());
    assert_eq!(n["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], json!("sub-1"));

    let e = v.request(2, "crash", json!({"code": 1}));
    assert_eq!(e["error"]["code"], json!(-32603));
    // The subscription is neither failed nor lost: the new child gets it again, same id.
    let n = v.recv_matching("re-sent subscription's notification", |m| {
        m.get("method").is_some() && m["params"]["_meta"].is_object()
    });
    assert_eq!(n["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], json!("sub-1"));
    let mut with_meta = meta.clone();
    with_meta["x"] = json!(1);
    let r = v.request(3, "tools/list", with_meta);
    assert!(r["result"]["tools"].is_array(), "{r}");
    let recs = recorded(&rec);
    let listens: Vec<&Value> = recs.iter().filter(|m| m["method"] == json!("subscriptions/listen")).collect();
    assert_eq!(listens.len(), 2);
    assert_eq!(listens[1]["id"], json!("sub-1"));
    assert!(!recs.iter().any(|m| m["method"] == json!("initialize")), "no handshake in the stateless era");
}

#[test]
fn messages_sent_during_a_restart_are_queued_and_delivered_in_order() {
    let (_rec_dir, rec) = record_file();
    let mut v =
        Visor::test_server(["--record", &rec]).args(["--backoff-initial", "800ms", "--backoff-max", "800ms"]).spawn();
    v.initialize();
    let e = v.request(1, "crash", json!({"code": 2}));
    assert_eq!(e["error"]["code"], json!(-32603));
    for i in 10..20 {
        v.send(&json!({"jsonrpc":"2.0","id":i,"method":"echo","params":{"i":i}}));
    }
    for i in 10..20 {
        let r = v.response(&json!(i));
        assert_eq!(r["result"]["echo"]["i"], json!(i), "{r}");
    }
    let m = methods(&rec);
    let second = m.iter().rposition(|x| x == "initialize").unwrap();
    assert_eq!(m[second + 1], "notifications/initialized", "replay first, then the queue: {m:?}");
    let ids: Vec<Value> = recorded(&rec)[second + 2..].iter().map(|m| m["id"].clone()).collect();
    assert_eq!(ids, (10..20).map(Value::from).collect::<Vec<_>>());
}

#[test]
fn queue_over_the_limit_is_refused_at_once() {
    let mut v = Visor::test_server(Vec::<String>::new())
        .args(["--backoff-initial", "1s", "--backoff-max", "1s", "--queue-limit", "2"])
        .spawn();
    v.initialize();
    v.request(1, "crash", json!({}));
    for i in 10..13 {
        v.send(&json!({"jsonrpc":"2.0","id":i,"method":"echo","params":{}}));
    }
    let refused = v.response(&json!(12));
    assert_eq!(refused["error"]["data"]["reason"], json!("queue_full"), "{refused}");
    assert!(v.response(&json!(10)).get("result").is_some());
    assert!(v.response(&json!(11)).get("result").is_some());
}

#[test]
fn safe_requests_in_flight_at_a_crash_are_retried_and_tool_calls_are_not() {
    let mut v = Visor::test_server(Vec::<String>::new()).args(["--backoff-initial", "10ms"]).spawn();
    v.initialize();
    v.send(&json!({"jsonrpc":"2.0","id":"x","method":"crash","params":{"after_ms":300}}));
    v.send(&json!({"jsonrpc":"2.0","id":"list","method":"tools/list","params":{}}));
    v.send(&json!({"jsonrpc":"2.0","id":"call","method":"tools/call","params":{"name":"echo"}}));
    v.send(&json!({"jsonrpc":"2.0","id":"read","method":"resources/read","params":{"uri":"test://a"}}));
    assert_eq!(v.response(&json!("x"))["error"]["code"], json!(-32603));
    assert_eq!(v.response(&json!("call"))["error"]["data"]["reason"], json!("server_crashed"));
    let list = v.response(&json!("list"));
    assert!(list["result"]["tools"].is_array(), "tools/list was re-sent: {list}");
    assert!(v.response(&json!("read"))["result"]["contents"].is_array());
}

#[test]
fn no_retry_fails_safe_requests_too() {
    let mut v = Visor::test_server(Vec::<String>::new()).args(["--backoff-initial", "10ms", "--no-retry"]).spawn();
    v.initialize();
    v.send(&json!({"jsonrpc":"2.0","id":"x","method":"crash","params":{"after_ms":300}}));
    v.send(&json!({"jsonrpc":"2.0","id":"list","method":"tools/list","params":{}}));
    assert_eq!(v.response(&json!("list"))["error"]["data"]["reason"], json!("server_crashed"));
}

#[test]
fn server_requests_pending_at_a_crash_are_cancelled_and_late_answers_dropped() {
    let (_rec_dir, rec) = record_file();
    let mut v = Visor::test_server(["--record", &rec]).args(["--backoff-initial", "10ms"]).spawn();
    v.initialize();
    v.send(&json!({"jsonrpc":"2.0","id":1,"method":"ask_client","params":{"method":"sampling/createMessage"}}));
    let req = v.recv_matching("sampling request", |m| m.get("method") == Some(&json!("sampling/createMessage")));
    v.send(&json!({"jsonrpc":"2.0","id":2,"method":"crash","params":{}}));
    let cancel = v.recv_matching("cancellation", |m| m.get("method") == Some(&json!("notifications/cancelled")));
    assert_eq!(cancel["params"]["requestId"], req["id"]);
    assert_eq!(v.response(&json!(1))["error"]["code"], json!(-32603));
    // The client answers late: the answer goes nowhere.
    v.send(&json!({"jsonrpc":"2.0","id":req["id"],"result":{"content":"late"}}));
    v.wait_log("late answer");
    assert!(v.request(3, "echo", json!({}))["result"].is_object());
    assert!(!std::fs::read_to_string(&rec).unwrap().contains("late"), "a late answer reached the new server");
}

#[test]
fn eleventh_crash_in_the_window_leaves_the_server_failed_with_an_explanation() {
    let mut v =
        Visor::test_server(["--exit-at-start", "9"]).args(["--backoff-initial", "1ms", "--backoff-max", "5ms"]).spawn();
    v.wait_log("restart limit reached");
    assert_eq!(v.server_pids().len(), 11, "the first start plus 10 restarts");
    let e = v.request(1, "initialize", json!({}));
    assert_eq!(e["error"]["code"], json!(-32603));
    assert_eq!(e["error"]["data"]["reason"], json!("restart_limit"), "{e}");
    assert_eq!(e["error"]["data"]["restarts_in_window"], json!(10));
    assert_eq!(e["error"]["data"]["last_exit"], json!({"code": 9}));
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(msg.contains("10 restarts") && msg.contains("try to start it again in"), "{msg}");
    assert!(e["error"]["data"]["stderr"][0].as_str().unwrap().contains("exiting at start"), "{e}");
    // No more restarts while failed.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(v.server_pids().len(), 11);
}

#[test]
fn failed_server_is_retried_once_when_a_slot_frees() {
    let v = Visor::test_server(["--exit-at-start", "9"])
        .args(["--backoff-initial", "1ms", "--max-restarts", "2", "--restart-window", "1s"])
        .spawn();
    v.wait_log("restart limit reached");
    assert_eq!(v.server_pids().len(), 3);
    v.wait_log("a restart slot is free again");
    v.wait_generation(4);
}

#[test]
fn on_failure_exit_ends_mcpvisor_with_status_4() {
    let mut v = Visor::test_server(["--exit-at-start", "1"])
        .args(["--backoff-initial", "1ms", "--max-restarts", "2", "--on-failure", "exit"])
        .spawn();
    let status = v.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(4));
}

#[test]
fn hung_server_is_detected_by_probes_and_replaced() {
    let (_rec_dir, rec) = record_file();
    let mut v = Visor::test_server(["--record", &rec])
        .args(["--ping-interval", "150ms", "--ping-timeout", "150ms", "--ping-failures", "2"])
        .args(["--stop-grace", "100ms", "--kill-after", "100ms", "--backoff-initial", "10ms"])
        .spawn();
    v.initialize();
    // Idle: probes are answered and never reach the client.
    wait_for("a probe", TIMEOUT, || methods(&rec).iter().any(|m| m == "ping").then_some(()));
    let e = v.request("h", "hang", json!({}));
    assert_eq!(e["error"]["data"]["cause"], json!("hung"), "{e}");
    v.wait_log("server is hung");
    let r = v.request(2, "echo", json!({}));
    assert!(r["result"].is_object());
    // The log is written by its own thread: wait for the line rather than assume it is there.
    v.wait_generation(2);
    assert_eq!(v.server_pids().len(), 2);
    for line in &v.stdout_seen {
        assert!(!line.contains("mcpvisor-"), "probe answer leaked: {line}");
    }
}

#[test]
fn nothing_is_injected_before_the_clients_first_message() {
    let (_rec_dir, rec) = record_file();
    let mut v =
        Visor::test_server(["--record", &rec]).args(["--ping-interval", "50ms", "--ping-timeout", "50ms"]).spawn();
    v.wait_generation(1);
    std::thread::sleep(Duration::from_millis(300)); // several probe intervals with no client traffic
    let meta = json!({"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}});
    let r = v.request(1, "tools/list", meta);
    assert!(r["result"]["tools"].is_array(), "a dual-era server locked to the client's era: {r}");
    let first = &recorded(&rec)[0];
    assert_eq!(first["id"], json!(1), "the first message the server saw was the client's: {first}");
    // Stateless-era probes are server/discover with the client's version.
    let probe = wait_for("a stateless probe", TIMEOUT, || {
        recorded(&rec).into_iter().find(|m| m["method"] == json!("server/discover"))
    });
    assert_eq!(probe["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"], json!("2026-07-28"));
}

#[test]
fn a_crash_before_the_clients_first_message_just_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let marker = temp_path(dir.path(), "started-once");
    let script =
        format!("if [ -e {marker} ]; then exec {} ; else touch {marker}; exit 5; fi", test_server_bin().display());
    let mut v = Visor::command(["sh", "-c", &script]).args(["--backoff-initial", "10ms"]).spawn();
    v.wait_generation(2);
    v.initialize();
    assert!(v.request(1, "echo", json!({}))["result"].is_object());
    assert!(v.drain_pending(Duration::from_millis(100)).iter().all(|m| m.get("error").is_none()));
}

#[test]
fn a_server_that_can_no_longer_be_started_counts_as_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("server-copy");
    std::fs::copy(test_server_bin(), &copy).unwrap();
    let mut v = Visor::command([copy.display().to_string()])
        .args(["--backoff-initial", "1ms", "--backoff-max", "2ms", "--max-restarts", "2"])
        .spawn();
    v.initialize();
    std::fs::remove_file(&copy).unwrap();
    v.request(1, "crash", json!({}));
    v.wait_log("cannot restart the server: command not found");
    v.wait_log("restart limit reached");
    let e = v.request(2, "echo", json!({}));
    assert_eq!(e["error"]["data"]["reason"], json!("restart_limit"));
    assert!(e["error"]["data"]["spawn_error"].as_str().unwrap().contains("command not found"), "{e}");
}

#[test]
fn an_initialize_in_flight_at_a_crash_is_resent_even_with_no_retry() {
    let dir = tempfile::tempdir().unwrap();
    let marker = temp_path(dir.path(), "started-once");
    let script = format!(
        "if [ -e {marker} ]; then exec {} ; else touch {marker}; sleep 0.3; exit 5; fi",
        test_server_bin().display()
    );
    let mut v = Visor::command(["sh", "-c", &script]).args(["--backoff-initial", "10ms", "--no-retry"]).spawn();
    let r = v.initialize();
    assert_eq!(r["result"]["serverInfo"]["name"], json!("test-server"), "{r}");
    assert!(v.request(1, "echo", json!({}))["result"].is_object());
}

#[test]
fn a_server_over_max_memory_is_restarted_with_cause_memory() {
    let mut v =
        Visor::test_server(Vec::<String>::new()).args(["--max-memory", "48MiB", "--backoff-initial", "10ms"]).spawn();
    v.initialize();
    assert_eq!(v.request(1, "alloc", json!({"mb": 100}))["result"]["held_mb"], json!(100));
    // In flight when the next check (once a second) finds the server over the limit.
    let e = v.request(2, "slow", json!({"ms": 10_000}));
    assert_eq!(e["error"]["data"]["cause"], json!("memory"), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("--max-memory"), "{e}");
    v.wait_generation(2);
    assert!(v.request(3, "echo", json!({}))["result"].is_object());
    v.wait_control();
    let metrics = String::from_utf8_lossy(&v.ctl(&["metrics"]).stdout).into_owned();
    assert!(metrics.contains("cause=\"memory\"} 1"), "{metrics}");
}

#[test]
fn resource_limits_apply_to_the_server() {
    let mut v = Visor::test_server(Vec::<String>::new()).args(["--limit-nofile", "123", "--limit-as", "4GiB"]).spawn();
    v.initialize();
    let r = v.request(1, "limits", json!({}));
    assert_eq!(r["result"], json!({"nofile": 123, "as": 4u64 << 30}), "{r}");
}

#[test]
fn a_crash_answers_a_batchs_requests_in_one_array() {
    let mut v = Visor::test_server(Vec::<String>::new()).args(["--backoff-initial", "10ms"]).spawn();
    v.initialize();
    v.send_raw(
        br#"[{"jsonrpc":"2.0","id":"c1","method":"slow","params":{"ms":5000}},{"jsonrpc":"2.0","id":"c2","method":"crash","params":{"code":7}}]
"#,
    );
    let answer = v.recv_matching("the batch's answer", Value::is_array);
    let answers = answer.as_array().unwrap();
    assert_eq!(answers.len(), 2, "{answer}");
    for a in answers {
        assert_eq!(a["error"]["data"]["reason"], json!("server_crashed"), "{answer}");
    }
    assert!(v.request(1, "echo", json!({}))["result"].is_object());
}
