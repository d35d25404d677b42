//! Request ids: what the in-flight tables key on, read from a line's bytes.

use std::fmt;

use smol_str::SmolStr;

/// A request id, compared by exact JSON value: `1` and `"1"` differ, `"a"` and `"\u0061"` do not.
///
/// Ids are made, hashed and dropped for every message. Nearly every client numbers its requests:
/// an integer is kept as one, read from the line's bytes (a `&str` of a few bytes costs a UTF-8
/// check with more set-up than work). Anything else is a [`SmolStr`]: a short id is stored inline
/// without allocating, a long one shared when cloned.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Id {
    /// An integer written the one way JSON writes it: no leading zero, no `-0`, at most 18 digits,
    /// so equal values mean equal JSON text.
    Int(i64),
    /// Any other number, keyed on its JSON text.
    Number(SmolStr),
    /// A string, keyed on its decoded value.
    String(SmolStr),
}

impl Id {
    /// Reads an id from its JSON text; `None` if it is not a string or a number.
    pub fn from_json(text: &str) -> Option<Id> {
        Id::from_json_bytes(text.as_bytes())
    }

    /// [`Id::from_json`] on the bytes of valid JSON text.
    pub(super) fn from_json_bytes(text: &[u8]) -> Option<Id> {
        match text.first()? {
            b'"' => json_string(text).map(Id::String),
            b'-' | b'0'..=b'9' => match canonical_int(text) {
                Some(n) => Some(Id::Int(n)),
                None => std::str::from_utf8(text).ok().map(|n| Id::Number(SmolStr::new(n))),
            },
            _ => None,
        }
    }

    pub fn string(s: impl Into<SmolStr>) -> Id {
        Id::String(s.into())
    }

    /// The id as JSON text.
    pub fn to_json(&self) -> String {
        match self {
            Id::Int(n) => n.to_string(),
            Id::Number(n) => n.to_string(),
            Id::String(s) => serde_json::Value::from(&**s).to_string(),
        }
    }

    pub fn as_json_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.to_json()).unwrap_or(serde_json::Value::Null)
    }
}

/// The value of an integer written as JSON writes it (see [`Id::Int`]), else `None`.
fn canonical_int(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', digits)) => (true, digits),
        _ => (false, text),
    };
    match digits {
        [] | [b'0', _, ..] => return None,
        [b'0'] if negative => return None,
        _ if digits.len() > 18 => return None,
        _ => {}
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + i64::from(d - b'0');
    }
    Some(if negative { -n } else { n })
}

/// The value of a JSON string given as valid JSON text (quotes included); `None` if an escape does
/// not decode. Without escapes that is just the text between the quotes.
pub(super) fn json_string(text: &[u8]) -> Option<SmolStr> {
    let inner = text.get(1..text.len().checked_sub(1)?)?;
    if inner.contains(&b'\\') {
        serde_json::from_slice::<String>(text).ok().map(SmolStr::from)
    } else {
        std::str::from_utf8(inner).ok().map(SmolStr::new)
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_compare_by_exact_json_value() {
        let raw = Id::from_json;
        assert_ne!(raw("1"), raw("\"1\""));
        assert_eq!(raw("\"a\""), raw("\"\\u0061\""));
        assert_eq!(raw("null"), None);
        assert_eq!(raw("{}"), None);
        assert_eq!(Id::string("x\"y").to_json(), r#""x\"y""#);
    }

    #[test]
    fn integer_ids_are_words_and_other_numbers_keep_their_text() {
        let raw = |t: &str| Id::from_json(t).expect("an id");
        for (text, n) in [("0", 0), ("7", 7), ("-12", -12), ("999999999999999999", 999_999_999_999_999_999)] {
            assert_eq!(raw(text), Id::Int(n));
            assert_eq!(raw(text).to_json(), text);
        }
        for text in ["-0", "1.0", "1e2", "1000000000000000000", "-9223372036854775808"] {
            assert_eq!(raw(text), Id::Number(text.into()));
            assert_eq!(raw(text).to_json(), text);
        }
        assert_ne!(raw("-0"), raw("0"));
        assert_ne!(raw("1.0"), raw("1"));
    }
}
