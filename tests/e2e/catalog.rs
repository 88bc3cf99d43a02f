//! The session catalog: paging, filters, PATCH, archive, and reads across gateways.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{Value, json};
use starcite_tests::{TestGateway, TestNats, error_of, event};

async fn list(gateway: &TestGateway, query: &str) -> Value {
    gateway
        .expect(
            gateway
                .request(Method::GET, &format!("/v1/sessions{query}"), None)
                .await,
            200,
        )
        .await
}

fn ids(page: &Value) -> Vec<String> {
    page["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn list_items_carry_the_header_and_last_seq() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    gateway
        .create_session_with(json!({"id": "b", "title": "Bee", "metadata": {"team": "x"}}))
        .await;
    gateway.create_session_with(json!({"id": "a"})).await;
    gateway.append_ok("b", event("p", 1)).await;
    gateway.append_ok("b", event("p", 2)).await;
    let page = list(&gateway, "").await;
    assert_eq!(ids(&page), vec!["a", "b"]);
    assert_eq!(page["next_cursor"], Value::Null);
    let b = &page["sessions"][1];
    assert_eq!(
        (b["title"].as_str(), b["last_seq"].as_u64()),
        (Some("Bee"), Some(2))
    );
    assert_eq!(b["metadata"], json!({"team": "x"}));
    for key in ["created_at", "updated_at", "version", "archived"] {
        assert!(b.get(key).is_some(), "{key} missing: {b}");
    }
}

#[tokio::test]
async fn pagination_walks_every_session_once_in_order_while_others_are_created() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let mut existing = BTreeSet::new();
    for n in 0..60 {
        let id = format!("s{:03}", n * 2);
        gateway.create_session_with(json!({"id": id})).await;
        existing.insert(id);
    }
    let creator = async {
        for n in 0..60 {
            gateway
                .create_session_with(json!({"id": format!("s{:03}", n * 2 + 1)}))
                .await;
        }
    };
    let walker = async {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let query = match &cursor {
                Some(cursor) => format!("?limit=7&cursor={cursor}"),
                None => "?limit=7".to_owned(),
            };
            let page = list(&gateway, &query).await;
            seen.extend(ids(&page));
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        seen
    };
    let ((), seen) = tokio::join!(creator, walker);
    assert!(
        seen.windows(2).all(|pair| pair[0] < pair[1]),
        "ids out of order or repeated: {seen:?}"
    );
    let seen: BTreeSet<String> = seen.into_iter().collect();
    assert!(
        existing.is_subset(&seen),
        "missed: {:?}",
        existing.difference(&seen).collect::<Vec<_>>()
    );
    // A full walk afterwards sees all 120 exactly once.
    let page = list(&gateway, "?limit=1000").await;
    let all: BTreeSet<String> = ids(&page).into_iter().collect();
    let want: BTreeSet<String> = (0..120).map(|n| format!("s{n:03}")).collect();
    assert_eq!(all, want);
}

#[tokio::test]
async fn next_cursor_is_null_exactly_when_nothing_follows() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    for id in ["a", "b", "c", "d"] {
        gateway.create_session_with(json!({"id": id})).await;
    }
    let page = list(&gateway, "?limit=2").await;
    assert_eq!(
        (ids(&page), page["next_cursor"].as_str()),
        (vec!["a".into(), "b".into()], Some("b"))
    );
    let page = list(&gateway, "?limit=2&cursor=b").await;
    assert_eq!(
        (ids(&page), page["next_cursor"].clone()),
        (vec!["c".into(), "d".into()], Value::Null)
    );
    let page = list(&gateway, "?cursor=d").await;
    assert_eq!(
        (ids(&page).len(), page["next_cursor"].clone()),
        (0, Value::Null)
    );
}

#[tokio::test]
async fn every_filter_form_matches_string_metadata_and_they_are_anded() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    gateway
        .create_session_with(
            json!({"id": "a", "metadata": {"tenant": "acme", "tier": "pro", "n": 1}}),
        )
        .await;
    gateway
        .create_session_with(json!({"id": "b", "metadata": {"tenant": "acme", "tier": "free"}}))
        .await;
    gateway
        .create_session_with(json!({"id": "c", "metadata": {"tenant": "globex", "n": "1"}}))
        .await;
    gateway
        .create_session_with(json!({"id": "d", "metadata": {"tenant": "a b&c"}}))
        .await;
    let cases = [
        ("?metadata[tenant]=acme", vec!["a", "b"]),
        ("?metadata.tenant=acme", vec!["a", "b"]),
        ("?metadata[tenant]=acme&metadata.tier=pro", vec!["a"]),
        ("?metadata[tenant]=acme&metadata[tenant]=globex", vec![]),
        ("?metadata[n]=1", vec!["c"]),
        ("?metadata%5Btenant%5D=a%20b%26c", vec!["d"]),
        ("?metadata[tenant]=nobody", vec![]),
        ("?metadata[tenant]=acme&limit=1&cursor=a", vec!["b"]),
    ];
    for (query, expected) in cases {
        assert_eq!(ids(&list(&gateway, query).await), expected, "{query}");
    }
}

