//! The live dashboard end to end (`cargo test dashboard`): the daemon runs a generated pipeline
//! with a token, headless Chromium loads `/dashboard` while messages flow, asks for the token,
//! takes it from the form and from the URL fragment, draws the charts, and the figures it shows
//! agree with `/api/status` and `/api/series`; a screenshot is a real picture of the page.

#[path = "dashboard/browser.rs"]
mod browser;
#[path = "admin/client.rs"]
mod client;

use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use serde_json::Value;

use client::{Daemon, free_port, get, wait_for};

const TOKEN: &str = "dashb0ard-t0ken";
const LIMIT: Duration = Duration::from_secs(40);
const SIZE: (u32, u32) = (1280, 1000);
/// Samples (one a second) the charts must hold before the figures are read.
const POINTS: u64 = 5;

fn pipeline(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    let token_file = dir.join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let cfg = dir.join("flowmeter.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[source]
kind = "generate"
data = "sensors"
rate = 2000
malformed_every = 50

[pipeline]
key = "/sensor_id"
partitions = 3

[[sinks]]
name = "meters"
kind = "noop"

[dead_letter]
kind = "log"

[admin]
listen = "127.0.0.1:{port}"
token_file = "{}"
"#,
            token_file.display()
        ),
    )
    .unwrap();
    cfg
}

/// What the page shows now: its state and the figures it holds in the DOM.
async fn figures(page: &Client) -> Value {
    let script = r##"
        const v = (id) => document.getElementById(id).dataset.value;
        const n = (id) => Number(v(id));
        const canvas = (id) => Number(document.getElementById("chart-" + id).dataset.points || 0);
        const rows = (id) => [...document.querySelectorAll("#" + id + " tr")].map((r) => ({...r.dataset}));
        return {
            state: document.body.dataset.state,
            hash: location.hash,
            pipeline: v("pipeline"), leader: v("fig-leader"), partitions: n("fig-partitions"),
            generation: n("fig-generation"),
            samples: n("fig-samples"), last_t: Number(document.body.dataset.lastT || 0),
            acked_total: n("fig-acked-total"), received_total: n("fig-received-total"),
            acked_rate: n("fig-acked-rate"), received_rate: n("fig-received-rate"),
            p99: v("fig-p99"),
            charts: {throughput: canvas("throughput"), latency: canvas("latency"),
                     in_flight: canvas("in-flight"), sinks: canvas("sinks")},
            sinks: rows("sinks"), dead_letters: rows("dead-letters"),
        };"##;
    page.execute(script, vec![])
        .await
        .expect("reading the page")
}

