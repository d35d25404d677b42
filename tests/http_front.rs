//! The Streamable HTTP front at the HTTP level (handshake era): sessions and their status codes,
//! event streams for related messages, the GET stream, crash recovery within a session, the Host
//! and Origin checks, expiry, limits. The interop tests run real SDK clients over it.

mod support;

use serde_json::{json, Value};
use support::daemon::Daemon;
use support::http::{open, request, rpc};
use support::*;

const ACCEPT: (&str, &str) = ("Accept", "application/json, text/event-stream");

fn init(id: i64) -> String {
    init_at(id, "2025-06-18")
}

fn init_at(id: i64, version: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
        "protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
    .to_string()
}

fn call(id: Value, method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
}

/// A daemon with the front on a free port and `servers` (tables), and its address.
fn front(top: &str, servers: &[(&str, &str)]) -> (Daemon, String) {
    let mut config = format!("http = \"127.0.0.1:0\"\n{top}\n");
    for (name, extra) in servers {
        let command = match extra.contains("command =") {
            true => String::new(),
            false => format!("command = [{:?}]\n", test_server_bin().display().to_string()),
        };
        config.push_str(&format!("[servers.{name}]\n{command}backoff-initial = \"10ms\"\n{extra}\n"));
    }
    let names: Vec<&str> = servers.iter().map(|(n, _)| *n).collect();
    let daemon = Daemon::start(&config, &names);
    let addr = daemon.http_addr();
    (daemon, addr)
}

/// Starts a session at `path`; returns its id.
fn session(addr: &str, path: &str) -> String {
    session_at(addr, path, "2025-06-18")
}

/// Starts a session of protocol `version` at `path`; returns its id.
fn session_at(addr: &str, path: &str, version: &str) -> String {
    let r = request(addr, "POST", path, &[ACCEPT], &init_at(1, version));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["result"]["serverInfo"]["name"], json!("test-server"), "{}", r.text());
    let id = r.header("mcp-session-id").expect("a session id").to_owned();
    assert!(id.len() >= 32 && id.bytes().all(|b| (0x21..=0x7e).contains(&b)), "{id}");
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string();
    assert_eq!(request(addr, "POST", path, &[("Mcp-Session-Id", &id)], &note).status, 202);
    id
}

/// POSTs `body` in session `sid` on another thread (a request that stays in flight meanwhile).
fn in_background(addr: &str, path: &str, sid: &str, body: String) -> std::thread::JoinHandle<support::http::Reply> {
    let (addr, path, sid) = (addr.to_owned(), path.to_owned(), sid.to_owned());
    std::thread::spawn(move || request(&addr, "POST", &path, &[ACCEPT, ("Mcp-Session-Id", &sid)], &body))
}

