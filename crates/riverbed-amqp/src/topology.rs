//! Declaring what a connection needs: exchanges, queues, bindings, retry and dead-letter queues.

use std::time::Duration;

use lapin::options::{
    ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ExchangeKind};

use crate::config::QueueType;
use crate::error::{Error, Result};
use crate::settings::{BindingSpec, ExchangeSpec, QueueSpec, RetrySpec, SourceSettings, short};

fn refused(action: String) -> impl FnOnce(lapin::Error) -> Error {
    move |source| Error::Topology { action, source }
}

/// Declares every exchange of `list`.
pub(crate) async fn declare_exchanges(ch: &Channel, list: &[ExchangeSpec]) -> Result<()> {
    for x in list {
        ch.exchange_declare(
            short("exchanges.name", &x.name)?,
            x.kind.clone(),
            x.options,
            x.arguments.clone(),
        )
        .await
        .map_err(refused(format!("declare exchange `{}`", x.name)))?;
    }
    Ok(())
}

/// Declares `q` and returns its name (the broker's choice for a server-named queue).
pub(crate) async fn declare_queue(ch: &Channel, q: &QueueSpec) -> Result<String> {
    let declared = ch
        .queue_declare(short("queue", &q.name)?, q.options, q.arguments.clone())
        .await
        .map_err(refused(if q.name.is_empty() {
            "declare a server-named queue".to_owned()
        } else {
            format!("declare queue `{}`", q.name)
        }))?;
    Ok(declared.name().to_string())
}

/// Binds `queue` as `bindings` say.
pub(crate) async fn bind(ch: &Channel, queue: &str, bindings: &[BindingSpec]) -> Result<()> {
    for b in bindings {
        ch.queue_bind(
            short("queue", queue)?,
            short("bindings.exchange", &b.exchange)?,
            short("bindings.routing_key", &b.routing_key)?,
            QueueBindOptions::default(),
            b.arguments.clone(),
        )
        .await
        .map_err(refused(format!(
            "bind queue `{queue}` to exchange `{}` with key `{}`",
            b.exchange, b.routing_key
        )))?;
    }
    Ok(())
}

/// Declares what a source consumes from: its exchanges, its queue (or partition queues), the
/// bindings and its dead-letter queue. Returns the names of the queues to consume (the
/// broker's choice if server-named).
pub(crate) async fn declare_source(
    conn: &Connection,
    ch: &Channel,
    s: &SourceSettings,
) -> Result<Vec<String>> {
    declare_exchanges(ch, &s.exchanges).await?;
    let queues = match s.partitions {
        None => {
            let queue = declare_consumed(conn, ch, &s.queue, &s.created_with).await?;
            bind(ch, &queue, &s.bindings).await?;
            vec![queue]
        }
        Some(n) => declare_partitions(conn, ch, s, n).await?,
    };
    if let Some(dlq) = &s.dead_letter_queue {
        declare_queue(ch, dlq).await?;
    }
    Ok(queues)
}

/// The name of partition queue `i` of `queue`.
pub fn partition_queue(queue: &str, i: u16) -> String {
    format!("{queue}.{i}")
}

/// Declares the consistent-hash exchange `<queue>` (producers publish to it with the key as
/// routing key), bound to the configured bindings' exchanges, and `n` partition queues with a
/// single active consumer each, bound with equal weight: RabbitMQ gives each partition to one
/// instance at a time and moves it to another when that instance goes away.
async fn declare_partitions(
    conn: &Connection,
    ch: &Channel,
    s: &SourceSettings,
    n: u16,
) -> Result<Vec<String>> {
    let exchange = &s.queue.name;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.exchange_declare(
        short("queue", exchange)?,
        ExchangeKind::Custom("x-consistent-hash".into()),
        durable,
        FieldTable::default(),
    )
    .await
    .map_err(refused(format!(
        "declare consistent-hash exchange `{exchange}` (is the rabbitmq_consistent_hash_exchange plugin enabled?)"
    )))?;
    for b in &s.bindings {
        ch.exchange_bind(
            short("queue", exchange)?,
            short("bindings.exchange", &b.exchange)?,
            short("bindings.routing_key", &b.routing_key)?,
            ExchangeBindOptions::default(),
            b.arguments.clone(),
        )
        .await
        .map_err(refused(format!(
            "bind exchange `{exchange}` to `{}` with key `{}`",
            b.exchange, b.routing_key
        )))?;
    }
    let mut queues = Vec::with_capacity(usize::from(n));
    for i in 0..n {
        let mut spec = s.queue.clone();
        spec.name = partition_queue(exchange, i);
        spec.arguments
            .insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        let queue = declare_consumed(conn, ch, &spec, &s.created_with).await?;
        let weight = BindingSpec {
            exchange: exchange.clone(),
            routing_key: "1".into(),
            arguments: FieldTable::default(),
        };
        bind(ch, &queue, std::slice::from_ref(&weight)).await?;
        queues.push(queue);
    }
    Ok(queues)
}

