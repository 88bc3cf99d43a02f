//! The producer socket's frames: a request read by the rules of `POST /append` or
//! `append_batch`, and the `ready`, acknowledgement and refusal frames the gateway sends.

use serde_json::{Map, Value, json};

use crate::api::error::ApiError;
use crate::api::sessions::AppendReply;
use crate::sessions::error::InvalidInput;
use crate::sessions::model::NewEvent;
use crate::sessions::{Appended, ProducerPosition, input};
use poem_openapi::types::ToJSON;

/// Which producer requests a frame carried, for its answer: each event's `(producer_id,
/// producer_seq)` as the client sent them, when readable.
#[derive(Debug, Default)]
pub(super) struct Echo {
    pub(super) batch: bool,
    producers: Vec<(Value, Value)>,
}

impl Echo {
    fn of(request: &Value) -> Echo {
        let one = |event: &Value| {
            let field = |name: &str| event.get(name).cloned().unwrap_or(Value::Null);
            (field("producer_id"), field("producer_seq"))
        };
        match request {
            Value::Array(events) => Echo {
                batch: true,
                producers: events.iter().map(one).collect(),
            },
            event => Echo {
                batch: false,
                producers: vec![one(event)],
            },
        }
    }

    /// The producer fields of the frame's answer: its last event's.
    fn last(&self) -> (Value, Value) {
        self.producers
            .last()
            .cloned()
            .unwrap_or((Value::Null, Value::Null))
    }
}

/// A frame's events, read by the rules of `POST /append` (an object) or `append_batch` (an
/// array).
pub(super) fn parse(
    text: &str,
    subject: Option<&str>,
) -> Result<(Vec<NewEvent>, Echo), (InvalidInput, Echo)> {
    let request: Value = serde_json::from_str(text).map_err(|err| {
        let refusal = InvalidInput::Event(format!("the frame is not JSON: {err}"));
        (refusal, Echo::default())
    })?;
    let echo = Echo::of(&request);
    let events = match request {
        Value::Array(events) => input::new_events(Some(json!({ "events": events })), subject),
        event => input::new_event(Some(event), subject).map(|event| vec![event]),
    };
    match events {
        Ok(events) => Ok((events, echo)),
        Err(refusal) => Err((refusal, echo)),
    }
}

/// The first frame: where the socket's producer stands in the session.
pub(super) fn ready(producer: Option<&(String, Option<ProducerPosition>)>) -> String {
    let (producer_id, position) = match producer {
        Some((producer_id, position)) => (Value::from(producer_id.as_str()), *position),
        None => (Value::Null, None),
    };
    json!({
        "type": "ready",
        "producer_id": producer_id,
        "producer_seq": position.map(|position| position.producer_seq),
        "seq": position.map(|position| position.seq),
    })
    .to_string()
}

/// An accepted request's answer: `POST /append`'s reply, or `append_batch`'s for an array,
/// with the producer fields.
pub(super) fn acknowledged(appended: Vec<Appended>, echo: &Echo, single: bool) -> String {
    let reply = |appended: Appended, (producer_id, producer_seq): (Value, Value)| {
        let mut reply = match AppendReply::from(appended).to_json() {
            Some(Value::Object(reply)) => reply,
            _ => Map::new(),
        };
        reply.insert("producer_id".into(), producer_id);
        reply.insert("producer_seq".into(), producer_seq);
        reply
    };
    let last_seq = appended.last().map_or(0, |event| event.last_seq);
    let mut answers: Vec<Map<String, Value>> = appended
        .into_iter()
        .zip(echo.producers.iter().cloned())
        .map(|(appended, producer)| reply(appended, producer))
        .collect();
    if single && let Some(answer) = answers.pop() {
        return Value::Object(answer).to_string();
    }
    let (producer_id, producer_seq) = echo.last();
    json!({
        "events": answers,
        "last_seq": last_seq,
        "producer_id": producer_id,
        "producer_seq": producer_seq,
    })
    .to_string()
}

