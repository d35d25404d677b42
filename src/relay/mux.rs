//! Shared mode: several clients on one server process, which sees a single client. Pure: each
//! message in gives the messages out ([`Out`]); the daemon does the I/O.
//!
//! The rules (README.md states them for users):
//! - **Ids** of client requests are replaced by ids of the mux's own (`"mux-N"`), so two clients
//!   may use the same ids at once; every answer goes back, with its original id, only to the
//!   client that asked. `notifications/cancelled` from a client is mapped the same way.
//! - **Progress tokens** (`params._meta.progressToken`) are replaced too, so each
//!   `notifications/progress` reaches only its client.
//! - **initialize**: the first client's goes to the server; a later client asking for the same
//!   protocol version is answered from the server's result (its `notifications/initialized` is
//!   not repeated). A client of another version or era gets a process of its own ([`Out::Detach`]).
//! - **Subscriptions**: `resources/subscribe` reaches the server for the first subscriber of a
//!   URI only, `resources/unsubscribe` for the last one (a leaving client's are dropped the same
//!   way); `notifications/resources/updated` goes to that URI's subscribers only. A stateless-era
//!   `subscriptions/listen` is a request like any other: its notifications, tagged with its id,
//!   reach only its client.
//! - **Broadcast**: `list_changed` notifications, log messages and other notifications go to
//!   every client.
//! - **Server→client requests** (sampling, elicitation, roots) go to the only client, or to the
//!   only client with requests in flight; otherwise the server gets an error saying that the
//!   request could be for any of them.
//! - A client that leaves has its requests cancelled at the server.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use smol_str::SmolStr;

use super::batch::{Batches, Routed};
use super::inflight::IdMap;
use crate::protocol::errors::OwnError;
use crate::protocol::jsonrpc::{self, splice, Envelope, Id, Kind, Message, Params, INTERNAL_ERROR};

/// A client of the shared process, numbered by the daemon.
pub type ClientId = u64;

/// What to do after a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// Send to the server process.
    Upstream(Bytes),
    /// Send to one client.
    Client(ClientId, Bytes),
    /// This client needs a process of its own (another protocol version or era); the message is
    /// its first one for it.
    Detach(ClientId, Bytes),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Era {
    Unknown,
    Handshake { version: String },
    Stateless,
}

#[derive(Debug)]
enum Init {
    None,
    /// The first client's `initialize` is at the server; others of the same version wait.
    Pending {
        waiting: Vec<(ClientId, Id)>,
    },
    Done {
        result: String,
    },
}

/// A request of the mux's at the server.
#[derive(Debug)]
struct Pending {
    /// Whose it is (`None`: the mux's own, or its client left).
    client: Option<ClientId>,
    id: Id,
    method: SmolStr,
    /// The progress token it was given, to forget with it.
    token: Option<String>,
}

#[derive(Debug, Default)]
struct Client {
    /// Its request ids in flight, and the ids they have at the server.
    requests: IdMap<Id>,
    batches: Batches,
}

#[derive(Debug)]
pub struct Mux {
    clients: BTreeMap<ClientId, Client>,
    pending: IdMap<Pending>,
    next: u64,
    /// Progress tokens at the server → their client and original token (JSON text).
    tokens: HashMap<String, (ClientId, String)>,
    /// Requests of the server's, and the client each went to.
    server_requests: IdMap<ClientId>,
    subscriptions: BTreeMap<String, BTreeSet<ClientId>>,
    era: Era,
    init: Init,
    initialized_sent: bool,
}

impl Default for Mux {
    fn default() -> Self {
        Mux {
            clients: BTreeMap::new(),
            pending: IdMap::default(),
            next: 0,
            tokens: HashMap::new(),
            server_requests: IdMap::default(),
            subscriptions: BTreeMap::new(),
            era: Era::Unknown,
            init: Init::None,
            initialized_sent: false,
        }
    }
}

#[derive(Deserialize)]
struct MetaToken<'a> {
    #[serde(default, rename = "_meta", borrow)]
    meta: Option<TokenField<'a>>,
    #[serde(default, rename = "progressToken", borrow)]
    progress_token: Option<&'a RawValue>,
    #[serde(default, rename = "protocolVersion")]
    protocol_version: Option<String>,
}