#[tokio::test]
async fn every_bad_list_query_is_a_400_with_its_code() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let cases = [
        ("?limit=0", "invalid_limit"),
        ("?limit=-1", "invalid_limit"),
        ("?limit=1001", "invalid_limit"),
        ("?limit=abc", "invalid_limit"),
        ("?limit=1.5", "invalid_limit"),
        ("?cursor=", "invalid_cursor"),
        ("?metadata[a][b]=c", "invalid_metadata"),
        ("?metadata=text", "invalid_metadata"),
        ("?metadata[]=x", "invalid_metadata"),
        ("?archived=yes", "invalid_list_query"),
    ];
    for (query, code) in cases {
        let response = gateway
            .request(Method::GET, &format!("/v1/sessions{query}"), None)
            .await;
        assert_eq!(error_of(response).await, (400, code.to_owned()), "{query}");
    }
}

#[tokio::test]
async fn patch_sets_clears_and_merges_and_counts_versions() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let created = gateway
        .create_session_with(
            json!({"id": "p", "title": "Old", "metadata": {"a": 1, "b": {"x": 1}}}),
        )
        .await;
    gateway.append_ok("p", event("w", 1)).await;
    let patch = |body: Value| gateway.request(Method::PATCH, "/v1/sessions/p", Some(body));

    let renamed = gateway
        .expect(patch(json!({"title": "New"})).await, 200)
        .await;
    assert_eq!(
        (renamed["title"].as_str(), renamed["version"].as_u64()),
        (Some("New"), Some(2))
    );
    assert_eq!(renamed["metadata"], json!({"a": 1, "b": {"x": 1}}));
    assert_eq!(renamed["last_seq"], 1);
    assert_eq!(renamed["created_at"], created["created_at"]);
    assert!(renamed["updated_at"].as_str() > created["updated_at"].as_str());

    let merged = gateway
        .expect(
            patch(json!({"metadata": {"b": {"y": 2}, "c": "new"}})).await,
            200,
        )
        .await;
    assert_eq!(
        merged["metadata"],
        json!({"a": 1, "b": {"y": 2}, "c": "new"})
    );
    assert_eq!(
        (merged["title"].as_str(), merged["version"].as_u64()),
        (Some("New"), Some(3))
    );

    let cleared = gateway
        .expect(
            patch(json!({"title": null, "expected_version": "3"})).await,
            200,
        )
        .await;
    assert_eq!(
        (cleared["title"].clone(), cleared["version"].as_u64()),
        (Value::Null, Some(4))
    );

    let stale = patch(json!({"title": "late", "expected_version": 3})).await;
    let conflict = gateway.expect(stale, 409).await;
    assert_eq!(conflict["error"], "expected_version_conflict");
    assert_eq!(conflict["current_version"], 4);
    assert_eq!(
        conflict["message"],
        "Expected version 3, current version is 4"
    );

    let fetched: Value = gateway.session("p").await.json().await.unwrap();
    assert_eq!(
        (fetched["title"].clone(), fetched["version"].as_u64()),
        (Value::Null, Some(4))
    );
    // The patch appended nothing to the log.
    assert_eq!(fetched["last_seq"], 1);
}

#[tokio::test]
async fn bad_patches_are_400s_and_unknown_sessions_404() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    gateway.create_session_with(json!({"id": "p"})).await;
    let cases = [
        (json!({}), "invalid_session"),
        (json!({"metadata": {}}), "invalid_session"),
        (json!({"title": 5}), "invalid_session"),
        (json!({"metadata": "x"}), "invalid_metadata"),
        (
            json!({"title": "t", "expected_version": 0}),
            "invalid_session",
        ),
        (
            json!({"title": "t", "expected_version": "v1"}),
            "invalid_session",
        ),
        (json!([1]), "invalid_session"),
    ];
    for (body, code) in cases {
        let response = gateway
            .request(Method::PATCH, "/v1/sessions/p", Some(body.clone()))
            .await;
        assert_eq!(error_of(response).await, (400, code.to_owned()), "{body}");
    }
    let session: Value = gateway.session("p").await.json().await.unwrap();
    assert_eq!(session["version"], 1);
    let response = gateway
        .request(
            Method::PATCH,
            "/v1/sessions/nobody",
            Some(json!({"title": "t"})),
        )
        .await;
    assert_eq!(error_of(response).await, (404, "session_not_found".into()));
    for action in ["archive", "unarchive"] {
        let response = gateway
            .request(Method::POST, &format!("/v1/sessions/nobody/{action}"), None)
            .await;
        assert_eq!(error_of(response).await, (404, "session_not_found".into()));
    }
}

