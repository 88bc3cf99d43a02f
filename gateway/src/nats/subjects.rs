//! Session id -> subject token: injective, so every id gets a subject of its own.
//!
//! A subject token cannot hold `.`, `*`, `>` or whitespace and a key-value key allows even
//! less, so every byte outside `[A-Za-z0-9_-]` becomes `=XX` (hex). `=` itself is escaped,
//! which is what makes the mapping injective: no two ids share a token.

use crate::sessions::model::SessionId;

pub fn token(id: &SessionId) -> String {
    let mut token = String::with_capacity(id.as_str().len());
    for byte in id.as_str().bytes() {
        if unescaped(byte) {
            token.push(char::from(byte));
        } else {
            token.push_str(&format!("={byte:02X}"));
        }
    }
    token
}

/// The subject of session `id`'s key in key-value bucket `bucket`: what its header versions
/// are stored under.
pub fn bucket_key(bucket: &str, id: &SessionId) -> String {
    format!("$KV.{bucket}.{}", token(id))
}

/// The id bytes a token stands for; `None` for text `token` never makes.
pub fn id_of_token(token: &str) -> Option<Vec<u8>> {
    if token.is_empty() {
        return None;
    }
    // Most ids need no escape: one pass that copies, instead of a push per byte (a catalog
    // view's replay decodes ten million).
    if token.bytes().all(unescaped) {
        return Some(token.as_bytes().to_vec());
    }
    let mut id = Vec::with_capacity(token.len());
    let mut bytes = token.bytes();
    while let Some(byte) = bytes.next() {
        if byte == b'=' {
            let high = char::from(bytes.next()?).to_digit(16)?;
            let low = char::from(bytes.next()?).to_digit(16)?;
            id.push(u8::try_from(high * 16 + low).ok()?);
        } else if unescaped(byte) {
            id.push(byte);
        } else {
            return None;
        }
    }
    Some(id)
}

/// A byte a token holds as itself.
fn unescaped(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-'
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
    fn a_token_reads_back_as_its_id() {
        for raw in ["ses_AbC-9", "a.b", "a=2Eb", "é", "a\nb", "."] {
            assert_eq!(id_of_token(&token(&id(raw))), Some(raw.as_bytes().to_vec()));
        }
        for never in ["a.b", "a=2", "a=ZZ", "a b", ""] {
            assert_eq!(id_of_token(never), None, "{never}");
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