#[test]
fn a_session_lives_from_initialize_to_delete_with_the_status_codes_of_the_spec() {
    let (_daemon, addr) = front("", &[("a", ""), ("b", "")]);
    let sid = session(&addr, "/mcp/a");
    let with = [ACCEPT, ("Mcp-Session-Id", sid.as_str()), ("MCP-Protocol-Version", "2025-06-18")];
    let r = request(&addr, "POST", "/mcp/a", &with, &call(json!(2), "echo", json!({"x": 1})));
    assert_eq!((r.status, r.header("content-type")), (200, Some("application/json")));
    assert_eq!(r.json()["result"]["echo"], json!({"x": 1}), "{}", r.text());

    let echo = call(json!(3), "echo", json!({}));
    let status = |method: &str, path: &str, headers: &[(&str, &str)], body: &str| {
        let r = request(&addr, method, path, headers, body);
        (r.status, r.json()["error"]["code"].clone())
    };
    assert_eq!(status("POST", "/mcp/a", &[ACCEPT], &echo), (400, json!(-32600)), "no session id");
    assert_eq!(status("POST", "/mcp/a", &[ACCEPT, ("Mcp-Session-Id", "nope")], &echo), (404, json!(-32001)));
    assert_eq!(status("POST", "/mcp/b", &with, &echo).0, 404, "a session belongs to its server");
    let old = [ACCEPT, ("Mcp-Session-Id", sid.as_str()), ("MCP-Protocol-Version", "2024-01-01")];
    assert_eq!(status("POST", "/mcp/a", &old, &echo), (400, json!(-32022)), "unknown protocol version");
    assert_eq!(status("POST", "/mcp/a", &with, "{not json"), (400, json!(-32700)));
    assert_eq!(status("POST", "/mcp/a", &with, &format!("[{echo}]")).0, 400, "no batches");
    assert_eq!(status("GET", "/mcp/a", &[("Mcp-Session-Id", &sid)], "").0, 406, "GET needs an event stream");
    assert_eq!(status("PUT", "/mcp/a", &with, "").0, 405);
    assert_eq!(status("POST", "/mcp/nope", &[ACCEPT], &init(1)).0, 404, "no such server");
    assert_eq!(status("POST", "/mcp", &[ACCEPT], &init(1)).0, 404, "/mcp is for a single server");
    assert_eq!(status("POST", "/elsewhere", &[ACCEPT], &init(1)).0, 404);

    assert_eq!(request(&addr, "DELETE", "/mcp/a", &[("Mcp-Session-Id", &sid)], "").status, 204);
    assert_eq!(status("POST", "/mcp/a", &with, &echo), (404, json!(-32001)), "after DELETE");
    assert_eq!(request(&addr, "GET", "/healthz", &[], "").status, 200);
    assert!(request(&addr, "GET", "/metrics", &[], "").text().contains("mcpvisor_child_up"));
}

#[test]
fn related_messages_come_first_on_an_event_stream_and_the_rest_on_the_get_stream() {
    let (_daemon, addr) = front("", &[("a", "")]);
    let sid = session(&addr, "/mcp");
    let with = [ACCEPT, ("Mcp-Session-Id", sid.as_str())];

    // A log message sent while the request runs comes first, on its stream.
    let note = json!({"method": "notifications/message", "params": {"level": "info", "data": "working"}});
    let mut s = open(&addr, "POST", "/mcp", &with, &call(json!(2), "notify", note));
    assert_eq!((s.status, s.header("content-type")), (200, Some("text/event-stream")));
    assert_eq!(s.header("x-accel-buffering"), Some("no"));
    assert_eq!(s.next_event().expect("the log message")["params"]["data"], json!("working"));
    assert_eq!(s.next_event().expect("the response")["id"], json!(2));
    assert!(s.next_event().is_none(), "the stream ends with the response");

    // A request of the server's (sampling, roots, ...) goes on the stream; the answer is POSTed.
    let mut s = open(&addr, "POST", "/mcp", &with, &call(json!(3), "ask_client", json!({"method": "roots/list"})));
    let asked = s.next_event().expect("the server's request");
    assert_eq!(asked["method"], json!("roots/list"), "{asked}");
    let answer = json!({"jsonrpc": "2.0", "id": asked["id"], "result": {"roots": []}}).to_string();
    assert_eq!(request(&addr, "POST", "/mcp", &with, &answer).status, 202);
    let done = s.next_event().expect("the response");
    assert_eq!(done["result"]["client_said"]["result"], json!({"roots": []}), "{done}");

    // With two requests in flight a notification is related to neither: the GET stream has it.
    let mut get = open(&addr, "GET", "/mcp", &with, "");
    assert_eq!(get.status, 200);
    let slow = in_background(&addr, "/mcp", &sid, call(json!(4), "slow", json!({"ms": 1500})));
    wait_for("the slow request in flight", TIMEOUT, || {
        let status = status_json(&_daemon.runtime_dir, "a").1;
        (status["in_flight"] == json!(1)).then_some(())
    });
    let changed = json!({"method": "notifications/tools/list_changed"});
    let r = request(&addr, "POST", "/mcp", &with, &call(json!(5), "notify", changed));
    assert_eq!(r.json()["id"], json!(5), "{}", r.text());
    assert_eq!(get.next_event().expect("on the GET stream")["method"], json!("notifications/tools/list_changed"));
    assert_eq!(slow.join().expect("slow").json()["result"]["slept_ms"], json!(1500));
}

