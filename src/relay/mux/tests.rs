//! The shared-mode rules, one test each, on messages made up here.

use serde_json::{json, Value};

use super::*;

fn line(v: Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

fn json_of(b: &Bytes) -> Value {
    serde_json::from_slice(b).expect("JSON out")
}

/// The messages for the server, and for each client, as JSON.
fn split(out: Vec<Out>) -> (Vec<Value>, Vec<(ClientId, Value)>, Vec<ClientId>) {
    let (mut up, mut to, mut detached) = (Vec::new(), Vec::new(), Vec::new());
    for o in out {
        match o {
            Out::Upstream(b) => up.push(json_of(&b)),
            Out::Client(c, b) => to.push((c, json_of(&b))),
            Out::Detach(c, _) => detached.push(c),
        }
    }
    (up, to, detached)
}

fn request(id: Value, method: &str, params: Value) -> Vec<u8> {
    line(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
}

fn init(version: &str) -> Vec<u8> {
    request(json!(0), "initialize", json!({"protocolVersion": version, "capabilities": {}}))
}

/// A mux with clients 1 and 2, both initialized with 2025-06-18.
fn two_clients() -> Mux {
    let mut mux = Mux::default();
    mux.connect(1);
    mux.connect(2);
    let (up, _, _) = split(mux.on_client(1, &init("2025-06-18")));
    let answer =
        json!({"jsonrpc": "2.0", "id": up[0]["id"], "result": {"protocolVersion": "2025-06-18", "capabilities": {}}});
    mux.on_upstream(&line(answer));
    mux.on_client(1, &line(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})));
    mux.on_client(2, &init("2025-06-18"));
    mux.on_client(2, &line(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})));
    mux
}

#[test]
fn the_same_ids_from_two_clients_never_collide_and_answers_go_back_to_their_client() {
    let mut mux = two_clients();
    let (up1, _, _) = split(mux.on_client(1, &request(json!(5), "tools/call", json!({"name": "a"}))));
    let (up2, _, _) = split(mux.on_client(2, &request(json!(5), "tools/call", json!({"name": "b"}))));
    assert_ne!(up1[0]["id"], up2[0]["id"]);
    assert_eq!((up1[0]["params"]["name"].clone(), up2[0]["params"]["name"].clone()), (json!("a"), json!("b")));
    let (_, to, _) = split(mux.on_upstream(&line(json!({"jsonrpc": "2.0", "id": up2[0]["id"], "result": {"b": 1}}))));
    assert_eq!(to, vec![(2, json!({"jsonrpc": "2.0", "id": 5, "result": {"b": 1}}))]);
    let (_, to, _) = split(mux.on_upstream(&line(json!({"jsonrpc": "2.0", "id": up1[0]["id"], "result": {"a": 1}}))));
    assert_eq!(to, vec![(1, json!({"jsonrpc": "2.0", "id": 5, "result": {"a": 1}}))]);
    let (_, to, _) = split(mux.on_client(1, &request(json!("x"), "ping", json!({}))));
    assert!(to.is_empty());
    let (_, to, _) = split(mux.on_client(1, &request(json!("x"), "ping", json!({}))));
    assert_eq!(to[0].1["error"]["data"]["reason"], json!("duplicate_id"));
}

