//! JSON-RPC envelopes: classifying a line without building a DOM of its payload.
//!
//! Only what routing needs is read: `jsonrpc`, `id`, `method`, and (for a few methods) fields of
//! `params`. The line is checked as UTF-8 and scanned once by [`json_scan`], which validates it and
//! finds those fields; `params`, `result` and `error` stay borrowed raw JSON, so forwarding a message
//! never re-serialises it and a 9 MB result costs one validating pass.

use std::borrow::Cow;
use std::sync::LazyLock;

use bytes::Bytes;
use memchr::memmem;
use serde::Deserialize;
use serde_json::value::RawValue;
use smol_str::SmolStr;

use super::id::json_string;
pub use super::id::Id;
use super::method::MethodClass;

use crate::protocol::json_scan::{self, Field, Fields, ScanError, Shape};

/// Standard JSON-RPC error codes used by mcpvisor.
pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const INTERNAL_ERROR: i64 = -32603;

/// The `_meta` key that marks a stateless-era (2026-07-28+) request.
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";

/// The protocol's method names, as JSON strings without escapes: a method among them is a static
/// string, neither checked as UTF-8 nor copied, and its class a constant.
fn known_method(text: &[u8]) -> Option<(SmolStr, MethodClass)> {
    macro_rules! methods {
        ($($name:literal),* $(,)?) => {
            match text {
                $(t if t.len() == $name.len() + 2 && &t[1..t.len() - 1] == $name.as_bytes() => {
                    Some((SmolStr::new_static($name), const { MethodClass::of($name) }))
                })*
                _ => None,
            }
        };
    }
    methods!(
        "tools/call",
        "tools/list",
        "ping",
        "initialize",
        "notifications/initialized",
        "notifications/cancelled",
        "notifications/progress",
        "notifications/message",
        "resources/read",
        "resources/list",
        "resources/templates/list",
        "resources/subscribe",
        "resources/unsubscribe",
        "prompts/get",
        "prompts/list",
        "completion/complete",
        "logging/setLevel",
        "server/discover",
        "subscriptions/listen",
        "roots/list",
        "sampling/createMessage",
        "elicitation/create",
    )
}

/// What a single JSON-RPC message is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Request {
        id: Id,
        method: SmolStr,
        /// What the method is to mcpvisor's bookkeeping, told with the name.
        class: MethodClass,
    },
    Notification {
        method: SmolStr,
    },
    Response {
        id: Id,
        is_error: bool,
    },
    /// Valid JSON that is not a valid JSON-RPC 2.0 message; `id` is set when one could be read.
    Invalid {
        id: Option<Id>,
        reason: &'static str,
    },
}

/// A classified message, borrowing the raw JSON text of its `params` and `result` (or `error`)
/// from the line.
#[derive(Debug)]
pub struct Envelope<'a> {
    pub kind: Kind,
    pub params: Option<Json<'a>>,
    pub result: Option<Json<'a>>,
    /// A batch member's own text (empty for a single message, whose text is the line).
    pub raw: Json<'a>,
    /// The `id` value's JSON text, a slice of the line (for rewriting it in place).
    pub id_text: Option<Json<'a>>,
}

impl<'a> Envelope<'a> {
    /// `params` as text (made where it is needed: relaying a message never is).
    pub fn params_text(&self) -> Option<&'a str> {
        self.params.map(Json::get)
    }

    /// `result` (or `error`) as text.
    pub fn result_text(&self) -> Option<&'a str> {
        self.result.map(Json::get)
    }
}

/// A part of a scanned line: bytes known to be valid UTF-8 JSON, made a `&str` where one is read.
/// Checking every line as UTF-8 before scanning it, to hand out `&str`s that relaying a message
/// never reads, was 5 % of the relay's work; the scanner checks the strings that need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Json<'a>(&'a [u8]);

impl<'a> Json<'a> {
    /// The JSON text. (Scanned text is UTF-8: the fallback, valid JSON, is never taken.)
    pub fn get(self) -> &'a str {
        std::str::from_utf8(self.0).unwrap_or("null")
    }

    pub fn as_bytes(self) -> &'a [u8] {
        self.0
    }
}

