//! What mcpvisor's bookkeeping needs to know about a request's method, told once when the request's
//! envelope is read (`Kind::Request` carries it). The session record, the re-send policy and the
//! in-flight table's count of open subscriptions each used to compare the method's name, about 50
//! instructions a message between them; they match on a [`MethodClass`]. For the protocol's own
//! method names the class is a constant, found with the name itself (`jsonrpc::known_method`).

/// The stateless era's long-lived stream request: re-sent after a crash, never failed, and not
/// waited for when draining (it only ends when the subscription does).
pub const LISTEN: &str = "subscriptions/listen";

/// The methods whose requests mcpvisor treats specially; every other is [`MethodClass::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodClass {
    Initialize,
    /// [`LISTEN`].
    Listen,
    /// `logging/setLevel`, replayed to a new child.
    SetLevel,
    /// `resources/subscribe` and `resources/unsubscribe`, the subscriptions replayed.
    Subscribe,
    Unsubscribe,
    /// `server/discover`: read-only, and the stateless era's handshake-free discovery.
    Discover,
    /// Another method that only reads state.
    ReadOnly,
    Other,
}

impl MethodClass {
    /// The class of the method named `method` (a `const fn`, so that the envelope reader's list
    /// of known names gets each one's class as a constant).
    pub const fn of(method: &str) -> MethodClass {
        const READ_ONLY: [&str; 8] = [
            "ping",
            "tools/list",
            "prompts/list",
            "resources/list",
            "resources/templates/list",
            "resources/read",
            "prompts/get",
            "completion/complete",
        ];
        const SPECIAL: [(&str, MethodClass); 6] = [
            ("initialize", MethodClass::Initialize),
            (LISTEN, MethodClass::Listen),
            ("logging/setLevel", MethodClass::SetLevel),
            ("resources/subscribe", MethodClass::Subscribe),
            ("resources/unsubscribe", MethodClass::Unsubscribe),
            ("server/discover", MethodClass::Discover),
        ];
        let mut i = 0;
        while i < SPECIAL.len() {
            if same(method, SPECIAL[i].0) {
                return SPECIAL[i].1;
            }
            i += 1;
        }
        let mut i = 0;
        while i < READ_ONLY.len() {
            if same(method, READ_ONLY[i]) {
                return MethodClass::ReadOnly;
            }
            i += 1;
        }
        MethodClass::Other
    }

    /// Whether the method only reads state, so its request can be sent to a new child after a
    /// crash.
    pub fn is_safe_to_repeat(self) -> bool {
        matches!(self, MethodClass::ReadOnly | MethodClass::Discover)
    }

    /// Requests re-sent to a new child whatever `--no-retry` says: an open subscription (the
    /// stream must go on) and an unanswered `initialize` (the handshake never finished, and the
    /// new child needs it before anything else).
    pub fn always_resent(self) -> bool {
        matches!(self, MethodClass::Listen | MethodClass::Initialize)
    }
}

/// `a == b`, in a `const fn`.
const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_classed_by_their_exact_name() {
        assert_eq!(MethodClass::of("initialize"), MethodClass::Initialize);
        assert_eq!(MethodClass::of(LISTEN), MethodClass::Listen);
        assert!(MethodClass::of("server/discover").is_safe_to_repeat());
        assert!(MethodClass::of("resources/read").is_safe_to_repeat());
        assert!(!MethodClass::of("tools/call").is_safe_to_repeat());
        assert!(!MethodClass::of("tools/list/x").is_safe_to_repeat());
        assert!(MethodClass::of("initialize").always_resent() && MethodClass::of(LISTEN).always_resent());
        assert!(!MethodClass::of("ping").always_resent());
        assert_eq!(MethodClass::of("Initialize"), MethodClass::Other);
    }
}
