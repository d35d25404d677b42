//! What is needed to rebuild the client's session on a new child.
//!
//! The session's era is inferred from the client's traffic, never probed for (a dual-era server
//! locks its era on the first message it sees):
//! - `initialize` from the client means the handshake era (2024-11-05 … 2025-11-25);
//! - a request carrying `_meta["io.modelcontextprotocol/protocolVersion"]` (other than a
//!   `server/discover` probe, which dual-era clients send before falling back to `initialize`),
//!   or a successful `server/discover`, means the stateless era (2026-07-28).
//!
//! Handshake era: the client's `initialize` params, its `notifications/initialized`, the child's
//! initialize result, the last `logging/setLevel` and the live `resources/subscribe` calls are
//! recorded and replayed. Stateless era: open `subscriptions/listen` requests live in the client
//! in-flight table and are re-sent from there; this module only keeps the metadata a probe needs.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::protocol::jsonrpc::{self, Id, Json, Params};
use crate::protocol::method::MethodClass;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    Unknown,
    Handshake,
    Stateless,
}

impl Era {
    pub fn as_str(self) -> &'static str {
        match self {
            Era::Unknown => "unknown",
            Era::Handshake => "handshake",
            Era::Stateless => "stateless",
        }
    }
}

#[derive(Debug)]
pub struct Session {
    era: Era,
    /// The client's `initialize` id and raw params.
    initialize: Option<(Id, Option<String>)>,
    /// The child's answer to the client's own `initialize` (raw result).
    init_result: Option<String>,
    initialized: bool,
    log_level: Option<String>,
    /// Live resource subscriptions: uri and raw params.
    subscriptions: Vec<(String, Option<String>)>,
    /// The `_meta` of the latest stateless-era request read, as probes send it.
    stateless: Option<StatelessMeta>,
    /// The params of the latest stateless-era request, not read yet (`has_unread`). Reading each
    /// request's `_meta` (a serde parse of its params and a rebuilt probe) cost twice what the
    /// rest of relaying a message does; a probe or `status` reads the latest when it needs it.
    unread: Vec<u8>,
    has_unread: bool,
    /// The child's answer to a client `server/discover` (raw result).
    discover_result: Option<String>,
}

/// What a stateless-era probe needs from the client's requests.
#[derive(Debug, Clone)]
struct StatelessMeta {
    /// The `_meta` object a probe sends, built from the client's own.
    probe: String,
    /// The protocol version the client's requests carry.
    version: Option<String>,
}

/// Params longer than this are read at once rather than kept until a probe needs them.
const UNREAD_MAX: usize = 16 * 1024;

impl Default for Session {
    fn default() -> Self {
        Session {
            era: Era::Unknown,
            initialize: None,
            init_result: None,
            initialized: false,
            log_level: None,
            subscriptions: Vec::new(),
            stateless: None,
            unread: Vec::new(),
            has_unread: false,
            discover_result: None,
        }
    }
}

#[derive(Deserialize)]
struct ServerResult {
    #[serde(default, rename = "protocolVersion")]
    protocol_version: Option<String>,
    #[serde(default)]
    capabilities: Option<Box<RawValue>>,
    #[serde(default, rename = "serverInfo")]
    server_info: Option<Box<RawValue>>,
}

#[derive(Deserialize, Default)]
struct Capabilities {
    #[serde(default)]
    tools: Option<ListCapability>,
    #[serde(default)]
    prompts: Option<ListCapability>,
    #[serde(default)]
    resources: Option<ListCapability>,
}

#[derive(Deserialize, Default)]
struct ListCapability {
    #[serde(default, rename = "listChanged")]
    list_changed: bool,
}

impl Session {
    pub fn era(&self) -> Era {
        self.era
    }

    /// Whether the client has sent anything that shapes the session.
    pub fn has_started(&self) -> bool {
        self.era != Era::Unknown || self.initialize.is_some()
    }

    /// Whether the session is up, so that probes may be sent.
    pub fn established(&self) -> bool {
        match self.era {
            Era::Handshake => self.init_result.is_some() && self.initialized,
            Era::Stateless => true,
            Era::Unknown => false,
        }
    }

    /// Whether a new child needs the handshake replayed before client traffic.
    pub fn needs_handshake_replay(&self) -> bool {
        self.era == Era::Handshake && self.init_result.is_some() && self.initialize.is_some()
    }

