//! `riverbed run` on a NATS JetStream -> SQLite pipeline: every message lands once with its
//! stream sequence, the consumer is acknowledged after the rows committed, and a second run
//! resumes after the stored sequence.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use sqlx::Row;

const URL: &str = "nats://127.0.0.1:4222";

fn spawn(config: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_riverbed"))
        .args(["run", "--quiet"])
        .arg(config)
        .env("RIVERBED_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// (rows, highest position) in the sink's table.
async fn rows(db: &Path) -> (i64, i64) {
    let Ok(pool) = riverbed_sql::sqlite_pool(db).await else {
        return (0, 0);
    };
    let r = sqlx::query("SELECT count(*), coalesce(max(position), 0) FROM orders")
        .fetch_one(&pool)
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap_or((0, 0));
    pool.close().await;
    r
}

async fn wait_rows(db: &Path, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(45);
    while rows(db).await.0 < n {
        assert!(Instant::now() < deadline, "the sink never reached {n} rows");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn publish(js: &jetstream::Context, subject: &str, from: usize, to: usize) {
    for n in from..to {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", format!("o{n}").as_str());
        let body = format!("{{\"id\":\"o{n}\",\"amount\":{n}}}");
        js.publish_with_headers(subject.to_owned(), h, body.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
}

/// Deletes the test's streams when dropped, also when the test fails.
struct DeleteStreams(String);

impl Drop for DeleteStreams {
    fn drop(&mut self) {
        let name = self.0.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok(c) = async_nats::connect(URL).await {
                    let js = jetstream::new(c);
                    let _ = js.delete_stream(&name).await;
                    let _ = js.delete_stream(format!("{name}_dlq")).await;
                }
            });
        })
        .join();
    }
}

/// Stops the daemon with SIGTERM (it drains) and waits for it.
fn stop(mut child: Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "riverbed stopped cleanly: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_to_sqlite_with_riverbed_run_lands_everything_and_resumes() {
    if !riverbed_core::testing::require_service("NATS", "127.0.0.1:4222") {
        return;
    }
    let _shared = riverbed_core::testing::lock_service("nats", false).await;
    let name = format!("rbtest_daemon_{}", std::process::id());
    let _cleanup = DeleteStreams(name.clone());
    let js = jetstream::new(async_nats::connect(URL).await.unwrap());
    js.create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![format!("{name}.>")],
        ..Default::default()
    })
    .await
    .unwrap();
    let subject = format!("{name}.orders");
    publish(&js, &subject, 0, 50).await;

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("out.db");
    let cfg = dir.path().join("p.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[pipeline]
partitions = 2
max_in_flight = 64
key = "/id"
resume_from = "orders"
shutdown_grace = "5s"

[source]
kind = "nats"
servers = ["{URL}"]
stream = "{name}"
durable = "riverbed"
ack_wait = "5s"

[[sinks]]
name = "orders"
kind = "sqlite"
path = "{db}"
table = "orders"
key = ["id"]
offsets = "orders"
columns = [
  {{ name = "id", type = "text", from = "/id", required = true }},
  {{ name = "amount", type = "integer", from = "/amount" }},
  {{ name = "position", type = "integer", from = "$position" }},
]
"#,
            db = db.display()
        ),
    )
    .unwrap();

    let daemon = spawn(&cfg);
    wait_rows(&db, 50).await;
    stop(daemon);
    assert_eq!(
        rows(&db).await,
        (50, 50),
        "each message once, with its sequence"
    );
    let info = js
        .get_stream(&name)
        .await
        .unwrap()
        .consumer_info("riverbed")
        .await
        .unwrap();
    assert_eq!(
        info.ack_floor.stream_sequence, 50,
        "acknowledged after commit"
    );
    assert_eq!(
        info.config.max_ack_pending, 64,
        "max_ack_pending follows max_in_flight"
    );

    // The durable is gone (a new deployment): the stored sequence says where to resume.
    js.get_stream(&name)
        .await
        .unwrap()
        .delete_consumer("riverbed")
        .await
        .unwrap();
    publish(&js, &subject, 50, 60).await;
    let daemon = spawn(&cfg);
    wait_rows(&db, 60).await;
    stop(daemon);
    assert_eq!(rows(&db).await, (60, 60));
    let info = js
        .get_stream(&name)
        .await
        .unwrap()
        .consumer_info("riverbed")
        .await
        .unwrap();
    assert_eq!(
        info.delivered.stream_sequence, 60,
        "the new durable started after the stored sequence 50"
    );
    assert_eq!(info.num_redelivered, 0);
    assert_eq!(
        info.delivered.consumer_sequence, 10,
        "only 51..=60 were delivered"
    );

    let _ = js.delete_stream(&name).await;
    let _ = js.delete_stream(format!("{name}_dlq")).await;
}
