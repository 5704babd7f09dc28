//! What happened to a message: committed, failed for now, or failed for good.

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, SystemTime};

/// Why a message could not be handled, with the underlying error text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// A short, stable, snake_case category: `malformed_payload`, `missing_key`, `rejected`, ...
    pub reason: Cow<'static, str>,
    /// The error text (from the sink, the database, the decoder...).
    pub error: String,
}

impl Failure {
    /// A failure of this category with this error text.
    pub fn new(reason: impl Into<Cow<'static, str>>, error: impl Into<String>) -> Self {
        Failure {
            reason: reason.into(),
            error: error.into(),
        }
    }

    /// The payload could not be decoded.
    pub fn malformed(error: impl Into<String>) -> Self {
        Failure::new("malformed_payload", error)
    }

    /// The partition key could not be extracted.
    pub fn missing_key(error: impl Into<String>) -> Self {
        Failure::new("missing_key", error)
    }

    /// A sink or downstream refused the message.
    pub fn rejected(error: impl Into<String>) -> Self {
        Failure::new("rejected", error)
    }

    /// A sink or downstream could not be reached or timed out.
    pub fn unavailable(error: impl Into<String>) -> Self {
        Failure::new("unavailable", error)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.error)
    }
}

impl std::error::Error for Failure {}

/// The result of handing one message to a sink (or a processor).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Outcome {
    /// Committed: the message may be acknowledged (as far as this sink is concerned).
    #[default]
    Ok,
    /// Not committed, and trying again may succeed (a deadlock, a serialization failure, a
    /// refusal the destination may lift). Each try uses up one of the message's attempts.
    Transient(Failure),
    /// Not committed because the destination cannot be reached (connection refused or lost,
    /// pool timeout, server shutting down, circuit breaker open). Not the message's fault: the
    /// partition waits and tries again, the intake pauses, and no attempt is used up.
    Unavailable(Failure),
    /// Not committed, and trying again will not help (constraint violation, bad type).
    Permanent(Failure),
}

impl Outcome {
    /// A transient failure.
    pub fn transient(f: Failure) -> Self {
        Outcome::Transient(f)
    }

    /// A permanent failure.
    pub fn permanent(f: Failure) -> Self {
        Outcome::Permanent(f)
    }

    /// The destination cannot be reached.
    pub fn unavailable(f: Failure) -> Self {
        Outcome::Unavailable(f)
    }

    /// True when committed.
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok)
    }

    /// How bad this outcome is: Ok < Unavailable < Transient < Permanent. Fan-out keeps the
    /// worst.
    fn severity(&self) -> u8 {
        match self {
            Outcome::Ok => 0,
            Outcome::Unavailable(_) => 1,
            Outcome::Transient(_) => 2,
            Outcome::Permanent(_) => 3,
        }
    }

    /// Keeps the worse of the two outcomes (the first one on a tie).
    pub fn worst(self, other: Outcome) -> Outcome {
        if other.severity() > self.severity() {
            other
        } else {
            self
        }
    }

    /// The failure, if any.
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Outcome::Ok => None,
            Outcome::Transient(f) | Outcome::Unavailable(f) | Outcome::Permanent(f) => Some(f),
        }
    }
}

/// How the broker side should settle a delivery once the pipeline is done with it.
#[derive(Debug, Clone, PartialEq)]
pub enum Settlement {
    /// Every sink committed (or the message went to the dead-letter destination): acknowledge.
    Ack,
    /// Give the message back to the broker for redelivery now (shutdown before it settled).
    Requeue,
    /// Broker-side delayed retry: publish to the retry queue with this attempt number, then ack.
    Retry {
        /// The attempt the redelivered message will be (current attempt + 1).
        next_attempt: u32,
        /// How long the broker should hold it back.
        delay: Duration,
        /// What failed this time.
        failure: Failure,
    },
}

/// The header a delayed retry and a dead letter carry with the time of the first failure
/// (milliseconds since the Unix epoch).
pub const FIRST_FAILURE_HEADER: &str = "x-riverbed-first-failure-ms";

/// A message that will not be processed, with everything needed to understand and redrive it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The message as the source delivered it (original payload, headers and routing).
    pub message: crate::Message,
    /// Why it was dead-lettered: the failure's category.
    pub reason: String,
    /// The last error text.
    pub error: String,
    /// How many attempts were made.
    pub attempts: u32,
    /// When the first attempt failed.
    pub first_failure: SystemTime,
    /// When the last attempt failed.
    pub last_failure: SystemTime,
    /// The sink (or stage) that refused it.
    pub stage: String,
}

impl DeadLetter {
    /// The dead-letter facts as headers, for destinations that carry headers (queues, streams).
    pub fn headers(&self) -> crate::Headers {
        let mut h = self.message.headers.clone();
        let ms = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0)
        };
        h.insert("x-riverbed-reason".into(), self.reason.clone().into());
        h.insert("x-riverbed-error".into(), self.error.clone().into());
        h.insert("x-riverbed-attempts".into(), (self.attempts as i64).into());
        h.insert("x-riverbed-stage".into(), self.stage.clone().into());
        h.insert(FIRST_FAILURE_HEADER.into(), ms(self.first_failure).into());
        h.insert(
            "x-riverbed-last-failure-ms".into(),
            ms(self.last_failure).into(),
        );
        if let Some(x) = &self.message.meta.exchange {
            h.insert("x-riverbed-original-exchange".into(), x.clone().into());
        }
        if let Some(s) = &self.message.meta.subject {
            h.insert("x-riverbed-original-subject".into(), s.clone().into());
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_outcome_wins() {
        let t = Outcome::transient(Failure::unavailable("down"));
        let p = Outcome::permanent(Failure::rejected("bad"));
        assert_eq!(Outcome::Ok.worst(t.clone()), t);
        assert_eq!(t.clone().worst(p.clone()), p);
        assert_eq!(p.clone().worst(Outcome::Ok), p);
        assert_eq!(Outcome::Ok.worst(Outcome::Ok), Outcome::Ok);
        let u = Outcome::unavailable(Failure::unavailable("refused"));
        assert_eq!(u.clone().worst(t.clone()), t);
        assert_eq!(Outcome::Ok.worst(u.clone()), u);
    }
}