#[derive(Deserialize)]
struct TokenField<'a> {
    #[serde(default, rename = "progressToken", borrow)]
    progress_token: Option<&'a RawValue>,
    #[serde(default, rename = "io.modelcontextprotocol/subscriptionId", borrow)]
    subscription_id: Option<&'a RawValue>,
}

fn fields(params: Option<&str>) -> Option<MetaToken<'_>> {
    params.and_then(|p| serde_json::from_str(p).ok())
}

/// A result line for request `id`.
fn result_line(id: &Id, result: &str) -> Bytes {
    Bytes::from(format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{result}}}"#))
}

impl Mux {
    pub fn connect(&mut self, client: ClientId) {
        self.clients.entry(client).or_default();
    }

    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// Whether a client still waits for answers: its requests at the server, or its
    /// `initialize` waiting for another client's.
    pub fn awaiting(&self, client: ClientId) -> bool {
        let waits_for_init =
            matches!(&self.init, Init::Pending { waiting } if waiting.iter().any(|(c, _)| *c == client));
        waits_for_init || self.clients.get(&client).is_some_and(|c| !c.requests.is_empty())
    }

    fn issue(&mut self) -> Id {
        self.next += 1;
        Id::string(format!("mux-{}", self.next))
    }

    /// A message from a client.
    pub fn on_client(&mut self, client: ClientId, line: &[u8]) -> Vec<Out> {
        let mut out = Vec::new();
        let Ok(text) = std::str::from_utf8(line) else {
            let e = OwnError::Parse { detail: "not valid UTF-8".into() };
            return vec![Out::Client(client, e.response(None))];
        };
        match jsonrpc::parse(line) {
            Err(e) => out.push(Out::Client(client, OwnError::Parse { detail: e.to_string() }.response(None))),
            Ok(Message::Single(env)) => self.client_message(client, env, text, None, &mut out),
            Ok(Message::Batch(items)) if items.is_empty() => {
                out.push(Out::Client(client, OwnError::EmptyBatch.response(None)));
            }
            Ok(Message::Batch(items)) => {
                let Some(number) = self.clients.get_mut(&client).map(|c| c.batches.open()) else { return out };
                for env in items {
                    let member = env.raw;
                    self.client_message(client, env, member.get(), Some(number), &mut out);
                }
                if let Some(array) = self.clients.get_mut(&client).and_then(|c| c.batches.seal(number)) {
                    out.push(Out::Client(client, array));
                }
            }
        }
        out
    }

    fn client_message(
        &mut self,
        client: ClientId,
        env: Envelope<'_>,
        text: &str,
        batch: Option<u64>,
        out: &mut Vec<Out>,
    ) {
        match env.kind {
            Kind::Request { ref id, ref method, .. } => {
                let (id, method) = (id.clone(), method.clone());
                if let (Some(number), Some(c)) = (batch, self.clients.get_mut(&client)) {
                    c.batches.expect(number, id.clone());
                }
                self.client_request(client, id, &method, &env, text, out);
            }
            Kind::Notification { ref method } => self.client_notification(client, method, &env, text, out),
            Kind::Response { ref id, .. } => {
                if self.server_requests.get(id) == Some(&client) {
                    self.server_requests.remove(id);
                    out.push(Out::Upstream(Bytes::copy_from_slice(text.as_bytes())));
                } else {
                    tracing::debug!(client, %id, "a client answered a request that is not its own; dropped");
                }
            }
            Kind::Invalid { id, reason } => {
                let line = OwnError::Invalid { detail: reason }.response(id.as_ref());
                match (batch, self.clients.get_mut(&client)) {
                    (Some(number), Some(c)) => c.batches.add(number, line),
                    _ => out.push(Out::Client(client, line)),
                }
            }
        }
    }