    /// Whether [`Session::on_client_request`] may record anything of a request of class `method`:
    /// a handshake-era session only keeps its state-changing requests. (The instance asks before
    /// the call, which was most of a request's session bookkeeping.)
    #[inline(always)]
    pub fn notes_request(&self, method: MethodClass) -> bool {
        self.era != Era::Handshake
            || matches!(
                method,
                MethodClass::Initialize | MethodClass::SetLevel | MethodClass::Subscribe | MethodClass::Unsubscribe
            )
    }

    pub fn on_client_request(&mut self, id: &Id, method: MethodClass, params: Option<Json<'_>>) {
        // A handshake-era session never switches era, so its other requests (the hot path) are
        // not scanned a second time for stateless-era metadata.
        if !self.notes_request(method) {
            return;
        }
        let text = || params.map(Json::get);
        match method {
            MethodClass::Initialize => {
                self.era = Era::Handshake;
                self.initialize = Some((id.clone(), text().map(str::to_owned)));
                self.init_result = None;
                self.initialized = false;
            }
            MethodClass::SetLevel => self.log_level = text().map(str::to_owned),
            MethodClass::Subscribe => {
                if let Some(uri) = Params::read(text()).uri {
                    let uri = uri.into_owned();
                    self.subscriptions.retain(|(u, _)| *u != uri);
                    self.subscriptions.push((uri, text().map(str::to_owned)));
                }
            }
            MethodClass::Unsubscribe => {
                if let Some(uri) = Params::read(text()).uri {
                    self.subscriptions.retain(|(u, _)| *u != *uri);
                }
            }
            // A stateless-era session's are not read either: their params are kept (copied into
            // one reused buffer) for a probe to read the latest. Params that cannot carry a protocol version
            // do not replace params that may.
            _ if self.era == Era::Stateless && params.map_or(0, |p| p.as_bytes().len()) <= UNREAD_MAX => {
                let params = params.map_or(&b""[..], Json::as_bytes);
                if jsonrpc::may_carry_protocol_version(params) {
                    self.unread.clear();
                    self.unread.extend_from_slice(params);
                    self.has_unread = true;
                }
            }
            _ => {
                if let Some(meta) = read_meta(text()) {
                    self.stateless = Some(meta);
                    self.has_unread = false;
                    if method != MethodClass::Discover {
                        self.era = Era::Stateless;
                    }
                }
            }
        }
    }

    pub fn on_client_notification(&mut self, method: &str) {
        if method == "notifications/initialized" {
            self.initialized = true;
        }
    }

    /// Whether the session keeps anything of the result of a request of class `method`: the
    /// other results need not be passed to [`Session::on_child_result`].
    #[inline(always)]
    pub fn keeps_result(method: MethodClass) -> bool {
        matches!(method, MethodClass::Initialize | MethodClass::Discover)
    }

    /// Records the child's successful answer to a client request.
    pub fn on_child_result(&mut self, id: &Id, method: MethodClass, result: Option<Json<'_>>) {
        let text = || result.map(Json::get);
        match method {
            MethodClass::Initialize if self.initialize.as_ref().is_some_and(|(i, _)| i == id) => {
                self.init_result = text().map(str::to_owned);
            }
            MethodClass::Discover => {
                self.discover_result = text().map(str::to_owned);
                if self.era == Era::Unknown {
                    self.era = Era::Stateless;
                }
            }
            _ => {}
        }
    }

