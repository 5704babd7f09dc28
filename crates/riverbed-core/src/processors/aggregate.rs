//! Running count / sum / min / max / mean per key, emitted as snapshots on a named stream.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::message::Message;
use crate::outcome::Failure;
use crate::processor::{Emitter, Processor};

/// The running aggregate of one key.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AggregateState {
    /// Values seen.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
    /// The source position of the last value counted, when the source has positions.
    pub last_position: Option<u64>,
}

impl AggregateState {
    fn first(v: f64, position: Option<u64>) -> Self {
        AggregateState {
            count: 1,
            sum: v,
            min: v,
            max: v,
            last_position: position,
        }
    }

    fn add(&mut self, v: f64, position: Option<u64>) {
        self.count += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        if position.is_some() {
            self.last_position = position;
        }
    }

    /// The mean of the values seen.
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }
}

/// Keeps a running aggregate of a numeric field per key and emits the new state on `output`
/// after every message; the message itself passes on unchanged.
///
/// Replays are not counted twice: when the source has positions and state was restored from
/// committed output ([`RunningAggregate::with_state`]), a message at or before a key's
/// `last_position` has already been counted and only passes through. A source without
/// positions (a RabbitMQ queue) can take them from the message instead
/// ([`RunningAggregate::position_from`]), such as a sequence number that grows per key.
pub struct RunningAggregate {
    name: String,
    field: String,
    output: String,
    position_from: Option<String>,
    state: HashMap<String, AggregateState>,
}

impl RunningAggregate {
    /// Aggregates the number at JSON pointer `field`, emitting on stream `output`.
    pub fn new(name: &str, field: &str, output: &str) -> Self {
        RunningAggregate {
            name: name.into(),
            field: field.into(),
            output: output.into(),
            position_from: None,
            state: HashMap::new(),
        }
    }

    /// Takes each message's position from the unsigned integer at JSON pointer `field` instead
    /// of the source's: values of one key must grow in delivery order, so that a redelivered
    /// message (at or before the key's `last_position`) is recognised and not counted twice.
    pub fn position_from(mut self, field: &str) -> Self {
        self.position_from = Some(field.into());
        self
    }

    /// The message's position: from its field when one is configured, else the source's.
    fn position(&self, msg: &mut Message) -> Result<Option<u64>, Failure> {
        let Some(field) = &self.position_from else {
            return Ok(msg.meta.position);
        };
        match msg.pointer(field)? {
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                Failure::new(
                    "invalid_field",
                    format!("{field} is {v}, not an unsigned integer position"),
                )
            }),
            None => Err(Failure::new(
                "missing_field",
                format!("no position at {field}"),
            )),
        }
    }

    /// Starts from state recovered from what a sink committed before a restart.
    pub fn with_state(mut self, state: HashMap<String, AggregateState>) -> Self {
        self.state = state;
        self
    }

    fn snapshot(key: &str, s: &AggregateState) -> Message {
        let mut m = Message::from_json(json!({
            "key": key,
            "count": s.count,
            "sum": s.sum,
            "min": s.min,
            "max": s.max,
            "mean": s.mean(),
            "last_position": s.last_position,
        }));
        m.key = Some(key.to_owned());
        m.meta.position = s.last_position;
        m
    }
}

impl Processor for RunningAggregate {
    fn name(&self) -> &str {
        &self.name
    }

    fn outputs(&self) -> Vec<String> {
        vec![self.output.clone()]
    }

    fn process(&mut self, mut msg: Message, out: &mut Emitter) -> Result<Option<Message>, Failure> {
        let key = msg
            .key
            .clone()
            .ok_or_else(|| Failure::missing_key(format!("{} needs a keyed message", self.name)))?;
        let value = match msg.pointer(&self.field)? {
            Some(v) => v.as_f64().ok_or_else(|| {
                Failure::new(
                    "invalid_field",
                    format!("{} is {v}, not a number", self.field),
                )
            })?,
            None => {
                return Err(Failure::new(
                    "missing_field",
                    format!("no field at {}", self.field),
                ));
            }
        };
        let position = self.position(&mut msg)?;
        let state = match self.state.get_mut(&key) {
            Some(s) => {
                let replay =
                    matches!((position, s.last_position), (Some(p), Some(last)) if p <= last);
                if replay {
                    return Ok(Some(msg));
                }
                s.add(value, position);
                *s
            }
            None => *self
                .state
                .entry(key.clone())
                .or_insert(AggregateState::first(value, position)),
        };
        out.emit(&self.output, Self::snapshot(&key, &state));
        Ok(Some(msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn reading(key: &str, v: f64, pos: u64) -> Message {
        let mut m = Message::new(format!(r#"{{"value":{v}}}"#)).with_key(key);
        m.meta.position = Some(pos);
        m
    }

    #[test]
    fn aggregates_per_key_and_skips_replays() {
        let streams: Arc<[String]> = vec!["main".to_owned(), "agg".to_owned()].into();
        let mut out = Emitter::new(streams);
        let mut a = RunningAggregate::new("agg", "/value", "agg");
        for (v, p) in [(1.0, 1), (5.0, 2), (3.0, 3)] {
            a.process(reading("s1", v, p), &mut out).unwrap();
        }
        a.process(reading("s1", 100.0, 2), &mut out).unwrap();
        let last = out.out.last().unwrap().1.json().unwrap().clone();
        assert_eq!(last["count"], 3);
        assert_eq!(last["min"], 1.0);
        assert_eq!(last["max"], 5.0);
        assert_eq!(last["mean"], 3.0);
        assert_eq!(out.out.len(), 3, "the replay emitted nothing");
        let err = a
            .process(Message::new(r#"{"value":"x"}"#).with_key("s1"), &mut out)
            .unwrap_err();
        assert_eq!(err.reason, "invalid_field");
    }

    #[test]
    fn positions_taken_from_a_field_skip_replays_too() {
        let streams: Arc<[String]> = vec!["main".to_owned(), "agg".to_owned()].into();
        let mut out = Emitter::new(streams);
        let mut a = RunningAggregate::new("agg", "/value", "agg").position_from("/seq");
        let msg = |v: f64, seq: u64| {
            Message::new(format!(r#"{{"value":{v},"seq":{seq}}}"#)).with_key("s1")
        };
        for (v, seq) in [(2.0, 10), (4.0, 12), (100.0, 12), (6.0, 13)] {
            a.process(msg(v, seq), &mut out).unwrap();
        }
        let last = out.out.last().unwrap().1.json().unwrap().clone();
        assert_eq!(last["count"], 3, "the replay of seq 12 was not counted");
        assert_eq!(last["max"], 6.0);
        assert_eq!(last["last_position"], 13);
        let err = a
            .process(
                Message::new(r#"{"value":1,"seq":-1}"#).with_key("s1"),
                &mut out,
            )
            .unwrap_err();
        assert_eq!(err.reason, "invalid_field");
        let err = a
            .process(Message::new(r#"{"value":1}"#).with_key("s1"), &mut out)
            .unwrap_err();
        assert_eq!(err.reason, "missing_field");
    }
}