#[test]
fn a_crash_of_the_server_does_not_end_the_session() {
    let (_daemon, addr) = front("", &[("a", "")]);
    let sid = session(&addr, "/mcp/a");
    let with = [ACCEPT, ("Mcp-Session-Id", sid.as_str())];
    let before = request(&addr, "POST", "/mcp/a", &with, &call(json!(2), "echo", json!({}))).json();
    let crash = request(&addr, "POST", "/mcp/a", &with, &call(json!(3), "crash", json!({"code": 3}))).json();
    assert_eq!(crash["error"]["code"], json!(-32603), "{crash}");
    assert_eq!(crash["error"]["data"]["reason"], json!("server_crashed"), "{crash}");
    // The client learns that the tools may have changed, on the stream of its next request.
    let (after, first) = rpc(&addr, "/mcp/a", &with, &call(json!(4), "echo", json!({})));
    assert!(after["result"]["pid"].is_number(), "{after}");
    assert!(first.iter().all(|m| m["method"] == json!("notifications/tools/list_changed")), "{first:?}");
    assert_ne!(after["result"]["pid"], before["result"]["pid"], "a new process, the same session");
}

#[test]
fn host_and_origin_are_checked() {
    let (_daemon, addr) = front("allowed-origin = [\"https://app.example.org\"]", &[("a", "")]);
    let body = init(1);
    let status = |headers: &[(&str, &str)]| request(&addr, "POST", "/mcp/a", headers, &body).status;
    assert_eq!(status(&[ACCEPT, ("Origin", "https://evil.example")]), 403);
    assert_eq!(status(&[ACCEPT, ("Host", "evil.example")]), 403, "DNS rebinding");
    assert_eq!(status(&[ACCEPT, ("Origin", "http://localhost:5173")]), 200);
    assert_eq!(status(&[ACCEPT, ("Origin", "https://app.example.org")]), 200);
}

#[test]
fn an_idle_session_expires_and_the_server_sees_its_client_leave() {
    let (daemon, addr) = front("session-idle-timeout = \"300ms\"", &[("a", "")]);
    let sid = session(&addr, "/mcp/a");
    daemon.wait_status("a", "one client", |s| s["clients"] == json!(1));
    // Requests would keep it alive: watch the server instead.
    daemon.wait_status("a", "no client and no process", |s| s["clients"] == json!(0) && s["processes"] == json!([]));
    let with = [ACCEPT, ("Mcp-Session-Id", sid.as_str())];
    assert_eq!(request(&addr, "POST", "/mcp/a", &with, &call(json!(2), "echo", json!({}))).status, 404);
}

#[test]
fn limits_answer_with_clear_errors() {
    let (_daemon, addr) = front("", &[("a", "max-clients = 1\nmax-message-size = \"1KiB\"")]);
    let sid = session(&addr, "/mcp/a");
    let r = request(&addr, "POST", "/mcp/a", &[ACCEPT], &init(7));
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!((r.json()["id"].clone(), r.json()["error"]["data"]["reason"].clone()), (json!(7), json!("max_clients")));
    let big = call(json!(2), "echo", json!({"pad": "x".repeat(2000)}));
    let r = request(&addr, "POST", "/mcp/a", &[ACCEPT, ("Mcp-Session-Id", &sid)], &big);
    assert_eq!(r.status, 413, "{}", r.text());
}

/// A stateless-era request (2026-07-28): no session, routing headers beside the body.
fn stateless(id: Value, method: &str, params: Value) -> String {
    let mut params = params;
    params["_meta"] = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28"});
    call(id, method, params)
}

const STATELESS: (&str, &str) = ("MCP-Protocol-Version", "2026-07-28");