impl<'a> From<&'a str> for Json<'a> {
    fn from(text: &'a str) -> Json<'a> {
        Json(text.as_bytes())
    }
}

/// A classified line.
#[derive(Debug)]
pub enum Message<'a> {
    Single(Envelope<'a>),
    Batch(Vec<Envelope<'a>>),
}

/// Why a line could not be read as JSON at all.
#[derive(Debug, thiserror::Error)]
pub enum NotJson {
    #[error("not valid UTF-8: {0}")]
    Utf8(#[from] std::str::Utf8Error),
    #[error("not JSON: {0}")]
    Json(#[from] ScanError),
}

/// Classifies one line. Fails only when the line is not UTF-8 JSON.
#[inline(always)]
pub fn parse(line: &[u8]) -> Result<Message<'_>, NotJson> {
    let mut fields = Fields::default();
    let shape = match json_scan::scan_into(line, &mut fields) {
        Ok(shape) => shape,
        Err(e) if e.what == json_scan::INVALID_UTF8 => {
            return Err(std::str::from_utf8(line).err().map_or(NotJson::Json(e), NotJson::Utf8))
        }
        Err(e) => return Err(NotJson::Json(e)),
    };
    Ok(match shape {
        Shape::Object => Message::Single(classify(&fields)),
        Shape::Array(items) => Message::Batch(
            items
                .into_iter()
                .map(|text| match json_scan::object_fields(text) {
                    Some(fields) => Envelope { raw: Json(text), ..classify(&fields) },
                    None => invalid(None, "batch member is not a JSON object"),
                })
                .collect(),
        ),
        Shape::Scalar => Message::Single(invalid(None, "not a JSON object")),
    })
}

/// A method name outside [`known_method`]'s list, or spelled with escapes, and its class.
fn unknown_method(text: &[u8]) -> Option<(SmolStr, MethodClass)> {
    json_string(text).map(|name| {
        let class = MethodClass::of(&name);
        (name, class)
    })
}

fn invalid(id: Option<Id>, reason: &'static str) -> Envelope<'static> {
    Envelope { kind: Kind::Invalid { id, reason }, params: None, result: None, raw: Json(b""), id_text: None }
}

/// Classifies an object from its scanned fields (what [`parse`] does after scanning a line, and
/// what a line lent as `framing::Lent::Object` needs, its fields scanned with it).
#[inline(always)]
pub fn classify<'a>(raw: &Fields<'a>) -> Envelope<'a> {
    let id = match raw.id_int {
        Some(n) => Some(Id::Int(n)),
        None => raw.get(Field::Id).and_then(Id::from_json_bytes),
    };
    if raw.get(Field::Jsonrpc) != Some(b"\"2.0\"") {
        return invalid(id, "\"jsonrpc\" must be \"2.0\"");
    }
    let method = match raw.get(Field::Method) {
        Some(text) => {
            // A plain match: `Option::or_else` with its closures was a call and a copy.
            let method = match known_method(text) {
                Some(method) => Some(method),
                None => unknown_method(text),
            };
            match method.filter(|_| text.starts_with(b"\"")) {
                Some(method) => Some(method),
                None => return invalid(id, "\"method\" must be a string"),
            }
        }
        None => None,
    };
    let kind = match (method, raw.get(Field::Id)) {
        (Some((method, _)), None) => Kind::Notification { method },
        (Some((method, class)), Some(_)) => match id {
            Some(id) => Kind::Request { id, method, class },
            None => return invalid(None, "request id must be a string or a number"),
        },
        (None, Some(_)) => match (id, raw.get(Field::Result).is_some(), raw.get(Field::Error).is_some()) {
            (Some(id), true, false) => Kind::Response { id, is_error: false },
            (Some(id), false, true) => Kind::Response { id, is_error: true },
            (id, _, _) => return invalid(id, "a response needs an id and exactly one of result or error"),
        },
        (None, None) => return invalid(None, "neither a request, a notification nor a response"),
    };
    Envelope {
        kind,
        params: raw.get(Field::Params).map(Json),
        result: raw.get(Field::Result).or(raw.get(Field::Error)).map(Json),
        raw: Json(b""),
        id_text: raw.get(Field::Id).map(Json),
    }
}

/// Whether `params` may carry a protocol version (`_meta`'s stateless-era one): false when the text
/// has no `protocolVersion` anywhere. A vector substring search rules out most requests, where
/// reading every request's params with serde to find out cost more than relaying the message. A
/// key spelled with `\u` escapes among its letters is not recognised (an escaped `/` is).
pub fn may_carry_protocol_version(params: &[u8]) -> bool {
    static KEY: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new("protocolVersion"));
    KEY.find(params).is_some()
}

