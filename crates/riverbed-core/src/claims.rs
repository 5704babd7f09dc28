//! Exactly one of several redundant instances writes each message: a sink wrapped in a
//! [`ClaimedSink`] claims every message id in a shared [`ClaimStore`] before writing it, and
//! marks it done once its write is committed.
//!
//! Every instance of a redundant pipeline consumes its own copy of the stream. For each message
//! the first instance to claim its id writes it; the others see it claimed, wait until it is
//! done and then settle their copy without writing it. When the claimant dies before marking it
//! done, its claim expires after `claim_ttl` and another instance writes the message: nothing is
//! lost. That second write is the one duplicate this scheme can produce (a crash between commit
//! and mark); an idempotent sink (a versioned upsert, the PostgreSQL inbox) makes it harmless.
//!
//! Per-key order holds across instances: claims are taken in batch order and stop at the first
//! id another instance holds, so no instance writes a message before an earlier one of the same
//! copy of the stream has been written by somebody.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::message::Message;
use crate::outcome::{Failure, Outcome};
use crate::sink::{BatchOutcome, Sink};

/// What the store says about one id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This instance holds the claim: write the message.
    Won,
    /// Its write is committed (by this instance or another): settle without writing.
    Done,
    /// Another instance holds the claim: wait.
    Busy,
}

/// A store shared by the instances of a redundant pipeline (Redis `SET NX PX`, a table).
#[async_trait]
pub trait ClaimStore: Send + Sync + 'static {
    /// Claims `ids` in order for this instance. The answer may be shorter than `ids`: it stops
    /// after the first [`Claim::Busy`], and the ids after it are left unclaimed. An error
    /// means the store cannot be reached.
    async fn claim(&self, ids: &[String]) -> Result<Vec<Claim>, Failure>;

    /// Marks `ids` done: their writes are committed.
    async fn complete(&self, ids: &[String]) -> Result<(), Failure>;
}

/// Where a message's dedup id comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimId {
    /// The producer's message id.
    MessageId,
    /// A JSON pointer into the payload (a string or an integer).
    Pointer(String),
}

impl ClaimId {
    /// The id of `m`, or why it has none.
    pub fn of(&self, m: &Message) -> Result<String, Failure> {
        let missing = |what: &str| Failure::new("missing_dedup_id", what.to_owned());
        match self {
            ClaimId::MessageId => m
                .meta
                .message_id
                .clone()
                .filter(|id| !id.is_empty())
                .ok_or_else(|| missing("the message has no message id to deduplicate by")),
            ClaimId::Pointer(p) => {
                let json: serde_json::Value = serde_json::from_slice(&m.payload)
                    .map_err(|e| Failure::malformed(e.to_string()))?;
                match json.pointer(p) {
                    Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                    Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
                    _ => Err(missing(&format!(
                        "no string or number at {p} to deduplicate by"
                    ))),
                }
            }
        }
    }
}

/// A sink that writes only the messages this instance claimed.
pub struct ClaimedSink {
    inner: Arc<dyn Sink>,
    store: Arc<dyn ClaimStore>,
    id: ClaimId,
    /// Committed by `inner` but not yet marked done (the store failed): never written again.
    unmarked: Mutex<HashSet<String>>,
    /// How long a write waits for another instance's claim before it reports the wait.
    patience: Duration,
}

impl ClaimedSink {
    /// `inner`, writing only what it claims in `store`, by `id`.
    pub fn new(inner: Arc<dyn Sink>, store: Arc<dyn ClaimStore>, id: ClaimId) -> Self {
        ClaimedSink {
            inner,
            store,
            id,
            unmarked: Mutex::new(HashSet::new()),
            patience: Duration::from_secs(2),
        }
    }

