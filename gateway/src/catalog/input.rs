//! Validation of list queries and header patches, in docs/api.md's order and with its codes.

use serde_json::Value;

use super::index::{ArchivedFilter, ListQuery};
use crate::sessions::error::{Field, InvalidInput};
use crate::sessions::input::present;
use crate::sessions::limits::{DEFAULT_PAGE_SIZE, check_metadata, check_title, integer, page_size};
use crate::sessions::model::JsonObject;

/// A change to a session header: `None` leaves a field as it is.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionPatch {
    /// `Some(None)` clears the title.
    pub title: Option<Option<String>>,
    /// Merged into the metadata: given keys overwrite, others stay.
    pub metadata: Option<JsonObject>,
    pub expected_version: Option<u64>,
}

/// Reads a list query from its decoded `(name, value)` pairs; unknown names are ignored.
pub fn list_query(pairs: &[(String, String)]) -> Result<ListQuery, InvalidInput> {
    let mut query = ListQuery {
        limit: DEFAULT_PAGE_SIZE as usize,
        after: None,
        metadata: Vec::new(),
        archived: ArchivedFilter::Active,
        tenant: None,
        only: None,
        search: None,
    };
    for (name, value) in pairs {
        match name.as_str() {
            "limit" => query.limit = page_size(Some(value))?,
            "cursor" if value.is_empty() => return Err(InvalidInput::Cursor),
            "cursor" => query.after = Some(value.clone()),
            "archived" => {
                query.archived = match value.as_str() {
                    "false" => ArchivedFilter::Active,
                    "true" => ArchivedFilter::Archived,
                    "all" => ArchivedFilter::All,
                    _ => {
                        return Err(InvalidInput::ListQuery(
                            "`archived` is `false`, `true` or `all`".into(),
                        ));
                    }
                }
            }
            "metadata" => return Err(InvalidInput::Metadata),
            _ => {
                if let Some(key) = metadata_key(name)? {
                    query.metadata.push((key.to_owned(), value.clone()));
                }
            }
        }
    }
    Ok(query)
}

/// `metadata[key]` or `metadata.key`; `None` for any other parameter.
fn metadata_key(name: &str) -> Result<Option<&str>, InvalidInput> {
    if let Some(rest) = name.strip_prefix("metadata[") {
        // Exactly one bracketed, non-empty key: `metadata[a][b]` would be a nested value.
        return match rest.strip_suffix(']') {
            Some(key) if !key.is_empty() && !key.contains(['[', ']']) => Ok(Some(key)),
            _ => Err(InvalidInput::Metadata),
        };
    }
    match name.strip_prefix("metadata.") {
        Some("") => Err(InvalidInput::Metadata),
        key => Ok(key),
    }
}

/// Reads a PATCH body.
pub fn session_patch(body: Option<Value>) -> Result<SessionPatch, InvalidInput> {
    let Some(Value::Object(body)) = body else {
        return Err(InvalidInput::Session(
            "the body must be a JSON object".into(),
        ));
    };
    let title = match body.get("title") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(Value::String(title)) => Some(Some(title.clone())),
        Some(_) => {
            return Err(InvalidInput::Session(
                "`title` must be a string or null".into(),
            ));
        }
    };
    let metadata = match present(&body, "metadata") {
        None => None,
        Some(Value::Object(metadata)) => Some(metadata.clone()),
        Some(_) => return Err(InvalidInput::Metadata),
    };
    check_title(title.as_ref().and_then(Option::as_deref))?;
    if let Some(metadata) = &metadata {
        check_metadata(Field::Metadata, metadata)?;
    }
    let expected_version =
        match present(&body, "expected_version") {
            None => None,
            Some(value) => Some(integer(value).filter(|version| *version >= 1).ok_or_else(
                || InvalidInput::Session("`expected_version` must be an integer >= 1".into()),
            )?),
        };
    let changes_nothing = title.is_none() && metadata.as_ref().is_none_or(JsonObject::is_empty);
    if changes_nothing {
        return Err(InvalidInput::Session(
            "give `title` and/or a non-empty `metadata` to change".into(),
        ));
    }
    Ok(SessionPatch {
        title,
        metadata,
        expected_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pairs(raw: &[(&str, &str)]) -> Vec<(String, String)> {
        raw.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn list_defaults_and_both_filter_forms() {
        let query = list_query(&pairs(&[
            ("metadata[a]", "1"),
            ("metadata.b", "2"),
            ("other", "x"),
        ]))
        .unwrap();
        assert_eq!(query.limit, 100);
        assert_eq!(query.archived, ArchivedFilter::Active);
        assert_eq!(query.metadata, pairs(&[("a", "1"), ("b", "2")]));
    }

    #[test]
    fn list_rejects_bad_limits_cursors_filters_and_archived_values() {
        for limit in ["0", "-1", "1001", "abc", "1.5", ""] {
            assert_eq!(
                list_query(&pairs(&[("limit", limit)])),
                Err(InvalidInput::Limit),
                "{limit}"
            );
        }
        assert_eq!(
            list_query(&pairs(&[("cursor", "")])),
            Err(InvalidInput::Cursor)
        );
        for bad in ["metadata[a][b]", "metadata[]", "metadata", "metadata."] {
            assert_eq!(
                list_query(&pairs(&[(bad, "x")])),
                Err(InvalidInput::Metadata),
                "{bad}"
            );
        }
        assert!(matches!(
            list_query(&pairs(&[("archived", "yes")])),
            Err(InvalidInput::ListQuery(_))
        ));
        assert_eq!(
            list_query(&pairs(&[("archived", "all")])).unwrap().archived,
            ArchivedFilter::All
        );
        assert_eq!(
            list_query(&pairs(&[("limit", "1000")])).unwrap().limit,
            1000
        );
    }

    #[test]
    fn patch_rules() {
        let patch = session_patch(Some(json!({"title": null}))).unwrap();
        assert_eq!(patch.title, Some(None));
        let patch =
            session_patch(Some(json!({"metadata": {"a": 1}, "expected_version": "2"}))).unwrap();
        assert_eq!(patch.expected_version, Some(2));
        for bad in [
            json!({}),
            json!({"metadata": {}}),
            json!({"title": 5}),
            json!({"title": "t", "expected_version": 0}),
            json!([1]),
        ] {
            assert!(
                matches!(
                    session_patch(Some(bad.clone())),
                    Err(InvalidInput::Session(_))
                ),
                "{bad}"
            );
        }
        assert_eq!(
            session_patch(Some(json!({"metadata": [1]}))),
            Err(InvalidInput::Metadata)
        );
    }
}