/// Whether `params` may carry a progress token, as [`may_carry_protocol_version`] does.
fn may_carry_progress_token(params: &[u8]) -> bool {
    static KEY: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new("progressToken"));
    KEY.find(params).is_some()
}

/// `params` as text to look for a progress token in, or `None` when they cannot hold one (most
/// params, which are then not read with serde).
pub fn progress_token_params(params: Option<Json<'_>>) -> Option<&str> {
    params.filter(|p| may_carry_progress_token(p.as_bytes())).map(Json::get)
}

/// The protocol version `params` carry in `_meta["io.modelcontextprotocol/protocolVersion"]`
/// (a stateless-era request), read only if their text may hold it.
pub fn meta_protocol_version(params: Option<Json<'_>>) -> Option<Cow<'_, str>> {
    let params = params.filter(|p| may_carry_protocol_version(p.as_bytes()))?;
    Params::read(Some(params.get())).meta?.protocol_version
}

/// Whether `params` carry a `_meta` protocol version: a stateless-era request.
pub fn is_stateless(params: Option<Json<'_>>) -> bool {
    meta_protocol_version(params).is_some()
}

/// The few `params` fields mcpvisor looks at.
#[derive(Deserialize, Default)]
pub struct Params<'a> {
    #[serde(default, rename = "requestId", borrow)]
    pub request_id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub uri: Option<Cow<'a, str>>,
    #[serde(default, rename = "_meta", borrow)]
    pub meta: Option<Meta<'a>>,
}

/// Stateless-era per-request metadata.
#[derive(Deserialize, Default)]
pub struct Meta<'a> {
    #[serde(default, rename = "io.modelcontextprotocol/protocolVersion", borrow)]
    pub protocol_version: Option<Cow<'a, str>>,
    #[serde(default, rename = "io.modelcontextprotocol/clientInfo", borrow)]
    pub client_info: Option<&'a RawValue>,
    #[serde(default, rename = "io.modelcontextprotocol/clientCapabilities", borrow)]
    pub client_capabilities: Option<&'a RawValue>,
}

