//! A JSON request body that reaches the handler even when it does not match its schema.
//!
//! `poem_openapi::payload::Json` rejects a body before the handler runs, with poem's own
//! wording. The contract instead names which field failed first and with which code, and
//! accepts more than a typed schema says (decimal strings, `null` for absent). So the schema
//! `T` documents the body in the spec, and the domain validates the raw value.

use std::marker::PhantomData;

use poem::{Request, RequestBody};
use poem_openapi::payload::{ParsePayload, Payload};
use poem_openapi::registry::{MetaSchemaRef, Registry};
use poem_openapi::types::Type;
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
