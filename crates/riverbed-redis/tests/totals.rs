//! Totals owned by their keys: groups that leave the source's result leave Redis, NULL groups
//! are counted, an older snapshot never replaces a newer one, and a window counter writes its
//! totals again within seconds when Redis loses them (instead of at the next boundary). The
//! source here is in memory: the PostgreSQL side is tested with the daemon, which joins them.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use riverbed_redis::{GroupTotals, TotalsLayout, WindowCounter};
use support::*;

async fn hgetall(key: &str) -> HashMap<String, String> {
    redis::cmd("HGETALL")
        .arg(key)
        .query_async(&mut redis().await)
        .await
        .unwrap()
}

/// Three providers p0, p1, p2 with 10 rows of 1.5 each.
fn three(source: &MemoryTotals) {
    let t: &[(&str, &str)] = &[("count", "10"), ("sum", "15.0")];
    source.set(&[("p0", t), ("p1", t), ("p2", t)], 0);
}

#[tokio::test]
async fn totals_groups_that_leave_the_result_leave_redis_and_null_groups_are_counted() {
    if !services_available() {
        return;
    }
    let _shared = redis_lock(false).await;
    let source = Arc::new(MemoryTotals::default());
    three(&source);
    let prefix = unique("owned") + ":";
    let per_group = memory_totals(
        source.clone(),
        TotalsLayout::HashPerGroup {
            prefix: prefix.clone(),
        },
    )
    .await;
    let per_total = memory_totals(
        source.clone(),
        TotalsLayout::HashPerTotal {
            prefix: format!("{prefix}agg:"),
        },
    )
    .await;
    for t in [&per_group, &per_total] {
        assert_eq!(t.sync(SystemTime::now()).await.unwrap(), 3);
    }
    assert_eq!(hgetall(&format!("{prefix}p2")).await["count"], "10");
    assert_eq!(hgetall(&format!("{prefix}agg:sum")).await.len(), 3);
    // p2's rows go; a row without a provider comes.
    let t: &[(&str, &str)] = &[("count", "10"), ("sum", "15.0")];
    source.set(&[("p0", t), ("p1", t)], 1);
    let snapshot = per_group.fetch().await.unwrap();
    assert_eq!((snapshot.groups.len(), snapshot.null_groups), (2, 1));
    for t in [&per_group, &per_total] {
        assert_eq!(t.sync(SystemTime::now()).await.unwrap(), 2);
    }
    assert!(
        hgetall(&format!("{prefix}p2")).await.is_empty(),
        "a vanished group is deleted"
    );
    let sums = hgetall(&format!("{prefix}agg:sum")).await;
    assert_eq!(sums.keys().count(), 2, "{sums:?}");
    assert!(!sums.contains_key("p2"));
    assert_eq!(hgetall(&format!("{prefix}p0")).await["sum"], "15.0");
    let mut under_prefix = keys(&prefix).await;
    for k in &mut under_prefix {
        *k = k[prefix.len()..].to_owned();
    }
    assert_eq!(
        under_prefix,
        [
            "@as_of_ms",
            "agg:@as_of_ms",
            "agg:count",
            "agg:sum",
            "p0",
            "p1"
        ],
        "only totals under the prefix"
    );
    delete_prefix(&prefix).await;
}

#[tokio::test]
async fn totals_an_older_snapshot_never_replaces_a_newer_one() {
    if !services_available() {
        return;
    }
    let _shared = redis_lock(false).await;
    let prefix = unique("ordered") + ":";
    let source = Arc::new(MemoryTotals::default());
    let totals = memory_totals(
        source,
        TotalsLayout::HashPerGroup {
            prefix: prefix.clone(),
        },
    )
    .await;
    let group = |n: &str| GroupTotals {
        group: "p".into(),
        values: vec![("count".into(), n.into())],
    };
    let at = |ms: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
    assert!(totals.write(&[group("20")], at(2_000)).await.unwrap());
    // A second instance, or a retried flush, with the totals of an earlier boundary.
    assert!(!totals.write(&[group("10")], at(1_000)).await.unwrap());
    assert_eq!(hgetall(&format!("{prefix}p")).await["count"], "20");
    assert_eq!(as_of(&prefix).await, Some(2_000));
    // The same instant again (a restore, two instances flushing one boundary) is written.
    assert!(totals.write(&[group("21")], at(2_000)).await.unwrap());
    assert!(totals.write(&[group("30")], at(3_000)).await.unwrap());
    assert_eq!(hgetall(&format!("{prefix}p")).await["count"], "30");
    assert_eq!(as_of(&prefix).await, Some(3_000));
    delete_prefix(&prefix).await;
}

async fn as_of(prefix: &str) -> Option<u64> {
    redis::cmd("GET")
        .arg(format!("{prefix}@as_of_ms"))
        .query_async(&mut redis().await)
        .await
        .unwrap()
}

