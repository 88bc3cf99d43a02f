//! The in-memory catalog: every session header, sorted by id, with the secondary indexes a
//! filtered page needs. Pure data; `Catalog` keeps it current.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;

use serde_json::Value;

use crate::sessions::model::{Session, SessionId};

impl Borrow<str> for SessionId {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

/// Which sessions a list shows by their archived flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ArchivedFilter {
    #[default]
    Active,
    Archived,
    All,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// 1 to `sessions::limits::MAX_PAGE_SIZE`.
    pub limit: usize,
    /// Only ids strictly greater than this.
    pub after: Option<String>,
    /// `(key, value)` pairs that must all equal a string metadata value.
    pub metadata: Vec<(String, String)>,
    pub archived: ArchivedFilter,
    /// Only this tenant's sessions (`None`: every session, authentication off).
    pub tenant: Option<String>,
    /// Only this session (a token pinned to one).
    pub only: Option<SessionId>,
    /// An id prefix or part of a title, case-insensitive (the admin console's search box).
    /// It is checked on every candidate, so a search walks the catalog: an operator's tool.
    pub search: Option<String>,
}

#[derive(Debug, Default)]
pub struct CatalogIndex {
    sessions: BTreeMap<SessionId, Session>,
    archived: BTreeSet<SessionId>,
    active: BTreeSet<SessionId>,
    /// Sessions by one string metadata pair, so a filtered page need not scan the catalog.
    by_metadata: HashMap<(String, String), BTreeSet<SessionId>>,
    /// Sessions by tenant, so a tenant's page need not walk the others' sessions.
    by_tenant: HashMap<String, BTreeSet<SessionId>>,
}

impl CatalogIndex {
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Inserts or replaces a session's header.
    pub fn upsert(&mut self, session: Session) {
        self.remove(&session.id);
        let id = session.id.clone();
        if session.archived {
            self.archived.insert(id.clone());
        } else {
            self.active.insert(id.clone());
        }
        for pair in string_pairs(&session) {
            self.by_metadata.entry(pair).or_default().insert(id.clone());
        }
        self.by_tenant
            .entry(session.tenant().to_owned())
            .or_default()
            .insert(id.clone());
        self.sessions.insert(id, session);
    }

    pub fn get(&self, id: &SessionId) -> Option<&Session> {
        self.sessions.get(id)
    }

    /// Forgets a deleted session.
    pub fn remove(&mut self, id: &SessionId) {
        if let Some(previous) = self.sessions.remove(id) {
            self.unindex(&previous);
        }
    }

    fn unindex(&mut self, session: &Session) {
        self.archived.remove(&session.id);
        self.active.remove(&session.id);
        if let Some(ids) = self.by_tenant.get_mut(session.tenant()) {
            ids.remove(&session.id);
            if ids.is_empty() {
                self.by_tenant.remove(session.tenant());
            }
        }
        for pair in string_pairs(session) {
            if let Some(ids) = self.by_metadata.get_mut(&pair) {
                ids.remove(&session.id);
                if ids.is_empty() {
                    self.by_metadata.remove(&pair);
                }
            }
        }
    }

