//! Validation of client input into domain values, in the order docs/api.md gives and with its codes.
//!
//! Bodies arrive as loose JSON because the API accepts more than a typed schema would
//! (decimal strings for integers, `null` for absent) and names which field failed first.

use serde_json::Value;

use super::error::{Field, InvalidInput};
use super::limits::{MAX_BATCH_EVENTS, check_depth, check_metadata, check_title, decimal, integer};
use super::model::{EventContent, JsonObject, NewEvent, NewSession, Seq, SessionId};

/// Reads a create-session body; an empty body means "all defaults".
pub fn new_session(body: Option<Value>) -> Result<NewSession, InvalidInput> {
    let body = match body {
        None => {
            return Ok(NewSession {
                id: None,
                title: None,
                metadata: JsonObject::new(),
                content_type: None,
                expiry: None,
                forked_from: None,
            });
        }
        Some(Value::Object(body)) => body,
        Some(_) => {
            return Err(InvalidInput::Session(
                "the body must be a JSON object".into(),
            ));
        }
    };
    let id = match present(&body, "id") {
        None => None,
        Some(Value::String(id)) if !id.is_empty() => {
            Some(SessionId::parse(id).map_err(|_| InvalidInput::SessionId)?)
        }
        Some(_) => {
            return Err(InvalidInput::Event(
                "`id` must be a non-empty string".into(),
            ));
        }
    };
    let title = match present(&body, "title") {
        None => None,
        Some(Value::String(title)) => Some(title.clone()),
        Some(_) => return Err(InvalidInput::Event("`title` must be a string".into())),
    };
    check_title(title.as_deref())?;
    let metadata = optional_object(&body, "metadata").ok_or(InvalidInput::Metadata)?;
    check_metadata(Field::Metadata, &metadata)?;
    Ok(NewSession {
        id,
        title,
        metadata,
        content_type: None,
        expiry: None,
        forked_from: None,
    })
}

/// Reads a batch append body, `{"events": [...]}`: 1 to 1,000 events, each read like a
/// single append's body (an event's own failure names its index).
pub fn new_events(
    body: Option<Value>,
    subject: Option<&str>,
) -> Result<Vec<NewEvent>, InvalidInput> {
    let Some(Value::Object(mut body)) = body else {
        return Err(InvalidInput::Event("the body must be a JSON object".into()));
    };
    let Some(Value::Array(events)) = body.remove("events") else {
        return Err(InvalidInput::Event(
            "`events` must be an array of events".into(),
        ));
    };
    if events.is_empty() || events.len() > MAX_BATCH_EVENTS {
        return Err(InvalidInput::Event(format!(
            "`events` must hold 1 to {MAX_BATCH_EVENTS} events"
        )));
    }
    events
        .into_iter()
        .enumerate()
        .map(|(index, event)| {
            new_event(Some(event), subject).map_err(|err| match err {
                InvalidInput::Event(message) => {
                    InvalidInput::Event(format!("events[{index}]: {message}"))
                }
                other => other,
            })
        })
        .collect()
}

/// Reads an append body. Field order follows docs/api.md: the first failure wins. With a
/// `subject` (an authenticated caller), `actor` defaults to it and may not differ from it.
pub fn new_event(body: Option<Value>, subject: Option<&str>) -> Result<NewEvent, InvalidInput> {
    let Some(Value::Object(mut body)) = body else {
        return Err(InvalidInput::Event("the body must be a JSON object".into()));
    };
    let kind = non_empty_string(&body, "type");
    // Taken out rather than copied: it is most of the body.
    let payload = match body.remove("payload") {
        Some(Value::Object(payload)) => Some(payload),
        _ => None,
    };
    let actor = match subject {
        None => non_empty_string(&body, "actor"),
        Some(subject) => match present(&body, "actor") {
            None => Some(subject.to_owned()),
            Some(Value::String(actor)) if actor == subject => Some(subject.to_owned()),
            Some(_) => {
                return Err(InvalidInput::Event(format!(
                    "`actor` must be the token's subject `{subject}`"
                )));
            }
        },
    };
    let (Some(kind), Some(payload), Some(actor), true, true) = (
        kind,
        payload,
        actor,
        present(&body, "producer_id").is_some(),
        present(&body, "producer_seq").is_some(),
    ) else {
        return Err(InvalidInput::Event(
            "`type`, `actor`, `producer_id` (non-empty strings), `payload` (an object) and \
             `producer_seq` are required"
                .into(),
        ));
    };
    let producer_id = non_empty_string(&body, "producer_id")
        .ok_or_else(|| InvalidInput::Event("`producer_id` must be a non-empty string".into()))?;
    let producer_seq = present(&body, "producer_seq")
        .and_then(integer)
        .filter(|seq| *seq >= 1)
        .ok_or_else(|| InvalidInput::Event("`producer_seq` must be an integer >= 1".into()))?;
    let source = optional_non_empty_string(&body, "source")?;
    let metadata = optional_object(&body, "metadata").ok_or(InvalidInput::Metadata)?;
    check_metadata(Field::Metadata, &metadata)?;
    let refs = optional_object(&body, "refs").ok_or(InvalidInput::Refs)?;
    check_metadata(Field::Refs, &refs)?;
    let refs = validate_refs(refs)?;
    check_depth(Field::Payload, &payload)?;
    let idempotency_key = optional_non_empty_string(&body, "idempotency_key")?;
    let expected_seq =
        match present(&body, "expected_seq") {
            None => None,
            Some(value) => Some(integer(value).ok_or_else(|| {
                InvalidInput::Event("`expected_seq` must be an integer >= 0".into())
            })?),
        };
    Ok(NewEvent {
        content: EventContent {
            kind,
            payload,
            actor,
            producer_id,
            producer_seq,
            source,
            metadata,
            refs,
            idempotency_key,
        },
        expected_seq,
    })
}

