//! The dead-letter storm guard: when most of the last settled messages were dead-lettered (a
//! bad deploy, a schema change), the pipeline stops consuming instead of emptying the source
//! into the dead-letter destination.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, OnceLock};

use crate::stop::Stop;

/// When the guard trips: more than `max_share` of the last `window` settled messages were
/// dead-lettered, counted once at least `min_sample` messages have settled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StormGuard {
    /// The share of dead letters (0 < share < 1) that, once exceeded, stops the pipeline.
    pub max_share: f64,
    /// How many of the most recent settlements are looked at.
    pub window: NonZeroU32,
    /// Settlements needed (within the window) before the guard may trip.
    pub min_sample: NonZeroU32,
}

impl Default for StormGuard {
    /// More than half of the last 100 settled messages, with at least 50 settled: a pipeline
    /// that dead-letters the odd message never trips it.
    fn default() -> Self {
        StormGuard {
            max_share: 0.5,
            window: NonZeroU32::new(100).expect("100 is not zero"),
            min_sample: NonZeroU32::new(50).expect("50 is not zero"),
        }
    }
}

impl StormGuard {
    /// Checks the settings: a share strictly between 0 and 1, a sample no larger than the window.
    pub fn check(&self) -> Result<(), String> {
        if !(self.max_share > 0.0 && self.max_share < 1.0) {
            return Err(format!(
                "max_share must be between 0 and 1 (exclusive), not {}",
                self.max_share
            ));
        }
        if self.min_sample > self.window {
            return Err(format!(
                "min_sample ({}) must not exceed window ({})",
                self.min_sample, self.window
            ));
        }
        Ok(())
    }
}

/// Why the guard stopped the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StormTripped {
    /// Dead letters among the settlements looked at.
    pub dead_lettered: u32,
    /// Settlements looked at.
    pub settled: u32,
}

/// The guard at work: the recent settlements, and the stop it requests when it trips.
pub(crate) struct StormWatch {
    guard: StormGuard,
    recent: Mutex<Recent>,
    tripped: OnceLock<StormTripped>,
    stop: Stop,
}

/// The last settlements, oldest first (`true`: dead-lettered).
#[derive(Default, Clone)]
struct Recent {
    outcomes: VecDeque<bool>,
    dead: u32,
}

impl Recent {
    fn push(&mut self, dead: bool, window: usize) {
        self.outcomes.push_back(dead);
        self.dead += u32::from(dead);
        if self.outcomes.len() > window && self.outcomes.pop_front() == Some(true) {
            self.dead -= 1;
        }
    }

    fn storm(&self, guard: &StormGuard) -> bool {
        let n = self.outcomes.len() as u32;
        n >= guard.min_sample.get() && f64::from(self.dead) > guard.max_share * f64::from(n)
    }
}

impl StormWatch {
    pub fn new(guard: StormGuard, stop: Stop) -> Arc<Self> {
        Arc::new(StormWatch {
            guard,
            recent: Mutex::new(Recent::default()),
            tripped: OnceLock::new(),
            stop,
        })
    }

    /// Why it tripped, if it did.
    pub fn tripped(&self) -> Option<&StormTripped> {
        self.tripped.get()
    }

    /// `n` messages settled without a dead letter.
    pub fn record_settled(&self, n: usize) {
        let window = self.guard.window.get() as usize;
        let mut recent = self.recent.lock().expect("storm lock");
        for _ in 0..n.min(window) {
            recent.push(false, window);
        }
    }

    /// `n` dead letters were stored; trips the guard when they make a storm.
    pub fn record_dead_letters(&self, n: usize) {
        let window = self.guard.window.get() as usize;
        let mut recent = self.recent.lock().expect("storm lock");
        for _ in 0..n {
            recent.push(true, window);
        }
        if self.tripped.get().is_none() && recent.storm(&self.guard) {
            self.trip(StormTripped {
                dead_lettered: recent.dead,
                settled: recent.outcomes.len() as u32,
            });
        }
    }

    /// How many more dead letters may be stored, one after the other, before the guard trips
    /// (the one that trips it included); zero once tripped. Letters beyond it are given back
    /// to the source instead of being stored.
    pub fn letters_allowed(&self, wanted: usize) -> usize {
        if self.tripped.get().is_some() {
            return 0;
        }
        let window = self.guard.window.get() as usize;
        let mut recent = self.recent.lock().expect("storm lock").clone();
        for i in 1..=wanted {
            recent.push(true, window);
            if recent.storm(&self.guard) {
                return i;
            }
        }
        wanted
    }

    fn trip(&self, why: StormTripped) {
        if self.tripped.set(why.clone()).is_err() {
            return;
        }
        metrics::counter!("riverbed_dead_letter_storms_total").increment(1);
        metrics::gauge!("riverbed_dead_letter_storm").set(1.0);
        tracing::error!(
            dead_lettered = why.dead_lettered,
            settled = why.settled,
            max_share = self.guard.max_share,
            window = self.guard.window.get(),
            "Dead-letter storm: most recent messages were dead-lettered; stopping intake \
             (later failures are given back to the source, not dead-lettered)"
        );
        self.stop.request();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn watch(share: f64, window: u32, min: u32) -> Arc<StormWatch> {
        let guard = StormGuard {
            max_share: share,
            window: NonZeroU32::new(window).unwrap(),
            min_sample: NonZeroU32::new(min).unwrap(),
        };
        StormWatch::new(guard, Stop::new(Duration::from_secs(1)))
    }

    #[test]
    fn storm_trips_only_above_the_share_with_enough_samples() {
        let w = watch(0.5, 10, 4);
        w.record_dead_letters(3);
        assert!(
            w.tripped().is_none(),
            "3 settlements are below the minimum sample"
        );
        w.record_settled(3);
        assert!(w.tripped().is_none(), "3 of 6 is not more than half");
        assert_eq!(w.letters_allowed(10), 1, "the next letter makes 4 of 7");
        w.record_dead_letters(1);
        assert_eq!(
            w.tripped(),
            Some(&StormTripped {
                dead_lettered: 4,
                settled: 7
            })
        );
        assert_eq!(w.letters_allowed(5), 0);
    }

    #[test]
    fn storm_window_forgets_old_dead_letters() {
        let w = watch(0.5, 4, 4);
        w.record_dead_letters(2);
        w.record_settled(100);
        assert_eq!(w.letters_allowed(10), 3, "the window holds only the last 4");
        w.record_dead_letters(2);
        assert!(
            w.tripped().is_none(),
            "2 of the last 4 is not more than half"
        );
    }

    #[test]
    fn storm_guard_settings_are_checked() {
        assert!(StormGuard::default().check().is_ok());
        let mut g = StormGuard {
            max_share: 1.0,
            ..StormGuard::default()
        };
        assert!(g.check().is_err());
        g.max_share = 0.5;
        g.min_sample = NonZeroU32::new(101).unwrap();
        assert!(g.check().is_err());
    }
}
