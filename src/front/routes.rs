//! Where a server's message goes within one HTTP session (pure: no I/O).
//!
//! Over stdio everything goes down one pipe; over Streamable HTTP each message must go to the
//! one stream it belongs to:
//! - a response goes to the POST that carries its request (and ends that POST's stream);
//! - a progress notification goes to the POST whose request gave its `progressToken`;
//! - a server→client request (sampling, elicitation, roots) or another notification goes to the
//!   only POST in flight when there is exactly one (it is then related to it, as the spec
//!   allows), else to the session's GET stream; when no GET stream is open, it waits in a
//!   bounded backlog that the next GET stream receives first.
//!
//! A response whose POST is gone (its client disconnected) has nowhere to go: it is dropped and
//! reported, never sent on another stream.

use std::collections::{HashMap, VecDeque};

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::protocol::jsonrpc::{self, Id, Json, Kind, Message};

/// Messages that may wait for a GET stream before the oldest are dropped.
pub const BACKLOG: usize = 1000;

/// Where one message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// To the POST of this request; `last`: the response, which ends it.
    Post { request: Id, last: bool },
    /// To the session's GET stream.
    Stream,
    /// Kept for the next GET stream.
    Backlog,
    /// Nowhere (a response for a request nobody waits for any more).
    Drop,
}

/// The session's open POSTs, by request id, and the progress tokens they gave.
#[derive(Debug, Default)]
pub struct Routes {
    posts: HashMap<Id, Option<String>>,
    tokens: HashMap<String, Id>,
    stream_open: bool,
}

#[derive(Deserialize)]
struct WithMeta<'a> {
    #[serde(rename = "_meta", borrow, default)]
    meta: Option<MetaToken<'a>>,
    #[serde(rename = "progressToken", borrow, default)]
    progress_token: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct MetaToken<'a> {
    #[serde(rename = "progressToken", borrow, default)]
    progress_token: Option<&'a RawValue>,
}

/// The progress token a request's `params._meta` gives, or a progress notification's
/// `params.progressToken` names, as JSON text.
fn token(params: Option<Json<'_>>, in_meta: bool) -> Option<String> {
    let parsed: WithMeta<'_> = serde_json::from_str(jsonrpc::progress_token_params(params)?).ok()?;
    let raw = if in_meta { parsed.meta?.progress_token } else { parsed.progress_token };
    raw.map(|r| r.get().to_owned())
}

/// The progress token a request's `params._meta` gives, as JSON text.
pub fn request_token(params: Option<Json<'_>>) -> Option<String> {
    token(params, true)
}

impl Routes {
    /// A POSTed request is on its way to the server; its answers come back on that POST.
    /// (`token`: the request's progress token, [`request_token`], read where the request was.)
    pub fn open(&mut self, id: Id, token: Option<String>) {
        if let Some(t) = &token {
            self.tokens.insert(t.clone(), id.clone());
        }
        self.posts.insert(id, token);
    }

    /// The POST's client went away (or its response was delivered).
    pub fn close(&mut self, request: &Id) {
        if let Some(Some(token)) = self.posts.remove(request) {
            self.tokens.remove(&token);
        }
    }

    pub fn set_stream_open(&mut self, open: bool) {
        self.stream_open = open;
    }

    #[cfg(test)]
    pub fn open_posts(&self) -> usize {
        self.posts.len()
    }

    /// Where a message from the server goes. A response closes its POST.
    pub fn route(&mut self, line: &[u8]) -> Route {
        let parsed = jsonrpc::parse(line);
        let (kind, params) = match &parsed {
            Ok(Message::Single(env)) => (Some(&env.kind), env.params),
            _ => (None, None),
        };
        match kind {
            Some(Kind::Response { id, .. }) => {
                let id = id.clone();
                if self.posts.contains_key(&id) {
                    self.close(&id);
                    Route::Post { request: id, last: true }
                } else {
                    Route::Drop
                }
            }
            Some(Kind::Notification { method }) if method == "notifications/progress" => {
                match token(params, false).and_then(|t| self.tokens.get(&t)) {
                    Some(request) => Route::Post { request: request.clone(), last: false },
                    None => self.unrelated(),
                }
            }
            _ => self.unrelated(),
        }
    }