/// A refused request's answer: the error body HTTP would have sent, with the producer fields
/// and, where HTTP would send `Retry-After`, `retry_after`.
pub(super) fn refused(err: ApiError, echo: &Echo) -> String {
    let (body, retry_after) = err.into_body();
    let mut answer = match body.to_json() {
        Some(Value::Object(answer)) => answer,
        _ => Map::new(),
    };
    let (producer_id, producer_seq) = echo.last();
    answer.insert("producer_id".into(), producer_id);
    answer.insert("producer_seq".into(), producer_seq);
    if let Some(seconds) = retry_after {
        answer.insert("retry_after".into(), seconds.into());
    }
    Value::Object(answer).to_string()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn event(producer_seq: u64) -> Value {
        json!({
            "type": "message",
            "payload": {"text": "hi"},
            "actor": "agent:a",
            "producer_id": "p",
            "producer_seq": producer_seq,
        })
    }

    #[test]
    fn a_frame_is_one_append_or_an_array_of_them() {
        let (events, echo) = parse(&event(3).to_string(), None).unwrap();
        assert_eq!(events.len(), 1);
        assert!(!echo.batch);
        assert_eq!(echo.last(), (json!("p"), json!(3)));
        let batch = json!([event(4), event(5)]).to_string();
        let (events, echo) = parse(&batch, None).unwrap();
        assert_eq!(events.len(), 2);
        assert!(echo.batch);
        assert_eq!(echo.last(), (json!("p"), json!(5)));
    }

    #[test]
    fn a_refused_frame_echoes_what_it_could_read() {
        let (refusal, echo) = parse("{not json", None).unwrap_err();
        assert!(matches!(refusal, InvalidInput::Event(_)));
        assert_eq!(echo.last(), (Value::Null, Value::Null));
        let mut untyped = event(7);
        untyped.as_object_mut().unwrap().remove("type");
        let (refusal, echo) = parse(&untyped.to_string(), None).unwrap_err();
        let answer: Value = serde_json::from_str(&refused(refusal.into(), &echo)).unwrap();
        assert_eq!(answer["error"], "invalid_event");
        assert_eq!(answer["producer_id"], "p");
        assert_eq!(answer["producer_seq"], 7);
        assert!(answer["message"].is_string());
        assert!(answer.get("retry_after").is_none());
        let (refusal, _) = parse("[]", None).unwrap_err();
        assert!(matches!(refusal, InvalidInput::Event(_)));
    }

    #[test]
    fn answers_carry_the_append_reply_and_the_producer_fields() {
        let appended = |seq| Appended {
            seq,
            last_seq: 9,
            deduped: false,
        };
        let echo = Echo::of(&event(3));
        let single: Value =
            serde_json::from_str(&acknowledged(vec![appended(8)], &echo, true)).unwrap();
        assert_eq!(
            single,
            json!({"seq": 8, "last_seq": 9, "deduped": false, "cursor": 8,
                   "committed_cursor": 9, "producer_id": "p", "producer_seq": 3})
        );
        let echo = Echo::of(&json!([event(4), event(5)]));
        let batch: Value =
            serde_json::from_str(&acknowledged(vec![appended(8), appended(9)], &echo, false))
                .unwrap();
        assert_eq!(batch["last_seq"], 9);
        assert_eq!(batch["producer_seq"], 5);
        assert_eq!(batch["events"][0]["producer_seq"], 4);
        assert_eq!(batch["events"][1]["seq"], 9);
        let limited = refused(ApiError::rate_limited(Duration::from_millis(1500)), &echo);
        let limited: Value = serde_json::from_str(&limited).unwrap();
        assert_eq!(limited["error"], "rate_limited");
        assert_eq!(limited["retry_after"], 2);
    }

    #[test]
    fn the_ready_frame_says_where_the_producer_stands() {
        let position = ProducerPosition {
            producer_seq: 12,
            seq: 40,
        };
        let ready_frame: Value =
            serde_json::from_str(&ready(Some(&("p".to_owned(), Some(position))))).unwrap();
        assert_eq!(
            ready_frame,
            json!({"type": "ready", "producer_id": "p", "producer_seq": 12, "seq": 40})
        );
        let unknown: Value = serde_json::from_str(&ready(Some(&("q".to_owned(), None)))).unwrap();
        assert_eq!(
            unknown,
            json!({"type": "ready", "producer_id": "q", "producer_seq": null, "seq": null})
        );
        let anonymous: Value = serde_json::from_str(&ready(None)).unwrap();
        assert_eq!(anonymous["producer_id"], Value::Null);
    }
}
