//! Producer tracking as a feed's clients must do it, as a state machine driven by alives,
//! `snapshot_complete` messages, reconnects and time; it decides, the caller acts (HTTP,
//! logs, metrics, the state table).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Why a producer is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// This instance just started: what the producer sent before is unknown.
    Start,
    /// No alive within `alive_timeout`.
    AliveTimeout,
    /// An alive said `subscribed = 0`.
    Unsubscribed,
    /// The source reconnected: its server-named queue, and whatever it held, is gone.
    Reconnect,
    /// No `snapshot_complete` within `recovery.timeout` of the request.
    RecoveryTimeout,
    /// The recovery request failed (refused, unreachable).
    RecoveryFailed,
}

impl Reason {
    /// The reason's name in logs, metrics and the state table.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Start => "start",
            Reason::AliveTimeout => "alive_timeout",
            Reason::Unsubscribed => "unsubscribed",
            Reason::Reconnect => "reconnect",
            Reason::RecoveryTimeout => "recovery_timeout",
            Reason::RecoveryFailed => "recovery_failed",
        }
    }
}

/// Where a producer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Messages may be missing; a recovery is due after the next good alive.
    Down(Reason),
    /// A recovery was requested; up when its `snapshot_complete` arrives.
    Recovering {
        /// The request's id.
        request_id: u64,
        /// When it was sent.
        since: Instant,
    },
    /// Everything the producer sent is here (or on its way through the pipeline).
    Up,
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// POST the recovery request.
    Request {
        /// The producer.
        producer: String,
        /// Replay from this alive timestamp (`None`: no good alive is known: everything).
        after: Option<u64>,
        /// The request id its `snapshot_complete` will carry.
        request_id: u64,
    },
    /// The producer went down.
    Down {
        /// The producer.
        producer: String,
        /// Why.
        reason: Reason,
    },
    /// The producer is up again.
    Up {
        /// The producer.
        producer: String,
        /// The recovery that brought it up.
        request_id: u64,
        /// How long it was down.
        down_for: Duration,
    },
}

/// The timing rules.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// A producer without an alive for this long is down.
    pub alive_timeout: Duration,
    /// At most one recovery request per producer in this time.
    pub min_interval: Duration,
    /// A recovery without `snapshot_complete` after this long is given up (down again).
    pub recovery_timeout: Duration,
}

#[derive(Debug)]
struct Producer {
    status: Status,
    down_since: Instant,
    last_alive: Instant,
    /// A good alive came while down: request a recovery as soon as the interval allows.
    recovery_due: bool,
    last_request: Option<Instant>,
    /// The last good alive whose earlier messages are all committed (and stored).
    committed: Option<u64>,
}

/// Every tracked producer.
pub struct Tracker {
    producers: BTreeMap<String, Producer>,
    timing: Timing,
    sessions: u64,
    actions: Vec<Action>,
    next_id: Box<dyn FnMut() -> u64 + Send>,
}

impl Tracker {
    /// Every producer down (reason `start`), with its stored last good alive, if any.
    /// `next_id` makes request ids (unique across instances and restarts).
    pub fn new(
        producers: &[String],
        stored: &BTreeMap<String, u64>,
        timing: Timing,
        next_id: Box<dyn FnMut() -> u64 + Send>,
        now: Instant,
    ) -> Self {
        let producers = producers
            .iter()
            .map(|p| {
                let state = Producer {
                    status: Status::Down(Reason::Start),
                    down_since: now,
                    last_alive: now,
                    recovery_due: false,
                    last_request: None,
                    committed: stored.get(p).copied(),
                };
                (p.clone(), state)
            })
            .collect();
        Tracker {
            producers,
            timing,
            sessions: 1,
            actions: Vec::new(),
            next_id,
        }
    }

    /// The producer's status.
    #[cfg(test)]
    pub fn status(&self, producer: &str) -> Option<Status> {
        self.producers.get(producer).map(|p| p.status)
    }