/// Parses a tail or page cursor: a whole-string non-negative integer.
pub fn cursor(raw: Option<&str>) -> Result<Seq, InvalidInput> {
    match raw {
        None => Ok(0),
        Some(raw) => decimal(raw).ok_or(InvalidInput::Cursor),
    }
}

/// A field that is there and not `null`: the API treats `null` as absent everywhere.
pub(crate) fn present<'a>(body: &'a JsonObject, key: &str) -> Option<&'a Value> {
    body.get(key).filter(|value| !value.is_null())
}

fn non_empty_string(body: &JsonObject, key: &str) -> Option<String> {
    match present(body, key) {
        Some(Value::String(value)) if !value.is_empty() => Some(value.clone()),
        _ => None,
    }
}

fn optional_non_empty_string(body: &JsonObject, key: &str) -> Result<Option<String>, InvalidInput> {
    match present(body, key) {
        None => Ok(None),
        Some(_) => non_empty_string(body, key)
            .map(Some)
            .ok_or_else(|| InvalidInput::Event(format!("`{key}` must be a non-empty string"))),
    }
}

/// An optional object field: `None` when it is present but not an object.
fn optional_object(body: &JsonObject, key: &str) -> Option<JsonObject> {
    match present(body, key) {
        None => Some(JsonObject::new()),
        Some(Value::Object(object)) => Some(object.clone()),
        Some(_) => None,
    }
}

/// The `refs` keys whose values are integers >= 0.
pub const INTEGER_REFS: [&str; 2] = ["to_seq", "step"];
/// The `refs` keys whose values are strings.
pub const STRING_REFS: [&str; 2] = ["request_id", "sequence_id"];