    fn client_request(
        &mut self,
        client: ClientId,
        id: Id,
        method: &str,
        env: &Envelope<'_>,
        text: &str,
        out: &mut Vec<Out>,
    ) {
        if self.clients.get(&client).is_some_and(|c| c.requests.contains_key(&id)) {
            let line = OwnError::DuplicateId { id: id.clone() }.response(Some(&id));
            out.push(Out::Client(client, line));
            return;
        }
        let stateless = jsonrpc::is_stateless(env.params);
        match method {
            "initialize" => {
                let version = fields(env.params_text()).and_then(|f| f.protocol_version).unwrap_or_default();
                match (&self.era, &mut self.init) {
                    (Era::Unknown, _) => {
                        self.era = Era::Handshake { version };
                        self.init = Init::Pending { waiting: Vec::new() };
                    }
                    (Era::Handshake { version: v }, Init::Done { result }) if *v == version => {
                        let line = result_line(&id, result);
                        self.answer(client, &id, line, out);
                        return;
                    }
                    (Era::Handshake { version: v }, Init::Pending { waiting }) if *v == version => {
                        waiting.push((client, id));
                        return;
                    }
                    _ => {
                        out.push(Out::Detach(client, Bytes::copy_from_slice(text.as_bytes())));
                        return;
                    }
                }
            }
            "server/discover" => {}
            _ if stateless => match self.era {
                Era::Unknown => self.era = Era::Stateless,
                Era::Stateless => {}
                Era::Handshake { .. } => {
                    out.push(Out::Detach(client, Bytes::copy_from_slice(text.as_bytes())));
                    return;
                }
            },
            "resources/subscribe" | "resources/unsubscribe" => {
                if let Some(uri) = Params::read(env.params_text()).uri.map(|u| u.into_owned()) {
                    let subscribers = self.subscriptions.entry(uri.clone()).or_default();
                    let to_server = if method == "resources/subscribe" {
                        let first = subscribers.is_empty();
                        subscribers.insert(client);
                        first
                    } else {
                        let was = subscribers.remove(&client);
                        let last = was && subscribers.is_empty();
                        if subscribers.is_empty() {
                            self.subscriptions.remove(&uri);
                        }
                        last
                    };
                    if !to_server {
                        self.answer(client, &id, result_line(&id, "{}"), out);
                        return;
                    }
                }
            }
            _ => {}
        }
        self.forward(client, id, method, env, text, out);
    }

    /// Sends a client request to the server under an id (and progress token) of the mux's.
    fn forward(&mut self, client: ClientId, id: Id, method: &str, env: &Envelope<'_>, text: &str, out: &mut Vec<Out>) {
        let upstream = self.issue();
        let mut edits = Vec::new();
        if let Some(id_text) = env.id_text {
            edits.push((id_text.as_bytes(), upstream.to_json()));
        }
        let mut token = None;
        if let Some(original) =
            fields(jsonrpc::progress_token_params(env.params)).and_then(|f| f.meta).and_then(|m| m.progress_token)
        {
            let mapped = serde_json::Value::from(format!("mux-t{}", self.next)).to_string();
            self.tokens.insert(mapped.clone(), (client, original.get().to_owned()));
            edits.push((original.get().as_bytes(), mapped.clone()));
            token = Some(mapped);
        }
        let Some(line) = splice(text, edits) else { return };
        if let Some(c) = self.clients.get_mut(&client) {
            c.requests.insert(id.clone(), upstream.clone());
        }
        self.pending.insert(upstream, Pending { client: Some(client), id, method: method.into(), token });
        out.push(Out::Upstream(Bytes::from(line)));
    }

    fn client_notification(
        &mut self,
        client: ClientId,
        method: &str,
        env: &Envelope<'_>,
        text: &str,
        out: &mut Vec<Out>,
    ) {
        match method {
            "notifications/initialized" => {
                if !std::mem::replace(&mut self.initialized_sent, true) {
                    out.push(Out::Upstream(Bytes::copy_from_slice(text.as_bytes())));
                }
            }
            "notifications/cancelled" => {
                let params = Params::read(env.params_text());
                let (Some(raw), Some(target)) = (params.request_id, params.request_id()) else { return };
                let Some(upstream) = self.clients.get_mut(&client).and_then(|c| c.requests.remove(&target)) else {
                    return;
                };
                if let Some(p) = self.pending.remove(&upstream) {
                    self.forget_token(&p);
                }
                if let Some(number) = self.clients.get_mut(&client).and_then(|c| c.batches.forget(&target)) {
                    out.push(Out::Client(client, number));
                }
                if let Some(line) = splice(text, vec![(raw.get().as_bytes(), upstream.to_json())]) {
                    out.push(Out::Upstream(Bytes::from(line)));
                }
            }
            _ => out.push(Out::Upstream(Bytes::copy_from_slice(text.as_bytes()))),
        }
    }