/// Polls the page until `accept` takes its figures; panics after [`LIMIT`] with the last ones.
async fn wait_page(page: &Client, what: &str, accept: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + LIMIT;
    loop {
        let f = figures(page).await;
        if accept(&f) {
            return f;
        }
        assert!(
            Instant::now() < deadline,
            "waited {LIMIT:?} for {what}: {f}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn api(port: u16, path: &str) -> Value {
    let a = get(port, path, Some(TOKEN)).expect("the admin server answers");
    assert_eq!(a.status, 200, "{path}: {}", a.body);
    a.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_draws_what_the_api_says_while_messages_flow() {
    let Some((chromium, chromedriver)) = browser::programs() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut daemon = Daemon::spawn(&pipeline(dir.path(), port), &[]);
    let started = tokio::task::spawn_blocking(move || {
        wait_for(port, "/api/status", Some(TOKEN), LIMIT, |a| {
            a.status == 200 && a.json()["counters"]["acked"].as_u64() > Some(0)
        })
    });
    started.await.unwrap();

    // The page itself needs no token and holds no data; the data routes need the token.
    let html = get(port, "/dashboard", None).unwrap();
    assert_eq!(html.status, 200);
    assert!(html.body.contains("<canvas id=\"chart-throughput\""));
    assert!(!html.body.contains("flowmeter"), "no data in the page");
    assert_eq!(get(port, "/api/series", None).unwrap().status, 401);
    let root = get(port, "/", None).unwrap();
    assert!(
        (300..400).contains(&root.status),
        "/ redirects: {}",
        root.status
    );

    let driver = browser::Driver::start(&chromedriver, free_port());
    let page = driver
        .session(&chromium, &dir.path().join("profile"), SIZE)
        .await;
    let base = format!("http://127.0.0.1:{port}");

    // Without a token the page asks for one; the form takes it.
    page.goto(&format!("{base}/")).await.unwrap();
    assert!(
        page.current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/dashboard")
    );
    wait_page(&page, "the token form", |f| f["state"] == "unauthorized").await;
    let input = page.find(Locator::Id("token")).await.unwrap();
    input.send_keys(TOKEN).await.unwrap();
    page.find(Locator::Css("#login button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_page(&page, "data after the form", |f| f["state"] == "ok").await;

    // A fresh load with the token in the fragment only: taken, then removed from the URL.
    page.execute("sessionStorage.clear()", vec![])
        .await
        .unwrap();
    page.goto(&format!("{base}/dashboard?fresh=1#token={TOKEN}"))
        .await
        .unwrap();
    let shown = wait_page(&page, "charts with data", |f| {
        f["state"] == "ok"
            && f["samples"].as_u64() >= Some(POINTS)
            && f["charts"]
                .as_object()
                .unwrap()
                .values()
                .all(|p| p.as_u64() >= Some(POINTS))
            && f["dead_letters"].as_array().is_some_and(|d| !d.is_empty())
    })
    .await;
    assert_eq!(shown["hash"], "", "the token left the URL: {shown}");
    let status = api(port, "/api/status");
    let series = api(port, "/api/series");

    // The figures agree with the API.
    assert_eq!(shown["pipeline"], "flowmeter");
    assert_eq!(shown["leader"], "single");
    assert_eq!(shown["partitions"], status["partitions"]);
    assert_eq!(shown["generation"], status["generation"]);
    let acked_then = shown["acked_total"].as_u64().unwrap();
    let acked_now = status["counters"]["acked"].as_u64().unwrap();
    assert!(
        0 < acked_then && acked_then <= acked_now,
        "{shown} vs {status}"
    );
    assert!(
        shown["received_total"].as_u64() <= status["counters"]["received"].as_u64(),
        "{shown} vs {status}"
    );
    let samples = series["samples"].as_array().unwrap();
    assert!(samples.len() as u64 >= shown["samples"].as_u64().unwrap());
    let last_t = shown["last_t"].as_u64().unwrap();
    let drawn = samples
        .iter()
        .find(|s| s["t"].as_u64() == Some(last_t))
        .unwrap_or_else(|| panic!("the page's last sample {last_t} is in /api/series"));
    let rate = shown["acked_rate"].as_f64().unwrap();
    let api_rate = drawn["acked"].as_f64().unwrap();
    assert!((rate - api_rate).abs() < 0.1, "{rate} vs {api_rate}");
    assert!(
        rate > 200.0 && rate < 5000.0,
        "acked/s near the generated 2000/s: {rate}"
    );
    assert!(shown["received_rate"].as_f64() > Some(0.0));
    assert!(
        shown["p99"].as_str().is_some_and(|p| !p.is_empty()),
        "{shown}"
    );
    let sink = &shown["sinks"][0];
    assert_eq!(sink["sink"], "meters", "{shown}");
    assert_eq!(sink["breaker"], "none");
    assert!(sink["writes"].as_str().unwrap().parse::<f64>().unwrap() > 0.0);
    let decode = &shown["dead_letters"][0];
    let letters: u64 = decode["count"].as_str().unwrap().parse().unwrap();
    let api_letters = drawn["dead_letters"][decode["reason"].as_str().unwrap()].as_u64();
    assert_eq!(Some(letters), api_letters, "{shown} vs {drawn}");

    // The page keeps up: the acked count grows between two reads.
    wait_page(&page, "acked to grow", |f| {
        f["acked_total"].as_u64() > Some(acked_then)
    })
    .await;

    // A screenshot of the page: a PNG of the viewport's size, not one colour.
    let viewport = page
        .execute(
            "return [innerWidth * devicePixelRatio, innerHeight * devicePixelRatio]",
            vec![],
        )
        .await
        .unwrap();
    let expected = (
        viewport[0].as_f64().unwrap() as u32,
        viewport[1].as_f64().unwrap() as u32,
    );
    assert_eq!(expected.0, SIZE.0, "the window is {SIZE:?}: {viewport}");
    let png = page.screenshot().await.unwrap();
    let file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&file, &png).unwrap();
    let (width, height, colours) = picture(&png);
    assert_eq!((width, height), expected, "{}", file.display());
    assert!(colours > 20, "{colours} colours in {}", file.display());

    page.close().await.unwrap();
    drop(driver);
    daemon.kill();
    assert!(!daemon.logs().contains(TOKEN), "{}", daemon.logs());
}

/// Width, height and the number of distinct colours of a PNG.
fn picture(bytes: &[u8]) -> (u32, u32, usize) {
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).expect("a PNG frame");
    let step = info.color_type.samples();
    let colours: std::collections::HashSet<&[u8]> =
        buf[..info.buffer_size()].chunks(step).collect();
    (info.width, info.height, colours.len())
}