    /// One page in id order, and whether more sessions match after it.
    ///
    /// Candidates come from the narrowest index that applies (a metadata pair, else the
    /// archived flag), so the cost is a logarithmic seek plus the matches it walks over.
    pub fn page(&self, query: &ListQuery) -> (Vec<&Session>, bool) {
        let after = match &query.after {
            Some(after) => Bound::Excluded(after.as_str()),
            None => Bound::Unbounded,
        };
        let range = (after, Bound::Unbounded);
        let candidates: Box<dyn Iterator<Item = &SessionId>> = if let Some(only) = &query.only {
            let after = query.after.as_deref();
            Box::new(
                self.sessions
                    .get_key_value(only)
                    .map(|(id, _)| id)
                    .filter(move |id| after.is_none_or(|after| id.as_str() > after))
                    .into_iter(),
            )
        } else {
            // The narrowest index that applies: a metadata pair or the tenant, else the flag.
            let mut indexes: Vec<Option<&BTreeSet<SessionId>>> = query
                .metadata
                .iter()
                .map(|pair| self.by_metadata.get(pair))
                .collect();
            if let Some(tenant) = &query.tenant {
                indexes.push(self.by_tenant.get(tenant.as_str()));
            }
            if indexes.is_empty() {
                match query.archived {
                    ArchivedFilter::Active => Box::new(self.active.range::<str, _>(range)),
                    ArchivedFilter::Archived => Box::new(self.archived.range::<str, _>(range)),
                    ArchivedFilter::All => {
                        Box::new(self.sessions.range::<str, _>(range).map(|(id, _)| id))
                    }
                }
            } else {
                // A filter no session has means no match at all.
                let narrowest =
                    indexes
                        .into_iter()
                        .try_fold(None::<&BTreeSet<SessionId>>, |best, ids| {
                            let ids = ids?;
                            Some(Some(match best {
                                Some(best) if best.len() <= ids.len() => best,
                                _ => ids,
                            }))
                        });
                match narrowest.flatten() {
                    Some(ids) => Box::new(ids.range::<str, _>(range)),
                    None => Box::new(std::iter::empty()),
                }
            }
        };
        let mut matching = candidates
            .filter_map(|id| self.sessions.get(id))
            .filter(|session| matches(session, query));
        let page: Vec<&Session> = matching.by_ref().take(query.limit).collect();
        let more = matching.next().is_some();
        (page, more)
    }
}

fn matches(session: &Session, query: &ListQuery) -> bool {
    let tenant_ok = session.visible_to(query.tenant.as_deref());
    let only_ok = query.only.as_ref().is_none_or(|only| *only == session.id);
    let search_ok = query.search.as_deref().is_none_or(|search| {
        let search = search.to_lowercase();
        session.id.as_str().to_lowercase().starts_with(&search)
            || session
                .title
                .as_deref()
                .is_some_and(|title| title.to_lowercase().contains(&search))
    });
    let archived_ok = match query.archived {
        ArchivedFilter::Active => !session.archived,
        ArchivedFilter::Archived => session.archived,
        ArchivedFilter::All => true,
    };
    tenant_ok
        && only_ok
        && search_ok
        && archived_ok
        && query.metadata.iter().all(|(key, value)| {
            matches!(session.metadata.get(key), Some(Value::String(actual)) if actual == value)
        })
}

