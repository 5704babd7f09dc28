//! `riverbed dlq` on an embedded log's dead-letter table (each command is one transaction).

use std::path::Path;
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use riverbed_embedded::{
    Durability, EmbeddedLog, StoredDeadLetter, list_selected, purge_dead_letters, redrive_selected,
};

use super::payload_fields;
use super::select::{Selection, rfc3339};

/// The embedded form of a selection; its ids must be the table's integer ids.
fn selection(topic: Option<String>, s: &Selection) -> Result<riverbed_embedded::Selection> {
    let ids = s
        .ids
        .iter()
        .map(|i| {
            i.parse::<i64>().with_context(|| {
                format!("`{i}` is not an id of an embedded log's dead letter (a number)")
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(riverbed_embedded::Selection {
        topic,
        ids: (!ids.is_empty()).then_some(ids),
        reason: s.reason.clone(),
        stage: s.stage.clone(),
        since_ms: s.since_ms,
    })
}

async fn open(file: &Path) -> Result<EmbeddedLog> {
    if !file.exists() {
        bail!("{}: no such embedded log", file.display());
    }
    Ok(EmbeddedLog::open(file, Durability::Full).await?)
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A stored letter as JSON; `full` keeps the whole payload and the headers.
fn json(l: &StoredDeadLetter, full: bool) -> serde_json::Value {
    let d = &l.letter;
    let mut v = serde_json::json!({
        "id": l.id,
        "topic": l.topic,
        "offset": d.message.meta.position,
        "key": d.message.key,
        "message_id": d.message.meta.message_id,
        "reason": d.reason,
        "error": d.error,
        "attempts": d.attempts,
        "stage": d.stage,
        "first_failure": rfc3339(ms(d.first_failure)),
        "last_failure": rfc3339(ms(d.last_failure)),
    });
    let o = v.as_object_mut().expect("an object");
    if full {
        o.insert(
            "headers".into(),
            serde_json::to_value(&d.message.headers).unwrap_or_default(),
        );
    }
    o.extend(payload_fields(&d.message.payload, (!full).then_some(200)));
    v
}

/// Prints up to `limit` selected letters, oldest first, one JSON line each.
pub async fn list(file: &Path, topic: Option<String>, s: &Selection, limit: u32) -> Result<()> {
    let log = open(file).await?;
    for l in list_selected(&log, &selection(topic, s)?, limit.into()).await? {
        println!("{}", json(&l, false));
    }
    Ok(())
}

/// Prints the letter `id` in full.
pub async fn show(file: &Path, topic: Option<String>, id: &str) -> Result<()> {
    let log = open(file).await?;
    let s = Selection {
        ids: vec![id.to_owned()],
        ..Selection::default()
    };
    let found = list_selected(&log, &selection(topic, &s)?, 1).await?;
    let Some(l) = found.first() else {
        bail!("no dead letter {id} in {}", file.display())
    };
    println!("{:#}", json(l, true));
    Ok(())
}

/// Moves the selected letters back into their topics, in one transaction.
pub async fn redrive(file: &Path, topic: Option<String>, s: &Selection) -> Result<()> {
    let log = open(file).await?;
    let into = topic.clone().unwrap_or_else(|| "their topics".into());
    let moved = redrive_selected(&log, selection(topic, s)?).await?;
    println!("redrove {moved} dead letters into {into}");
    Ok(())
}

/// Deletes the selected letters, in one transaction.
pub async fn purge(file: &Path, topic: Option<String>, s: &Selection) -> Result<()> {
    let log = open(file).await?;
    let deleted = purge_dead_letters(&log, selection(topic, s)?).await?;
    println!(
        "{}",
        serde_json::json!({ "purged": deleted, "from": file.display().to_string() })
    );
    Ok(())
}
