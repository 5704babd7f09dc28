//! `[admin] metrics` serves the pipeline's counters to Prometheus while it runs.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn scrape(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

fn counter(body: &str, name: &str) -> u64 {
    body.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[test]
fn metrics_are_served_while_the_pipeline_runs() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("p.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[source]
kind = "generate"
data = "sensors"
rate = 2000
malformed_every = 100

[pipeline]
key = "/sensor_id"

[[sinks]]
name = "out"
kind = "noop"

[dead_letter]
kind = "log"

[admin]
metrics = "127.0.0.1:{port}"
"#
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_riverbed"))
        .args(["run", "--quiet"])
        .arg(&cfg)
        .env("RIVERBED_LOG", "off")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        if let Some(b) = scrape(port)
            && counter(&b, "riverbed_messages_acked_total") >= 500
            && counter(&b, "riverbed_dead_letters_total") >= 2
        {
            break b;
        }
        assert!(Instant::now() < deadline, "metrics never showed progress");
        std::thread::sleep(Duration::from_millis(50));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(body.contains("riverbed_messages_received_total"), "{body}");
    assert!(
        body.contains("riverbed_dead_letters_total{reason=\"missing_key\",stage=\"key\"}")
            || body.contains("reason=\"malformed_payload\""),
        "{body}"
    );
    assert!(body.contains("riverbed_sink_write_seconds"), "{body}");
}
