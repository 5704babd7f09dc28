//! The source of truth: CRUD events of many entities, each entity's versions in order, and
//! what the replica must hold once they are applied.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// An entity's final state: its last version and whether it ends deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Final {
    /// The last version.
    pub version: i64,
    /// Deleted by its last event.
    pub deleted: bool,
}

/// An event as published: routing key, message id, body.
pub type Event = (String, String, Value);

/// Events of `entities` entities (`create`, updates, and a `delete` for every fifth one), an
/// entity's versions back to back, as a system of record emits a burst of changes to one
/// row: (routing key, message id, body). Also the final state of each `<entity>:<id>`.
pub fn events(entities: u32) -> (Vec<Event>, BTreeMap<String, Final>) {
    let mut out = Vec::new();
    let mut truth = BTreeMap::new();
    for n in 0..entities {
        let (entity, id) = (
            ["customer", "order", "invoice"][n as usize % 3],
            format!("{n}"),
        );
        let key = format!("{entity}:{id}");
        let updates = 2 + n % 4;
        let mut version = 0;
        for v in 1..=updates + 1 {
            version = i64::from(v);
            let op = if v == 1 { "create" } else { "update" };
            let body = json!({"entity": entity, "id": id, "key": key, "op": op, "version": version, "data": {"n": n, "v": v}});
            out.push((key.clone(), format!("{key}@{version}"), body));
        }
        let deleted = n % 5 == 0;
        if deleted {
            version += 1;
            let body =
                json!({"entity": entity, "id": id, "key": key, "op": "delete", "version": version});
            out.push((key.clone(), format!("{key}@{version}"), body));
        }
        truth.insert(key, Final { version, deleted });
    }
    (out, truth)
}
