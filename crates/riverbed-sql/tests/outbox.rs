//! The transactional outbox against a real PostgreSQL: versions assigned in commit order,
//! per-entity claims shared safely by several relays, rows committed out of id order still
//! relayed, a crashed relay's rows claimed again, sent rows removed after the retention.

#[path = "outbox/helpers.rs"]
mod helpers;
mod support;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use helpers::*;
use riverbed_core::{Settled, Settlement, Source};
use riverbed_sql::{Outbox, OutboxSource, OutboxTable, remove_sent_once};
use serde_json::json;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_enqueue_gives_concurrent_producers_of_an_entity_consecutive_versions() {
    if !postgres_available() {
        return;
    }
    let _shared = postgres_lock(false).await;
    let pool = pool("riverbed-test").await;
    let table = unique("outbox_versions");
    let outbox = Outbox::new(&table).unwrap().with_version_field("version");
    outbox.table().create(&pool).await.unwrap();
    let mut producers = Vec::new();
    for p in 0..4 {
        let (pool, outbox) = (pool.clone(), outbox.clone());
        producers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..25 {
                let mut tx = pool.begin().await.unwrap();
                let e = outbox
                    .enqueue(&mut tx, "customer:1", &json!({"p": p, "i": i}))
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                got.push(e);
            }
            got
        }));
    }
    let mut all = Vec::new();
    for p in producers {
        all.extend(p.await.unwrap());
    }
    let mut versions: Vec<i64> = all.iter().map(|e| e.version).collect();
    versions.sort();
    assert_eq!(versions, (1..=100).collect::<Vec<_>>(), "no gap, no repeat");
    let ids: HashSet<&str> = all.iter().map(|e| e.message_id.as_str()).collect();
    assert_eq!(ids.len(), 100, "unique message ids");
    let stored: Vec<(i64, Vec<u8>)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT version, payload FROM \"{table}\""
    )))
    .fetch_all(&pool)
    .await
    .unwrap();
    for (v, payload) in stored {
        let body: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(
            body["version"],
            json!(v),
            "the version is written into the body"
        );
    }
    // A rolled-back transaction leaves no gap: its counter increment rolls back with it.
    let mut tx = pool.begin().await.unwrap();
    outbox
        .enqueue(&mut tx, "customer:1", &json!({}))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    let e = outbox
        .enqueue(&mut tx, "customer:1", &json!({}))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(e.version, 101);
    drop_outbox(&pool, &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_claims_hold_an_entity_in_one_relay_until_its_rows_are_settled() {
    if !postgres_available() {
        return;
    }
    let _shared = postgres_lock(false).await;
    let pool = pool("riverbed-test").await;
    let table = unique("outbox_claims");
    let mut a = OutboxSource::open(config(&table, "relay-a")).await.unwrap();
    let mut b = OutboxSource::open(config(&table, "relay-b")).await.unwrap();
    let outbox = Outbox::new(&table).unwrap();
    enqueue_all(&pool, &outbox, &["x", "x", "x", "y", "y"]).await;
    // A claims two heads and, with room for 4 rows, 2 rows of each, in version order.
    let first = recv(&mut a, 4).await;
    let keys: Vec<(String, i64)> = first
        .iter()
        .map(|d| (d.message.key.clone().unwrap(), version(d)))
        .collect();
    assert_eq!(
        keys,
        [("x", 1), ("x", 2), ("y", 1), ("y", 2)]
            .map(|(k, v)| (k.to_owned(), v))
            .to_vec()
    );
    assert!(first.iter().all(|d| d.message.meta.message_id.is_some()));
    enqueue_all(&pool, &outbox, &["z"]).await;
    // B finds x held (x@3 is not a head while x@1 is claimed) and y held: z only.
    let second = recv(&mut b, 10).await;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].message.key.as_deref(), Some("z"));
    ack(&b, &second);
    // Nothing else for B until A settles.
    let mut out = Vec::new();
    let nothing = tokio::time::timeout(Duration::from_millis(600), b.recv(&mut out, 10)).await;
    assert!(nothing.is_err() && out.is_empty(), "B claimed {out:?}");
    ack(&a, &first);
    wait_unsent(&pool, &table, 1).await;
    let third = recv(&mut b, 10).await;
    assert_eq!(third.len(), 1);
    assert_eq!(
        (third[0].message.key.as_deref(), version(&third[0])),
        (Some("x"), 3)
    );
    ack(&b, &third);
    wait_unsent(&pool, &table, 0).await;
    a.close().await.unwrap();
    b.close().await.unwrap();
    drop_outbox(&pool, &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_relays_a_row_whose_transaction_commits_after_one_with_a_higher_id() {
    if !postgres_available() {
        return;
    }
    let _shared = postgres_lock(false).await;
    let pool = pool("riverbed-test").await;
    let table = unique("outbox_commit_order");
    // Polling only every minute: a claim within the 10 s of `recv` is the NOTIFY's doing.
    let mut c = config(&table, "relay");
    c.poll_interval = Duration::from_secs(60);
    let mut relay = OutboxSource::open(c).await.unwrap();
    let outbox = Outbox::new(&table).unwrap();
    // The early transaction takes the lower id and commits last.
    let mut early = pool.begin().await.unwrap();
    let low = outbox
        .enqueue(&mut early, "early", &json!({}))
        .await
        .unwrap();
    let mut late = pool.begin().await.unwrap();
    let high = outbox.enqueue(&mut late, "late", &json!({})).await.unwrap();
    assert!(low.id < high.id);
    late.commit().await.unwrap();
    let got = recv(&mut relay, 10).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].token, high.id as u64);
    ack(&relay, &got);
    wait_unsent(&pool, &table, 0).await;
    early.commit().await.unwrap();
    // Woken by the notification of the early commit, long before a poll would run.
    let got = recv(&mut relay, 10).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].token, low.id as u64, "the lower id is not skipped");
    ack(&relay, &got);
    wait_unsent(&pool, &table, 0).await;
    relay.close().await.unwrap();
    drop_outbox(&pool, &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_rows_of_a_crashed_relay_are_claimed_again_and_a_requeued_row_holds_its_entity() {
    if !postgres_available() {
        return;
    }
    let _shared = postgres_lock(false).await;
    let pool = pool("riverbed-test").await;
    let table = unique("outbox_crash");
    let crashed_app = unique("relay-crashed");
    let mut crashed = OutboxSource::open(config(&table, &crashed_app))
        .await
        .unwrap();
    let mut survivor = OutboxSource::open(config(&table, "relay-survivor"))
        .await
        .unwrap();
    let outbox = Outbox::new(&table).unwrap();
    enqueue_all(&pool, &outbox, &["a", "a", "b"]).await;
    let held = recv(&mut crashed, 10).await;
    assert_eq!(held.len(), 3);
    // The relay's sessions die (as on SIGKILL) after it published, before it marked.
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(&crashed_app)
    .execute(&pool)
    .await
    .unwrap();
    let again = recv(&mut survivor, 10).await;
    let tokens: Vec<u64> = again.iter().map(|d| d.token).collect();
    assert_eq!(
        tokens,
        held.iter().map(|d| d.token).collect::<Vec<_>>(),
        "published again"
    );
    // a@1 requeued (a shutdown), a@2 and b@1 acknowledged: a@2 must not be marked before a@1.
    survivor.acker().settle(
        again
            .iter()
            .map(|d| Settled {
                token: d.token,
                settlement: if version(d) == 1 && d.message.key.as_deref() == Some("a") {
                    Settlement::Requeue
                } else {
                    Settlement::Ack
                },
                message: None,
            })
            .collect(),
    );
    wait_unsent(&pool, &table, 2).await;
    let last = recv(&mut survivor, 10).await;
    let order: Vec<i64> = last.iter().map(version).collect();
    assert_eq!(order, vec![1, 2], "a's rows again, in order");
    ack(&survivor, &last);
    wait_unsent(&pool, &table, 0).await;
    drop(crashed);
    survivor.close().await.unwrap();
    drop_outbox(&pool, &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_retention_removes_sent_rows_once_they_are_old_enough() {
    if !postgres_available() {
        return;
    }
    let _shared = postgres_lock(false).await;
    let pool = pool("riverbed-test").await;
    let table = unique("outbox_retention");
    let outbox = Outbox::new(&table).unwrap();
    let names = OutboxTable::new(&table).unwrap();
    names.create(&pool).await.unwrap();
    enqueue_all(&pool, &outbox, &["a", "b", "c", "d"]).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE \"{table}\" SET sent_at = now() - CASE entity WHEN 'a' THEN interval '2 hours' \
         ELSE interval '10 minutes' END WHERE entity IN ('a', 'b')"
    )))
    .execute(&pool)
    .await
    .unwrap();
    let removed = remove_sent_once(&pool, &names, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(removed, 1);
    let left: BTreeMap<String, bool> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT entity, sent_at IS NOT NULL FROM \"{table}\""
    )))
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let expected: BTreeMap<String, bool> = [("b", true), ("c", false), ("d", false)]
        .map(|(e, s)| (e.to_owned(), s))
        .into();
    assert_eq!(left, expected, "unsent rows are never removed");
    // Removing a row never resets its entity's version.
    let mut tx = pool.begin().await.unwrap();
    let e = outbox.enqueue(&mut tx, "a", &json!({})).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(e.version, 2);
    drop_outbox(&pool, &table).await;
}