#[tokio::test]
async fn concurrent_patches_with_one_expected_version_across_two_gateways_have_one_winner() {
    let nats = TestNats::start();
    let first = TestGateway::start(&nats).await;
    let second = TestGateway::start(&nats).await;
    first.create_session_with(json!({"id": "race"})).await;
    for round in 1..=10u64 {
        let body =
            |who: &str| Some(json!({"title": format!("{who} {round}"), "expected_version": round}));
        let (a, b) = tokio::join!(
            first.request(Method::PATCH, "/v1/sessions/race", body("first")),
            second.request(Method::PATCH, "/v1/sessions/race", body("second")),
        );
        let mut statuses = [a.status().as_u16(), b.status().as_u16()];
        statuses.sort();
        assert_eq!(statuses, [200, 409], "round {round}");
    }
    let session: Value = first.session("race").await.json().await.unwrap();
    assert_eq!(session["version"], 11);
}

/// Archives or unarchives (`action`) a session, asserting a 200; returns the header.
async fn set_archived(gateway: &TestGateway, id: &str, action: &str) -> Value {
    let path = format!("/v1/sessions/{id}/{action}");
    let response = gateway.request(Method::POST, &path, None).await;
    gateway.expect(response, 200).await
}

#[tokio::test]
async fn archive_round_trip_keeps_the_session_readable_tailable_and_appendable() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    gateway.create_session_with(json!({"id": "keep"})).await;
    let created = gateway.create_session_with(json!({"id": "old"})).await;
    gateway.append_ok("old", event("p", 1)).await;

    let archived = set_archived(&gateway, "old", "archive").await;
    assert_eq!(
        (archived["archived"].as_bool(), archived["version"].as_u64()),
        (Some(true), Some(1))
    );
    assert!(archived["updated_at"].as_str() > created["updated_at"].as_str());
    let again = set_archived(&gateway, "old", "archive").await;
    assert_eq!(
        again["updated_at"], archived["updated_at"],
        "re-archiving changes nothing"
    );

    assert_eq!(ids(&list(&gateway, "").await), vec!["keep"]);
    assert_eq!(ids(&list(&gateway, "?archived=false").await), vec!["keep"]);
    assert_eq!(ids(&list(&gateway, "?archived=true").await), vec!["old"]);
    assert_eq!(
        ids(&list(&gateway, "?archived=all").await),
        vec!["keep", "old"]
    );

    let fetched: Value = gateway.session("old").await.json().await.unwrap();
    assert_eq!(fetched["archived"], true);
    assert_eq!(gateway.append_ok("old", event("p", 2)).await["seq"], 2);
    let mut tail = gateway.tail("old", 0).await;
    assert_eq!(tail.seqs(2).await, vec![1, 2]);

    let restored = set_archived(&gateway, "old", "unarchive").await;
    assert_eq!(restored["archived"], false);
    assert_eq!(restored["last_seq"], 2);
    assert_eq!(ids(&list(&gateway, "").await), vec!["keep", "old"]);
}

#[tokio::test]
async fn a_session_created_through_one_gateway_is_listed_by_another_at_once() {
    let nats = TestNats::start();
    let first = TestGateway::start(&nats).await;
    let second = TestGateway::start(&nats).await;
    for n in 0..20 {
        let id = format!("fresh-{n:02}");
        first
            .create_session_with(json!({"id": id, "metadata": {"batch": "x"}}))
            .await;
        // Earlier ones were moved to batch y, so this one is the only x.
        let page = list(&second, "?metadata.batch=x").await;
        assert_eq!(
            ids(&page),
            vec![id.clone()],
            "not listed right after its create"
        );
        first
            .request(
                Method::PATCH,
                &format!("/v1/sessions/{id}"),
                Some(json!({"metadata": {"batch": "y"}})),
            )
            .await;
        let page = list(&second, "?metadata.batch=y&limit=1000").await;
        assert!(ids(&page).contains(&id), "{id}'s patch not visible at once");
    }
}

#[tokio::test]
async fn a_restarted_gateway_lists_the_whole_catalog_at_once() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    for n in 0..50 {
        gateway
            .create_session_with(json!({"id": format!("c{n:02}")}))
            .await;
    }
    gateway
        .request(Method::POST, "/v1/sessions/c07/archive", None)
        .await;
    gateway.stop().await;
    let gateway = TestGateway::start(&nats).await;
    assert_eq!(ids(&list(&gateway, "?limit=1000").await).len(), 49);
    assert_eq!(ids(&list(&gateway, "?archived=true").await), vec!["c07"]);
}
