//! Inputs the spec types strictly but the handler receives raw, for the domain to validate.
//!
//! poem-openapi rejects a body or parameter that does not match its type before the handler
//! runs, with its own wording. docs/api.md instead names which field fails first and with
//! which code, and accepts more than a typed schema says (decimal strings, `null` for absent).
//! So these types document the strict shape for generated clients, and the domain validates;
//! every bound they document is the domain's own constant (`sessions::limits`).

use std::borrow::Cow;
use std::marker::PhantomData;

use poem::{Request, RequestBody};
use poem_openapi::payload::{ParsePayload, Payload};
use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::{ParseFromJSON, ParseFromParameter, ParseResult, ToJSON, Type};
use serde_json::Value;

use crate::sessions::input::{INTEGER_REFS, STRING_REFS};
use crate::sessions::limits::{MAX_INTEGER, MAX_PAGE_SIZE, MAX_WAIT_SECONDS};
use crate::sessions::model::MAX_SESSION_ID_BYTES;

/// The most bytes a request body may have; set once on the route.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

pub struct JsonBody<T> {
    /// `Ok(None)` for an empty body, `Err` with the parser's reason for malformed JSON.
    value: Result<Option<Value>, String>,
    schema: PhantomData<fn() -> T>,
}

impl<T> JsonBody<T> {
    pub fn into_value(self) -> Result<Option<Value>, String> {
        self.value
    }
}

impl<T: Type> Payload for JsonBody<T> {
    const CONTENT_TYPE: &'static str = "application/json";

    fn check_content_type(content_type: &str) -> bool {
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        essence.eq_ignore_ascii_case("application/json")
            || essence.to_ascii_lowercase().ends_with("+json")
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Type> ParsePayload for JsonBody<T> {
    const IS_REQUIRED: bool = true;

    async fn from_request(request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        let limit = request
            .data::<BodyLimit>()
            .map_or(usize::MAX, |limit| limit.0);
        let bytes = body.take()?.into_bytes_limit(limit).await?;
        let value = if bytes.is_empty() {
            Ok(None)
        } else {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|err| format!("malformed JSON: {err}"))
        };
        Ok(JsonBody {
            value,
            schema: PhantomData,
        })
    }
}

poem_openapi::impl_apirequest_for_payload!(JsonBody<T>, T: Type);

/// The schema a raw parameter documents.
pub trait ParamSchema: Send + Sync + 'static {
    const NAME: &'static str;
    fn schema() -> MetaSchema;
}

/// A value documented with the strict schema `S` but handed over as sent: query parameters
/// keep their raw text, and body fields (whose bodies reach the domain raw through `JsonBody`)
/// exist only for the spec.
pub struct Raw<S>(String, PhantomData<fn() -> S>);

impl<S> std::fmt::Debug for Raw<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Raw").field(&self.0).finish()
    }
}

impl<S> Raw<S> {
    /// The raw text of an optional parameter.
    pub fn raw(param: &Option<Raw<S>>) -> Option<&str> {
        param.as_ref().map(|param| param.0.as_str())
    }
}

impl<S: ParamSchema> Type for Raw<S> {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        S::NAME.into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(S::schema()))
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(std::iter::once(self))
    }
}

impl<S: ParamSchema> ParseFromParameter for Raw<S> {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        Ok(Raw(value.to_owned(), PhantomData))
    }
}

impl<S: ParamSchema> ParseFromJSON for Raw<S> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        Ok(Raw(
            value.map(|value| value.to_string()).unwrap_or_default(),
            PhantomData,
        ))
    }
}

impl<S: ParamSchema> ToJSON for Raw<S> {
    fn to_json(&self) -> Option<Value> {
        None
    }
}

fn integer(minimum: u64, maximum: Option<u64>) -> MetaSchema {
    MetaSchema {
        format: Some("int64"),
        minimum: Some(minimum as f64),
        maximum: Some(maximum.unwrap_or(MAX_INTEGER) as f64),
        ..MetaSchema::new("integer")
    }
}