    /// Polls the store while another instance holds the first claim of `ids`, up to the
    /// patience: most claims are done within milliseconds.
    async fn claim_patiently(&self, ids: &[String]) -> Result<Vec<Claim>, Failure> {
        let deadline = tokio::time::Instant::now() + self.patience;
        let mut pause = Duration::from_millis(5);
        loop {
            let claims = self.store.claim(ids).await?;
            let first_busy = claims.first() == Some(&Claim::Busy);
            if !first_busy || tokio::time::Instant::now() >= deadline {
                return Ok(claims);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }
}

#[async_trait]
impl Sink for ClaimedSink {
    async fn write(&self, batch: &[Message]) -> BatchOutcome {
        let mut outcomes = vec![Outcome::Ok; batch.len()];
        // Messages to consider, by index, with their ids; the ones without an id are refused.
        let mut pending: Vec<(usize, String)> = Vec::with_capacity(batch.len());
        for (i, m) in batch.iter().enumerate() {
            match self.id.of(m) {
                Ok(id) => pending.push((i, id)),
                Err(f) => outcomes[i] = Outcome::Permanent(f),
            }
        }
        let unmarked: Vec<String> = {
            let held = self
                .unmarked
                .lock()
                .expect("the unmarked set is not poisoned");
            pending
                .iter()
                .filter(|(_, id)| held.contains(id))
                .map(|(_, id)| id.clone())
                .collect()
        };
        if !unmarked.is_empty() {
            if let Err(f) = self.mark(&unmarked).await {
                return BatchOutcome::unavailable(f);
            }
            pending.retain(|(_, id)| !unmarked.contains(id));
        }
        let ids: Vec<String> = pending.iter().map(|(_, id)| id.clone()).collect();
        let claims = match self.claim_patiently(&ids).await {
            Ok(c) => c,
            Err(f) => return BatchOutcome::unavailable(f),
        };
        let waiting = Failure::new(
            "claimed_elsewhere",
            "another instance holds this message's claim; waiting until it is done or expires",
        );
        let mut won: Vec<(usize, String)> = Vec::new();
        // Later copies of an id in this batch (a replay next to the live message): this
        // instance's claim covers them all, so only the first is written, and each copy
        // settles as its first copy does.
        let mut copies: Vec<(usize, usize)> = Vec::new();
        for (n, (i, id)) in pending.into_iter().enumerate() {
            match claims.get(n) {
                Some(Claim::Won) => match won.iter().find(|(_, w)| *w == id) {
                    Some((first, _)) => copies.push((i, *first)),
                    None => won.push((i, id)),
                },
                Some(Claim::Done) => {}
                Some(Claim::Busy) | None => outcomes[i] = Outcome::Unavailable(waiting.clone()),
            }
        }
        if won.is_empty() {
            return BatchOutcome::Each(outcomes);
        }
        let writes: Vec<Message> = won.iter().map(|(i, _)| batch[*i].clone()).collect();
        let written = self.inner.write(&writes).await;
        let mut committed = Vec::with_capacity(won.len());
        for (n, (i, id)) in won.into_iter().enumerate() {
            let outcome = written.get(n);
            if outcome == Outcome::Ok {
                committed.push(id);
            }
            outcomes[i] = outcome;
        }
        for (i, first) in copies {
            outcomes[i] = outcomes[first].clone();
        }
        if let Err(f) = self.mark(&committed).await {
            // Committed: retried, they are only marked, never written again.
            for (i, m) in batch.iter().enumerate() {
                if matches!(self.id.of(m), Ok(id) if committed.contains(&id)) {
                    outcomes[i] = Outcome::Unavailable(f.clone());
                }
            }
        }
        BatchOutcome::Each(outcomes)
    }

    async fn close(&self) -> Result<(), Failure> {
        self.inner.close().await
    }
}

impl ClaimedSink {
    /// Marks `ids` done; on failure remembers them as committed so a retry only marks them.
    async fn mark(&self, ids: &[String]) -> Result<(), Failure> {
        if ids.is_empty() {
            return Ok(());
        }
        let result = self.store.complete(ids).await;
        let mut held = self
            .unmarked
            .lock()
            .expect("the unmarked set is not poisoned");
        match &result {
            Ok(()) => ids.iter().for_each(|id| {
                held.remove(id);
            }),
            Err(_) => held.extend(ids.iter().cloned()),
        }
        result
    }
}

#[cfg(test)]
mod tests;