/// Known `refs` keys are checked and their integers normalised; unknown keys stay verbatim.
fn validate_refs(mut refs: JsonObject) -> Result<JsonObject, InvalidInput> {
    for key in INTEGER_REFS {
        if let Some(value) = refs.get_mut(key) {
            let number = integer(value).ok_or_else(|| {
                InvalidInput::Event(format!("`refs.{key}` must be an integer >= 0"))
            })?;
            *value = Value::from(number);
        }
    }
    for key in STRING_REFS {
        if refs.get(key).is_some_and(|value| !value.is_string()) {
            return Err(InvalidInput::Event(format!(
                "`refs.{key}` must be a string"
            )));
        }
    }
    Ok(refs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::limits::{MAX_DEPTH, MAX_INTEGER, MAX_METADATA_BYTES, MAX_TITLE_BYTES};
    use serde_json::json;

    fn parse(body: Option<Value>) -> Result<NewEvent, InvalidInput> {
        new_event(body, None)
    }

    fn valid_event() -> Value {
        json!({"type": "message", "payload": {"text": "hi"}, "actor": "agent:a",
               "producer_id": "p1", "producer_seq": 1})
    }

    fn with(field: &str, value: Value) -> Option<Value> {
        let mut body = valid_event();
        body[field] = value;
        Some(body)
    }

    #[test]
    fn a_minimal_event_is_accepted_with_defaults() {
        let event = parse(Some(valid_event())).unwrap();
        assert_eq!(event.content.producer_seq, 1);
        assert_eq!(event.content.source, None);
        assert!(event.content.metadata.is_empty());
        assert_eq!(event.expected_seq, None);
    }

    #[test]
    fn producer_seq_accepts_decimal_strings_only_when_whole() {
        for ok in [json!(3), json!("3"), json!("+3"), json!("03")] {
            assert_eq!(
                parse(with("producer_seq", ok))
                    .unwrap()
                    .content
                    .producer_seq,
                3
            );
        }
        for bad in [
            json!(0),
            json!(-1),
            json!("3.0"),
            json!("abc"),
            json!(1.5),
            json!(true),
            json!("-3"),
            json!(" 3"),
        ] {
            assert!(matches!(
                parse(with("producer_seq", bad)),
                Err(InvalidInput::Event(_))
            ));
        }
    }

    #[test]
    fn shape_errors_have_their_own_codes() {
        assert_eq!(
            parse(with("metadata", json!([1]))),
            Err(InvalidInput::Metadata)
        );
        assert_eq!(parse(with("refs", json!("x"))), Err(InvalidInput::Refs));
        assert!(matches!(
            parse(with("refs", json!({"to_seq": -1}))),
            Err(InvalidInput::Event(_))
        ));
        assert!(matches!(
            parse(with("payload", json!([]))),
            Err(InvalidInput::Event(_))
        ));
        assert!(matches!(
            parse(Some(json!([1]))),
            Err(InvalidInput::Event(_))
        ));
    }

    #[test]
    fn required_fields_are_checked_before_metadata() {
        let mut body = valid_event();
        body.as_object_mut().unwrap().remove("actor");
        body["metadata"] = json!("not an object");
        assert!(matches!(parse(Some(body)), Err(InvalidInput::Event(_))));
    }

    #[test]
    fn refs_keep_unknown_keys_and_normalise_known_integers() {
        let event = parse(with("refs", json!({"to_seq": "4", "custom": [1]}))).unwrap();
        assert_eq!(event.content.refs["to_seq"], json!(4));
        assert_eq!(event.content.refs["custom"], json!([1]));
    }

    #[test]
    fn null_optionals_mean_absent() {
        let event = parse(with("source", Value::Null)).unwrap();
        assert_eq!(event.content.source, None);
        let event = parse(with("expected_seq", json!("0"))).unwrap();
        assert_eq!(event.expected_seq, Some(0));
    }

    #[test]
    fn create_validates_id_then_title_then_metadata() {
        assert!(matches!(
            new_session(Some(json!({"id": "", "metadata": 1}))),
            Err(InvalidInput::Event(_))
        ));
        assert!(matches!(
            new_session(Some(json!({"title": 5}))),
            Err(InvalidInput::Event(_))
        ));
        assert_eq!(
            new_session(Some(json!({"metadata": [1]}))),
            Err(InvalidInput::Metadata)
        );
        assert_eq!(
            new_session(Some(json!({"id": "x".repeat(257)}))),
            Err(InvalidInput::SessionId)
        );
        let session = new_session(Some(json!({"id": "a.b", "title": null}))).unwrap();
        assert_eq!(session.id.unwrap().as_str(), "a.b");
        assert_eq!(session.title, None);
    }

    #[test]
    fn an_authenticated_actor_is_the_token_subject() {
        let mut body = valid_event();
        body.as_object_mut().unwrap().remove("actor");
        let event = new_event(Some(body), Some("user:42")).unwrap();
        assert_eq!(event.content.actor, "user:42");
        let mut other = valid_event();
        other["actor"] = json!("agent:someone-else");
        assert!(matches!(
            new_event(Some(other), Some("user:42")),
            Err(InvalidInput::Event(_))
        ));
    }

    #[test]
    fn hostile_nesting_and_sizes_are_refused() {
        let mut deep = json!("bottom");
        for _ in 0..MAX_DEPTH {
            deep = json!([deep]);
        }
        let refused = parse(with("payload", json!({"deep": deep.clone()})));
        assert_eq!(
            refused,
            Err(InvalidInput::TooDeep {
                field: Field::Payload,
                max_depth: MAX_DEPTH
            })
        );
        let refused = new_session(Some(json!({"metadata": {"deep": deep}})));
        assert_eq!(
            refused,
            Err(InvalidInput::TooDeep {
                field: Field::Metadata,
                max_depth: MAX_DEPTH
            })
        );
        let mut shallow = json!("bottom");
        for _ in 0..MAX_DEPTH - 2 {
            shallow = json!([shallow]);
        }
        assert!(parse(with("payload", json!({"ok": shallow}))).is_ok());
        let big = json!({"blob": "x".repeat(MAX_METADATA_BYTES)});
        assert!(matches!(
            parse(with("metadata", big.clone())),
            Err(InvalidInput::TooLarge {
                field: Field::Metadata,
                ..
            })
        ));
        assert!(matches!(
            parse(with("refs", big)),
            Err(InvalidInput::TooLarge {
                field: Field::Refs,
                ..
            })
        ));
        let title = "t".repeat(MAX_TITLE_BYTES + 1);
        assert!(matches!(
            new_session(Some(json!({"title": title}))),
            Err(InvalidInput::TooLarge {
                field: Field::Title,
                ..
            })
        ));
    }

    #[test]
    fn cursors_are_whole_non_negative_integers() {
        assert_eq!(cursor(None), Ok(0));
        assert_eq!(cursor(Some("12")), Ok(12));
        assert_eq!(cursor(Some("9007199254740991")), Ok(MAX_INTEGER));
        assert_eq!(cursor(Some("9007199254740992")), Err(InvalidInput::Cursor));
        for bad in ["", "-1", "1.5", "bad", "1x"] {
            assert_eq!(cursor(Some(bad)), Err(InvalidInput::Cursor));
        }
    }
}