#[tokio::test]
async fn totals_lost_by_a_redis_restart_are_written_again_within_seconds() {
    if !services_available() {
        return;
    }
    let _exclusive = redis_lock(true).await;
    let source = Arc::new(MemoryTotals::default());
    three(&source);
    let prefix = unique("restored") + ":";
    let layout = TotalsLayout::HashPerGroup {
        prefix: prefix.clone(),
    };
    // Hourly boundaries: only the restore can bring the totals back during this test.
    let counter = WindowCounter::new(
        "restored",
        memory_totals(source, layout).await,
        Duration::from_secs(3600),
    )
    .unwrap();
    assert_eq!(counter.reconcile().await.unwrap(), 3);
    let written = as_of(&prefix).await.expect("as_of written");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(counter.run(async {
        let _ = stopped.await;
    }));
    restart_redis();
    assert_eq!(as_of(&prefix).await, None, "Redis lost everything");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while as_of(&prefix).await.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "totals not restored within 10s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        as_of(&prefix).await,
        Some(written),
        "the same totals, for the same instant"
    );
    for p in 0..3 {
        assert_eq!(hgetall(&format!("{prefix}p{p}")).await["count"], "10");
    }
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    delete_prefix(&prefix).await;
}

/// The keys under `prefix`, sorted.
async fn keys(prefix: &str) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut redis().await)
        .await
        .unwrap();
    keys.sort();
    keys
}

#[tokio::test]
async fn totals_of_two_writers_on_one_prefix_never_leave_a_stale_group_behind() {
    if !services_available() {
        return;
    }
    let _shared = redis_lock(false).await;
    let prefix = unique("racing") + ":";
    let layout = TotalsLayout::HashPerGroup {
        prefix: prefix.clone(),
    };
    // Redundant instances: each writes its own snapshot, each time with other groups.
    let source = Arc::new(MemoryTotals::default());
    let writers = [
        memory_totals(source.clone(), layout.clone()).await,
        memory_totals(source, layout.clone()).await,
    ];
    let group = |name: String| GroupTotals {
        group: name,
        values: vec![("count".into(), "1".into())],
    };
    let run = |w: usize| {
        let (writers, group) = (&writers, &group);
        async move {
            for i in 0..200 {
                let groups = [group(format!("w{w}-{i}"))];
                writers[w].write(&groups, SystemTime::now()).await.unwrap();
            }
        }
    };
    let both = async { tokio::join!(run(0), run(1)) };
    tokio::time::timeout(Duration::from_secs(60), both)
        .await
        .expect("the writes end");
    // The last write replaces everything any earlier write left.
    assert!(
        writers[0]
            .write(&[group("last".into())], SystemTime::now())
            .await
            .unwrap()
    );
    let left = keys(&prefix).await;
    let want = [format!("{prefix}@as_of_ms"), format!("{prefix}last")];
    let stale: Vec<&String> = left.iter().filter(|k| !want.contains(k)).collect();
    assert!(
        stale.is_empty(),
        "{} stale keys, such as {:?}",
        stale.len(),
        &stale[..stale.len().min(3)]
    );
    assert_eq!(left, want);
    delete_prefix(&prefix).await;
}

#[tokio::test]
async fn totals_of_many_groups_are_written_whole_in_either_layout() {
    if !services_available() {
        return;
    }
    let _shared = redis_lock(false).await;
    let prefix = unique("many") + ":";
    // More than Lua's `unpack` takes at once: the script writes in chunks.
    let groups: Vec<GroupTotals> = (0..9000)
        .map(|i| GroupTotals {
            group: format!("g{i}"),
            values: vec![("count".into(), i.to_string())],
        })
        .collect();
    let per_group = TotalsLayout::HashPerGroup {
        prefix: format!("{prefix}g:"),
    };
    let per_total = TotalsLayout::HashPerTotal {
        prefix: format!("{prefix}t:"),
    };
    let source = Arc::new(MemoryTotals::default());
    for layout in [per_group, per_total] {
        let writer = memory_totals(source.clone(), layout).await;
        let now = SystemTime::now();
        assert!(writer.write(&groups, now).await.unwrap());
        assert!(writer.write(&groups[1..], now).await.unwrap());
    }
    assert_eq!(keys(&format!("{prefix}g:")).await.len(), 8999 + 1);
    assert_eq!(hgetall(&format!("{prefix}g:g8999")).await["count"], "8999");
    assert!(hgetall(&format!("{prefix}g:g0")).await.is_empty());
    let counts = hgetall(&format!("{prefix}t:count")).await;
    assert_eq!((counts.len(), counts["g8999"].as_str()), (8999, "8999"));
    delete_prefix(&prefix).await;
}
