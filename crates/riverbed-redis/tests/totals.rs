//! Totals owned by their keys: groups that leave the query's result leave Redis, NULL groups
//! are counted, and a window counter writes its totals again within seconds when Redis
//! loses them (instead of at the next boundary).

mod support;

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use riverbed_redis::{Totals, TotalsLayout, WindowCounter};
use support::*;

async fn exec(pool: &sqlx::PgPool, sql: String) {
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(pool)
        .await
        .unwrap();
}

/// A table of 30 rows over providers p0, p1, p2 (10 each, amount 1.5).
async fn table(pool: &sqlx::PgPool, name: &str) {
    exec(
        pool,
        format!("CREATE TABLE \"{name}\" (provider TEXT, amount NUMERIC NOT NULL)"),
    )
    .await;
    exec(
        pool,
        format!("INSERT INTO \"{name}\" SELECT 'p' || (i % 3), 1.5 FROM generate_series(0, 29) i"),
    )
    .await;
}

fn query(table: &str) -> String {
    format!(
        "SELECT provider, count(*) AS count, sum(amount) AS sum FROM \"{table}\" GROUP BY provider"
    )
}

async fn hgetall(key: &str) -> HashMap<String, String> {
    redis::cmd("HGETALL")
        .arg(key)
        .query_async(&mut redis().await)
        .await
        .unwrap()
}

async fn totals(pool: &sqlx::PgPool, table: &str, layout: TotalsLayout) -> Totals {
    Totals::new(
        pool.clone(),
        redis_config().connect().await.unwrap(),
        &query(table),
        layout,
    )
}

#[tokio::test]
async fn groups_that_leave_the_result_leave_redis_and_null_groups_are_counted() {
    if !services_available() {
        return;
    }
    let _shared = redis_lock(false).await;
    let pool = pg("riverbed-redis-test").await;
    let name = unique("owned");
    let prefix = unique("owned") + ":";
    table(&pool, &name).await;
    let per_group = totals(
        &pool,
        &name,
        TotalsLayout::HashPerGroup {
            prefix: prefix.clone(),
        },
    )
    .await;
    let per_total = totals(
        &pool,
        &name,
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
    exec(
        &pool,
        format!("DELETE FROM \"{name}\" WHERE provider = 'p2'"),
    )
    .await;
    exec(&pool, format!("INSERT INTO \"{name}\" VALUES (NULL, 4)")).await;
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
    let mut c = redis().await;
    let under_prefix: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut c)
        .await
        .unwrap();
    let mut under_prefix: Vec<&str> = under_prefix.iter().map(|k| &k[prefix.len()..]).collect();
    under_prefix.sort_unstable();
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
    exec(&pool, format!("DROP TABLE \"{name}\"")).await;
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
    let pool = pg("riverbed-redis-test").await;
    let name = unique("restored");
    let prefix = unique("restored") + ":";
    table(&pool, &name).await;
    let layout = TotalsLayout::HashPerGroup {
        prefix: prefix.clone(),
    };
    // Hourly boundaries: only the restore can bring the totals back during this test.
    let counter = WindowCounter::new(
        "restored",
        totals(&pool, &name, layout).await,
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
    exec(&pool, format!("DROP TABLE \"{name}\"")).await;
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
async fn two_writers_on_one_prefix_never_leave_a_stale_group_behind() {
    use riverbed_redis::GroupTotals;
    if !services_available() {
        return;
    }
    let _shared = redis_lock(false).await;
    let pool = pg("riverbed-redis-test").await;
    let prefix = unique("racing") + ":";
    let layout = TotalsLayout::HashPerGroup {
        prefix: prefix.clone(),
    };
    // Redundant instances: each writes its own snapshot, each time with other groups.
    let writers = [
        totals(&pool, "unused", layout.clone()).await,
        totals(&pool, "unused", layout.clone()).await,
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
    writers[0]
        .write(&[group("last".into())], SystemTime::now())
        .await
        .unwrap();
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
async fn a_snapshot_of_many_groups_is_written_whole_in_either_layout() {
    use riverbed_redis::GroupTotals;
    if !services_available() {
        return;
    }
    let _shared = redis_lock(false).await;
    let pool = pg("riverbed-redis-test").await;
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
    for layout in [per_group, per_total] {
        let writer = totals(&pool, "unused", layout).await;
        writer.write(&groups, SystemTime::now()).await.unwrap();
        writer.write(&groups[1..], SystemTime::now()).await.unwrap();
    }
    assert_eq!(keys(&format!("{prefix}g:")).await.len(), 8999 + 1);
    assert_eq!(hgetall(&format!("{prefix}g:g8999")).await["count"], "8999");
    assert!(hgetall(&format!("{prefix}g:g0")).await.is_empty());
    let counts = hgetall(&format!("{prefix}t:count")).await;
    assert_eq!((counts.len(), counts["g8999"].as_str()), (8999, "8999"));
    delete_prefix(&prefix).await;
}
