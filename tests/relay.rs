//! The relay: byte-level framing, stdout hygiene, both directions, batches and bad input.

mod support;

use serde_json::{json, Value};
use support::*;

#[test]
fn forwards_messages_byte_identical_and_keeps_stdout_clean() {
    let (_rec_dir, rec) = record_file();
    let mut v =
        Visor::test_server(["--banner", "Server v1 starting on stdio", "--record", &rec, "--stderr-lines", "3"])
            .spawn();
    v.initialize();
    // Unusual but valid formatting and unknown fields must arrive untouched.
    let odd = r#"{ "jsonrpc" : "2.0", "id" : "a\u0062c", "method" : "echo", "params" : {"x": [1, 2.50, "\u00e9"], "unknown": {"deep": true}}, "extra": 1 }"#;
    v.send_raw(format!("{odd}\r\n\n   \n").as_bytes());
    let r = v.response(&json!("abc"));
    assert_eq!(r["result"]["echo"]["unknown"]["deep"], json!(true));
    let r = v.request(1, "stray", json!({"text": "DEBUG: this is a log line on stdout"}));
    assert_eq!(r["result"], json!({}));
    let log = v.wait_log("DEBUG: this is a log line on stdout");
    assert!(log.contains("Server v1 starting on stdio"), "banner diverted to the log");
    assert!(log.contains("startup log line 2"), "stderr logged");
    for line in &v.stdout_seen {
        assert!(!line.contains("DEBUG: this is") && !line.contains("Server v1"), "noise reached stdout: {line}");
    }
    let lines = std::fs::read_to_string(&rec).unwrap();
    assert!(lines.lines().any(|l| l == odd), "the server got the exact bytes the client sent:\n{lines}");
}

#[test]
fn non_json_from_the_client_gets_a_parse_error_and_the_session_continues() {
    let mut v = Visor::test_server(Vec::<String>::new()).spawn();
    v.initialize();
    v.send_raw(b"this is not json\n");
    let e = v.recv();
    assert_eq!(e["error"]["code"], json!(-32700));
    assert_eq!(e["id"], Value::Null);
    v.send_raw(b"{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"echo\",\"params\":{\"s\":\"\xff\xfe\"}}\n");
    let e = v.recv();
    assert_eq!(e["error"]["code"], json!(-32700), "invalid UTF-8 is a parse error: {e}");
    v.send_raw(b"{\"jsonrpc\":\"1.0\",\"id\":6,\"method\":\"echo\"}\n");
    let e = v.response(&json!(6));
    assert_eq!(e["error"]["code"], json!(-32600));
    v.send_raw(b"{\"jsonrpc\":\"2.0\",\"id\":{\"x\":1},\"method\":\"echo\"}\n");
    let e = v.recv();
    assert_eq!(e["error"]["code"], json!(-32600));
    v.send_raw(b"[]\n\"just a string\"\n");
    assert_eq!(v.recv()["error"]["code"], json!(-32600));
    let r = v.request(7, "echo", json!({"still": "working"}));
    assert_eq!(r["result"]["echo"]["still"], json!("working"));
    v.wait_log("not JSON");
}

