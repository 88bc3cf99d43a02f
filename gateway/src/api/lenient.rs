//! Inputs the spec types strictly but the handler receives raw, and a nullable string.
//!
//! poem-openapi rejects a body or parameter that does not match its type before the handler
//! runs, with its own wording. The contract instead names which field failed first and with
//! which code, and accepts more than a typed schema says (decimal strings, `null` for absent).
//! So these types document the strict shape for generated clients, and the domain validates.

use std::borrow::Cow;
use std::marker::PhantomData;

use poem::{Request, RequestBody};
use poem_openapi::payload::{ParsePayload, Payload};
use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::{ParseFromJSON, ParseFromParameter, ParseResult, ToJSON, Type};
use serde_json::Value;

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

/// A query parameter documented as a non-negative integer, handed over as sent.
#[derive(Debug, Clone)]
pub struct IntegerParam(pub String);

impl Type for IntegerParam {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "integer(uint64)".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            format: Some("uint64"),
            minimum: Some(0.0),
            ..MetaSchema::new("integer")
        }))
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(std::iter::once(self))
    }
}

impl IntegerParam {
    /// The raw text of an optional parameter.
    pub fn raw(param: &Option<IntegerParam>) -> Option<&str> {
        param.as_ref().map(|param| param.0.as_str())
    }
}

impl ParseFromParameter for IntegerParam {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        Ok(IntegerParam(value.to_owned()))
    }
}

/// A string that may be `null`, and says so in the spec.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(transparent)]
pub struct NullableString(pub Option<String>);

impl Type for NullableString {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "string_or_null".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            nullable: true,
            ..MetaSchema::new("string")
        }))
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(std::iter::once(self))
    }
}

impl ToJSON for NullableString {
    fn to_json(&self) -> Option<Value> {
        Some(self.0.clone().map_or(Value::Null, Value::String))
    }
}

impl ParseFromJSON for NullableString {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            None | Some(Value::Null) => Ok(NullableString(None)),
            Some(Value::String(text)) => Ok(NullableString(Some(text))),
            Some(other) => Err(poem_openapi::types::ParseError::expected_type(other)),
        }
    }
}