/// A seq or lifecycle cursor: an integer >= 0.
pub struct Position;
impl ParamSchema for Position {
    const NAME: &'static str = "position";
    fn schema() -> MetaSchema {
        integer(0, None)
    }
}

/// A page size or a tail's batch size.
pub struct PageSize;
impl ParamSchema for PageSize {
    const NAME: &'static str = "batch";
    fn schema() -> MetaSchema {
        integer(1, Some(MAX_PAGE_SIZE))
    }
}

/// A long-poll wait in seconds.
pub struct WaitSeconds;
impl ParamSchema for WaitSeconds {
    const NAME: &'static str = "wait_seconds";
    fn schema() -> MetaSchema {
        integer(0, Some(MAX_WAIT_SECONDS))
    }
}

/// A list cursor: the last session id seen.
pub struct IdCursor;
impl ParamSchema for IdCursor {
    const NAME: &'static str = "id_cursor";
    fn schema() -> MetaSchema {
        MetaSchema {
            min_length: Some(1),
            ..MetaSchema::new("string")
        }
    }
}

/// Which sessions a list shows by their archived flag.
pub struct ArchivedChoice;
impl ParamSchema for ArchivedChoice {
    const NAME: &'static str = "archived_choice";
    fn schema() -> MetaSchema {
        MetaSchema {
            enum_items: vec!["false".into(), "true".into(), "all".into()],
            ..MetaSchema::new("string")
        }
    }
}

fn nullable(schema: MetaSchema) -> MetaSchema {
    MetaSchema {
        nullable: true,
        ..schema
    }
}

fn object() -> MetaSchema {
    MetaSchema {
        additional_properties: Some(Box::new(MetaSchemaRef::Inline(Box::new(MetaSchema::ANY)))),
        ..MetaSchema::new("object")
    }
}

fn string(min_length: usize) -> MetaSchema {
    MetaSchema {
        min_length: Some(min_length).filter(|min| *min > 0),
        ..MetaSchema::new("string")
    }
}

/// A session id in a create body. Ids may hold `MAX_SESSION_ID_BYTES` of UTF-8; the spec says
/// a quarter as many characters (a character takes at most 4 bytes), which always fit, so a
/// generated client never sends one the gateway refuses.
pub struct NewSessionId;
impl ParamSchema for NewSessionId {
    const NAME: &'static str = "new_session_id";
    fn schema() -> MetaSchema {
        nullable(MetaSchema {
            max_length: Some(MAX_SESSION_ID_BYTES / 4),
            ..string(1)
        })
    }
}

/// A string or `null`.
pub struct OptionalText;
impl ParamSchema for OptionalText {
    const NAME: &'static str = "optional_text";
    fn schema() -> MetaSchema {
        nullable(string(0))
    }
}

/// A non-empty string or `null`.
pub struct OptionalName;
impl ParamSchema for OptionalName {
    const NAME: &'static str = "optional_name";
    fn schema() -> MetaSchema {
        nullable(string(1))
    }
}

/// A JSON object or `null`.
pub struct OptionalObject;
impl ParamSchema for OptionalObject {
    const NAME: &'static str = "optional_object";
    fn schema() -> MetaSchema {
        nullable(object())
    }
}

/// An integer >= 0 or `null`.
pub struct OptionalPosition;
impl ParamSchema for OptionalPosition {
    const NAME: &'static str = "optional_position";
    fn schema() -> MetaSchema {
        nullable(integer(0, None))
    }
}

/// An event's references: known keys are typed, others kept as sent.
pub struct Refs;
impl ParamSchema for Refs {
    const NAME: &'static str = "refs";
    fn schema() -> MetaSchema {
        let inline = |schema| MetaSchemaRef::Inline(Box::new(schema));
        let integers = INTEGER_REFS.map(|key| (key, inline(integer(0, None))));
        let strings = STRING_REFS.map(|key| (key, inline(string(0))));
        MetaSchema {
            properties: integers.into_iter().chain(strings).collect(),
            ..nullable(object())
        }
    }
}