#[test]
fn stateless_requests_need_no_session_and_never_mix() {
    let (_daemon, addr) = front("", &[("a", "")]);
    let with = |method: &'static str| [ACCEPT, STATELESS, ("Mcp-Method", method)];
    let r = request(&addr, "POST", "/mcp/a", &with("echo"), &stateless(json!(1), "echo", json!({"n": 0})));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("mcp-session-id"), None, "the stateless era has no sessions");
    assert_eq!(r.json()["result"]["echo"]["n"], json!(0));

    // Requests using the same id at once each get their own answer.
    let threads: Vec<_> = (1..=4)
        .map(|n| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let body = stateless(json!(7), "slow", json!({"ms": 100 * n}));
                request(&addr, "POST", "/mcp/a", &[ACCEPT, STATELESS, ("Mcp-Method", "slow")], &body).json()
            })
        })
        .collect();
    for (n, t) in (1..=4).zip(threads) {
        let answer = t.join().expect("thread");
        assert_eq!((answer["id"].clone(), answer["result"]["slept_ms"].clone()), (json!(7), json!(100 * n)));
    }

    let mismatch = request(&addr, "POST", "/mcp/a", &with("tools/list"), &stateless(json!(2), "echo", json!({})));
    assert_eq!(
        (mismatch.status, mismatch.json()["error"]["code"].clone()),
        (400, json!(-32020)),
        "{}",
        mismatch.text()
    );
    let tool = stateless(json!(3), "tools/call", json!({"name": "a_tool"}));
    let r = request(
        &addr,
        "POST",
        "/mcp/a",
        &[ACCEPT, STATELESS, ("Mcp-Method", "tools/call"), ("Mcp-Name", "other")],
        &tool,
    );
    assert_eq!(r.json()["error"]["code"], json!(-32020), "{}", r.text());
    assert_eq!(request(&addr, "GET", "/mcp/a", &[ACCEPT, STATELESS], "").status, 405);
    assert_eq!(request(&addr, "DELETE", "/mcp/a", &[STATELESS], "").status, 405);
}

#[test]
fn closing_a_stateless_stream_cancels_the_request_at_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let record = dir.path().join("record").display().to_string();
    let (_daemon, addr) = front(
        "",
        &[("a", &format!("command = [{:?}, \"--record\", {record:?}]", test_server_bin().display().to_string()))],
    );
    let mut listen = open(
        &addr,
        "POST",
        "/mcp/a",
        &[ACCEPT, STATELESS, ("Mcp-Method", "subscriptions/listen")],
        &stateless(json!("l1"), "subscriptions/listen", json!({})),
    );
    assert_eq!(listen.status, 200);
    let first = listen.next_event().expect("a notification of the subscription");
    assert_eq!(first["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], json!("l1"), "{first}");
    drop(listen);
    let cancelled = wait_for("notifications/cancelled at the server", TIMEOUT, || {
        recorded(&record).into_iter().find(|m| m["method"] == json!("notifications/cancelled"))
    });
    let listened = recorded(&record).into_iter().find(|m| m["method"] == json!("subscriptions/listen"));
    assert_eq!(cancelled["params"]["requestId"], listened.expect("the listen request")["id"], "{cancelled}");
}

#[test]
fn a_token_file_requires_a_bearer_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "# for the CI\nfirst-token\n\nsecond-token\n").expect("write");
    let (daemon, addr) = front(&format!("http-token-file = {:?}", tokens.display().to_string()), &[("a", "")]);
    let r = request(&addr, "POST", "/mcp/a", &[ACCEPT], &init(1));
    assert_eq!((r.status, r.header("www-authenticate")), (401, Some("Bearer realm=\"mcpvisor\"")));
    let wrong = request(&addr, "POST", "/mcp/a", &[ACCEPT, ("Authorization", "Bearer first")], &init(1));
    assert_eq!(wrong.status, 401);
    let right = request(&addr, "POST", "/mcp/a", &[ACCEPT, ("Authorization", "Bearer second-token")], &init(1));
    assert_eq!(right.status, 200, "{}", right.text());
    assert!(!daemon.log().contains("second-token") && !daemon.log().contains("first-token"), "tokens are never logged");
}