/// A session's top-level string metadata as `(key, value)` pairs: what filters can match.
fn string_pairs(session: &Session) -> impl Iterator<Item = (String, String)> + '_ {
    session
        .metadata
        .iter()
        .filter_map(|(key, value)| match value {
            Value::String(value) => Some((key.clone(), value.clone())),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn session(id: &str, archived: bool, metadata: Value) -> Session {
        Session {
            id: SessionId::parse(id).unwrap(),
            tenant_id: None,
            title: None,
            metadata: metadata.as_object().cloned().unwrap_or_default(),
            created_at: String::new(),
            updated_at: String::new(),
            version: 1,
            archived,
            shard: 0,
            content_type: None,
            expiry: None,
            forked_from: None,
            fork_count: 0,
            retired: false,
        }
    }

    fn ids(page: &[&Session]) -> Vec<String> {
        page.iter().map(|session| session.id.to_string()).collect()
    }

    fn query(limit: usize) -> ListQuery {
        ListQuery {
            limit,
            after: None,
            metadata: Vec::new(),
            archived: ArchivedFilter::Active,
            tenant: None,
            only: None,
            search: None,
        }
    }

    #[test]
    fn pages_walk_ids_in_order_and_say_when_more_follow() {
        let mut index = CatalogIndex::default();
        for id in ["c", "a", "e", "b", "d"] {
            index.upsert(session(id, false, json!({})));
        }
        let (page, more) = index.page(&query(2));
        assert_eq!(
            (ids(&page), more),
            (vec!["a".to_owned(), "b".to_owned()], true)
        );
        let (page, more) = index.page(&ListQuery {
            after: Some("b".into()),
            ..query(3)
        });
        assert_eq!(
            (ids(&page), more),
            (vec!["c".to_owned(), "d".to_owned(), "e".to_owned()], false)
        );
        let (page, more) = index.page(&ListQuery {
            after: Some("bb".into()),
            ..query(10)
        });
        assert_eq!((page.len(), more), (3, false));
    }

    #[test]
    fn archived_sessions_are_hidden_unless_asked_for() {
        let mut index = CatalogIndex::default();
        index.upsert(session("a", false, json!({})));
        index.upsert(session("b", true, json!({})));
        assert_eq!(ids(&index.page(&query(10)).0), vec!["a"]);
        let archived = ListQuery {
            archived: ArchivedFilter::Archived,
            ..query(10)
        };
        assert_eq!(ids(&index.page(&archived).0), vec!["b"]);
        let all = ListQuery {
            archived: ArchivedFilter::All,
            ..query(10)
        };
        assert_eq!(ids(&index.page(&all).0), vec!["a", "b"]);
        // Unarchiving moves it back.
        index.upsert(session("b", false, json!({})));
        assert_eq!(ids(&index.page(&query(10)).0), vec!["a", "b"]);
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn a_tenant_sees_only_its_sessions() {
        let mut index = CatalogIndex::default();
        let mut owned = session("b", false, json!({"k": "v"}));
        owned.tenant_id = Some("acme".into());
        index.upsert(owned);
        index.upsert(session("a", false, json!({"k": "v"})));
        let acme = ListQuery {
            tenant: Some("acme".into()),
            ..query(10)
        };
        assert_eq!(ids(&index.page(&acme).0), vec!["b"]);
        let local = ListQuery {
            tenant: Some(crate::sessions::model::LOCAL_TENANT.into()),
            ..query(10)
        };
        assert_eq!(ids(&index.page(&local).0), vec!["a"]);
        let filtered = ListQuery {
            metadata: vec![("k".into(), "v".into())],
            ..acme.clone()
        };
        assert_eq!(ids(&index.page(&filtered).0), vec!["b"]);
        let nobody = ListQuery {
            tenant: Some("globex".into()),
            ..query(10)
        };
        assert!(index.page(&nobody).0.is_empty());
    }

    #[test]
    fn search_matches_an_id_prefix_or_part_of_a_title() {
        let mut index = CatalogIndex::default();
        let mut titled = session("chat-9", false, json!({}));
        titled.title = Some("Quarterly Planning".into());
        index.upsert(titled);
        index.upsert(session("Chat-1", false, json!({})));
        index.upsert(session("other", false, json!({})));
        let search = |text: &str| ListQuery {
            search: Some(text.into()),
            ..query(10)
        };
        assert_eq!(
            ids(&index.page(&search("chat")).0),
            vec!["Chat-1", "chat-9"]
        );
        assert_eq!(ids(&index.page(&search("planning")).0), vec!["chat-9"]);
        assert!(index.page(&search("hat")).0.is_empty());
    }

    #[test]
    fn metadata_filters_match_string_values_and_are_anded() {
        let mut index = CatalogIndex::default();
        index.upsert(session(
            "a",
            false,
            json!({"tenant": "acme", "tier": "pro"}),
        ));
        index.upsert(session(
            "b",
            false,
            json!({"tenant": "acme", "tier": "free"}),
        ));
        index.upsert(session("c", false, json!({"tenant": "other", "n": 1})));
        index.upsert(session("d", false, json!({"n": "1"})));
        let filter = |pairs: &[(&str, &str)]| ListQuery {
            metadata: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..query(10)
        };
        assert_eq!(
            ids(&index.page(&filter(&[("tenant", "acme")])).0),
            vec!["a", "b"]
        );
        assert_eq!(
            ids(&index
                .page(&filter(&[("tenant", "acme"), ("tier", "pro")]))
                .0),
            vec!["a"]
        );
        assert_eq!(ids(&index.page(&filter(&[("n", "1")])).0), vec!["d"]);
        assert!(index.page(&filter(&[("tenant", "nobody")])).0.is_empty());
        // A changed header leaves its old pairs.
        index.upsert(session("a", false, json!({"tenant": "moved"})));
        assert_eq!(
            ids(&index.page(&filter(&[("tenant", "acme")])).0),
            vec!["b"]
        );
    }
}
