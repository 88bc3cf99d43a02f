//! Session id -> subject token: injective, so every id gets a subject of its own.
//!
//! A subject token cannot hold `.`, `*`, `>` or whitespace and a key-value key allows even
//! less, so every byte outside `[A-Za-z0-9_-]` becomes `=XX` (hex). `=` itself is escaped,
//! which is what makes the mapping injective: no two ids share a token.

use crate::sessions::model::SessionId;

pub fn token(id: &SessionId) -> String {
    let mut token = String::with_capacity(id.as_str().len());
    for byte in id.as_str().bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' {
            token.push(char::from(byte));
        } else {
            token.push_str(&format!("={byte:02X}"));
        }
    }
    token
}

/// The subject holding one session's events.
pub fn events_subject(prefix: &str, id: &SessionId) -> String {
    format!("{prefix}.{}", token(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn id(raw: &str) -> SessionId {
        SessionId::parse(raw).unwrap()
    }

    #[test]
    fn plain_ids_stay_readable() {
        assert_eq!(token(&id("ses_AbC-9")), "ses_AbC-9");
    }

    #[test]
    fn tricky_ids_map_to_distinct_single_tokens() {
        let ids = [
            "a.b", "a*b", "a b", "a>b", "a=2Eb", "a=b", "é", "a/b", "a\nb", "a\tb", ".", "a_b",
        ];
        let tokens: HashSet<String> = ids.iter().map(|raw| token(&id(raw))).collect();
        assert_eq!(tokens.len(), ids.len());
        for token in &tokens {
            assert!(
                token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-=".contains(&b)),
                "{token}"
            );
        }
    }

    #[test]
    fn escapes_are_hex_per_byte() {
        assert_eq!(token(&id("a.b")), "a=2Eb");
        assert_eq!(token(&id("é")), "=C3=A9");
        assert_eq!(
            events_subject("starcite.events", &id("x y")),
            "starcite.events.x=20y"
        );
    }
}
