//! The window counter: per-group totals written to Redis at every wall-clock-aligned boundary
//! (every full minute by default), in one `MULTI`/`EXEC`, well under a second after it.
//!
//! # Design: totals from committed data, never from an in-memory tally
//! An in-memory tally fed by the pipeline cannot be made safe: a message is acknowledged once
//! its sinks commit, so after a crash the tally of acknowledged-but-unflushed messages is gone
//! (loss), and redelivered unacknowledged ones are counted again (duplicates). Instead the
//! pipeline writes each transaction idempotently to PostgreSQL (an `append` sink keyed by the
//! transaction id: redelivery never duplicates a row), and at each boundary the counter asks
//! PostgreSQL for the committed totals and `HSET`s them — absolute values, so writing them
//! twice changes nothing:
//! - a crash of Riverbed: the next boundary writes the totals of everything committed,
//!   redelivered messages included exactly once (their rows were skipped as duplicates);
//! - a restart of Redis that lost every key: within a second the counter sees that
//!   `<prefix>@as_of_ms` is gone and writes the last boundary's totals again (kept in memory,
//!   same values and `as_of`, no query), so readers do not wait for the next boundary;
//! - a failed flush (Redis or PostgreSQL down): retried with backoff until the next boundary,
//!   which then writes the newer totals.
//!
//! A boundary's totals hold everything committed when the source answered (a few milliseconds
//! after the boundary); `<prefix>@as_of_ms` says which boundary they are for. The source is a
//! [`riverbed_core::TotalsSource`]: in the daemon, a PostgreSQL query. Reading a totals table
//! kept by the append sink in the same transaction as its rows (`SELECT provider, count, sum
//! FROM provider_totals`) costs the same at any history size; a `GROUP BY` over the whole
//! history (`SELECT provider, count(*), sum(amount) FROM historical_transactions GROUP BY
//! provider`) needs no maintenance, but grows with the table until flushes are late (see
//! BENCHMARKS.md). An older snapshot never replaces a newer one (see the `totals` module).
//!
//! Flush lateness (time from the boundary to `EXEC` answered) is recorded in the histogram
//! `riverbed_redis_window_flush_lateness_seconds` and the gauge
//! `riverbed_redis_window_flush_lateness_last_seconds`, and logged with each flush
//! (`boundary_ms`, `lateness_ms`: debug level, a warning from a second late on).

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use riverbed_core::Backoff;
use tokio::sync::watch;

use riverbed_core::GroupTotals;

use crate::error::{Error, Result};
use crate::totals::{Totals, epoch_ms};

/// The default distance between boundaries: every full minute.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(60);

/// How often, between boundaries, the counter checks that Redis still holds its totals.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// One completed flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flush {
    /// The boundary the totals were written for.
    pub boundary: SystemTime,
    /// Groups written.
    pub groups: usize,
    /// How long after the boundary the write was answered.
    pub lateness: Duration,
}

/// Writes totals at every aligned boundary; see the module docs.
pub struct WindowCounter {
    name: String,
    totals: Totals,
    every: Duration,
    flushed: watch::Sender<Option<Flush>>,
    /// The last totals written and the instant they were for: written again if Redis loses
    /// them.
    last: Mutex<Option<(Vec<GroupTotals>, SystemTime)>>,
}

/// The first boundary strictly after `now`: the next multiple of `every` since the epoch.
pub fn next_boundary(now: SystemTime, every: Duration) -> SystemTime {
    let every_ms = every.as_millis().max(1);
    let now_ms = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let next = (now_ms / every_ms + 1) * every_ms;
    UNIX_EPOCH + Duration::from_millis(next as u64)
}

impl WindowCounter {
    /// A counter named `name` writing `totals` every `every` (at least a millisecond).
    pub fn new(name: &str, totals: Totals, every: Duration) -> Result<Self> {
        if every < Duration::from_millis(1) {
            return Err(Error::Config("every: at least 1ms".into()));
        }
        Ok(WindowCounter {
            name: name.to_owned(),
            totals,
            every,
            flushed: watch::channel(None).0,
            last: Mutex::new(None),
        })
    }

    /// Watches the last completed flush (for health checks and tests).
    pub fn watch(&self) -> watch::Receiver<Option<Flush>> {
        self.flushed.subscribe()
    }

    /// Startup reconciliation: writes the current totals now, before consuming.
    pub async fn reconcile(&self) -> Result<usize> {
        let started = std::time::Instant::now();
        let groups = self.write_current(SystemTime::now()).await?;
        let took_ms = started.elapsed().as_millis() as u64;
        tracing::info!(counter = %self.name, groups, took_ms, "Counters reconciled from committed data");
        Ok(groups)
    }

    /// Queries and writes the totals for `as_of`, and keeps them for [`Self::restore`].
    async fn write_current(&self, as_of: SystemTime) -> Result<usize> {
        let snapshot = self.totals.fetch().await?;
        if !self.totals.write(&snapshot.groups, as_of).await? {
            // Another writer holds newer totals: they are the ones to restore, not these.
            return Ok(0);
        }
        let groups = snapshot.groups.len();
        *self.last.lock().expect("last totals lock") = Some((snapshot.groups, as_of));
        Ok(groups)
    }

