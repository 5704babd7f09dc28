//! Creating or binding the durable pull consumer, with explicit acks, and checking that an
//! existing one can serve the source.

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::Stream;

use crate::error::{Result, config, jetstream};
use crate::settings::SourceSettings;

/// The consumer configuration the source asks for; `start` overrides where a new durable
/// starts (the source delivered before and the server lost the durable).
pub(super) fn wanted(s: &SourceSettings, start: Option<u64>) -> pull::Config {
    let deliver_policy = match start {
        Some(start_sequence) => DeliverPolicy::ByStartSequence { start_sequence },
        None => s.deliver,
    };
    pull::Config {
        durable_name: Some(s.durable.clone()),
        deliver_policy,
        ack_policy: AckPolicy::Explicit,
        ack_wait: s.ack_wait,
        max_deliver: s.max_deliver,
        filter_subject: s.filter_subject.clone(),
        max_ack_pending: i64::from(s.max_ack_pending),
        ..Default::default()
    }
}

/// Creates the durable if it does not exist, else binds to it: its ack floor is where it
/// resumes (`deliver` applies to a new durable only). A durable the server lost while this
/// source ran is created again from `start`, so its history is not replayed. An existing durable whose ack policy is
/// not explicit, or whose filter differs, is refused; a different `ack_wait`,
/// `max_ack_pending` or `max_deliver` is updated.
pub(super) async fn bind(
    stream: &Stream,
    s: &SourceSettings,
    start: Option<u64>,
) -> Result<PullConsumer> {
    let want = wanted(s, start);
    let action = format!("bind consumer `{}` on stream `{}`", s.durable, s.stream);
    let mut consumer: PullConsumer = stream
        .get_or_create_consumer(&s.durable, want.clone())
        .await
        .map_err(|e| jetstream(&action, e))?;
    let have = consumer.cached_info().config.clone();
    if have.ack_policy != AckPolicy::Explicit {
        return Err(config(
            "durable",
            format!(
                "`{}` exists with ack policy {:?}; Riverbed needs explicit acks (delete it or \
                 choose another name)",
                s.durable, have.ack_policy
            ),
        ));
    }
    if have.filter_subject != want.filter_subject {
        return Err(config(
            "filter_subject",
            format!(
                "durable `{}` exists with filter `{}`, not `{}` (delete it or choose another \
                 name)",
                s.durable, have.filter_subject, want.filter_subject
            ),
        ));
    }
    if start.is_none() && have.deliver_policy != want.deliver_policy {
        tracing::info!(
            durable = %s.durable,
            "Durable exists: it resumes after what it acknowledged; `deliver` applies to a new one"
        );
    }
    if (have.ack_wait, have.max_ack_pending, have.max_deliver)
        != (want.ack_wait, want.max_ack_pending, want.max_deliver)
    {
        // The durable keeps where it started; only the editable limits change.
        let update = pull::Config {
            deliver_policy: have.deliver_policy,
            ..want
        };
        consumer = stream
            .create_consumer(update)
            .await
            .map_err(|e| jetstream(format!("update consumer `{}`", s.durable), e))?;
        tracing::info!(durable = %s.durable, "Durable updated: ack_wait, max_ack_pending, max_deliver");
    }
    Ok(consumer)
}

/// Taking a durable over from an instance that stopped holding it (its partition lease went to
/// this one): what that instance left delivered and unacknowledged would only come back after
/// `ack_wait`, behind newer messages, reordering its keys. So a durable with deliveries
/// pending is deleted and created again right after its ack floor: everything not
/// acknowledged is delivered again first, in stream order (what was acknowledged above the
/// floor comes again too, and the sinks absorb it as any redelivery). Returns where the new
/// durable starts, or `None` when nothing is pending (or the durable does not exist).
pub(super) async fn take_over_from_ack_floor(
    stream: &Stream,
    s: &SourceSettings,
) -> Result<Option<u64>> {
    let Ok(info) = stream.consumer_info(&s.durable).await else {
        return Ok(None);
    };
    if info.num_ack_pending == 0 {
        return Ok(None);
    }
    let start = info.ack_floor.stream_sequence + 1;
    stream
        .delete_consumer(&s.durable)
        .await
        .map_err(|e| jetstream(format!("take over consumer `{}`", s.durable), e))?;
    tracing::info!(
        durable = %s.durable,
        pending = info.num_ack_pending,
        start_sequence = start,
        "Durable taken over: created again after its ack floor, so what its last holder left \
         unacknowledged comes first"
    );
    Ok(Some(start))
}
