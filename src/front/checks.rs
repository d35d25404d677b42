//! The checks every request to the front passes before it reaches a server, as pure functions
//! of its headers: `Host` against an allowlist (DNS rebinding: a page on another site must not
//! reach a loopback server through a name it controls), `Origin` against the allowed origins
//! (a browser page of another site gets 403), and `MCP-Protocol-Version` against the versions
//! mcpvisor speaks.

/// Protocol versions of the handshake era.
pub const HANDSHAKE_VERSIONS: [&str; 3] = ["2025-03-26", "2025-06-18", "2025-11-25"];
/// The stateless era's version.
pub const STATELESS_VERSION: &str = "2026-07-28";
/// What a handshake-era request without `MCP-Protocol-Version` means.
pub const DEFAULT_VERSION: &str = "2025-03-26";

/// Who may reach the front.
#[derive(Debug, Clone, Default)]
pub struct Allow {
    /// Extra `Host` names (with or without a port) besides loopback names and the bound address
    /// (`*`: any, for a daemon reached by names it cannot know, such as pod addresses).
    pub hosts: Vec<String>,
    /// Allowed `Origin`s besides loopback ones (`*`: any).
    pub origins: Vec<String>,
}

/// Why a request is refused before it reaches a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Host(String),
    Origin(String),
    Version(String),
}

impl Refusal {
    pub fn message(&self) -> String {
        match self {
            Refusal::Host(h) => format!("Host `{h}` is not allowed; add it to allowed-hosts"),
            Refusal::Origin(o) => format!("Origin `{o}` is not allowed; add it to allowed-origins"),
            Refusal::Version(v) => format!(
                "unsupported MCP-Protocol-Version `{v}`; supported: {}, {STATELESS_VERSION}",
                HANDSHAKE_VERSIONS.join(", ")
            ),
        }
    }
}

/// The host part of a `Host` header or an origin's authority (`[::1]:8080` → `[::1]`).
fn host_part(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.split_inclusive(']').next().unwrap_or(authority);
    }
    authority.rsplit_once(':').map_or(authority, |(host, _)| host)
}

fn is_loopback_name(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "[::1]") || host.ends_with(".localhost")
}

impl Allow {
    /// `host`: the request's `Host` header; `bound`: the address the front listens on.
    pub fn check_host(&self, host: Option<&str>, bound: &str) -> Result<(), Refusal> {
        // HTTP/1.1 requires Host; a request without one cannot be a browser's.
        let Some(host) = host else { return Ok(()) };
        let name = host_part(host);
        let allowed = is_loopback_name(name)
            || name == host_part(bound)
            || self.hosts.iter().any(|h| h == "*" || h == host || h == name);
        if allowed {
            Ok(())
        } else {
            Err(Refusal::Host(host.to_owned()))
        }
    }

    /// `origin`: the request's `Origin` header (sent by browsers; absent from other clients).
    pub fn check_origin(&self, origin: Option<&str>) -> Result<(), Refusal> {
        let Some(origin) = origin else { return Ok(()) };
        let authority = origin.split_once("://").map_or(origin, |(_, rest)| rest);
        let allowed = is_loopback_name(host_part(authority))
            || self.origins.iter().any(|o| o == "*" || o.trim_end_matches('/') == origin);
        if allowed {
            Ok(())
        } else {
            Err(Refusal::Origin(origin.to_owned()))
        }
    }
}

/// Whether `authorization` (the request's header) carries one of `tokens` as a bearer token.
/// Every token is compared in full, in time independent of where the bytes differ, so the
/// comparison tells an attacker nothing.
pub fn check_token(tokens: &[String], authorization: Option<&str>) -> bool {
    let given = authorization.and_then(|a| a.strip_prefix("Bearer ")).map(str::trim).unwrap_or("");
    let mut found = false;
    for token in tokens {
        let same_len = token.len() == given.len();
        let diff = token.bytes().zip(given.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        found |= same_len && diff == 0 && !token.is_empty();
    }
    found
}

/// The protocol version a request says it speaks (`None`: the header is absent).
pub fn check_version(header: Option<&str>) -> Result<Option<&str>, Refusal> {
    match header {
        None => Ok(None),
        Some(v) if HANDSHAKE_VERSIONS.contains(&v) || v == STATELESS_VERSION => Ok(Some(v)),
        Some(v) => Err(Refusal::Version(v.to_owned())),
    }
}

/// Whether a session's streams start with a priming event: only from 2025-11-25 on, because
/// clients of earlier versions may take its empty data for a broken message.
pub fn primes(version: Option<&str>) -> bool {
    version.is_some_and(|v| v >= "2025-11-25" && v != STATELESS_VERSION)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_and_the_bound_address_are_allowed_others_not() {
        let allow = Allow { hosts: vec!["mcp.example.org".into()], ..Allow::default() };
        for host in
            ["localhost:8080", "127.0.0.1:8080", "[::1]:8080", "0.0.0.0:8080", "mcp.example.org", "app.localhost"]
        {
            assert_eq!(allow.check_host(Some(host), "0.0.0.0:8080"), Ok(()), "{host}");
        }
        assert!(matches!(allow.check_host(Some("evil.example:8080"), "127.0.0.1:8080"), Err(Refusal::Host(_))));
        assert_eq!(allow.check_host(None, "127.0.0.1:8080"), Ok(()));
        let any = Allow { hosts: vec!["*".into()], ..Allow::default() };
        assert_eq!(any.check_host(Some("10.1.2.3:8080"), "0.0.0.0:8080"), Ok(()));
    }

    #[test]
    fn only_loopback_and_listed_origins_pass() {
        let allow = Allow { origins: vec!["https://app.example.org".into()], ..Allow::default() };
        assert_eq!(allow.check_origin(None), Ok(()));
        assert_eq!(allow.check_origin(Some("http://localhost:3000")), Ok(()));
        assert_eq!(allow.check_origin(Some("https://app.example.org")), Ok(()));
        assert!(matches!(allow.check_origin(Some("https://evil.example")), Err(Refusal::Origin(_))));
        let any = Allow { origins: vec!["*".into()], ..Allow::default() };
        assert_eq!(any.check_origin(Some("https://evil.example")), Ok(()));
    }

    #[test]
    fn bearer_tokens_must_match_one_in_full() {
        let tokens = vec!["s3cret-one".to_owned(), "s3cret-two".to_owned()];
        assert!(check_token(&tokens, Some("Bearer s3cret-two")));
        assert!(!check_token(&tokens, Some("Bearer s3cret")));
        assert!(!check_token(&tokens, Some("Bearer s3cret-one-more")));
        assert!(!check_token(&tokens, Some("s3cret-one")), "the scheme is required");
        assert!(!check_token(&tokens, None));
        assert!(!check_token(&[String::new()], Some("Bearer ")), "an empty token never matches");
    }

    #[test]
    fn versions_are_the_known_ones() {
        assert_eq!(check_version(None), Ok(None));
        assert_eq!(check_version(Some("2025-06-18")), Ok(Some("2025-06-18")));
        assert_eq!(check_version(Some("2026-07-28")), Ok(Some("2026-07-28")));
        assert!(matches!(check_version(Some("2024-01-01")), Err(Refusal::Version(_))));
    }

    #[test]
    fn streams_are_primed_from_2025_11_25_on() {
        assert!(primes(Some("2025-11-25")));
        assert!(!primes(Some("2025-06-18")));
        assert!(!primes(None), "no header means 2025-03-26");
        assert!(!primes(Some(STATELESS_VERSION)), "the stateless era has no resumption");
    }
}
