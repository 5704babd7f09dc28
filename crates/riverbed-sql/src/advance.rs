//! When a table sink moves its stored positions up to the source's settled position: on a
//! timer while the sink lives, after its writes, and when it closes.
//!
//! The timer matters for a sink that receives nothing (it reads a side stream that had
//! nothing yet, or all of its partitions are idle): without it, its rows would keep saying
//! "nothing committed" and a restart after a crash would start from the source's configured
//! start, skipping what was in flight and what was published during the outage.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::settled::SettledPosition;
use crate::table::RowWriter;

/// How often a sink moves its stored positions up to the settled position, at most (and how
/// often the timer tries).
pub(crate) const ADVANCE_EVERY: Duration = Duration::from_secs(1);

/// When a sink moves its stored positions up to the settled position: once it advanced, at
/// most every [`ADVANCE_EVERY`] (a forced advance, at close or from the timer, does not wait).
pub(crate) struct Advance {
    settled: SettledPosition,
    /// The last position written, and when the last attempt started.
    state: Mutex<(Option<u64>, Option<Instant>)>,
}

impl Advance {
    pub fn new(settled: SettledPosition) -> Self {
        Advance {
            settled,
            state: Mutex::new((None, None)),
        }
    }

    /// The source's settled position now.
    pub fn settled(&self) -> Option<u64> {
        self.settled.get()
    }

    /// The position to write now, if any (and notes the attempt).
    pub fn due(&self, force: bool) -> Option<u64> {
        let position = self.settled.get()?;
        let mut st = self.state.lock().expect("advance lock");
        let recent = st.1.is_some_and(|t| t.elapsed() < ADVANCE_EVERY);
        if st.0.is_some_and(|done| done >= position) || (recent && !force) {
            return None;
        }
        st.1 = Some(Instant::now());
        Some(position)
    }

    /// `position` was written.
    pub fn done(&self, position: u64) {
        let mut st = self.state.lock().expect("advance lock");
        st.0 = st.0.max(Some(position));
    }

    /// Moves `writer`'s stored positions up to the settled position, if due; a failure is
    /// logged and tried again later.
    pub async fn run<W: RowWriter>(&self, sink: &str, writer: &W, force: bool) {
        let Some(position) = self.due(force) else {
            return;
        };
        match writer.advance_offsets(position).await {
            Ok(()) => self.done(position),
            Err(e) => {
                tracing::warn!(sink, position, error = %e, "Advancing stored offsets to the settled position failed; retried later")
            }
        }
    }
}

/// Starts the timer that advances `writer`'s stored positions every [`ADVANCE_EVERY`] until
/// the writer is dropped (with its sink). Without a tokio runtime nothing starts (positions
/// then move on writes and at close only), and `None` is returned.
pub(crate) fn spawn_timer<W: RowWriter>(
    sink: String,
    writer: Weak<W>,
    advance: Arc<Advance>,
) -> Option<tokio::task::JoinHandle<()>> {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::debug!(
            sink,
            "No tokio runtime: stored offsets advance on writes and at close only"
        );
        return None;
    };
    Some(runtime.spawn(async move {
        let mut timer = tokio::time::interval(ADVANCE_EVERY);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            timer.tick().await;
            let Some(writer) = writer.upgrade() else {
                return;
            };
            // The interval spaces these attempts: no need to wait after a write's advance.
            advance.run(&sink, &*writer, true).await;
        }
    }))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::spec::SqlValue;
    use crate::sqlgen::Dialect;
    use crate::table::OffsetUpdate;

    #[test]
    fn advances_are_spaced_unless_forced() {
        let position = SettledPosition::default();
        let advance = Advance::new(position.clone());
        assert_eq!(advance.due(false), None, "nothing settled yet");
        position.raise(5);
        assert_eq!(advance.due(false), Some(5));
        advance.done(5);
        position.raise(9);
        assert_eq!(advance.due(false), None, "within a second of the last");
        assert_eq!(advance.due(true), Some(9));
        advance.done(9);
        assert_eq!(advance.due(true), None, "already there");
    }

    /// Records the last position it was advanced to.
    #[derive(Default)]
    struct Advanced(AtomicU64);

    #[async_trait]
    impl RowWriter for Advanced {
        fn dialect(&self) -> Dialect {
            Dialect::Sqlite
        }

        async fn write_rows(
            &self,
            _: &[&[SqlValue]],
            _: Option<OffsetUpdate>,
        ) -> Result<u64, sqlx::Error> {
            unreachable!("never written")
        }

        async fn advance_offsets(&self, position: u64) -> Result<(), sqlx::Error> {
            self.0.store(position, Ordering::Release);
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_timer_advances_an_idle_writer_and_stops_with_it() {
        let position = SettledPosition::default();
        let advance = Arc::new(Advance::new(position.clone()));
        let writer = Arc::new(Advanced::default());
        let timer = spawn_timer("t".into(), Arc::downgrade(&writer), advance).unwrap();
        position.raise(7);
        // Paused time: each sleep lets the timer run its next tick.
        let deadline = tokio::time::Instant::now() + 10 * ADVANCE_EVERY;
        while writer.0.load(Ordering::Acquire) != 7 {
            assert!(tokio::time::Instant::now() < deadline, "never advanced");
            tokio::time::sleep(ADVANCE_EVERY / 4).await;
        }
        position.raise(12);
        while writer.0.load(Ordering::Acquire) != 12 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "never advanced again"
            );
            tokio::time::sleep(ADVANCE_EVERY / 4).await;
        }
        drop(writer);
        tokio::time::timeout(10 * ADVANCE_EVERY, timer)
            .await
            .expect("the timer stops once its sink is gone")
            .unwrap();
    }

    #[test]
    fn without_a_runtime_no_timer_starts() {
        let writer = Arc::new(Advanced::default());
        let advance = Arc::new(Advance::new(SettledPosition::default()));
        assert!(spawn_timer("t".into(), Arc::downgrade(&writer), advance).is_none());
    }
}