#[test]
fn outbox_config_names_the_field_at_fault() {
    let mut c = config("ok_table", "x");
    c.max_claims = 8;
    let e = c.check().unwrap_err().to_string();
    assert!(
        e.contains("max_connections") && e.contains("max_claims"),
        "{e}"
    );
    let mut c = config("bad-name", "x");
    assert!(c.check().unwrap_err().to_string().contains("table"));
    c = config(&"t".repeat(51), "x");
    assert!(
        c.check()
            .unwrap_err()
            .to_string()
            .contains("longer than 50")
    );
    c = config("ok", "x");
    c.claim_size = 0;
    assert!(c.check().unwrap_err().to_string().contains("claim_size"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_polling_finds_rows_of_producers_that_do_not_notify() {
    if !postgres_available() {
        return;
    }
    let _shared = postgres_lock(false).await;
    let pool = pool("riverbed-test").await;
    let table = unique("outbox_polling");
    let mut c = config(&table, "relay");
    c.listen = false;
    let mut relay = OutboxSource::open(c).await.unwrap();
    let outbox = Outbox::new(&table).unwrap().with_notify(false);
    let mut out = Vec::new();
    let idle = tokio::time::timeout(Duration::from_millis(500), relay.recv(&mut out, 10)).await;
    assert!(idle.is_err(), "nothing to claim yet");
    enqueue_all(&pool, &outbox, &["p", "q"]).await;
    let got = recv(&mut relay, 10).await;
    assert_eq!(got.len(), 2);
    ack(&relay, &got);
    wait_unsent(&pool, &table, 0).await;
    relay.close().await.unwrap();
    drop_outbox(&pool, &table).await;
}