impl<'a> Params<'a> {
    /// Reads the interesting fields; anything unexpected yields the empty default.
    pub fn read(params: Option<&'a str>) -> Params<'a> {
        params.and_then(|p| serde_json::from_str(p).ok()).unwrap_or_default()
    }

    pub fn request_id(&self) -> Option<Id> {
        self.request_id.and_then(|raw| Id::from_json(raw.get()))
    }
}

/// `text` with each `(part, new)` replaced, the parts being non-overlapping subslices of `text`
/// (as the envelope's parts are): a message is edited in place, never re-encoded. `None` if a
/// part is not inside `text`.
pub fn splice(text: &str, mut edits: Vec<(&[u8], String)>) -> Option<String> {
    edits.sort_by_key(|(part, _)| part.as_ptr() as usize);
    let mut out = text.to_owned();
    // From the last edit back, so that earlier offsets stay valid.
    for (part, new) in edits.into_iter().rev() {
        let start = (part.as_ptr() as usize).checked_sub(text.as_ptr() as usize)?;
        let end = start.checked_add(part.len()).filter(|end| *end <= text.len())?;
        if !out.is_char_boundary(start) || !out.is_char_boundary(end) {
            return None;
        }
        out.replace_range(start..end, &new);
    }
    Some(out)
}

/// Builds a request line from raw parts without re-serialising `params`.
pub fn request(id: &Id, method: &str, params: Option<&str>) -> Bytes {
    let method = serde_json::Value::from(method);
    let line = match params {
        Some(p) => format!(r#"{{"jsonrpc":"2.0","id":{id},"method":{method},"params":{p}}}"#),
        None => format!(r#"{{"jsonrpc":"2.0","id":{id},"method":{method}}}"#),
    };
    Bytes::from(line)
}

/// Builds a notification line from raw parts.
pub fn notification(method: &str, params: Option<&str>) -> Bytes {
    let method = serde_json::Value::from(method);
    let line = match params {
        Some(p) => format!(r#"{{"jsonrpc":"2.0","method":{method},"params":{p}}}"#),
        None => format!(r#"{{"jsonrpc":"2.0","method":{method}}}"#),
    };
    Bytes::from(line)
}

/// Builds an error response. `id` is `None` when the request's id could not be read.
pub fn error_response(id: Option<&Id>, code: i64, message: &str, data: Option<serde_json::Value>) -> Bytes {
    let mut error = serde_json::json!({ "code": code, "message": message });
    if let Some(data) = data {
        error["data"] = data;
    }
    let id = id.map_or_else(|| "null".to_owned(), Id::to_json);
    Bytes::from(format!(r#"{{"jsonrpc":"2.0","id":{id},"error":{error}}}"#))
}

/// `notifications/cancelled` for a request id.
pub fn cancelled(id: &Id, reason: &str) -> Bytes {
    let params = serde_json::json!({ "requestId": id.as_json_value(), "reason": reason });
    notification("notifications/cancelled", Some(&params.to_string()))
}

/// Best-effort id recovery from the first bytes of an oversized message, so that its sender can
/// still be answered: finds a top-level-looking `"id":` followed by a number or a string.
pub fn sniff_id(head: &[u8]) -> Option<Id> {
    let text = std::str::from_utf8(head).unwrap_or_else(|e| {
        // The head may end inside a multi-byte character.
        std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or("")
    });
    let mut rest = text;
    while let Some(pos) = rest.find("\"id\"") {
        let after = rest[pos + 4..].trim_start();
        if let Some(value) = after.strip_prefix(':') {
            let value = value.trim_start();
            let mut de = serde_json::Deserializer::from_str(value).into_iter::<&RawValue>();
            if let Some(Ok(raw)) = de.next() {
                if let Some(id) = Id::from_json(raw.get()) {
                    return Some(id);
                }
            }
        }
        rest = &rest[pos + 4..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(line: &str) -> Kind {
        match parse(line.as_bytes()).expect("json") {
            Message::Single(e) => e.kind,
            Message::Batch(_) => panic!("batch"),
        }
    }

    #[test]
    fn classifies_messages() {
        assert_eq!(
            single(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#),
            Kind::Request { id: Id::Int(1), method: "ping".into(), class: MethodClass::ReadOnly }
        );
        assert_eq!(
            single(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            Kind::Notification { method: "notifications/initialized".into() }
        );
        assert_eq!(
            single(r#"{"jsonrpc":"2.0","id":"a","result":{}}"#),
            Kind::Response { id: Id::string("a"), is_error: false }
        );
        assert_eq!(
            single(r#"{"jsonrpc":"2.0","id":"a","result":null}"#),
            Kind::Response { id: Id::string("a"), is_error: false }
        );
        assert_eq!(
            single(r#"{"jsonrpc":"2.0","id":null,"error":{"code":1,"message":"x"}}"#),
            Kind::Invalid { id: None, reason: "a response needs an id and exactly one of result or error" }
        );
        assert!(matches!(single(r#"{"jsonrpc":"1.0","id":4,"method":"x"}"#), Kind::Invalid { id: Some(_), .. }));
        assert!(matches!(single(r#"{"jsonrpc":"2.0","id":null,"method":"x"}"#), Kind::Invalid { .. }));
        assert!(matches!(single("42"), Kind::Invalid { .. }));
        // A method that is not a string, including ones whose text without its first and last
        // byte would be a name.
        for method in ["123", "[\"x\"]", "{\"a\":1}", "null", "true"] {
            let line = format!(r#"{{"jsonrpc":"2.0","id":5,"method":{method}}}"#);
            assert_eq!(
                single(&line),
                Kind::Invalid { id: Some(Id::Int(5)), reason: "\"method\" must be a string" },
                "{line}"
            );
        }
        assert!(parse(b"hello").is_err());
        assert!(parse(b"{\"a\":\"\xff\"}").is_err());
    }

    #[test]
    fn ids_read_during_the_scan_are_the_ids_read_from_their_text() {
        let mut texts: Vec<String> =
            ["0", "-0", "-7", "1.5", "1e3", "12E1", "10.0e2", r#""7""#].iter().map(|t| t.to_string()).collect();
        for digits in 1..=20 {
            texts.push("9".repeat(digits));
            texts.push(format!("1{}", "0".repeat(digits - 1)));
            texts.push(format!("{}.5", "3".repeat(digits)));
            texts.push(format!("{}e2", "4".repeat(digits)));
            texts.push("12345678901234567890"[..digits].to_owned());
            texts.push("98765432109876543210"[..digits].to_owned());
        }
        for text in texts {
            for line in [
                format!(r#"{{"jsonrpc":"2.0","id":{text},"result":{{}}}}"#),
                format!(r#"{{"result":1,"id": {text} ,"jsonrpc":"2.0"}}"#),
                format!(r#"[{{"jsonrpc":"2.0","id":{text},"method":"m"}}]"#),
                format!(r#"{{"jsonrpc":"2.0","result":1,"id":{text}}}"#),
            ] {
                let expected = Id::from_json(&text).expect("an id");
                let kind = match parse(line.as_bytes()).expect("json") {
                    Message::Single(env) => env.kind,
                    Message::Batch(mut items) => items.remove(0).kind,
                };
                match kind {
                    Kind::Response { id, .. } | Kind::Request { id, .. } => assert_eq!(id, expected, "{line}"),
                    other => panic!("{line}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn method_names_and_classes_are_the_same_whether_interned_or_read() {
        for (name, class) in [("tools/call", MethodClass::Other), ("tools/list", MethodClass::ReadOnly)] {
            for spelled in [name.to_owned(), name.replace('/', "\\/"), name.replace('/', "\\u002f")] {
                let line = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{spelled}"}}"#);
                assert_eq!(single(&line), Kind::Request { id: Id::Int(1), method: name.into(), class }, "{line}");
            }
        }
        // Every name on the list has the class the runtime lookup gives it.
        for name in [
            "initialize",
            "subscriptions/listen",
            "logging/setLevel",
            "resources/subscribe",
            "resources/unsubscribe",
            "server/discover",
            "ping",
            "resources/read",
            "tools/call",
            "notifications/progress",
        ] {
            let (interned, class) = known_method(format!("\"{name}\"").as_bytes()).expect(name);
            assert_eq!((interned.as_str(), class), (name, MethodClass::of(name)));
        }
        assert_eq!(known_method(br#""tools/call""#).map(|(name, _)| name), Some("tools/call".into()));
        assert_eq!(known_method(br#""tools/calls""#), None);
        assert_eq!(known_method(br#""x/tools/call""#), None);
        assert_eq!(single(r#"{"jsonrpc":"2.0","method":"x/é"}"#), Kind::Notification { method: "x/é".into() });
    }

    #[test]
    fn stateless_requests_are_told_by_their_meta_without_reading_other_params() {
        assert!(is_stateless(Some(r#"{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}"#.into())));
        // JSON may escape `/`; the search is for a part of the key without one.
        assert!(is_stateless(Some(r#"{"_meta":{"io.modelcontextprotocol\/protocolVersion":"2026-07-28"}}"#.into())));
        assert!(!is_stateless(Some(r#"{"protocolVersion":"2025-06-18"}"#.into())));
        assert!(!is_stateless(Some(r#"{"name":"x","arguments":{}}"#.into())));
        assert!(!is_stateless(None));
        assert!(may_carry_progress_token(r#"{"_meta":{"progressToken":1}}"#.as_bytes()));
        assert!(!may_carry_progress_token(r#"{"_meta":{}}"#.as_bytes()));
        assert_eq!(progress_token_params(Some(r#"{"progressToken":1}"#.into())), Some(r#"{"progressToken":1}"#));
        assert_eq!(progress_token_params(Some(r#"{"name":"x"}"#.into())), None);
        assert_eq!(
            meta_protocol_version(Some(r#"{"_meta":{"io.modelcontextprotocol/protocolVersion":"v"}}"#.into()))
                .as_deref(),
            Some("v")
        );
    }

    #[test]
    fn batches_are_classified_per_member() {
        let line = r#"[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","method":"b"},3]"#;
        match parse(line.as_bytes()).expect("json") {
            Message::Batch(items) => {
                assert_eq!(items.len(), 3);
                assert!(matches!(items[0].kind, Kind::Request { .. }));
                assert!(matches!(items[1].kind, Kind::Notification { .. }));
                assert!(matches!(items[2].kind, Kind::Invalid { .. }));
            }
            Message::Single(_) => panic!("not a batch"),
        }
    }

    #[test]
    fn reads_selected_params() {
        let line = r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"r1","reason":"x","big":[1,2,3]}}"#;
        let Message::Single(env) = parse(line.as_bytes()).expect("json") else { panic!() };
        assert_eq!(Params::read(env.params_text()).request_id(), Some(Id::string("r1")));
        let line = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
        let Message::Single(env) = parse(line.as_bytes()).expect("json") else { panic!() };
        let meta = Params::read(env.params_text()).meta.expect("meta");
        assert_eq!(meta.protocol_version.as_deref(), Some("2026-07-28"));
        // params that are an array are simply not inspected
        let line = r#"{"jsonrpc":"2.0","id":1,"method":"x","params":[1]}"#;
        let Message::Single(env) = parse(line.as_bytes()).expect("json") else { panic!() };
        assert!(Params::read(env.params_text()).meta.is_none());
    }

    #[test]
    fn builds_messages_that_parse_back() {
        let id = Id::string("mcpvisor-1");
        let req = request(&id, "initialize", Some(r#"{"a":1}"#));
        assert_eq!(
            single(std::str::from_utf8(&req).unwrap()),
            Kind::Request { id: id.clone(), method: "initialize".into(), class: MethodClass::Initialize }
        );
        let err = error_response(Some(&Id::Int(5)), INTERNAL_ERROR, "boom", None);
        assert_eq!(single(std::str::from_utf8(&err).unwrap()), Kind::Response { id: Id::Int(5), is_error: true });
    }

    #[test]
    fn parts_of_a_message_are_replaced_in_place() {
        let line = r#"{"jsonrpc":"2.0","id":7,"method":"x","params":{"a":[1, 2]}}"#;
        let Message::Single(env) = parse(line.as_bytes()).expect("json") else { panic!() };
        let id = env.id_text.expect("an id").as_bytes();
        assert_eq!(
            splice(line, vec![(id, r#""mux-1""#.to_owned())]).as_deref(),
            Some(r#"{"jsonrpc":"2.0","id":"mux-1","method":"x","params":{"a":[1, 2]}}"#)
        );
        assert_eq!(splice(line, vec![(b"elsewhere", "x".to_owned())]), None);
    }

    #[test]
    fn sniffs_ids_from_truncated_heads() {
        assert_eq!(sniff_id(br#"{"jsonrpc":"2.0","id":42,"method":"x","params":{"data":"aaaa"#), Some(Id::Int(42)));
        assert_eq!(sniff_id(br#"{"jsonrpc":"2.0", "id" : "q-1","#), Some(Id::string("q-1")));
        assert_eq!(sniff_id(br#"{"jsonrpc":"2.0","method":"x","params":{"data":"aaaa"#), None);
    }
}