#[test]
fn a_later_initialize_is_answered_from_the_first_one_and_initialized_goes_once() {
    let mut mux = Mux::default();
    mux.connect(1);
    mux.connect(2);
    let (up, _, _) = split(mux.on_client(1, &init("2025-06-18")));
    assert_eq!(up[0]["method"], json!("initialize"));
    // The second client asks while the first is still waiting.
    let (up2, to2, _) =
        split(mux.on_client(2, &request(json!("i"), "initialize", json!({"protocolVersion": "2025-06-18"}))));
    assert!(up2.is_empty() && to2.is_empty());
    let result = json!({"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}});
    let (_, to, _) = split(mux.on_upstream(&line(json!({"jsonrpc": "2.0", "id": up[0]["id"], "result": result}))));
    assert_eq!(to.len(), 2);
    assert!(to.contains(&(1, json!({"jsonrpc": "2.0", "id": 0, "result": result}))));
    assert!(to.contains(&(2, json!({"jsonrpc": "2.0", "id": "i", "result": result}))));
    let note = line(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    assert_eq!(split(mux.on_client(1, &note)).0.len(), 1);
    assert_eq!(split(mux.on_client(2, &note)).0.len(), 0, "the server is initialized once");
    // A third client, later: answered at once from the same result.
    mux.connect(3);
    let (up, to, _) = split(mux.on_client(3, &init("2025-06-18")));
    assert!(up.is_empty());
    assert_eq!(to, vec![(3, json!({"jsonrpc": "2.0", "id": 0, "result": result}))]);
}

#[test]
fn a_client_of_another_version_or_era_gets_a_process_of_its_own() {
    let mut mux = two_clients();
    mux.connect(3);
    assert_eq!(split(mux.on_client(3, &init("2025-03-26"))).2, vec![3]);
    mux.connect(4);
    let stateless =
        request(json!(1), "tools/list", json!({"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}));
    assert_eq!(split(mux.on_client(4, &stateless)).2, vec![4]);

    let mut mux = Mux::default();
    mux.connect(1);
    mux.connect(2);
    let (up, _, detached) = split(mux.on_client(1, &stateless));
    assert!(detached.is_empty() && up.len() == 1, "the first client sets the era");
    assert_eq!(split(mux.on_client(2, &init("2025-06-18"))).2, vec![2]);
    // A dual-era client's probe does not lock the era.
    let mut mux = Mux::default();
    mux.connect(1);
    let probe = request(
        json!(1),
        "server/discover",
        json!({"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}),
    );
    mux.on_client(1, &probe);
    assert!(split(mux.on_client(1, &init("2025-06-18"))).2.is_empty());
}

#[test]
fn progress_and_cancellation_reach_only_their_client() {
    let mut mux = two_clients();
    let (up, _, _) = split(mux.on_client(1, &request(json!(7), "tools/call", json!({"_meta": {"progressToken": 7}}))));
    let token = up[0]["params"]["_meta"]["progressToken"].clone();
    assert_ne!(token, json!(7), "the token is the mux's");
    let progress = line(
        json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": token, "progress": 1}}),
    );
    let (_, to, _) = split(mux.on_upstream(&progress));
    assert_eq!(
        to,
        vec![(
            1,
            json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 7, "progress": 1}})
        )]
    );
    let cancel = line(
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7, "reason": "no"}}),
    );
    let (up2, _, _) = split(mux.on_client(1, &cancel));
    assert_eq!(up2[0]["params"]["requestId"], up[0]["id"]);
    assert!(split(mux.on_client(2, &cancel)).0.is_empty(), "client 2 has no request 7");
    assert!(split(mux.on_upstream(&progress)).1.is_empty(), "the token went with its request");
}

#[test]
fn subscriptions_are_counted_and_updates_reach_subscribers_only() {
    let mut mux = two_clients();
    let sub = |id: i64| request(json!(id), "resources/subscribe", json!({"uri": "file:///a"}));
    let (up, _, _) = split(mux.on_client(1, &sub(1)));
    assert_eq!(up.len(), 1, "the first subscriber reaches the server");
    let (up, to, _) = split(mux.on_client(2, &sub(1)));
    assert!(up.is_empty());
    assert_eq!(to, vec![(2, json!({"jsonrpc": "2.0", "id": 1, "result": {}}))]);
    mux.connect(3);
    let updated =
        line(json!({"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": "file:///a"}}));
    let (_, to, _) = split(mux.on_upstream(&updated));
    assert_eq!(to.iter().map(|(c, _)| *c).collect::<Vec<_>>(), vec![1, 2]);
    let unsub = request(json!(2), "resources/unsubscribe", json!({"uri": "file:///a"}));
    assert!(split(mux.on_client(1, &unsub)).0.is_empty(), "client 2 still subscribes");
    let (up, _, _) = split(mux.disconnect(2));
    assert_eq!(up[0]["method"], json!("resources/unsubscribe"), "the last subscriber left");
    assert!(split(mux.on_upstream(&line(json!({"jsonrpc": "2.0", "id": up[0]["id"], "result": {}})))).1.is_empty());
}

#[test]
fn list_changed_goes_to_everyone() {
    let mut mux = two_clients();
    let note = line(json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}));
    assert_eq!(split(mux.on_upstream(&note)).1.len(), 2);
}