    /// An alive arrived. True when it is good to store once the messages before it are
    /// committed: subscribed while the producer is up.
    pub fn alive(&mut self, producer: &str, subscribed: bool, now: Instant) -> bool {
        let Some(p) = self.producers.get_mut(producer) else {
            return false;
        };
        p.last_alive = now;
        match (subscribed, p.status) {
            (false, Status::Down(_)) => {
                p.recovery_due = false;
                false
            }
            (false, _) => {
                self.down(producer, Reason::Unsubscribed, now);
                false
            }
            (true, Status::Up) => true,
            (true, Status::Down(_)) => {
                p.recovery_due = true;
                self.request_if_due(producer, now);
                false
            }
            (true, Status::Recovering { .. }) => false,
        }
    }

    /// A `snapshot_complete` arrived: the producer is up if it answers its pending request.
    /// Another instance's (or an older) request is ignored.
    pub fn snapshot_complete(&mut self, producer: &str, request_id: u64, now: Instant) -> bool {
        let Some(p) = self.producers.get_mut(producer) else {
            return false;
        };
        match p.status {
            Status::Recovering { request_id: id, .. } if id == request_id => {
                p.status = Status::Up;
                self.actions.push(Action::Up {
                    producer: producer.to_owned(),
                    request_id,
                    down_for: now.saturating_duration_since(p.down_since),
                });
                true
            }
            _ => false,
        }
    }

    /// The source has opened `sessions` sessions so far: each new one is a reconnect, and every
    /// producer is down.
    pub fn sessions(&mut self, sessions: u64, now: Instant) {
        if sessions <= self.sessions {
            return;
        }
        self.sessions = sessions;
        let names: Vec<String> = self.producers.keys().cloned().collect();
        for p in names {
            self.down(&p, Reason::Reconnect, now);
        }
    }

    /// Applies the timeouts and requests a recovery that the interval held back.
    pub fn tick(&mut self, now: Instant) {
        let t = self.timing;
        let names: Vec<String> = self.producers.keys().cloned().collect();
        for name in names {
            let p = &self.producers[&name];
            let silent = now.saturating_duration_since(p.last_alive) >= t.alive_timeout;
            match p.status {
                Status::Up | Status::Recovering { .. } if silent => {
                    self.down(&name, Reason::AliveTimeout, now)
                }
                Status::Recovering { since, .. }
                    if now.saturating_duration_since(since) >= t.recovery_timeout =>
                {
                    self.down(&name, Reason::RecoveryTimeout, now)
                }
                Status::Down(_) => self.request_if_due(&name, now),
                _ => {}
            }
        }
    }

    /// The request `request_id` failed: down again; the next good alive after the interval
    /// asks again.
    pub fn request_failed(&mut self, producer: &str, request_id: u64, now: Instant) {
        if let Some(p) = self.producers.get(producer)
            && matches!(p.status, Status::Recovering { request_id: id, .. } if id == request_id)
        {
            self.down(producer, Reason::RecoveryFailed, now);
        }
    }

    /// `timestamp`, a good alive, is stored and every message before it committed: the next
    /// recovery starts there.
    pub fn committed(&mut self, producer: &str, timestamp: u64) {
        if let Some(p) = self.producers.get_mut(producer) {
            p.committed = Some(p.committed.map_or(timestamp, |c| c.max(timestamp)));
        }
    }

    /// What the caller must do, in order; drained.
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    fn down(&mut self, producer: &str, reason: Reason, now: Instant) {
        let p = self
            .producers
            .get_mut(producer)
            .expect("a tracked producer");
        if !matches!(p.status, Status::Down(_)) {
            p.down_since = now;
            self.actions.push(Action::Down {
                producer: producer.to_owned(),
                reason,
            });
        }
        p.status = Status::Down(reason);
        p.recovery_due = false;
    }

    fn request_if_due(&mut self, producer: &str, now: Instant) {
        let min = self.timing.min_interval;
        let p = self
            .producers
            .get_mut(producer)
            .expect("a tracked producer");
        let allowed = p
            .last_request
            .is_none_or(|at| now.saturating_duration_since(at) >= min);
        if !(p.recovery_due && allowed) {
            return;
        }
        let request_id = (self.next_id)();
        p.recovery_due = false;
        p.last_request = Some(now);
        p.status = Status::Recovering {
            request_id,
            since: now,
        };
        self.actions.push(Action::Request {
            producer: producer.to_owned(),
            after: p.committed,
            request_id,
        });
    }
}

#[cfg(test)]
#[path = "producer_tests.rs"]
mod tests;