    /// Writes the totals for `boundary` and records the lateness.
    pub async fn flush(&self, boundary: SystemTime) -> Result<Flush> {
        let groups = self.write_current(boundary).await?;
        let lateness = SystemTime::now()
            .duration_since(boundary)
            .unwrap_or_default();
        let flush = Flush {
            boundary,
            groups,
            lateness,
        };
        record(&self.name, &flush);
        self.flushed.send_replace(Some(flush));
        Ok(flush)
    }

    /// If Redis lost the totals (its `as_of` marker is gone: a restart without persistence, a
    /// flush of the database), writes the last ones again, for the same instant. Returns
    /// whether it did.
    pub async fn restore(&self) -> Result<bool> {
        let last = self.last.lock().expect("last totals lock").clone();
        let Some((groups, as_of)) = last else {
            return Ok(false);
        };
        if self.totals.present().await? {
            return Ok(false);
        }
        if !self.totals.write(&groups, as_of).await? {
            return Ok(false);
        }
        metrics::counter!("riverbed_redis_window_restores_total", "counter" => self.name.clone())
            .increment(1);
        tracing::warn!(counter = %self.name, as_of_ms = epoch_ms(as_of), groups = groups.len(), "Redis lost the totals; the last ones are written again");
        Ok(true)
    }

    /// Waits until `boundary`, checking every [`CHECK_EVERY`] that Redis still holds the
    /// totals. Returns false if `shutdown` completed first.
    async fn wait_for(
        &self,
        boundary: SystemTime,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> bool {
        loop {
            let Ok(left) = boundary.duration_since(SystemTime::now()) else {
                return true;
            };
            tokio::select! {
                _ = shutdown.as_mut() => return false,
                _ = tokio::time::sleep(left.min(CHECK_EVERY)) => {}
            }
            if left > CHECK_EVERY
                && let Err(e) = self.restore().await
            {
                tracing::debug!(counter = %self.name, error = %e, "Checking the totals in Redis failed");
            }
        }
    }

    /// Flushes at every boundary until `shutdown` completes. A failed flush is retried with
    /// backoff until the next boundary, which supersedes it.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let boundary = next_boundary(SystemTime::now(), self.every);
            if !self.wait_for(boundary, &mut shutdown).await {
                return;
            }
            let superseded_at = boundary + self.every;
            let mut backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(500));
            loop {
                let Err(e) = self.flush(boundary).await else {
                    break;
                };
                metrics::counter!("riverbed_redis_window_flush_failures_total", "counter" => self.name.clone())
                    .increment(1);
                let delay = backoff.next_delay();
                if SystemTime::now() + delay >= superseded_at {
                    tracing::error!(counter = %self.name, error = %e, "Window flush failed; the next boundary will write newer totals");
                    break;
                }
                tracing::warn!(counter = %self.name, error = %e, retry_in_ms = delay.as_millis() as u64, "Window flush failed; retrying");
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// Counts and logs a completed flush. The log line names the boundary (`boundary_ms`, the
/// value `<prefix>@as_of_ms` holds), so the lateness of the totals a reader sees can be found.
fn record(counter: &str, flush: &Flush) {
    let secs = flush.lateness.as_secs_f64();
    metrics::histogram!("riverbed_redis_window_flush_lateness_seconds", "counter" => counter.to_owned())
        .record(secs);
    metrics::gauge!("riverbed_redis_window_flush_lateness_last_seconds", "counter" => counter.to_owned())
        .set(secs);
    metrics::counter!("riverbed_redis_window_flushes_total", "counter" => counter.to_owned())
        .increment(1);
    let boundary_ms = epoch_ms(flush.boundary);
    let lateness_ms = flush.lateness.as_millis() as u64;
    let groups = flush.groups;
    if flush.lateness >= Duration::from_secs(1) {
        tracing::warn!(counter = %counter, boundary_ms, lateness_ms, groups, "Window flush a second or more late");
    } else {
        tracing::debug!(counter = %counter, boundary_ms, lateness_ms, groups, "Window flushed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_are_aligned_to_the_epoch() {
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        let minute = Duration::from_secs(60);
        assert_eq!(next_boundary(at(119_999), minute), at(120_000));
        assert_eq!(next_boundary(at(120_000), minute), at(180_000));
        assert_eq!(next_boundary(at(4_001), Duration::from_secs(2)), at(6_000));
    }

    /// A `MakeWriter` that keeps what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn flush_logs_name_the_boundary_and_warn_when_a_second_late() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let boundary = UNIX_EPOCH + Duration::from_secs(1_700_000_040);
        tracing::subscriber::with_default(subscriber, || {
            for ms in [120, 1500] {
                let lateness = Duration::from_millis(ms);
                record(
                    "ledger",
                    &Flush {
                        boundary,
                        groups: 3,
                        lateness,
                    },
                );
            }
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].contains("DEBUG") && lines[0].contains("Window flushed"),
            "{text}"
        );
        assert!(
            lines[1].contains("WARN") && lines[1].contains("second or more late"),
            "{text}"
        );
        for (line, ms) in lines.iter().zip(["120", "1500"]) {
            assert!(line.contains("boundary_ms=1700000040000"), "{line}");
            assert!(line.contains(&format!("lateness_ms={ms}")), "{line}");
            assert!(line.contains("counter=ledger"), "{line}");
        }
    }
}