    fn forget_token(&mut self, pending: &Pending) {
        if let Some(token) = &pending.token {
            self.tokens.remove(token);
        }
    }

    /// Sends the answer to a client's request `id`, through the batch it came in, if any.
    fn answer(&mut self, client: ClientId, id: &Id, line: Bytes, out: &mut Vec<Out>) {
        let Some(c) = self.clients.get_mut(&client) else { return };
        match c.batches.answer(id, line) {
            Routed::Alone(line) | Routed::Batch(line) => out.push(Out::Client(client, line)),
            Routed::Held => {}
        }
    }

    /// A message from the server process.
    pub fn on_upstream(&mut self, line: &[u8]) -> Vec<Out> {
        let mut out = Vec::new();
        let Ok(text) = std::str::from_utf8(line) else { return out };
        match jsonrpc::parse(line) {
            Ok(Message::Single(env)) => self.upstream_message(env, text, &mut out),
            Ok(Message::Batch(items)) => {
                for env in items {
                    let member = env.raw;
                    self.upstream_message(env, member.get(), &mut out);
                }
            }
            Err(e) => tracing::warn!("the shared server sent a line that is not JSON: {e}"),
        }
        out
    }

    fn upstream_message(&mut self, env: Envelope<'_>, text: &str, out: &mut Vec<Out>) {
        match env.kind {
            Kind::Response { ref id, is_error } => self.upstream_response(id, is_error, &env, text, out),
            Kind::Notification { ref method } => self.upstream_notification(method, &env, text, out),
            Kind::Request { ref id, ref method, .. } => {
                let target = match self.clients.len() {
                    1 => self.clients.keys().next().copied(),
                    _ => {
                        let busy: Vec<ClientId> =
                            self.clients.iter().filter(|(_, c)| !c.requests.is_empty()).map(|(k, _)| *k).collect();
                        (busy.len() == 1).then(|| busy[0])
                    }
                };
                match target {
                    Some(client) => {
                        self.server_requests.insert(id.clone(), client);
                        out.push(Out::Client(client, Bytes::copy_from_slice(text.as_bytes())));
                    }
                    None => {
                        let message = format!(
                            "mcpvisor: this shared MCP server has {} clients and the {method} request could be for any of them; \
                             use share = \"per-client\" for servers that send requests to their clients",
                            self.clients.len()
                        );
                        let data = serde_json::json!({ "reason": "ambiguous_client", "source": "mcpvisor" });
                        out.push(Out::Upstream(jsonrpc::error_response(
                            Some(id),
                            INTERNAL_ERROR,
                            &message,
                            Some(data),
                        )));
                    }
                }
            }
            Kind::Invalid { .. } => tracing::warn!("the shared server sent an invalid message: {text}"),
        }
    }

