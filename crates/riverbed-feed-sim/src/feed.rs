//! The simulated producers: their odds history, per-market sequences, alive modes, and the
//! JSON messages they send.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Value, json};

/// One odds change of one market of one event, as a producer published it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OddsChange {
    /// The producer that sent it.
    pub producer: u32,
    /// The sport event (`sr:match:<event>` on the wire).
    pub event: u32,
    /// The market within the event.
    pub market: u32,
    /// The market's sequence: 1 for its first change, growing by one per change.
    pub seq: u64,
    /// Home odds.
    pub home: f64,
    /// Away odds.
    pub away: f64,
    /// Milliseconds since the epoch; never lower than the producer's previous message.
    pub timestamp: u64,
}

impl OddsChange {
    /// The message id: the same for the live message and every replay of it.
    pub fn message_id(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.producer, self.event, self.market, self.seq
        )
    }

    /// The routing key: `odds_change.<producer>.<event>`.
    pub fn routing_key(&self) -> String {
        format!("odds_change.{}.{}", self.producer, self.event)
    }

    /// The JSON body; a replay carries `"replay": true`.
    pub fn body(&self, replay: bool) -> Value {
        let mut v = json!({
            "type": "odds_change",
            "producer": self.producer,
            "event": format!("sr:match:{}", self.event),
            "market": self.market,
            "seq": self.seq,
            "home": self.home,
            "away": self.away,
            "timestamp": self.timestamp,
        });
        if replay {
            v["replay"] = json!(true);
        }
        v
    }
}

/// What a producer's alive messages say for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AliveMode {
    /// An alive every interval with `subscribed = 1`.
    Normal,
    /// No alive at all (a producer, or its link, that went quiet).
    Silent,
    /// Alives with `subscribed = 0`: the producer lost this client's subscription.
    Unsubscribed,
}

/// An alive message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alive {
    /// The producer.
    pub producer: u32,
    /// Milliseconds since the epoch: everything the producer sent before carries at most this.
    pub timestamp: u64,
    /// 1, or 0 when the producer no longer serves this client.
    pub subscribed: u8,
}

impl Alive {
    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({
            "type": "alive",
            "producer": self.producer,
            "timestamp": self.timestamp,
            "subscribed": self.subscribed,
        })
    }
}

/// A recovery request the simulator received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecoveryRequest {
    /// The producer asked.
    pub producer: u32,
    /// Replay from this timestamp on (`None`: everything).
    pub after: Option<u64>,
    /// The client's request id, echoed by `snapshot_complete`.
    pub request_id: u64,
    /// Odds changes replayed.
    pub replayed: usize,
}

#[derive(Debug)]
struct Producer {
    history: Vec<OddsChange>,
    seqs: HashMap<(u32, u32), u64>,
    last_ts: u64,
    mode: AliveMode,
    mode_until: Option<Instant>,
    done: bool,
}

/// Every producer's state, shared by the publishing loops and the HTTP endpoints.
#[derive(Debug)]
pub struct Feed {
    producers: BTreeMap<u32, Mutex<Producer>>,
    recoveries: Mutex<Vec<RecoveryRequest>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Feed {
    /// A feed of these producers, with nothing published yet.
    pub fn new(producers: &[u32]) -> Self {
        let producers = producers
            .iter()
            .map(|&p| {
                let state = Producer {
                    history: Vec::new(),
                    seqs: HashMap::new(),
                    last_ts: 0,
                    mode: AliveMode::Normal,
                    mode_until: None,
                    done: false,
                };
                (p, Mutex::new(state))
            })
            .collect();
        Feed {
            producers,
            recoveries: Mutex::new(Vec::new()),
        }
    }

    fn producer(&self, id: u32) -> Option<std::sync::MutexGuard<'_, Producer>> {
        self.producers
            .get(&id)
            .map(|p| p.lock().expect("producer lock"))
    }

    /// The producers' ids.
    pub fn producer_ids(&self) -> Vec<u32> {
        self.producers.keys().copied().collect()
    }

    /// Records the next odds change of `event`/`market` (its next sequence, a timestamp not
    /// below the producer's last) in the history and returns it, to be published.
    pub fn next_odds(
        &self,
        producer: u32,
        event: u32,
        market: u32,
        odds: (f64, f64),
    ) -> OddsChange {
        let mut p = self.producer(producer).expect("a known producer");
        let seq = p.seqs.entry((event, market)).or_insert(0);
        *seq += 1;
        let seq = *seq;
        p.last_ts = p.last_ts.max(now_ms());
        let change = OddsChange {
            producer,
            event,
            market,
            seq,
            home: odds.0,
            away: odds.1,
            timestamp: p.last_ts,
        };
        p.history.push(change.clone());
        change
    }

