//! A broker that stops answering mid-connection (stalled, or blocking publishers on a resource
//! alarm) must not hang the publishing sink: a write gives its messages back as transient
//! failures after the confirm timeout, and closing ends after the connect timeout.
//!
//! The stall is a proxy in front of the real RabbitMQ on 127.0.0.1:5672 that stops forwarding
//! bytes, both ways, while keeping both sockets open.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Raw, available, broker, unique};
use lapin::types::FieldTable;
use riverbed_amqp::{AmqpSink, AmqpSinkConfig};
use riverbed_core::{BatchOutcome, Message, Outcome, Sink};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Forwards `from` to `to` until `frozen`; then holds both open and forwards nothing.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if frozen.load(Ordering::SeqCst) {
            // Hold the sockets so that neither side sees the connection end.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A proxy to the broker on a free local port; returns its port and the switch that stalls it.
async fn stalling_proxy() -> (u16, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let frozen = Arc::new(AtomicBool::new(false));
    let switch = frozen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = TcpStream::connect("127.0.0.1:5672").await.unwrap();
            let (cr, cw) = client.into_split();
            let (ur, uw) = upstream.into_split();
            tokio::spawn(forward(cr, uw, frozen.clone()));
            tokio::spawn(forward(ur, cw, frozen.clone()));
        }
    });
    (port, switch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_broker_fails_the_batch_in_time_and_does_not_hold_the_close() {
    if !available() {
        return;
    }
    let _shared = broker(false).await;
    common::bounded(async {
        let (port, frozen) = stalling_proxy().await;
        let exchange = unique("stall");
        let queue = unique("stall-q");
        let _cleanup = common::DeleteOnPanic(queue.clone());
        let config: AmqpSinkConfig = toml::from_str(&format!(
            r#"
            urls = ["amqp://guest:guest@127.0.0.1:{port}/%2f"]
            exchange = "{exchange}"
            connect_timeout = "1s"
            confirm_timeout = "1s"
            routing_key = "stall"
            [[exchanges]]
            name = "{exchange}"
            kind = "fanout"
            durable = false
            auto_delete = true
            "#
        ))
        .unwrap();
        let sink = AmqpSink::new(config).unwrap();
        sink.connect().await.unwrap();
        let raw = Raw::connect().await;
        raw.declare(&queue, FieldTable::default()).await;
        raw.bind(&queue, &exchange, "").await;
        let batch: Vec<Message> = (0..50).map(|i| Message::new(format!("{i}"))).collect();
        assert_eq!(sink.write(&batch).await, BatchOutcome::Committed);

        frozen.store(true, Ordering::SeqCst);
        let started = Instant::now();
        let outcome = sink.write(&batch).await;
        let waited = started.elapsed();
        assert!(
            waited < Duration::from_secs(10),
            "the write gave up after {waited:?}"
        );
        for i in 0..batch.len() {
            match outcome.get(i) {
                Outcome::Unavailable(f) => assert_eq!(f.reason, "unavailable", "{f}"),
                other => panic!("message {i}: a stalled broker is unavailable, got {other:?}"),
            }
        }

        let started = Instant::now();
        sink.close().await.unwrap();
        let waited = started.elapsed();
        assert!(
            waited < Duration::from_secs(10),
            "closing waited {waited:?} for a broker that does not answer"
        );
        raw.delete(&[queue]).await;
    })
    .await;
}
