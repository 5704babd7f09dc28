//! `OutboxSource`: the relay, a [`Source`] whose deliveries are claimed outbox rows.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use riverbed_core::{Acker, Backoff, Capabilities, DeadLetterSink, Delivery, Source, SourceError};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;

use crate::error::Result;
use crate::outbox::acker::OutboxAcker;
use crate::outbox::claim::{ClaimSql, claim};
use crate::outbox::config::PostgresOutboxConfig;
use crate::outbox::dead_letter::OutboxDeadLetters;
use crate::outbox::retention::remove_sent;
use crate::outbox::table::OutboxTable;

/// Relays an outbox: each delivery is one row, keyed by its entity, with the entity, version
/// (headers `riverbed-entity`, `riverbed-version`) and message id. A row is marked sent once
/// the pipeline settled it (every sink committed it or it was dead-lettered); a crash before
/// that leaves it unsent, and it is published again.
pub struct OutboxSource {
    config: PostgresOutboxConfig,
    table: OutboxTable,
    pool: PgPool,
    sql: ClaimSql,
    slots: Arc<Semaphore>,
    wake: Arc<Notify>,
    acker: Arc<OutboxAcker>,
    tasks: Vec<JoinHandle<()>>,
}

impl OutboxSource {
    /// Checks `config`, connects, creates the tables if asked, and starts listening.
    pub async fn open(config: PostgresOutboxConfig) -> Result<Self> {
        let table = config.check()?;
        let pool = config.connection.connect().await?;
        if config.create_table {
            table.create(&pool).await?;
        }
        let sql = ClaimSql::new(&table);
        let wake = Arc::new(Notify::new());
        let (acker, committer) = OutboxAcker::start(sql.clone(), wake.clone());
        let mut tasks = vec![committer];
        if config.listen {
            tasks.push(tokio::spawn(listen(
                pool.clone(),
                table.clone(),
                wake.clone(),
            )));
        }
        tasks.push(tokio::spawn(remove_sent(
            pool.clone(),
            table.clone(),
            config.retention,
            config.cleanup_interval,
        )));
        tracing::info!(table = %table.name(), url = %config.connection.url, "Outbox relay started");
        Ok(OutboxSource {
            slots: Arc::new(Semaphore::new(config.max_claims)),
            config,
            table,
            pool,
            sql,
            wake,
            acker,
            tasks,
        })
    }

    /// The pool the relay uses.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

#[async_trait]
impl Source for OutboxSource {
    fn describe(&self) -> String {
        format!(
            "postgres outbox {} at {}",
            self.table.name(),
            self.config.connection.url
        )
    }

    async fn recv(&mut self, out: &mut Vec<Delivery>, max: usize) -> Result<bool, SourceError> {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        loop {
            let permit = self
                .slots
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| SourceError::Fatal("outbox claim slots closed".into()))?;
            let size = max.min(self.config.claim_size).max(1);
            match claim(&self.pool, &self.sql, size).await {
                Ok(Some(c)) => {
                    out.extend(c.rows.iter().map(|r| Delivery {
                        message: r.message.clone(),
                        token: r.id as u64,
                    }));
                    self.acker.open(c, permit);
                    return Ok(true);
                }
                Ok(None) => {
                    drop(permit);
                    backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
                    let _ =
                        tokio::time::timeout(self.config.poll_interval, self.wake.notified()).await;
                }
                Err(e) => {
                    drop(permit);
                    metrics::counter!("riverbed_outbox_claim_failures_total").increment(1);
                    tracing::warn!(table = %self.table.name(), error = %e, "Cannot claim outbox rows; trying again");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    fn acker(&self) -> Arc<dyn Acker> {
        self.acker.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            delayed_retry: false,
            window: Some(self.config.claim_size * self.config.max_claims),
        }
    }

    fn dead_letters(&self) -> Option<Arc<dyn DeadLetterSink>> {
        Some(Arc::new(OutboxDeadLetters::new(
            self.pool.clone(),
            &self.table,
        )))
    }

    async fn close(&mut self) -> Result<(), SourceError> {
        // Every settled claim commits before close returns; one still open (its rows not
        // settled) rolls back when the process ends, and its rows are claimed again.
        let all = u32::try_from(self.config.max_claims).unwrap_or(u32::MAX);
        let committed =
            tokio::time::timeout(Duration::from_secs(10), self.slots.acquire_many(all)).await;
        if committed.is_err() {
            tracing::warn!(table = %self.table.name(), "Outbox claims still open at close; their rows will be published again");
        }
        for t in self.tasks.drain(..) {
            t.abort();
        }
        Ok(())
    }
}

/// Wakes the relay on the producers' notifications; reconnects after a lost connection
/// (notifications sent meanwhile are lost, the polling fallback finds their rows).
async fn listen(pool: PgPool, table: OutboxTable, wake: Arc<Notify>) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "Cannot listen for outbox notifications; polling meanwhile");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(table.channel()).await {
            tracing::warn!(error = %e, "LISTEN failed; polling meanwhile");
            tokio::time::sleep(backoff.next_delay()).await;
            continue;
        }
        backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        wake.notify_one();
        loop {
            match listener.try_recv().await {
                Ok(Some(_)) => wake.notify_one(),
                Ok(None) => {
                    tracing::warn!("Outbox notification connection lost; reconnecting");
                    wake.notify_one();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Outbox notifications failed; reconnecting");
                    break;
                }
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}