#[test]
fn a_server_request_goes_to_the_client_it_can_be_for_or_is_refused() {
    let mut mux = two_clients();
    let ask = line(json!({"jsonrpc": "2.0", "id": 0, "method": "roots/list"}));
    let (up, to, _) = split(mux.on_upstream(&ask));
    assert!(to.is_empty());
    assert_eq!(up[0]["error"]["data"]["reason"], json!("ambiguous_client"), "two idle clients: nobody to ask");
    mux.on_client(2, &request(json!(9), "tools/call", json!({})));
    let (_, to, _) = split(mux.on_upstream(&ask));
    assert_eq!(to[0].0, 2, "the only client with a request in flight");
    let answer = line(json!({"jsonrpc": "2.0", "id": 0, "result": {"roots": []}}));
    assert!(split(mux.on_client(1, &answer)).0.is_empty(), "not client 1's to answer");
    assert_eq!(split(mux.on_client(2, &answer)).0.len(), 1);
}

#[test]
fn a_leaving_client_has_its_requests_cancelled_and_its_questions_refused() {
    let mut mux = two_clients();
    let (up, _, _) = split(mux.on_client(2, &request(json!(1), "tools/call", json!({}))));
    mux.on_upstream(&line(json!({"jsonrpc": "2.0", "id": "srv-1", "method": "sampling/createMessage"})));
    let (up2, _, _) = split(mux.disconnect(2));
    assert!(up2
        .iter()
        .any(|m| m["method"] == json!("notifications/cancelled") && m["params"]["requestId"] == up[0]["id"]));
    assert!(up2.iter().any(|m| m["id"] == json!("srv-1") && m["error"]["data"]["reason"] == json!("client_gone")));
    assert!(split(mux.on_upstream(&line(json!({"jsonrpc": "2.0", "id": up[0]["id"], "result": {}})))).1.is_empty());
}

#[test]
fn a_batch_is_answered_as_one_array() {
    let mut mux = two_clients();
    let batch = line(json!([
        {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 2, "method": "prompts/list"},
        {"jsonrpc": "2.0", "method": "x"},
    ]));
    let (up, to, _) = split(mux.on_client(1, &batch));
    assert_eq!((up.len(), to.len()), (3, 0));
    mux.on_upstream(&line(json!({"jsonrpc": "2.0", "id": up[1]["id"], "result": {"p": 1}})));
    let (_, to, _) = split(mux.on_upstream(&line(json!({"jsonrpc": "2.0", "id": up[0]["id"], "result": {"t": 1}}))));
    assert_eq!(to[0].0, 1);
    let ids: Vec<Value> = to[0].1.as_array().expect("an array").iter().map(|m| m["id"].clone()).collect();
    assert_eq!(ids, vec![json!(2), json!(1)]);
}

#[test]
fn a_stateless_subscription_notification_reaches_its_client_with_its_id() {
    let mut mux = Mux::default();
    mux.connect(1);
    mux.connect(2);
    let meta = json!({"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}});
    let (up, _, _) = split(mux.on_client(2, &request(json!("sub-1"), "subscriptions/listen", meta)));
    let note = line(json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed",
        "params": {"_meta": {"io.modelcontextprotocol/subscriptionId": up[0]["id"]}}}));
    let (_, to, _) = split(mux.on_upstream(&note));
    assert_eq!(to.len(), 1);
    assert_eq!(to[0].0, 2);
    assert_eq!(to[0].1["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], json!("sub-1"));
}