    /// The alive `producer` sends now, if its mode sends one. A mode set for a while returns
    /// to normal when its time is up.
    pub fn alive(&self, producer: u32) -> Option<Alive> {
        let mut p = self.producer(producer)?;
        if p.mode_until.is_some_and(|u| Instant::now() >= u) {
            p.mode = AliveMode::Normal;
            p.mode_until = None;
        }
        p.last_ts = p.last_ts.max(now_ms());
        let subscribed = match p.mode {
            AliveMode::Silent => return None,
            AliveMode::Unsubscribed => 0,
            AliveMode::Normal => 1,
        };
        Some(Alive {
            producer,
            timestamp: p.last_ts,
            subscribed,
        })
    }

    /// Sets `producer`'s alive mode, for `duration` (then normal again) or until changed.
    /// False for an unknown producer.
    pub fn set_mode(&self, producer: u32, mode: AliveMode, duration: Option<Duration>) -> bool {
        let Some(mut p) = self.producer(producer) else {
            return false;
        };
        p.mode = mode;
        p.mode_until = duration.map(|d| Instant::now() + d);
        true
    }

    /// The odds changes of `producer` with a timestamp at or after `after` (all without it),
    /// in publishing order. `None` for an unknown producer.
    pub fn since(&self, producer: u32, after: Option<u64>) -> Option<Vec<OddsChange>> {
        let p = self.producer(producer)?;
        let from = after.unwrap_or(0);
        let start = p.history.partition_point(|c| c.timestamp < from);
        Some(p.history[start..].to_vec())
    }

    /// Every odds change `producer` published, in order.
    pub fn history(&self, producer: u32) -> Vec<OddsChange> {
        self.since(producer, None).unwrap_or_default()
    }

    /// Marks `producer` as having published all its odds changes.
    pub fn finish(&self, producer: u32) {
        if let Some(mut p) = self.producer(producer) {
            p.done = true;
        }
    }

    /// Every producer has published all its odds changes.
    pub fn all_finished(&self) -> bool {
        self.producers
            .values()
            .all(|p| p.lock().expect("producer lock").done)
    }

    /// Records a recovery request.
    pub fn record_recovery(&self, request: RecoveryRequest) {
        self.recoveries
            .lock()
            .expect("recoveries lock")
            .push(request);
    }

    /// The recovery requests received so far.
    pub fn recoveries(&self) -> Vec<RecoveryRequest> {
        self.recoveries.lock().expect("recoveries lock").clone()
    }

    /// A summary of what was published: per producer, odds changes sent and each market's
    /// last sequence.
    pub fn published(&self) -> Value {
        let mut out = serde_json::Map::new();
        for (id, p) in &self.producers {
            let p = p.lock().expect("producer lock");
            let markets: BTreeMap<String, u64> = p
                .seqs
                .iter()
                .map(|((e, m), s)| (format!("sr:match:{e}/{m}"), *s))
                .collect();
            out.insert(
                id.to_string(),
                json!({"odds_changes": p.history.len(), "finished": p.done, "markets": markets}),
            );
        }
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_grow_per_market_and_replays_start_at_the_timestamp() {
        let feed = Feed::new(&[1]);
        let a = feed.next_odds(1, 7, 3, (1.5, 2.5));
        let b = feed.next_odds(1, 7, 4, (1.5, 2.5));
        let c = feed.next_odds(1, 7, 3, (1.6, 2.4));
        assert_eq!((a.seq, b.seq, c.seq), (1, 1, 2));
        assert!(a.timestamp <= b.timestamp && b.timestamp <= c.timestamp);
        assert_eq!(a.message_id(), "1:7:3:1");
        assert_eq!(feed.since(1, Some(c.timestamp)).unwrap().last(), Some(&c));
        assert_eq!(feed.since(1, None).unwrap().len(), 3);
        assert!(feed.since(2, None).is_none());
        assert_eq!(c.body(true)["replay"], true);
        assert!(c.body(false).get("replay").is_none());
    }

    #[test]
    fn alive_modes_silence_or_unsubscribe_for_a_while() {
        let feed = Feed::new(&[1]);
        assert_eq!(feed.alive(1).unwrap().subscribed, 1);
        assert!(feed.set_mode(1, AliveMode::Silent, None));
        assert!(feed.alive(1).is_none());
        feed.set_mode(1, AliveMode::Unsubscribed, Some(Duration::from_secs(3600)));
        assert_eq!(feed.alive(1).unwrap().subscribed, 0);
        feed.set_mode(1, AliveMode::Unsubscribed, Some(Duration::ZERO));
        assert_eq!(feed.alive(1).unwrap().subscribed, 1, "back to normal");
        assert!(!feed.set_mode(9, AliveMode::Silent, None));
    }
}