/// A PATCH body: a `title` (string or `null` to clear) and/or a non-empty `metadata` to merge,
/// and optionally the `expected_version` (>= 1) to compare-and-set on.
pub struct SessionPatchBody;
impl ParamSchema for SessionPatchBody {
    const NAME: &'static str = "PatchSessionRequest";
    fn schema() -> MetaSchema {
        let inline = |schema| MetaSchemaRef::Inline(Box::new(schema));
        // "title and/or non-empty metadata" stays in words: an `anyOf` would turn this one body
        // into a union of types in every generated client.
        MetaSchema {
            description: Some(
                "Rename (`title`, or `null` to clear), retag (`metadata`, merged shallowly, not \
                 empty), or both: at least one is required. `expected_version` makes it a \
                 compare-and-set.",
            ),
            properties: vec![
                ("title", inline(nullable(string(0)))),
                ("metadata", inline(nullable(object()))),
                ("expected_version", inline(nullable(integer(1, None)))),
            ],
            ..MetaSchema::new("object")
        }
    }
}

#[cfg(test)]
mod tests {
    use poem_openapi::OpenApi;
    use poem_openapi::registry::MetaOperation;

    use super::*;
    use crate::api::sessions::SessionsApi;
    use crate::sessions::limits::{
        DEFAULT_PAGE_SIZE, MAX_BATCH_EVENTS, MAX_DEPTH, MAX_METADATA_BYTES, MAX_TITLE_BYTES,
    };

    fn operation(id: &str) -> MetaOperation {
        SessionsApi::meta()
            .into_iter()
            .flat_map(|api| api.paths)
            .flat_map(|path| path.operations)
            .find(|operation| operation.operation_id == Some(id))
            .unwrap()
    }

    /// The operation's summary and description on one line, without thousands separators.
    fn prose(id: &str) -> String {
        let operation = operation(id);
        let text = [operation.summary, operation.description];
        let text = text.into_iter().flatten().collect::<Vec<_>>().join(" ");
        text.replace('\n', " ").replace(',', "")
    }

    fn property(schema: &MetaSchema, name: &str) -> MetaSchema {
        let found = schema
            .properties
            .iter()
            .find(|(property, _)| *property == name);
        match found.map(|(_, schema)| schema) {
            Some(MetaSchemaRef::Inline(schema)) => (**schema).clone(),
            _ => panic!("no inline property {name}"),
        }
    }

    /// Attribute values and doc comments must be literals, so they restate the domain's limits:
    /// this holds them to the constants.
    #[test]
    fn the_spec_states_the_domains_limits() {
        let mut registry = Registry::new();
        SessionsApi::register(&mut registry);
        let append = &registry.schemas["AppendRequest"];
        assert_eq!(
            property(append, "producer_seq").maximum,
            Some(MAX_INTEGER as f64)
        );
        let batch = &registry.schemas["AppendBatchRequest"];
        let events = property(batch, "events").description.unwrap_or_default();
        assert!(
            events
                .replace(',', "")
                .contains(&format!("1 to {MAX_BATCH_EVENTS} events"))
        );
        let append_events = prose("append_events");
        assert!(append_events.contains(&format!("up to {MAX_BATCH_EVENTS} events")));
        assert!(append_events.contains(&format!("over {MAX_BATCH_EVENTS} events")));
        let list = prose("list_sessions");
        assert!(list.contains(&format!(
            "`limit` is 1..{MAX_PAGE_SIZE} (default {DEFAULT_PAGE_SIZE})"
        )));
        let page = prose("list_events");
        assert!(page.contains(&format!(
            "`limit` (1..{MAX_PAGE_SIZE}) to {DEFAULT_PAGE_SIZE}"
        )));
        assert!(page.contains(&format!("(seconds up to {MAX_WAIT_SECONDS})")));
        let create = prose("create_session");
        assert!(create.contains(&format!("up to {MAX_SESSION_ID_BYTES} bytes")));
        assert!(create.contains(&format!("(up to {} KiB)", MAX_TITLE_BYTES / 1024)));
        assert!(create.contains(&format!(
            "up to {} KiB and {MAX_DEPTH} levels deep",
            MAX_METADATA_BYTES / 1024
        )));
    }
}
