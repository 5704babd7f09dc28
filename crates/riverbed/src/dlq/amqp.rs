//! `riverbed dlq` on a RabbitMQ dead-letter queue.
//!
//! Every command browses the queue with one channel that takes letters with `basic.get` and
//! does not acknowledge them (see [`riverbed_amqp::Browser`]): `list` and `show` close it and
//! every letter goes back in its place; `purge` acknowledges (deletes) the selected ones;
//! `redrive` acknowledges a letter only after the broker confirmed its copy. Letters not
//! selected, or whose copy failed, stay unacknowledged until the end, so one run never takes
//! a letter twice, and go back untouched. A run takes at most the letters the queue held when
//! it started, and leaves alone the copies it redrove itself if they come back meanwhile.

use anyhow::{Context, Result, bail};
use indicatif::ProgressBar;
use riverbed_amqp::{Browser, DeadLetterQueue, QueuedLetter, Redriver};

use super::payload_fields;
use super::select::{Selection, rfc3339};

/// A letter's id: its message id, else `h-` and a digest of its payload and dead-letter facts
/// (the same on every listing).
pub fn id(l: &QueuedLetter) -> String {
    if let Some(m) = l.message_id.as_deref().filter(|m| !m.is_empty()) {
        return m.to_owned();
    }
    let mut bytes = l.payload.to_vec();
    for part in [
        Some(l.reason.as_str()),
        l.error.as_deref(),
        l.original_routing_key.as_deref(),
    ] {
        bytes.push(0);
        bytes.extend_from_slice(part.unwrap_or("").as_bytes());
    }
    bytes.extend_from_slice(&l.last_failure_ms.unwrap_or(0).to_le_bytes());
    format!("h-{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes))
}

fn selected(s: &Selection, l: &QueuedLetter) -> bool {
    s.matches(&id(l), &l.reason, l.stage.as_deref(), l.last_failure_ms)
}

/// A letter as JSON; `full` keeps the whole payload and every header.
fn json(l: &QueuedLetter, full: bool) -> serde_json::Value {
    let mut v = serde_json::json!({
        "id": id(l),
        "message_id": l.message_id,
        "reason": l.reason,
        "error": l.error,
        "attempts": l.attempts,
        "stage": l.stage,
        "first_failure": l.first_failure_ms.and_then(rfc3339),
        "last_failure": l.last_failure_ms.and_then(rfc3339),
        "original_exchange": l.original_exchange,
        "original_routing_key": l.original_routing_key,
        "original_queue": l.original_queue,
    });
    let o = v.as_object_mut().expect("an object");
    if full {
        o.insert(
            "headers".into(),
            serde_json::to_value(&l.headers).unwrap_or_default(),
        );
    }
    o.extend(payload_fields(&l.payload, (!full).then_some(200)));
    v
}

async fn browse(queue: &DeadLetterQueue) -> Result<Browser> {
    queue
        .browse()
        .await
        .with_context(|| format!("opening dead-letter queue `{}`", queue.queue()))
}

/// Gives the letters back; the error of `result` wins over one of the close.
async fn finish<T>(browser: Browser, result: Result<T>) -> Result<T> {
    let closed = browser.close().await;
    let value = result?;
    closed.context("giving the letters back")?;
    Ok(value)
}

/// Prints up to `limit` selected letters, in queue order, one JSON line each.
pub async fn list(queue: &DeadLetterQueue, s: &Selection, limit: u32) -> Result<()> {
    let mut b = browse(queue).await?;
    let listed = async {
        let mut shown = 0;
        while shown < limit
            && let Some(l) = b.next().await?
        {
            if selected(s, &l) {
                println!("{}", json(&l, false));
                shown += 1;
            }
        }
        Ok::<_, anyhow::Error>(shown)
    }
    .await;
    let (depth, taken) = (b.depth(), b.taken());
    let shown = finish(b, listed).await?;
    tracing::info!(queue = %queue.queue(), letters = depth, looked_at = taken, shown, "Listed");
    Ok(())
}

/// Prints every letter whose id is `id`, in full.
pub async fn show(queue: &DeadLetterQueue, s: &Selection, id: &str) -> Result<()> {
    let mut b = browse(queue).await?;
    let shown = async {
        let mut shown = 0;
        while let Some(l) = b.next().await? {
            if selected(s, &l) {
                println!("{:#}", json(&l, true));
                shown += 1;
            }
        }
        Ok::<_, anyhow::Error>(shown)
    }
    .await;
    let taken = b.taken();
    if finish(b, shown).await? == 0 {
        bail!(
            "no dead letter `{id}` among the {taken} letters of queue `{}`",
            queue.queue()
        );
    }
    Ok(())
}

/// Deletes the selected letters (all: `queue.purge`).
pub async fn purge(queue: &DeadLetterQueue, s: &Selection) -> Result<()> {
    let mut b = browse(queue).await?;
    let purged = async {
        if s.is_everything() {
            return Ok(b.purge().await?);
        }
        let mut purged = 0;
        while let Some(l) = b.next().await? {
            if selected(s, &l) {
                b.remove(&l).await?;
                purged += 1;
            }
        }
        Ok::<_, anyhow::Error>(purged)
    }
    .await;
    let purged = finish(b, purged).await?;
    println!(
        "{}",
        serde_json::json!({ "purged": purged, "queue": queue.queue() })
    );
    Ok(())
}

/// What a redrive did.
#[derive(Debug, Default)]
struct Tally {
    redriven: u64,
    left: u64,
    failed: u64,
    first_failure: Option<String>,
}

/// Redrives the selected letters, `batch` copies at a time, each letter removed only after
/// its copy was confirmed.
pub async fn redrive(
    queue: &DeadLetterQueue,
    redriver: &Redriver,
    s: &Selection,
    batch: usize,
) -> Result<()> {
    let to = redriver.target().describe();
    redriver
        .connect()
        .await
        .with_context(|| format!("connecting to redrive to {to}"))?;
    let mut b = browse(queue).await?;
    let run = format!("{:016x}", rand::random::<u64>());
    let bar = crate::progress::bar(u64::from(b.depth()), "letters");
    let mut tally = Tally::default();
    let result = redrive_all(&mut b, redriver, s, batch, &run, &bar, &mut tally).await;
    bar.finish_and_clear();
    let result = finish(b, result).await;
    redriver.close().await;
    println!(
        "{}",
        serde_json::json!({
            "redriven": tally.redriven,
            "left": tally.left,
            "failed": tally.failed,
            "from": queue.queue(),
            "to": to,
        })
    );
    result?;
    if let Some(first) = tally.first_failure {
        bail!(
            "{} letters could not be redriven and stay in the dead-letter queue (first: {first})",
            tally.failed
        );
    }
    Ok(())
}

async fn redrive_all(
    b: &mut Browser,
    redriver: &Redriver,
    s: &Selection,
    batch: usize,
    run: &str,
    bar: &ProgressBar,
    tally: &mut Tally,
) -> Result<()> {
    let mut chunk: Vec<QueuedLetter> = Vec::with_capacity(batch);
    loop {
        let next = b.next().await?;
        let end = next.is_none();
        if let Some(l) = next {
            // A copy this run sent that came back is not redriven twice.
            if selected(s, &l) && l.redrive_run.as_deref() != Some(run) {
                chunk.push(l);
            } else {
                tally.left += 1;
                bar.inc(1);
            }
        }
        if chunk.len() >= batch || (end && !chunk.is_empty()) {
            send(b, redriver, &chunk, run, tally).await?;
            bar.inc(chunk.len() as u64);
            chunk.clear();
        }
        if end {
            return Ok(());
        }
    }
}

/// Sends one group of copies; removes the letters whose copies were confirmed.
async fn send(
    b: &mut Browser,
    redriver: &Redriver,
    chunk: &[QueuedLetter],
    run: &str,
    tally: &mut Tally,
) -> Result<()> {
    let letters: Vec<&QueuedLetter> = chunk.iter().collect();
    let results = redriver.send(&letters, run).await.context("redriving")?;
    for (l, r) in chunk.iter().zip(results) {
        match r {
            Ok(()) => {
                b.remove(l).await?;
                tally.redriven += 1;
            }
            Err(e) => {
                tracing::warn!(id = %id(l), error = %e, "Letter not redriven; it stays");
                tally.failed += 1;
                tally
                    .first_failure
                    .get_or_insert_with(|| format!("{}: {e}", id(l)));
            }
        }
    }
    Ok(())
}
