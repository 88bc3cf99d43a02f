//! What a bulk load reads of a stored header to place it in the view, borrowed from the
//! stored bytes: a merge decodes one header per session, and building a metadata map of
//! owned strings for each was a third of the merge.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::sessions::model::{Change, owner_tenant};

/// The fields of a stored header that place it in the view (the id is its key's).
#[derive(Deserialize)]
pub struct IndexedFields<'a> {
    #[serde(default, borrow)]
    tenant_id: Option<Cow<'a, str>>,
    #[serde(default)]
    pub archived: bool,
    #[serde(default, borrow)]
    metadata: StringPairs<'a>,
    pub change: Change,
}

impl<'a> IndexedFields<'a> {
    pub fn decode(stored: &'a [u8]) -> serde_json::Result<IndexedFields<'a>> {
        serde_json::from_slice(stored)
    }

    pub fn tenant(&self) -> &str {
        owner_tenant(self.tenant_id.as_deref())
    }

    /// The metadata pairs whose value is a string: the ones a posting list names.
    pub fn string_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.metadata
            .0
            .iter()
            .map(|(key, value)| (key.as_ref(), value.as_ref()))
    }
}

#[derive(Default)]
struct StringPairs<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl<'de: 'a, 'a> Deserialize<'de> for StringPairs<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(PairsVisitor(PhantomData))
    }
}

struct PairsVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for PairsVisitor<'a> {
    type Value = StringPairs<'a>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a metadata object")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<StringPairs<'a>, M::Error> {
        let mut pairs = Vec::new();
        while let Some(StringValue(key)) = map.next_key()? {
            if let (Some(key), StringValue(Some(value))) = (key, map.next_value()?) {
                pairs.push((key, value));
            }
        }
        Ok(StringPairs(pairs))
    }
}

/// Any JSON value, kept only if it is a string, and then borrowed unless it had escapes.
struct StringValue<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for StringValue<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StringValueVisitor(PhantomData))
    }
}

struct StringValueVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for StringValueVisitor<'a> {
    type Value = StringValue<'a>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<StringValue<'a>, E> {
        Ok(StringValue(Some(Cow::Borrowed(value))))
    }

    fn visit_str<E>(self, value: &str) -> Result<StringValue<'a>, E> {
        Ok(StringValue(Some(Cow::Owned(value.to_owned()))))
    }

    fn visit_bool<E>(self, _: bool) -> Result<StringValue<'a>, E> {
        Ok(StringValue(None))
    }

    fn visit_i64<E>(self, _: i64) -> Result<StringValue<'a>, E> {
        Ok(StringValue(None))
    }

    fn visit_u64<E>(self, _: u64) -> Result<StringValue<'a>, E> {
        Ok(StringValue(None))
    }

    fn visit_f64<E>(self, _: f64) -> Result<StringValue<'a>, E> {
        Ok(StringValue(None))
    }

    fn visit_unit<E>(self) -> Result<StringValue<'a>, E> {
        Ok(StringValue(None))
    }

    fn visit_seq<S: SeqAccess<'de>>(self, seq: S) -> Result<StringValue<'a>, S::Error> {
        IgnoredAny.visit_seq(seq).map(|_| StringValue(None))
    }

    fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<StringValue<'a>, M::Error> {
        IgnoredAny.visit_map(map).map(|_| StringValue(None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn string_pairs_are_borrowed_unless_escaped_and_other_values_are_skipped() {
        let stored = serde_json::to_vec(&json!({
            "id": "s1",
            "tenant_id": "acme",
            "archived": true,
            "metadata": {
                "plain": "value",
                "esc\"aped": "line\nbreak",
                "count": 3,
                "ratio": -0.5,
                "flag": false,
                "none": null,
                "nested": {"inner": "not a pair", "deeper": [1, {"x": "y"}]},
                "list": ["a", "b"],
                "last": "kept"
            },
            "change": "session.created"
        }))
        .unwrap();
        let fields = IndexedFields::decode(&stored).unwrap();
        let mut pairs: Vec<(&str, &str)> = fields.string_pairs().collect();
        pairs.sort_unstable();
        assert_eq!(
            pairs,
            vec![
                ("esc\"aped", "line\nbreak"),
                ("last", "kept"),
                ("plain", "value")
            ]
        );
        let borrowed = |key: &str| {
            let (key, value) = fields.metadata.0.iter().find(|(k, _)| k == key).unwrap();
            (
                matches!(key, Cow::Borrowed(_)),
                matches!(value, Cow::Borrowed(_)),
            )
        };
        assert_eq!(
            (borrowed("plain"), borrowed("esc\"aped")),
            ((true, true), (false, false))
        );
        assert_eq!((fields.tenant(), fields.archived), ("acme", true));
        assert_eq!(fields.change, Change::Created);
    }

    #[test]
    fn absent_fields_take_their_defaults_and_a_header_without_a_change_is_unreadable() {
        let fields = IndexedFields::decode(br#"{"change": "session.deleted"}"#).unwrap();
        assert_eq!(fields.tenant(), owner_tenant(None));
        assert_eq!(fields.string_pairs().count(), 0);
        assert!(!fields.archived);
        assert!(IndexedFields::decode(br#"{"metadata": {}}"#).is_err());
        assert!(
            IndexedFields::decode(br#"{"metadata": [], "change": "session.created"}"#).is_err()
        );
    }
}