#[test]
fn oversized_client_message_is_refused_without_buffering_and_relay_continues() {
    let mut v = Visor::test_server(Vec::<String>::new()).arg("--max-message-size").arg("64KiB").spawn();
    v.initialize();
    let big =
        format!(r#"{{"jsonrpc":"2.0","id":"big","method":"echo","params":{{"data":"{}"}}}}"#, "y".repeat(300_000));
    v.send_raw(format!("{big}\n").as_bytes());
    let e = v.response(&json!("big"));
    assert_eq!(e["error"]["code"], json!(-32600));
    assert!(e["error"]["message"].as_str().unwrap().contains("max-message-size"), "{e}");
    let r = v.request(2, "echo", json!({}));
    assert!(r.get("result").is_some());
    v.wait_log("over --max-message-size");
}

#[test]
fn oversized_server_response_becomes_an_error_for_its_request() {
    let mut v = Visor::test_server(Vec::<String>::new()).arg("--max-message-size").arg("100KiB").spawn();
    v.initialize();
    let e = v.request(1, "huge", json!({"bytes": 500_000}));
    assert_eq!(e["error"]["code"], json!(-32603), "{e}");
    assert_eq!(e["error"]["data"]["reason"], json!("response_too_large"));
    let r = v.request(2, "huge", json!({"bytes": 50_000}));
    assert_eq!(r["result"]["data"].as_str().unwrap().len(), 50_000);
}

#[test]
fn large_messages_pass_both_ways() {
    let mut v = Visor::test_server(Vec::<String>::new()).spawn();
    v.initialize();
    let r = v.request(1, "huge", json!({"bytes": 9_000_000}));
    assert_eq!(r["result"]["data"].as_str().unwrap().len(), 9_000_000);
    let payload = "é".repeat(1_000_000);
    let r = v.request(2, "echo", json!({"payload": payload}));
    assert_eq!(r["result"]["echo"]["payload"].as_str().unwrap().len(), payload.len());
}

#[test]
fn server_to_client_requests_and_notifications_flow_while_requests_are_in_flight() {
    let mut v = Visor::test_server(Vec::<String>::new()).spawn();
    v.initialize();
    v.send(&json!({"jsonrpc":"2.0","id":"slow","method":"slow","params":{"ms":300}}));
    v.send(&json!({"jsonrpc":"2.0","id":1,"method":"ask_client","params":{"method":"roots/list"}}));
    let req = v.recv_matching("server request", |m| m.get("method") == Some(&json!("roots/list")));
    let sid = req["id"].clone();
    // The client's id space overlaps the server's: answer with the server's id.
    v.send(&json!({"jsonrpc":"2.0","id":sid,"result":{"roots":[{"uri":"file:///tmp"}]}}));
    let r = v.response(&json!(1));
    assert_eq!(r["result"]["client_said"]["result"]["roots"][0]["uri"], json!("file:///tmp"));
    v.send(&json!({"jsonrpc":"2.0","id":2,"method":"notify","params":{"method":"notifications/message","params":{"level":"info","data":"hi"}}}));
    let n = v.recv_matching("notification", |m| m.get("method") == Some(&json!("notifications/message")));
    assert_eq!(n["params"]["data"], json!("hi"));
    v.response(&json!(2));
    assert_eq!(v.response(&json!("slow"))["result"]["slept_ms"], json!(300));
}

#[test]
fn string_and_number_ids_are_distinct_and_duplicates_in_flight_are_refused() {
    let mut v = Visor::test_server(Vec::<String>::new()).spawn();
    v.initialize();
    v.send(&json!({"jsonrpc":"2.0","id":"7","method":"slow","params":{"ms":400}}));
    v.send(&json!({"jsonrpc":"2.0","id":7,"method":"slow","params":{"ms":100}}));
    // Same id as an in-flight request: refused, and the original still gets its own answer.
    v.send(&json!({"jsonrpc":"2.0","id":7,"method":"echo","params":{}}));
    let dup = v.recv_matching("duplicate refusal", |m| m.get("error").is_some());
    assert_eq!(dup["id"], json!(7));
    assert_eq!(dup["error"]["data"]["reason"], json!("duplicate_id"));
    assert_eq!(v.response(&json!(7))["result"]["slept_ms"], json!(100));
    assert_eq!(v.response(&json!("7"))["result"]["slept_ms"], json!(400));
}

#[test]
fn batches_are_answered_as_one_array_with_errors_for_bad_members() {
    let (_rec_dir, rec) = record_file();
    let mut v = Visor::test_server(["--record", &rec]).spawn();
    v.initialize();
    v.send(&json!({"jsonrpc": "2.0", "id": "busy", "method": "slow", "params": {"ms": 3000}}));
    let member = r#"{"jsonrpc":"2.0","id":"b1","method":"echo","params":{"x":1}}"#;
    let batch = format!(
        r#"[{member},{{"jsonrpc":"2.0","method":"notifications/x"}},{{"foo":1}},5,{{"jsonrpc":"2.0","id":"busy","method":"echo"}},{{"jsonrpc":"2.0","id":"b2","method":"slow","params":{{"ms":50}}}}]"#
    );
    v.send_raw(format!("{batch}\n").as_bytes());
    // The server (which, like current MCP servers, ignores batches) gets each member on its own.
    wait_for("the members at the server", TIMEOUT, || {
        std::fs::read_to_string(&rec).ok().filter(|s| s.lines().any(|l| l == member) && s.contains("notifications/x"))
    });
    let answer = v.recv_matching("the batch's answer", Value::is_array);
    let answers = answer.as_array().unwrap();
    assert_eq!(answers.len(), 5, "two requests answered, three members refused: {answer}");
    let by_id = |id: Value| answers.iter().find(|a| a["id"] == id).cloned().unwrap_or(Value::Null);
    assert_eq!(by_id(json!("b1"))["result"]["echo"]["x"], json!(1), "{answer}");
    assert_eq!(by_id(json!("b2"))["result"]["slept_ms"], json!(50), "{answer}");
    assert_eq!(by_id(json!("busy"))["error"]["data"]["reason"], json!("duplicate_id"), "{answer}");
    let invalid = answers.iter().filter(|a| a["id"].is_null() && a["error"]["code"] == json!(-32600)).count();
    assert_eq!(invalid, 2, "{answer}");
    // A batch of notifications only is not answered; the session goes on.
    v.send_raw(b"[{\"jsonrpc\":\"2.0\",\"method\":\"notifications/y\"}]\n");
    assert_eq!(v.response(&json!("busy"))["result"]["slept_ms"], json!(3000));
    assert!(v.request(2, "echo", json!({}))["result"].is_object());
    assert!(v.drain_pending(std::time::Duration::from_millis(100)).iter().all(|m| !m.is_array()));
}

#[test]
fn client_cancellation_clears_the_request_and_a_late_answer_is_dropped() {
    let mut v = Visor::test_server(Vec::<String>::new()).spawn();
    v.initialize();
    v.send(&json!({"jsonrpc":"2.0","id":"c","method":"slow","params":{"ms":300}}));
    v.notify("notifications/cancelled", json!({"requestId": "c", "reason": "user"}));
    // The id is free again at once.
    let r = v.request("c", "echo", json!({"n": 2}));
    assert_eq!(r["result"]["echo"]["n"], json!(2));
    // The slow answer for the cancelled request arrives at mcpvisor and is dropped.
    v.wait_log("no request in flight");
    assert!(v.drain_pending(std::time::Duration::from_millis(200)).is_empty());
}

#[test]
fn request_timeout_answers_and_cancels_at_the_server() {
    let (_rec_dir, rec) = record_file();
    let mut v = Visor::test_server(["--record", &rec]).args(["--request-timeout", "300ms"]).spawn();
    v.initialize();
    let e = v.request("t", "slow", json!({"ms": 1500}));
    assert_eq!(e["error"]["data"]["reason"], json!("timeout"), "{e}");
    let cancelled = wait_for("cancellation at the server", TIMEOUT, || {
        recorded(&rec).into_iter().find(|m| m["method"] == json!("notifications/cancelled"))
    });
    assert_eq!(cancelled["params"]["requestId"], json!("t"));
    // The late answer is dropped, not forwarded.
    v.wait_log("no request in flight");
    let r = v.request("after", "echo", json!({}));
    assert!(r.get("result").is_some());
}

#[test]
fn an_invalid_response_is_diverted_and_its_request_answered_with_an_error() {
    let mut v = Visor::test_server(Vec::<String>::new()).spawn();
    v.initialize();
    let e = v.request("u", "bad_utf8", json!({}));
    assert_eq!(e["error"]["data"]["reason"], json!("invalid_response"), "{e}");
    v.wait_log("diverted");
    assert!(v.request(2, "echo", json!({}))["result"].is_object());
}

/// VmHWM (peak resident memory) of a process, in KiB.
fn peak_rss_kib(pid: i32) -> u64 {
    mcpvisor::process::procfs::status_kib(pid, "VmHWM").expect("VmHWM of mcpvisor")
}

#[test]
fn large_messages_pass_through_without_piling_up_in_memory() {
    let mut v = Visor::test_server(Vec::<String>::new()).spawn();
    v.initialize();
    let before = peak_rss_kib(v.pid());
    let payload = "x".repeat(1 << 20);
    let count = 16;
    // 16 MiB of requests the server holds on to for a while: mcpvisor must not keep a copy of
    // requests it would never re-send.
    for i in 0..count {
        v.send(&json!({"jsonrpc": "2.0", "id": i, "method": "slow", "params": {"ms": 1000, "data": payload}}));
    }
    for i in 0..count {
        assert!(v.response(&json!(i))["result"]["slept_ms"].is_u64());
    }
    // 16 MiB each way, sent without waiting: about one message per direction is held, the rest
    // waits in the pipes.
    for i in count..2 * count {
        v.send(&json!({"jsonrpc": "2.0", "id": i, "method": "echo", "params": {"data": payload}}));
    }
    for i in count..2 * count {
        let r = v.response(&json!(i));
        assert_eq!(r["result"]["echo"]["data"].as_str().map(str::len), Some(1 << 20));
    }
    let grew_mib = (peak_rss_kib(v.pid()) - before) as f64 / 1024.0;
    assert!(grew_mib < 8.0, "mcpvisor's peak memory grew by {grew_mib:.1} MiB relaying {count} MiB messages");
}

#[test]
fn hostile_client_input_is_answered_and_the_session_goes_on() {
    let mut v = Visor::test_server(Vec::<String>::new()).spawn();
    v.initialize();
    // A raw NUL byte (a control character) inside a string, and one outside: not JSON.
    v.send_raw(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"echo\",\"params\":{\"s\":\"a\x00b\"}}\n");
    assert_eq!(v.recv()["error"]["code"], json!(-32700));
    v.send_raw(b"\x00\n");
    assert_eq!(v.recv()["error"]["code"], json!(-32700));
    // An escaped NUL is valid JSON and reaches the server unchanged.
    v.send_raw(b"{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"echo\",\"params\":{\"s\":\"a\\u0000b\"}}\n");
    assert_eq!(v.response(&json!(2))["result"]["echo"]["s"], json!("a\u{0}b"));
    // An empty batch is an invalid request (JSON-RPC 2.0), answered with id null.
    v.send_raw(b"[]\n");
    let e = v.recv();
    assert_eq!((e["error"]["code"].clone(), e["id"].clone()), (json!(-32600), Value::Null), "{e}");
    // A method that is not a string: invalid request, answered with the request's id.
    v.send_raw(b"{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":42}\n");
    assert_eq!(v.response(&json!(3))["error"]["code"], json!(-32600));
    // Ids of every legal shape come back exactly as sent.
    for id in [json!(-7), json!(1.5), json!(""), json!("ü-id")] {
        assert_eq!(v.request(id.clone(), "echo", json!({}))["id"], id);
    }
    assert_eq!(v.request(5, "echo", json!({"after": "all that"}))["result"]["echo"]["after"], json!("all that"));
}

#[test]
fn a_gigabyte_line_is_skipped_without_buffering_it() {
    let mut v = Visor::test_server(Vec::<String>::new()).arg("--max-message-size").arg("1MiB").spawn();
    v.initialize();
    let before = peak_rss_kib(v.pid());
    let chunk = vec![b'a'; 1 << 20];
    v.send_raw(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"echo\",\"params\":{\"s\":\"");
    for _ in 0..1024 {
        v.send_raw(&chunk);
    }
    v.send_raw(b"\"}}\n");
    let e = v.response(&json!(1));
    assert_eq!(e["error"]["data"]["reason"], json!("too_large"), "{e}");
    let grew_mib = (peak_rss_kib(v.pid()) - before) as f64 / 1024.0;
    assert!(grew_mib < 16.0, "mcpvisor's peak memory grew by {grew_mib:.1} MiB: it buffered the line");
    assert_eq!(v.request(2, "echo", json!({}))["id"], json!(2));
}

#[test]
fn a_last_line_without_newline_is_answered_before_exit() {
    let mut v = Visor::test_server(Vec::<String>::new()).spawn();
    v.initialize();
    v.send_raw(b"{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"echo\",\"params\":{\"last\":true}}");
    v.close_stdin();
    assert_eq!(v.response(&json!(9))["result"]["echo"]["last"], json!(true));
    assert!(v.wait_exit(std::time::Duration::from_secs(10)).success());
}

#[test]
fn max_inflight_holds_requests_back_until_answers_free_a_slot() {
    let (_rec_dir, rec) = record_file();
    let mut v = Visor::test_server(["--record", &rec]).args(["--max-inflight", "2", "--queue-limit", "3"]).spawn();
    v.initialize();
    // Ten slow requests at once: two reach the server, three wait in the queue, and the rest wait
    // in the pipe (mcpvisor stops reading) rather than being refused.
    for i in 0..10 {
        v.send(&json!({"jsonrpc": "2.0", "id": i, "method": "slow", "params": {"ms": 300}}));
    }
    let at_server = || std::fs::read_to_string(&rec).unwrap_or_default().matches("\"slow\"").count();
    wait_for("two requests at the server", TIMEOUT, || (at_server() == 2).then_some(()));
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(at_server(), 2, "more than --max-inflight requests reached the server");
    let status = v.ctl(&["status", "--json"]);
    let status: Value = serde_json::from_slice::<Vec<Value>>(&status.stdout).unwrap().remove(0);
    assert_eq!((status["in_flight"].clone(), status["queued"].clone()), (json!(2), json!(3)), "{status}");
    for i in 0..10 {
        assert_eq!(v.response(&json!(i))["result"]["slept_ms"], json!(300), "request {i}");
    }
    assert_eq!(at_server(), 10);
}

/// Once running, mcpvisor drops its start-up code from the resident set; everything it does
/// afterwards (relaying, a crash and the restart, status) faults back in what it needs.
#[test]
fn start_up_pages_leave_the_resident_set_and_everything_still_works() {
    let mut v = Visor::test_server(Vec::<String>::new()).spawn();
    v.initialize();
    let needle = "start-up pages dropped from the resident set";
    let log = v.wait_log(needle);
    let line = log.lines().find(|l| l.contains(needle)).unwrap_or_default();
    let kib: u64 = line
        .split("kib=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(kib > 0, "nothing dropped: {line}");
    let first = v.wait_generation(1);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(first), nix::sys::signal::Signal::SIGKILL).expect("kill");
    v.wait_generation(2);
    assert!(v.request(2, "echo", json!({}))["result"].is_object());
    let status = v.ctl(&["status", "--json"]);
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
}
