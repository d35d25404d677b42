//! What mcpvisor's bookkeeping needs to know about a request's method, told once when the request
//! arrives. The session record, the re-send policy and the in-flight table's count of open
//! subscriptions each used to compare the method's name, about 50 instructions a message between
//! them; they now match on a [`MethodClass`].

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
    pub fn of(method: &str) -> MethodClass {
        match method {
            "initialize" => MethodClass::Initialize,
            LISTEN => MethodClass::Listen,
            "logging/setLevel" => MethodClass::SetLevel,
            "resources/subscribe" => MethodClass::Subscribe,
            "resources/unsubscribe" => MethodClass::Unsubscribe,
            "server/discover" => MethodClass::Discover,
            "ping"
            | "tools/list"
            | "prompts/list"
            | "resources/list"
            | "resources/templates/list"
            | "resources/read"
            | "prompts/get"
            | "completion/complete" => MethodClass::ReadOnly,
            _ => MethodClass::Other,
        }
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
