//! PostgreSQL over TLS, against a cluster of its own (port 55432, `ssl = on`, `hostssl` rules
//! that require a client certificate) that the test starts with certificates it generates: the
//! sink writes over a verified connection, and a server signed by another CA is refused with a
//! clear error.

mod support;

use std::sync::Arc;
use std::time::Duration;

use riverbed_core::testing::{Pki, postgres_tls};
use riverbed_core::{BatchOutcome, Message, Sink};
use riverbed_sql::{
    Column, ColumnType, Ident, InsertStyle, PostgresConnectionConfig, PostgresWriter, TableSpec,
    WriteMode,
};
use sqlx::Row;

const PORT: u16 = 55432;

fn connection(extra: &str) -> PostgresConnectionConfig {
    toml::from_str(&format!(
        "url = \"postgres://postgres:pg-s3cret@localhost:{PORT}/postgres\"\nconnect_timeout = \"5s\"\n{extra}"
    ))
    .unwrap()
}

fn spec(table: &str) -> Arc<TableSpec> {
    let col = |name: &str, ty, from: &str| Column {
        name: Ident::new(name).unwrap(),
        ty,
        from: from.parse().unwrap(),
        required: false,
    };
    Arc::new(TableSpec {
        table: vec![Ident::new(table).unwrap()],
        columns: vec![
            col("id", ColumnType::Text, "/id"),
            col("amount", ColumnType::Numeric, "/amount"),
        ],
        key: vec![Ident::new("id").unwrap()],
        mode: WriteMode::Insert,
        create: true,
    })
}

#[tokio::test]
async fn postgres_tls_verify_full_writes_and_a_wrong_ca_is_refused() {
    let pki = Pki::generate();
    let Some(_server) = postgres_tls(&pki, PORT) else {
        return;
    };
    let tls = |ca: &std::path::Path| {
        format!(
            "[tls]\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            ca.display(),
            pki.client_cert.display(),
            pki.client_key.display()
        )
    };
    let ca = tls(&pki.ca);
    let verified = connection(&format!("ssl_mode = \"verify-full\"\n{ca}"));
    let pool = tokio::time::timeout(Duration::from_secs(20), verified.connect())
        .await
        .unwrap()
        .unwrap();
    let ssl: bool = sqlx::query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "the connection is encrypted");
    let sink = PostgresWriter::new(pool.clone(), spec("tls_ledger"), None, InsertStyle::Unnest)
        .await
        .unwrap()
        .into_sink("ledger");
    let batch: Vec<Message> = (0..100)
        .map(|i| Message::from_json(serde_json::json!({"id": format!("t{i}"), "amount": "1.5"})))
        .collect();
    assert_eq!(sink.write(&batch).await, BatchOutcome::Committed);
    let rows: i64 = sqlx::query("SELECT count(*) FROM tls_ledger")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 100);
    pool.close().await;

    // The server takes TLS with a client certificate only: a plain connection and one without
    // the certificate are refused, so the write above used both.
    let plain = connection("ssl_mode = \"disable\"");
    assert!(
        plain.connect().await.is_err(),
        "plain connections are refused"
    );
    let anonymous = connection(&format!("[tls]\nca_file = \"{}\"\n", pki.ca.display()));
    let e = anonymous
        .connect()
        .await
        .expect_err("a client certificate is required");
    assert!(e.to_string().contains("certificate"), "{e}");

    let wrong = connection(&tls(&pki.wrong_ca));
    let err = tokio::time::timeout(Duration::from_secs(20), wrong.connect())
        .await
        .unwrap()
        .expect_err("a certificate from an unknown CA is refused")
        .to_string();
    eprintln!("refused as it should be: {err}");
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert!(!err.contains("pg-s3cret"), "{err}");
}

#[tokio::test]
async fn postgres_tls_files_that_cannot_be_used_are_named() {
    let e = connection("[tls]\nca_file = \"/nonexistent/ca.pem\"\n")
        .options()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tls.ca_file: cannot read /nonexistent/ca.pem"),
        "{e}"
    );
}