    fn upstream_response(&mut self, id: &Id, is_error: bool, env: &Envelope<'_>, text: &str, out: &mut Vec<Out>) {
        let Some(pending) = self.pending.remove(id) else {
            tracing::debug!(%id, "an answer from the shared server for nobody (cancelled, or its client left)");
            return;
        };
        self.forget_token(&pending);
        if pending.method == "initialize" {
            let waiting = match std::mem::replace(&mut self.init, Init::None) {
                Init::Pending { waiting } => waiting,
                _ => Vec::new(),
            };
            let result = env.result_text().unwrap_or("null");
            if is_error {
                // Nobody initialized: the next client's initialize goes to the server again.
                self.era = Era::Unknown;
                for (client, wid) in waiting {
                    let line = Bytes::from(format!(r#"{{"jsonrpc":"2.0","id":{wid},"error":{result}}}"#));
                    self.answer(client, &wid, line, out);
                }
            } else {
                self.init = Init::Done { result: result.to_owned() };
                for (client, wid) in waiting {
                    self.answer(client, &wid, result_line(&wid, result), out);
                }
            }
        }
        let Some(client) = pending.client else { return };
        if let Some(c) = self.clients.get_mut(&client) {
            c.requests.remove(&pending.id);
        }
        let line = match env.id_text.and_then(|part| splice(text, vec![(part.as_bytes(), pending.id.to_json())])) {
            Some(line) => Bytes::from(line),
            None => return,
        };
        self.answer(client, &pending.id, line, out);
    }

    fn upstream_notification(&mut self, method: &str, env: &Envelope<'_>, text: &str, out: &mut Vec<Out>) {
        let fields = fields(env.params_text());
        match method {
            "notifications/progress" => {
                let Some(token) = fields.as_ref().and_then(|f| f.progress_token) else { return };
                let Some((client, original)) = self.tokens.get(token.get()).cloned() else { return };
                if let Some(line) = splice(text, vec![(token.get().as_bytes(), original)]) {
                    out.push(Out::Client(client, Bytes::from(line)));
                }
            }
            "notifications/cancelled" => {
                let Some(target) = Params::read(env.params_text()).request_id() else { return };
                if let Some(client) = self.server_requests.remove(&target) {
                    out.push(Out::Client(client, Bytes::copy_from_slice(text.as_bytes())));
                }
            }
            "notifications/resources/updated" => {
                let uri = Params::read(env.params_text()).uri.map(|u| u.into_owned()).unwrap_or_default();
                for client in self.subscriptions.get(&uri).into_iter().flatten() {
                    out.push(Out::Client(*client, Bytes::copy_from_slice(text.as_bytes())));
                }
            }
            _ => {
                // A stateless-era subscription's notification carries the id of its listen request.
                let subscription = fields.as_ref().and_then(|f| f.meta.as_ref()).and_then(|m| m.subscription_id);
                if let Some(raw) = subscription {
                    let owner = Id::from_json(raw.get()).and_then(|up| self.pending.get(&up));
                    if let Some(Pending { client: Some(client), id, .. }) = owner {
                        if let Some(line) = splice(text, vec![(raw.get().as_bytes(), id.to_json())]) {
                            out.push(Out::Client(*client, Bytes::from(line)));
                        }
                    }
                    return;
                }
                for client in self.clients.keys() {
                    out.push(Out::Client(*client, Bytes::copy_from_slice(text.as_bytes())));
                }
            }
        }
    }

    /// A client left: its requests are cancelled at the server, its subscriptions dropped, and
    /// requests the server had sent it answered with an error.
    pub fn disconnect(&mut self, client: ClientId) -> Vec<Out> {
        let mut out = Vec::new();
        let Some(gone) = self.clients.remove(&client) else { return out };
        for (_, upstream) in gone.requests {
            let Some(pending) = self.pending.get_mut(&upstream) else { continue };
            if pending.method == "initialize" {
                // Its answer still initializes the process for the others.
                pending.client = None;
                continue;
            }
            if let Some(p) = self.pending.remove(&upstream) {
                self.forget_token(&p);
            }
            out.push(Out::Upstream(jsonrpc::cancelled(&upstream, "mcpvisor: the client disconnected")));
        }
        if let Init::Pending { waiting } = &mut self.init {
            waiting.retain(|(c, _)| *c != client);
        }
        let emptied: Vec<String> = self
            .subscriptions
            .iter_mut()
            .filter_map(|(uri, subscribers)| {
                (subscribers.remove(&client) && subscribers.is_empty()).then(|| uri.clone())
            })
            .collect();
        for uri in emptied {
            self.subscriptions.remove(&uri);
            let id = self.issue();
            let params = serde_json::json!({ "uri": uri }).to_string();
            out.push(Out::Upstream(jsonrpc::request(&id, "resources/unsubscribe", Some(&params))));
            self.pending
                .insert(id.clone(), Pending { client: None, id, method: "resources/unsubscribe".into(), token: None });
        }
        let asked: Vec<Id> =
            self.server_requests.iter().filter(|(_, c)| **c == client).map(|(id, _)| id.clone()).collect();
        for id in asked {
            self.server_requests.remove(&id);
            let data = serde_json::json!({ "reason": "client_gone", "source": "mcpvisor" });
            let message = "mcpvisor: the client this request was for has disconnected";
            out.push(Out::Upstream(jsonrpc::error_response(Some(&id), INTERNAL_ERROR, message, Some(data))));
        }
        out
    }
}

#[cfg(test)]
mod tests;
