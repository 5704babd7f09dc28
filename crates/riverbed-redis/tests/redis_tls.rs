//! Redis over TLS (`rediss://`), against a redis-server of its own (TLS port 56379) that the
//! test starts with certificates it generates: a sink writes over a verified connection with a
//! client certificate, and a server signed by another CA is refused with a clear error.

use std::collections::HashMap;
use std::time::Duration;

use riverbed_core::testing::{Pki, redis_tls};
use riverbed_core::{BatchOutcome, Message, Sink};
use riverbed_redis::{HashIncrConfig, HashIncrSink, RedisConfig};

const PORT: u16 = 56379;

/// A counter sink on the TLS Redis, `auth` (`:password@` or nothing) in its URL.
fn counter(auth: &str, tls: &str) -> HashIncrConfig {
    toml::from_str(&format!(
        "key = \"tls:by_provider\"\nfield = \"/provider\"\namount = \"/cents\"\nkind = \"integer\"\n\
         [redis]\nurl = \"rediss://{auth}localhost:{PORT}\"\n[redis.tls]\n{tls}"
    ))
    .unwrap()
}

#[tokio::test]
async fn redis_tls_sink_writes_with_a_client_certificate_and_a_wrong_ca_is_refused() {
    let pki = Pki::generate();
    let Some(_server) = redis_tls(&pki, PORT) else {
        return;
    };
    let trusted = format!(
        "ca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        pki.ca.display(),
        pki.client_cert.display(),
        pki.client_key.display()
    );
    let config = counter("", &trusted);
    let sink = tokio::time::timeout(
        Duration::from_secs(20),
        HashIncrSink::from_config("tls", &config),
    )
    .await
    .unwrap()
    .unwrap();
    let batch: Vec<Message> = (0..50u64)
        .map(|i| {
            let mut m = Message::from_json(
                serde_json::json!({"provider": format!("p{}", i % 2), "cents": 10}),
            );
            m.meta.message_id = Some(format!("tx-{i}"));
            m
        })
        .collect();
    assert_eq!(sink.write(&batch).await, BatchOutcome::Committed);
    let mut check = config.redis.connect().await.unwrap();
    let totals: HashMap<String, i64> = redis::cmd("HGETALL")
        .arg("tls:by_provider")
        .query_async(&mut check)
        .await
        .unwrap();
    assert_eq!(
        totals,
        HashMap::from([("p0".into(), 250), ("p1".into(), 250)])
    );

    // The server requires a client certificate: without it the connection is refused.
    let anonymous = counter("", &format!("ca_file = \"{}\"\n", pki.ca.display()));
    let refused = tokio::time::timeout(Duration::from_secs(20), anonymous.redis.connect()).await;
    assert!(
        refused.unwrap().is_err(),
        "a client certificate is required"
    );

    let wrong = counter(
        ":no-s3cret@",
        &format!("ca_file = \"{}\"\n", pki.wrong_ca.display()),
    );
    let err = tokio::time::timeout(Duration::from_secs(20), wrong.redis.connect())
        .await
        .unwrap()
        .expect_err("a certificate from an unknown CA is refused")
        .to_string();
    eprintln!("refused as it should be: {err}");
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert!(!err.contains("no-s3cret"), "{err}");
}

#[test]
fn redis_tls_options_need_a_rediss_url_and_verification() {
    let config: RedisConfig =
        toml::from_str("url = \"redis://127.0.0.1:6379\"\n[tls]\nca_file = \"/x.pem\"\n").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let e = rt.block_on(config.connect()).unwrap_err().to_string();
    assert!(e.contains("`tls` needs a rediss:// url"), "{e}");
    let config = RedisConfig::new("rediss://127.0.0.1:6380/#insecure");
    let e = rt.block_on(config.connect()).unwrap_err().to_string();
    assert!(
        e.contains("`#insecure` turns certificate verification off"),
        "{e}"
    );
}