/// Declares a consumed queue. With `created_with` (a quorum queue's delivery limit and
/// dead-letter target), it is declared with them first, on a channel of its own (a refusal
/// closes the channel): a new queue gets them, and so does one made with them before. One
/// that exists without them (the broker refuses a declaration with other arguments) is
/// declared as it was before: its deliveries are still counted and limited by the runtime.
async fn declare_consumed(
    conn: &Connection,
    ch: &Channel,
    queue: &QueueSpec,
    created_with: &FieldTable,
) -> Result<String> {
    if created_with.inner().is_empty() || queue.options.passive {
        return declare_queue(ch, queue).await;
    }
    let mut limited = queue.clone();
    for (k, v) in created_with.inner() {
        limited.arguments.insert(k.clone(), v.clone());
    }
    let probe = conn.create_channel().await?;
    match declare_queue(&probe, &limited).await {
        Ok(_) => {
            let _ = probe.close(200, "declared".into()).await;
            declare_queue(ch, &limited).await
        }
        Err(e) => {
            tracing::info!(
                queue = %queue.name,
                error = %e,
                "Queue refused the delivery limit arguments (it exists without them); declared as it is"
            );
            declare_queue(ch, queue).await
        }
    }
}

/// The retry queue holding messages for about `delay` before they return to `target`.
///
/// Per-message TTLs only expire at the head of a queue, so one queue for every delay would let
/// a long delay hold back the short ones behind it. Delays are therefore grouped in tiers of
/// powers of two milliseconds (`<prefix>.256ms` holds delays from 129 to 256 ms): within a
/// tier, a message waits at most twice its delay.
pub(crate) fn retry_queue(spec: &RetrySpec, target: &str, delay: Duration) -> QueueSpec {
    let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX).max(1);
    let tier = ms.checked_next_power_of_two().unwrap_or(1 << 63);
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    arguments.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(target.into()),
    );
    if spec.queue_type == QueueType::Quorum {
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        // Quorum queues can dead-letter at least once (a classic queue's dead-lettering
        // could drop a message if the target refused it).
        arguments.insert(
            "x-dead-letter-strategy".into(),
            AMQPValue::LongString("at-least-once".into()),
        );
        arguments.insert(
            "x-overflow".into(),
            AMQPValue::LongString("reject-publish".into()),
        );
    }
    QueueSpec {
        name: format!("{}.{tier}ms", spec.prefix),
        options: QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        arguments,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_tiers_are_powers_of_two() {
        let spec = RetrySpec {
            prefix: "orders.retry".into(),
            queue_type: QueueType::Quorum,
            hold_limit: Duration::from_secs(30),
        };
        let q = |ms| retry_queue(&spec, "orders", Duration::from_millis(ms)).name;
        assert_eq!(q(0), "orders.retry.1ms");
        assert_eq!(q(100), "orders.retry.128ms");
        assert_eq!(q(128), "orders.retry.128ms");
        assert_eq!(q(129), "orders.retry.256ms");
        let rq = retry_queue(&spec, "orders", Duration::from_millis(5));
        assert!(rq.options.durable);
        assert_eq!(
            rq.arguments.inner().get("x-dead-letter-routing-key"),
            Some(&AMQPValue::LongString("orders".into()))
        );
    }

    #[test]
    fn retry_queues_are_quorum_and_dead_letter_at_least_once_by_default() {
        let config: crate::AmqpSourceConfig =
            toml::from_str("urls = [\"amqp://127.0.0.1\"]\nqueue = \"orders\"").unwrap();
        let settings = crate::settings::SourceSettings::try_from(config).unwrap();
        let spec = settings
            .retry
            .expect("a named queue retries through the broker");
        let args = retry_queue(&spec, "orders", Duration::from_millis(5)).arguments;
        let arg = |k: &str| args.inner().get(k).cloned();
        let text = |v: &str| Some(AMQPValue::LongString(v.into()));
        assert_eq!(arg("x-queue-type"), text("quorum"));
        assert_eq!(arg("x-dead-letter-strategy"), text("at-least-once"));
        assert_eq!(arg("x-overflow"), text("reject-publish"));
    }
}