#[test]
fn sessions_and_streams_are_limited_per_server() {
    let (_daemon, addr) = front("max-sessions = 1\nmax-streams = 1", &[("a", ""), ("b", "")]);
    let sid = session(&addr, "/mcp/a");
    let r = request(&addr, "POST", "/mcp/a", &[ACCEPT], &init(2));
    assert_eq!((r.status, r.json()["id"].clone()), (503, json!(2)), "{}", r.text());
    assert!(r.json()["error"]["message"].as_str().is_some_and(|m| m.contains("max-sessions")), "{}", r.text());
    session(&addr, "/mcp/b");

    let get = open(&addr, "GET", "/mcp/a", &[ACCEPT, ("Mcp-Session-Id", &sid)], "");
    assert_eq!(get.status, 200);
    let second = request(&addr, "GET", "/mcp/a", &[ACCEPT, ("Mcp-Session-Id", &sid)], "");
    assert_eq!(second.status, 503, "{}", second.text());
    // With no stream to spare, a request's answer comes as JSON (what came first goes elsewhere).
    let note = json!({"method": "notifications/message", "params": {"level": "info", "data": "x"}});
    let r = request(&addr, "POST", "/mcp/a", &[ACCEPT, ("Mcp-Session-Id", &sid)], &call(json!(3), "notify", note));
    assert_eq!((r.status, r.header("content-type")), (200, Some("application/json")), "{}", r.text());
    drop(get);
    wait_for("the stream slot back", TIMEOUT, || {
        let s = open(&addr, "GET", "/mcp/a", &[ACCEPT, ("Mcp-Session-Id", &sid)], "");
        (s.status == 200).then_some(())
    });
}

#[test]
fn draining_finishes_requests_in_flight_and_turns_new_ones_away() {
    let (mut daemon, addr) = front("", &[("a", "")]);
    let sid = session(&addr, "/mcp/a");
    let slow = in_background(&addr, "/mcp/a", &sid, call(json!(2), "slow", json!({"ms": 800})));
    daemon.wait_status("a", "the slow request in flight", |s| s["in_flight"] == json!(1));
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let refused = wait_for("a 503 while draining", TIMEOUT, || {
        let r = request(&addr, "POST", "/mcp/a", &[ACCEPT], &init(3));
        (r.status == 503).then_some(r)
    });
    assert_eq!(refused.header("retry-after"), Some("5"));
    assert_eq!(slow.join().expect("slow").json()["result"]["slept_ms"], json!(800), "the request in flight finished");
    assert_eq!(daemon.wait_exit(TIMEOUT).code(), Some(0));
}

#[test]
fn a_broken_stream_is_resumed_with_last_event_id() {
    let (_daemon, addr) = front("", &[("a", "")]);
    let sid = session(&addr, "/mcp/a");
    let with = [ACCEPT, ("Mcp-Session-Id", sid.as_str())];
    let mut s = open(&addr, "POST", "/mcp/a", &with, &call(json!(2), "ask_client", json!({"method": "roots/list"})));
    let first = s.next_raw_event().expect("the first event");
    assert!(!first.field("data:").is_empty(), "no priming event before 2025-11-25: {first:?}");
    let (event_id, asked) = (first.id(), serde_json::from_str::<Value>(&first.field("data:")).expect("JSON"));
    drop(s); // the connection breaks before the response
    let answer = json!({"jsonrpc": "2.0", "id": asked["id"], "result": {"roots": []}}).to_string();
    assert_eq!(request(&addr, "POST", "/mcp/a", &with, &answer).status, 202);
    let last = event_id.to_string();
    let mut back = open(&addr, "GET", "/mcp/a", &[ACCEPT, ("Mcp-Session-Id", &sid), ("Last-Event-ID", &last)], "");
    assert_eq!(back.status, 200);
    let (id, response) = back.next_event_with_id().expect("the response, replayed");
    assert!(id > event_id, "event ids grow within a session");
    assert_eq!(response["id"], json!(2), "{response}");
    assert!(back.next_event().is_none(), "the resumed POST stream ends with its response");
}

