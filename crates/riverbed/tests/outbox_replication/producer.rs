//! A producer process of the outbox test: a system of record that changes rows of its source
//! tables and enqueues each change's event in the same transaction, through `Outbox::enqueue`.

use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;

/// The environment variable that makes the test binary a producer.
pub const ENV: &str = "RIVERBED_TEST_OUTBOX_PRODUCER";

/// What one producer process does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    /// This producer's number.
    pub producer: u32,
    /// Database URL.
    pub url: String,
    /// The outbox table.
    pub outbox: String,
    /// Source tables are `<prefix>_<kind>`.
    pub prefix: String,
    /// Entities `0..entities`.
    pub entities: u32,
    /// Passes over all entities.
    pub rounds: u32,
}

/// The kind of entity `n` (its source table).
pub fn kind(n: u32) -> &'static str {
    ["customer", "order", "invoice"][n as usize % 3]
}

/// A deterministic shuffle of `0..n` by `seed`.
fn shuffled(n: u32, seed: u64) -> Vec<u32> {
    let mut items: Vec<u32> = (0..n).collect();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in (1..items.len()).rev() {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        items.swap(i, (state >> 33) as usize % (i + 1));
    }
    items
}

/// Runs `job`: every round, each entity in a shuffled order gets one change (created on first
/// touch; every fifth entity is deleted by its owner in the last round, after which no
/// producer changes it again). Returns the transactions committed.
pub async fn run(job: &Job) -> u64 {
    let pool = PgPool::connect(&job.url).await.unwrap();
    let outbox = riverbed_sql::Outbox::new(&job.outbox)
        .unwrap()
        .with_version_field("version");
    let mut committed = 0;
    for round in 0..job.rounds {
        let seed = u64::from(job.producer) * 1000 + u64::from(round);
        for n in shuffled(job.entities, seed) {
            let delete = n % 5 == 0 && round + 1 == job.rounds && n % 3 == job.producer;
            if change(&pool, &outbox, job, n, round, delete).await {
                committed += 1;
            }
        }
    }
    committed
}

/// One transaction: the source row and its event; false if the entity is deleted already.
async fn change(
    pool: &PgPool,
    outbox: &riverbed_sql::Outbox,
    job: &Job,
    n: u32,
    round: u32,
    delete: bool,
) -> bool {
    let table = format!("{}_{}", job.prefix, kind(n));
    let id = n.to_string();
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {table} (id, version, deleted) VALUES ($1, 0, false) ON CONFLICT (id) DO NOTHING"
    )))
    .bind(&id)
    .execute(&mut *tx)
    .await
    .unwrap();
    let deleted: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT deleted FROM {table} WHERE id = $1 FOR UPDATE"
    )))
    .bind(&id)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    if deleted {
        tx.rollback().await.unwrap();
        return false;
    }
    let data = json!({"producer": job.producer, "round": round, "n": n});
    let event = if delete {
        json!({"entity": kind(n), "id": id, "op": "delete"})
    } else {
        json!({"entity": kind(n), "id": id, "op": "update", "data": data})
    };
    let key = format!("{}:{id}", kind(n));
    let e = outbox.enqueue(&mut tx, &key, &event).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {table} SET version = $2, deleted = $3, data = CASE WHEN $3 THEN NULL ELSE $4::jsonb END WHERE id = $1"
    )))
    .bind(&id)
    .bind(e.version)
    .bind(delete)
    .bind(data.to_string())
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    true
}