    /// The liveness probe for this era, if the session is established.
    pub fn probe(&self, id: &Id) -> Option<Bytes> {
        match self.era {
            Era::Handshake if self.established() => Some(jsonrpc::request(id, "ping", None)),
            Era::Stateless => {
                let params = self.latest_meta().map(|m| format!(r#"{{"_meta":{}}}"#, m.probe));
                Some(jsonrpc::request(id, "server/discover", params.as_deref()))
            }
            _ => None,
        }
    }

    /// The replayed `initialize`, with mcpvisor's own id.
    pub fn replay_initialize(&self, id: &Id) -> Option<Bytes> {
        let (_, params) = self.initialize.as_ref()?;
        Some(jsonrpc::request(id, "initialize", params.as_deref()))
    }

    /// What follows a successful replayed `initialize`: `initialized`, then the client's
    /// `logging/setLevel` and `resources/subscribe` calls, each with an id from `next_id`.
    pub fn replay_after_initialize(&self, mut next_id: impl FnMut() -> Id) -> Vec<Bytes> {
        let mut out = Vec::new();
        if self.initialized {
            out.push(jsonrpc::notification("notifications/initialized", None));
        }
        if let Some(level) = &self.log_level {
            out.push(jsonrpc::request(&next_id(), "logging/setLevel", Some(level)));
        }
        for (_, params) in &self.subscriptions {
            out.push(jsonrpc::request(&next_id(), "resources/subscribe", params.as_deref()));
        }
        out
    }

    /// Compares a new child's initialize result with the recorded one; describes any difference.
    pub fn compare_initialize_result(&self, new: Option<&str>) -> Option<String> {
        let old = parse_result(self.init_result.as_deref()?)?;
        let new = parse_result(new?)?;
        let mut diffs = Vec::new();
        if old.protocol_version != new.protocol_version {
            diffs.push(format!("protocol version {:?} -> {:?}", old.protocol_version, new.protocol_version));
        }
        if !same_json(old.capabilities.as_deref(), new.capabilities.as_deref()) {
            diffs.push("capabilities changed".to_owned());
        }
        if !same_json(old.server_info.as_deref(), new.server_info.as_deref()) {
            diffs.push("serverInfo changed".to_owned());
        }
        (!diffs.is_empty()).then(|| diffs.join(", "))
    }

    /// `notifications/*/list_changed` for each list the server declared as changeable, to tell
    /// the client that a restarted server's lists may differ.
    pub fn list_changed_notifications(&self) -> Vec<Bytes> {
        let result = self.init_result.as_deref().or(self.discover_result.as_deref());
        let caps: Capabilities = result
            .and_then(parse_result)
            .and_then(|r| r.capabilities)
            .and_then(|c| serde_json::from_str(c.get()).ok())
            .unwrap_or_default();
        [("tools", caps.tools), ("prompts", caps.prompts), ("resources", caps.resources)]
            .into_iter()
            .filter(|(_, cap)| cap.as_ref().is_some_and(|c| c.list_changed))
            .map(|(name, _)| jsonrpc::notification(&format!("notifications/{name}/list_changed"), None))
            .collect()
    }

    /// Whether the client's `initialize` is still waiting for the server's answer.
    pub fn handshake_in_progress(&self) -> bool {
        self.era == Era::Handshake && self.init_result.is_none()
    }

    /// The protocol version in use: the initialize result's, or the client's stateless-era one.
    pub fn protocol_version(&self) -> Option<String> {
        let from_result = self.init_result.as_deref().and_then(parse_result).and_then(|r| r.protocol_version);
        from_result
            .or_else(|| (self.era == Era::Stateless).then(|| self.latest_meta().and_then(|m| m.version)).flatten())
    }

    /// The `_meta` of the latest stateless-era request: the unread params' if they carry one,
    /// otherwise the last read.
    fn latest_meta(&self) -> Option<StatelessMeta> {
        let unread = self.has_unread.then(|| read_meta(std::str::from_utf8(&self.unread).ok())).flatten();
        unread.or_else(|| self.stateless.clone())
    }

    /// The server's name and version from its initialize or discover result.
    pub fn server_info(&self) -> (Option<String>, Option<String>) {
        #[derive(Deserialize)]
        struct Info {
            name: Option<String>,
            version: Option<String>,
        }
        let result = self.init_result.as_deref().or(self.discover_result.as_deref());
        let info = result
            .and_then(parse_result)
            .and_then(|r| r.server_info)
            .and_then(|raw| serde_json::from_str::<Info>(raw.get()).ok());
        info.map_or((None, None), |i| (i.name, i.version))
    }
}

fn parse_result(raw: &str) -> Option<ServerResult> {
    serde_json::from_str(raw).ok()
}

fn same_json(a: Option<&RawValue>, b: Option<&RawValue>) -> bool {
    let value = |r: Option<&RawValue>| r.and_then(|r| serde_json::from_str::<serde_json::Value>(r.get()).ok());
    value(a) == value(b)
}

/// The stateless-era metadata in a request's params, if they carry a protocol version.
fn read_meta(params: Option<&str>) -> Option<StatelessMeta> {
    let meta = Params::read(params).meta.filter(|m| m.protocol_version.is_some())?;
    Some(StatelessMeta { probe: probe_meta(&meta), version: meta.protocol_version.as_deref().map(str::to_owned) })
}

fn probe_meta(meta: &jsonrpc::Meta<'_>) -> String {
    let mut fields = Vec::new();
    if let Some(v) = &meta.protocol_version {
        fields.push(format!(
            "{}:{}",
            serde_json::Value::from(jsonrpc::META_PROTOCOL_VERSION),
            serde_json::Value::from(&**v)
        ));
    }
    if let Some(info) = meta.client_info {
        fields.push(format!(r#""io.modelcontextprotocol/clientInfo":{}"#, info.get()));
    }
    if let Some(caps) = meta.client_capabilities {
        fields.push(format!(r#""io.modelcontextprotocol/clientCapabilities":{}"#, caps.get()));
    }
    format!("{{{}}}", fields.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Raw JSON text, as the envelope hands it over.
    fn raw(s: &str) -> Json<'_> {
        Json::from(s)
    }

    #[test]
    fn only_the_results_it_keeps_change_the_session() {
        use MethodClass::*;
        for class in [Initialize, Listen, SetLevel, Subscribe, Unsubscribe, Discover, ReadOnly, Other] {
            let mut s = Session::default();
            let id = Id::Int(1);
            s.on_client_request(&id, MethodClass::of("initialize"), Some(raw(r#"{"protocolVersion":"2025-06-18"}"#)));
            s.on_child_result(&id, class, Some(raw(r#"{"protocolVersion":"2025-06-18"}"#)));
            let changed = s.init_result.is_some() || s.discover_result.is_some();
            assert_eq!(changed, Session::keeps_result(class), "{class:?}");
        }
    }

    #[test]
    fn a_handshake_era_session_records_only_its_state_changing_requests() {
        use MethodClass::*;
        let params =
            r#"{"uri":"a://9","level":"debug","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}"#;
        let classes = [Initialize, SetLevel, Subscribe, Unsubscribe, Listen, Discover, ReadOnly, Other];
        for (class, records) in classes.into_iter().zip([true, true, true, true, false, false, false, false]) {
            let mut s = Session::default();
            s.on_client_request(&Id::Int(1), Initialize, Some(raw(r#"{"protocolVersion":"2025-06-18"}"#)));
            s.on_client_request(&Id::Int(2), Subscribe, Some(raw(r#"{"uri":"a://9"}"#)));
            let before = format!("{s:?}");
            assert_eq!(s.notes_request(class), records, "{class:?}");
            s.on_client_request(&Id::Int(3), class, Some(raw(params)));
            assert_eq!(format!("{s:?}") != before, records, "{class:?}");
        }
    }

    #[test]
    fn handshake_session_replays_initialize_then_state() {
        let mut s = Session::default();
        let id = Id::Int(1);
        s.on_client_request(&id, MethodClass::of("initialize"), Some(raw(r#"{"protocolVersion":"2025-06-18"}"#)));
        assert_eq!(s.era(), Era::Handshake);
        assert!(!s.established());
        s.on_child_result(
            &id,
            MethodClass::of("initialize"),
            Some(raw(r#"{"protocolVersion":"2025-06-18","capabilities":{"tools":{"listChanged":true},"prompts":{}}}"#)),
        );
        s.on_client_notification("notifications/initialized");
        assert!(s.established());
        s.on_client_request(&Id::Int(2), MethodClass::of("logging/setLevel"), Some(raw(r#"{"level":"debug"}"#)));
        s.on_client_request(&Id::Int(3), MethodClass::of("resources/subscribe"), Some(raw(r#"{"uri":"a://1"}"#)));
        s.on_client_request(&Id::Int(4), MethodClass::of("resources/subscribe"), Some(raw(r#"{"uri":"a://2"}"#)));
        s.on_client_request(&Id::Int(5), MethodClass::of("resources/unsubscribe"), Some(raw(r#"{"uri":"a://1"}"#)));

        let init = s.replay_initialize(&Id::string("mcpvisor-9")).expect("replay");
        assert_eq!(
            &init[..],
            br#"{"jsonrpc":"2.0","id":"mcpvisor-9","method":"initialize","params":{"protocolVersion":"2025-06-18"}}"#
        );
        let mut n = 0;
        let rest = s.replay_after_initialize(|| {
            n += 1;
            Id::string(format!("r{n}"))
        });
        let rest: Vec<&str> = rest.iter().map(|b| std::str::from_utf8(b).unwrap()).collect();
        assert_eq!(rest.len(), 3);
        assert!(rest[0].contains("notifications/initialized"));
        assert!(rest[1].contains("logging/setLevel") && rest[1].contains("debug"));
        assert!(rest[2].contains("a://2"));
        let changed = s.list_changed_notifications();
        assert_eq!(changed.len(), 1);
        assert!(std::str::from_utf8(&changed[0]).unwrap().contains("notifications/tools/list_changed"));
    }

    #[test]
    fn discover_probe_does_not_lock_the_era_but_a_stateless_call_does() {
        let meta = r#"{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}"#;
        let mut s = Session::default();
        s.on_client_request(&Id::Int(1), MethodClass::of("server/discover"), Some(raw(meta)));
        assert_eq!(s.era(), Era::Unknown);
        s.on_client_request(&Id::Int(2), MethodClass::of("initialize"), Some(raw("{}")));
        assert_eq!(s.era(), Era::Handshake);

        let mut s = Session::default();
        s.on_client_request(&Id::Int(1), MethodClass::of("tools/list"), Some(raw(meta)));
        assert_eq!(s.era(), Era::Stateless);
        assert!(s.established());
        let probe = s.probe(&Id::string("mcpvisor-1")).expect("probe");
        let text = std::str::from_utf8(&probe).unwrap();
        assert!(text.contains("server/discover") && text.contains("2026-07-28"), "{text}");
        let v: serde_json::Value = serde_json::from_str(text).expect("probe is JSON");
        assert_eq!(v["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"], serde_json::json!({}));
    }

    #[test]
    fn a_probe_carries_the_latest_stateless_requests_meta() {
        let meta = |version: &str, name: &str| {
            format!(
                r#"{{"x":1,"_meta":{{"io.modelcontextprotocol/protocolVersion":"{version}","io.modelcontextprotocol/clientInfo":{{"name":"{name}"}}}}}}"#
            )
        };
        let probe = |s: &Session| String::from_utf8(s.probe(&Id::string("p")).expect("probe").to_vec()).unwrap();
        let mut s = Session::default();
        s.on_client_request(&Id::Int(1), MethodClass::of("tools/list"), Some(raw(&meta("2026-07-28", "first"))));
        assert!(probe(&s).contains("first"));
        s.on_client_request(&Id::Int(2), MethodClass::of("tools/call"), Some(raw(&meta("2026-07-28", "second"))));
        assert!(probe(&s).contains("second"));
        assert_eq!(s.protocol_version().as_deref(), Some("2026-07-28"));
        // A request without `_meta` leaves the last one the client sent.
        s.on_client_request(&Id::Int(3), MethodClass::of("tools/call"), Some(raw(r#"{"name":"x"}"#)));
        assert!(probe(&s).contains("second"));
        s.on_client_request(&Id::Int(4), MethodClass::of("tools/call"), None);
        assert!(probe(&s).contains("second"));
        let large = meta("2026-07-28", &"l".repeat(UNREAD_MAX));
        s.on_client_request(&Id::Int(5), MethodClass::of("tools/call"), Some(raw(&large)));
        assert!(probe(&s).contains("lll"));
        assert_eq!(s.era(), Era::Stateless);
    }

    #[test]
    fn nothing_is_probed_before_the_session_exists() {
        let s = Session::default();
        assert!(s.probe(&Id::string("x")).is_none());
        assert!(!s.needs_handshake_replay());
    }

    #[test]
    fn detects_a_changed_server() {
        let mut s = Session::default();
        let id = Id::Int(1);
        s.on_client_request(&id, MethodClass::of("initialize"), None);
        s.on_child_result(
            &id,
            MethodClass::of("initialize"),
            Some(raw(r#"{"protocolVersion":"2025-06-18","capabilities":{}}"#)),
        );
        assert_eq!(s.compare_initialize_result(Some(r#"{"protocolVersion":"2025-06-18","capabilities":{}}"#)), None);
        let diff = s.compare_initialize_result(Some(r#"{"protocolVersion":"2025-11-25","capabilities":{"tools":{}}}"#));
        assert!(diff.expect("diff").contains("protocol version"));
    }
}
