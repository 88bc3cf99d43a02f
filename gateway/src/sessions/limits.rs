//! The bounds the API puts on input, each stated once: the checks here, the error
//! messages and the spec's schemas all read them from this file.
//!
//! Hostile input is refused before anything is written: numbers beyond what JSON clients hold,
//! nesting that would exhaust a stack, metadata that every gateway would keep in memory.

use std::ops::RangeInclusive;
use std::time::Duration;

use serde_json::Value;

use super::error::{Field, InvalidInput};
use super::model::JsonObject;

/// The largest integer the API takes anywhere (2^53 - 1): every JSON client can hold it exactly.
pub const MAX_INTEGER: u64 = (1 << 53) - 1;

/// How deep payloads, metadata and refs may nest: deeper JSON is hostile, not data.
pub const MAX_DEPTH: usize = 32;
/// The largest metadata or refs object, serialized. Session metadata lives in every gateway's
/// memory, so it stays small; payloads are bounded by the request body limit.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// The longest title, in bytes.
pub const MAX_TITLE_BYTES: usize = 4096;

/// The most events one batch append may carry (JetStream's atomic batch limit).
pub const MAX_BATCH_EVENTS: usize = 1000;

/// The most items a page holds (events, or sessions in a list) and a tail frame carries.
pub const MAX_PAGE_SIZE: u64 = 1000;
/// A page's size when the request names none.
pub const DEFAULT_PAGE_SIZE: u64 = 100;
/// The longest an events page waits for a first event, in seconds.
pub const MAX_WAIT_SECONDS: u64 = 60;

/// A page's size (`limit`): 1 to `MAX_PAGE_SIZE`, `DEFAULT_PAGE_SIZE` when absent.
pub fn page_size(raw: Option<&str>) -> Result<usize, InvalidInput> {
    bounded(
        raw,
        1..=MAX_PAGE_SIZE,
        DEFAULT_PAGE_SIZE,
        InvalidInput::Limit,
    )
    .map(|size| size as usize)
}

/// How many events a tail frame may carry: 1 to `MAX_PAGE_SIZE`, one when absent.
pub fn tail_batch_size(raw: Option<&str>) -> Result<usize, InvalidInput> {
    bounded(raw, 1..=MAX_PAGE_SIZE, 1, InvalidInput::BatchSize).map(|size| size as usize)
}

/// How long an empty events page waits for a first event: whole seconds up to
/// `MAX_WAIT_SECONDS`, no wait when absent.
pub fn wait(raw: Option<&str>) -> Result<Duration, InvalidInput> {
    bounded(raw, 0..=MAX_WAIT_SECONDS, 0, InvalidInput::Wait).map(Duration::from_secs)
}

/// A whole number within `range`, from an optional raw parameter (`None`: `default`).
fn bounded(
    raw: Option<&str>,
    range: RangeInclusive<u64>,
    default: u64,
    invalid: InvalidInput,
) -> Result<u64, InvalidInput> {
    match raw {
        None => Ok(default),
        Some(raw) => decimal(raw)
            .filter(|value| range.contains(value))
            .ok_or(invalid),
    }
}

/// Titles are free text, but not unbounded.
pub(crate) fn check_title(title: Option<&str>) -> Result<(), InvalidInput> {
    match title {
        Some(title) if title.len() > MAX_TITLE_BYTES => Err(InvalidInput::TooLarge {
            field: Field::Title,
            max_bytes: MAX_TITLE_BYTES,
        }),
        _ => Ok(()),
    }
}

/// Metadata-like objects: bounded in depth and in size.
pub(crate) fn check_metadata(field: Field, object: &JsonObject) -> Result<(), InvalidInput> {
    check_depth(field, object)?;
    // Serializing plain JSON values cannot fail.
    let bytes = serde_json::to_vec(object).map_or(0, |bytes| bytes.len());
    if bytes > MAX_METADATA_BYTES {
        return Err(InvalidInput::TooLarge {
            field,
            max_bytes: MAX_METADATA_BYTES,
        });
    }
    Ok(())
}

pub(super) fn check_depth(field: Field, object: &JsonObject) -> Result<(), InvalidInput> {
    // Iterative, so hostile nesting cannot exhaust the stack here either.
    let mut pending: Vec<(&Value, usize)> = object.values().map(|value| (value, 2)).collect();
    while let Some((value, depth)) = pending.pop() {
        if depth > MAX_DEPTH {
            return Err(InvalidInput::TooDeep {
                field,
                max_depth: MAX_DEPTH,
            });
        }
        match value {
            Value::Object(object) => {
                pending.extend(object.values().map(|value| (value, depth + 1)))
            }
            Value::Array(items) => pending.extend(items.iter().map(|value| (value, depth + 1))),
            _ => {}
        }
    }
    Ok(())
}

/// A non-negative integer given as a JSON integer or a decimal string.
pub(crate) fn integer(value: &Value) -> Option<u64> {
    match value {
        Value::Number(number) => number.as_u64().filter(|number| *number <= MAX_INTEGER),
        Value::String(text) => decimal(text),
        _ => None,
    }
}

/// A whole-string decimal with an optional `+`, like Elixir's `Integer.parse` with no rest.
pub(crate) fn decimal(text: &str) -> Option<u64> {
    let digits = text.strip_prefix('+').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|number| *number <= MAX_INTEGER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_and_waits_stay_in_their_ranges() {
        assert_eq!(page_size(None), Ok(DEFAULT_PAGE_SIZE as usize));
        assert_eq!(page_size(Some("1000")), Ok(MAX_PAGE_SIZE as usize));
        assert_eq!(page_size(Some("1001")), Err(InvalidInput::Limit));
        assert_eq!(page_size(Some("0")), Err(InvalidInput::Limit));
        assert_eq!(tail_batch_size(None), Ok(1));
        assert_eq!(tail_batch_size(Some("0")), Err(InvalidInput::BatchSize));
        assert_eq!(wait(None), Ok(Duration::ZERO));
        assert_eq!(wait(Some("60")), Ok(Duration::from_secs(60)));
        assert_eq!(wait(Some("61")), Err(InvalidInput::Wait));
    }

    /// Clients may match on these texts: stating the bounds through constants keeps them.
    #[test]
    fn messages_state_the_bounds_as_before() {
        let messages = [
            (
                InvalidInput::Limit,
                "Invalid limit value: an integer from 1 to 1000",
            ),
            (
                InvalidInput::BatchSize,
                "Invalid batch size: an integer from 1 to 1000",
            ),
            (
                InvalidInput::Wait,
                "Invalid wait: whole seconds from 0 to 60",
            ),
            (
                InvalidInput::SessionId,
                "Invalid session id: a non-empty string of at most 256 bytes",
            ),
            (
                InvalidInput::TooDeep {
                    field: Field::Payload,
                    max_depth: MAX_DEPTH,
                },
                "Invalid payload: nested deeper than 32 levels",
            ),
            (
                InvalidInput::TooLarge {
                    field: Field::Title,
                    max_bytes: MAX_TITLE_BYTES,
                },
                "Invalid title: larger than 4096 bytes",
            ),
        ];
        for (error, message) in messages {
            assert_eq!(error.to_string(), message);
        }
    }
}
