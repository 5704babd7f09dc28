//! One in-flight delivery: how many sink writes it still waits for, and the worst that happened.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::SystemTime;

use tokio::sync::OwnedSemaphorePermit;

use crate::message::Message;
use crate::outcome::{DeadLetter, FIRST_FAILURE_HEADER, Failure};
use crate::retry::{RetryMode, RetryPolicy};
use crate::source::AckToken;

/// A failure of one delivery at one stage, after any in-process retries.
#[derive(Debug, Clone)]
pub(crate) struct StageFailure {
    pub failure: Failure,
    /// A broker retry could still help (only reported in broker retry mode).
    pub retryable: bool,
    pub attempts: u32,
    pub first: SystemTime,
    pub last: SystemTime,
    pub stage: String,
}

impl StageFailure {
    /// A failure that happened once, now, and will not be retried.
    pub fn now(failure: Failure, stage: impl Into<String>, attempts: u32) -> Self {
        let now = SystemTime::now();
        StageFailure {
            failure,
            retryable: false,
            attempts,
            first: now,
            last: now,
            stage: stage.into(),
        }
    }
}

/// What to do with a delivery once every stage is done with it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Final {
    Ack,
    DeadLetter,
    Retry { next_attempt: u32 },
}

/// Shared by every sink write of one delivery; the last one to finish settles it.
#[derive(Debug)]
pub(crate) struct Tracked {
    token: AckToken,
    original: Message,
    pending: AtomicU32,
    failure: Mutex<Option<StageFailure>>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Tracked {
    pub fn new(token: AckToken, original: &Message, permit: Option<OwnedSemaphorePermit>) -> Self {
        Tracked {
            token,
            original: original.without_body(),
            pending: AtomicU32::new(1),
            failure: Mutex::new(None),
            _permit: permit,
        }
    }

    pub fn token(&self) -> AckToken {
        self.token
    }

    /// When this process received the delivery.
    pub fn received_at(&self) -> SystemTime {
        self.original.meta.received_at
    }

    /// Sets how many sink writes this delivery waits for (called once, before any write).
    pub fn expect(&self, writes: u32) {
        self.pending.store(writes, Ordering::Relaxed);
    }

    /// Records a failure; a permanent one beats a retryable one.
    pub fn fail(&self, f: StageFailure) {
        let mut slot = self.failure.lock().expect("tracker lock poisoned");
        match slot.as_mut() {
            None => *slot = Some(f),
            Some(cur) => {
                let attempts = cur.attempts.max(f.attempts);
                let first = cur.first.min(f.first);
                let last = cur.last.max(f.last);
                if cur.retryable && !f.retryable {
                    *cur = f;
                }
                cur.attempts = attempts;
                cur.first = first;
                cur.last = last;
            }
        }
    }

    /// One sink write finished; true when it was the last one.
    pub fn complete_one(&self) -> bool {
        self.pending.fetch_sub(1, Ordering::AcqRel) == 1
    }

    /// The disposition once every write finished.
    pub fn disposition(&self, policy: &RetryPolicy) -> Final {
        let slot = self.failure.lock().expect("tracker lock poisoned");
        match slot.as_ref() {
            None => Final::Ack,
            Some(f)
                if f.retryable
                    && policy.mode == RetryMode::Broker
                    && policy.may_retry(self.original.meta.attempt) =>
            {
                Final::Retry {
                    next_attempt: self.original.meta.attempt + 1,
                }
            }
            Some(_) => Final::DeadLetter,
        }
    }

    /// The failure that decided the disposition, if any.
    pub fn failure(&self) -> Option<Failure> {
        self.failure
            .lock()
            .expect("tracker lock poisoned")
            .as_ref()
            .map(|f| f.failure.clone())
    }

    /// The message to hand back for a delayed retry: the original, stamped with the time of its
    /// first failure (kept from an earlier retry if it has one), so the dead letter it may
    /// become reports when the trouble started.
    pub fn retry_copy(&self) -> Message {
        let mut m = self.original.clone();
        if !m.headers.contains_key(FIRST_FAILURE_HEADER) {
            let first = self
                .failure
                .lock()
                .expect("tracker lock poisoned")
                .as_ref()
                .map(|f| f.first);
            let ms = first
                .unwrap_or_else(SystemTime::now)
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            m.headers.insert(FIRST_FAILURE_HEADER.into(), ms.into());
        }
        m
    }

    /// The dead letter describing this delivery's failure.
    pub fn dead_letter(&self) -> DeadLetter {
        let slot = self.failure.lock().expect("tracker lock poisoned");
        let now = SystemTime::now();
        let f = slot.clone().unwrap_or_else(|| {
            StageFailure::now(Failure::new("unknown", "no failure recorded"), "runtime", 1)
        });
        let (reason, error) = if f.retryable {
            (
                "retries_exhausted".to_owned(),
                format!("{}: {}", f.failure.reason, f.failure.error),
            )
        } else {
            (f.failure.reason.to_string(), f.failure.error.clone())
        };
        let earlier = self
            .original
            .headers
            .get(FIRST_FAILURE_HEADER)
            .and_then(|h| h.as_i64())
            .map(|ms| SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64));
        DeadLetter {
            message: self.original.clone(),
            reason,
            error,
            attempts: f.attempts.max(self.original.meta.attempt),
            first_failure: earlier.map_or(f.first, |e| e.min(f.first)).min(now),
            last_failure: f.last,
            stage: f.stage,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permanent_failure_beats_retryable_and_keeps_extremes() {
        let t = Tracked::new(1, &Message::new("x"), None);
        t.expect(2);
        let mut a = StageFailure::now(Failure::unavailable("down"), "a", 3);
        a.retryable = true;
        t.fail(a);
        t.fail(StageFailure::now(Failure::rejected("bad row"), "b", 1));
        assert!(!t.complete_one());
        assert!(t.complete_one());
        assert_eq!(t.disposition(&RetryPolicy::default()), Final::DeadLetter);
        let dl = t.dead_letter();
        assert_eq!(dl.reason, "rejected");
        assert_eq!(dl.stage, "b");
        assert_eq!(dl.attempts, 3);
    }

    #[test]
    fn retryable_failure_asks_for_a_broker_retry_until_exhausted() {
        let mut m = Message::new("x");
        let t = Tracked::new(1, &m, None);
        let mut f = StageFailure::now(Failure::unavailable("down"), "a", 1);
        f.retryable = true;
        t.fail(f.clone());
        let policy = RetryPolicy {
            mode: RetryMode::Broker,
            ..RetryPolicy::default()
        };
        assert_eq!(t.disposition(&policy), Final::Retry { next_attempt: 2 });
        let in_process = RetryPolicy::default();
        assert_eq!(t.disposition(&in_process), Final::DeadLetter);
        m.meta.attempt = 5;
        let t = Tracked::new(1, &m, None);
        t.fail(f);
        assert_eq!(t.disposition(&policy), Final::DeadLetter);
        assert_eq!(t.dead_letter().reason, "retries_exhausted");
    }
}