    fn unrelated(&self) -> Route {
        if self.posts.len() == 1 {
            if let Some(request) = self.posts.keys().next() {
                return Route::Post { request: request.clone(), last: false };
            }
        }
        if self.stream_open {
            Route::Stream
        } else {
            Route::Backlog
        }
    }
}

/// Messages waiting for a GET stream, the oldest dropped beyond [`BACKLOG`].
#[derive(Debug, Default)]
pub struct Backlog {
    pub messages: VecDeque<bytes::Bytes>,
    pub dropped: u64,
}

impl Backlog {
    pub fn push(&mut self, message: bytes::Bytes) {
        if self.messages.len() >= BACKLOG {
            self.messages.pop_front();
            self.dropped += 1;
        }
        // A copy, as the replay buffer keeps: the line may be a slice of a 64 KiB read buffer.
        self.messages.push_back(bytes::Bytes::copy_from_slice(&message));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: i64) -> Id {
        Id::Int(n)
    }

    /// Opens the POST of `request` as the handler does; its id.
    fn open(r: &mut Routes, request: &[u8]) -> Option<Id> {
        let Ok(Message::Single(env)) = jsonrpc::parse(request) else { return None };
        let Kind::Request { id, .. } = env.kind else { return None };
        r.open(id.clone(), request_token(env.params));
        Some(id)
    }

    #[test]
    fn a_response_goes_to_its_post_and_closes_it() {
        let mut r = Routes::default();
        assert_eq!(open(&mut r, br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#), Some(id(1)));
        assert_eq!(r.route(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#), Route::Post { request: id(1), last: true });
        assert_eq!(r.open_posts(), 0);
        assert_eq!(r.route(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#), Route::Drop, "answered already");
    }

    #[test]
    fn progress_follows_its_token_even_with_other_posts_open() {
        let mut r = Routes::default();
        open(&mut r, br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"_meta":{"progressToken":"t1"}}}"#);
        open(&mut r, br#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"_meta":{"progressToken":7}}}"#);
        let progress = |token: &str| {
            format!(
                r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"progressToken":{token},"progress":1}}}}"#
            )
        };
        assert_eq!(r.route(progress("7").as_bytes()), Route::Post { request: id(2), last: false });
        assert_eq!(r.route(progress("\"t1\"").as_bytes()), Route::Post { request: id(1), last: false });
        assert_eq!(r.route(progress("\"unknown\"").as_bytes()), Route::Backlog);
        r.close(&id(2));
        assert_eq!(r.route(progress("7").as_bytes()), Route::Post { request: id(1), last: false }, "the only POST");
    }

    #[test]
    fn other_messages_go_to_the_only_post_then_the_stream_then_the_backlog() {
        let mut r = Routes::default();
        let sampling = br#"{"jsonrpc":"2.0","id":"s1","method":"sampling/createMessage","params":{}}"#;
        let changed = br#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#;
        assert_eq!(r.route(changed), Route::Backlog);
        r.set_stream_open(true);
        assert_eq!(r.route(changed), Route::Stream);
        open(&mut r, br#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#);
        assert_eq!(r.route(sampling), Route::Post { request: id(1), last: false });
        open(&mut r, br#"{"jsonrpc":"2.0","id":2,"method":"tools/call"}"#);
        assert_eq!(r.route(sampling), Route::Stream, "ambiguous between two POSTs");
    }

    #[test]
    fn the_backlog_is_bounded() {
        let mut b = Backlog::default();
        for i in 0..BACKLOG + 5 {
            b.push(bytes::Bytes::from(i.to_string()));
        }
        assert_eq!((b.messages.len(), b.dropped), (BACKLOG, 5));
        assert_eq!(b.messages.front().map(|m| m.as_ref()), Some(b"5".as_ref()));
    }
}