#[test]
fn https_with_a_certificate_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let certified = rcgen::generate_simple_self_signed(names).expect("a self-signed certificate");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).expect("write");
    std::fs::write(&key, certified.key_pair.serialize_pem()).expect("write");
    let top = format!("tls-cert = {:?}\ntls-key = {:?}", cert.display().to_string(), key.display().to_string());
    let (_daemon, addr) = front(&top, &[("a", "")]);
    let port = addr.rsplit(':').next().expect("a port").to_owned();
    // A client that checks the certificate (Python's ssl, with the certificate as its CA).
    let client = r#"
import http.client, json, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
c = http.client.HTTPSConnection("localhost", int(sys.argv[1]), context=ctx)
body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
c.request("POST", "/mcp/a", body=body, headers={"Content-Type": "application/json",
    "Accept": "application/json, text/event-stream"})
r = c.getresponse()
print(r.status, r.getheader("mcp-session-id") is not None, json.loads(r.read())["result"]["serverInfo"]["name"])
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", client, &port, &cert.display().to_string()])
        .output()
        .expect("run python3");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "200 True test-server",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Plain HTTP on the TLS port gets nothing useful.
    let mut plain = std::net::TcpStream::connect(&addr).expect("connect");
    plain.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    std::io::Write::write_all(&mut plain, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").expect("write");
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut plain, &mut answer);
    assert!(!String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"), "no plain HTTP on the TLS port");
}

#[test]
fn streams_of_a_2025_11_25_session_start_with_a_priming_event_to_resume_from() {
    let (_daemon, addr) = front("", &[("a", "")]);
    let sid = session_at(&addr, "/mcp/a", "2025-11-25");
    let with = [ACCEPT, ("Mcp-Session-Id", sid.as_str()), ("MCP-Protocol-Version", "2025-11-25")];
    let mut s = open(&addr, "POST", "/mcp/a", &with, &call(json!(2), "ask_client", json!({"method": "roots/list"})));
    let priming = s.next_raw_event().expect("the priming event");
    assert!(priming.field("data:").is_empty() && priming.id() > 0, "{priming:?}");
    assert_eq!(priming.field("retry:"), "1000", "{priming:?}");
    drop(s); // the connection breaks right after the priming event

    // Back from the priming event: the whole stream, the server's request first.
    let get = [ACCEPT, ("Mcp-Session-Id", sid.as_str()), ("MCP-Protocol-Version", "2025-11-25")];
    let last = priming.id().to_string();
    let mut back = open(&addr, "GET", "/mcp/a", &[get[0], get[1], get[2], ("Last-Event-ID", &last)], "");
    assert_eq!(back.status, 200);
    let asked = back.next_event().expect("the server's request, replayed");
    assert_eq!(asked["method"], json!("roots/list"), "{asked}");
    let answer = json!({"jsonrpc": "2.0", "id": asked["id"], "result": {"roots": []}}).to_string();
    assert_eq!(request(&addr, "POST", "/mcp/a", &with, &answer).status, 202);
    assert_eq!(back.next_event().expect("the response")["id"], json!(2));
    assert!(back.next_event().is_none(), "the resumed POST stream ends with its response");

    // A fresh GET stream is primed too; a resumed one is not (the client has an id already).
    let mut fresh = open(&addr, "GET", "/mcp/a", &get, "");
    let primed = fresh.next_raw_event().expect("the GET stream's priming event");
    assert!(primed.field("data:").is_empty() && primed.id() > priming.id(), "{primed:?}");
}

#[test]
fn a_replica_names_itself_in_the_session_ids_it_mints() {
    let (_daemon, addr) = front("replica = \"mcp-1\"", &[("a", "")]);
    let sid = session(&addr, "/mcp/a");
    let (replica, random) = sid.split_once('.').expect("REPLICA.RANDOM");
    assert_eq!(replica, "mcp-1");
    assert!(random.len() == 32 && random.bytes().all(|b| b.is_ascii_hexdigit()), "{sid}");
    let bad = std::process::Command::new(mcpvisor_bin())
        .args(["serve", "--http", "127.0.0.1:0", "--replica", "a.b", "--", "true"])
        .output()
        .expect("run mcpvisor");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("letters, digits"), "{bad:?}");
}
