//! The recipe's own files, read at test time and pointed at names only this run uses, and the
//! totals the recipe must produce, computed here rather than in SQL.

use std::collections::BTreeMap;
use std::path::PathBuf;

use riverbed_embedded::{DataKind, Generator};

/// Where the recipe lives.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../recipes/transactions")
}

/// Reads one of the recipe's files.
pub fn read(file: &str) -> String {
    let path = dir().join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Names no other test or run uses, in place of the recipe's.
#[derive(Debug, Clone)]
pub struct Names {
    /// The queue (`incoming_transactions`); its dead letters go to `<queue>.dlq`.
    pub queue: String,
    /// The table (`historical_transactions`).
    pub table: String,
    /// The Redis key prefix of the totals (`ledger:provider:`).
    pub prefix: String,
    /// The sink's `application_name` (`riverbed-ledger-sink`).
    pub sink_app: String,
    /// The window counter's `application_name` (`riverbed-ledger-totals`).
    pub totals_app: String,
}

impl Names {
    /// Fresh names: process id and the clock's nanoseconds.
    pub fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let s = format!("{}_{nanos}", std::process::id());
        Names {
            queue: format!("incoming_transactions_rt{s}"),
            table: format!("historical_transactions_rt{s}"),
            prefix: format!("ledger_rt{s}:provider:"),
            sink_app: format!("riverbed-ledger-sink-rt{s}"),
            totals_app: format!("riverbed-ledger-totals-rt{s}"),
        }
    }

    /// The dead-letter queue.
    pub fn dlq(&self) -> String {
        format!("{}.dlq", self.queue)
    }

    /// The key holding the boundary the totals were written for.
    pub fn as_of_key(&self) -> String {
        format!("{}@as_of_ms", self.prefix)
    }
}

/// Replaces every `from` in `text`, which must hold at least one: a recipe edit that breaks a
/// substitution fails here instead of letting runs collide on shared names.
fn replace(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "the recipe no longer contains `{from}`"
    );
    text.replace(from, to)
}

/// `pipeline.toml` on this run's names, the test database, and windows of `every`.
pub fn pipeline(names: &Names, every: &str) -> String {
    let text = read("pipeline.toml");
    let text = replace(&text, "incoming_transactions", &names.queue);
    let text = replace(&text, "historical_transactions", &names.table);
    let text = replace(
        &text,
        "\"ledger:provider:\"",
        &format!("\"{}\"", names.prefix),
    );
    let text = replace(&text, "\"riverbed-ledger-sink\"", &quoted(&names.sink_app));
    let text = replace(
        &text,
        "\"riverbed-ledger-totals\"",
        &quoted(&names.totals_app),
    );
    let text = replace(
        &text,
        "@127.0.0.1:5432/ledger}\"",
        "@127.0.0.1:5432/test}\"",
    );
    replace(&text, "every = \"1m\"", &format!("every = \"{every}\""))
}

/// `publisher.toml` publishing `count` transactions at `rate` per second to this run's queue.
pub fn publisher(names: &Names, count: u64, rate: u64) -> String {
    let text = read("publisher.toml");
    let text = replace(&text, "incoming_transactions", &names.queue);
    let text = replace(&text, "\ncount = 5000 ", &format!("\ncount = {count} "));
    replace(&text, "\nrate = 500 ", &format!("\nrate = {rate} "))
}

/// One of the recipe's SQL files, on this run's table.
pub fn sql(file: &str, names: &Names) -> String {
    replace(&read(file), "historical_transactions", &names.table)
}

fn quoted(s: &str) -> String {
    format!("\"{s}\"")
}

/// `(count, sum in cents)` per provider.
pub type Totals = BTreeMap<String, (u64, i64)>;

/// Adds one transaction to `totals`.
pub fn add(totals: &mut Totals, provider: &str, cents: i64) {
    let t = totals.entry(provider.to_owned()).or_default();
    t.0 += 1;
    t.1 += cents;
}

/// The totals of `seed.sql`'s rows, by its formula: `hist-<g>`, provider `g % 21`, amount
/// `((g * 7919) % 100000 + 1)` cents, for g in 1..=1000.
pub fn seed_totals() -> Totals {
    let mut totals = Totals::new();
    for g in 1..=1000i64 {
        add(
            &mut totals,
            &format!("provider-{}", g % 21),
            (g * 7919) % 100_000 + 1,
        );
    }
    totals
}

/// A published transaction: id, provider, cents.
pub type Transaction = (String, String, i64);

/// What `publisher.toml` publishes when it stops after `count`: the generator it names, with
/// its seed and keys, replayed here.
pub fn published(count: u64) -> Vec<Transaction> {
    let publisher: toml::Table = read("publisher.toml")
        .parse()
        .expect("publisher.toml parses");
    let source = publisher["source"].as_table().expect("[source]");
    let int = |k: &str| {
        source[k]
            .as_integer()
            .unwrap_or_else(|| panic!("source.{k}"))
    };
    assert_eq!(source["data"].as_str(), Some("transactions"));
    let mut generator = Generator::new(
        DataKind::Transactions,
        int("seed") as u64,
        int("keys") as u32,
        None,
    );
    (0..count)
        .map(|_| {
            let r = generator.next_record();
            let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
            let amount = v["amount"].as_f64().expect("a numeric amount");
            (
                v["id"].as_str().unwrap().to_owned(),
                v["provider"].as_str().unwrap().to_owned(),
                (amount * 100.0).round() as i64,
            )
        })
        .collect()
}

/// A decimal as PostgreSQL prints it (`1234.5`, `1234.50`, `-3`), in cents; more than two
/// decimals must be zeros.
pub fn cents(text: &str) -> i64 {
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, text),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let frac = format!("{frac:0<2}");
    assert!(
        frac[2..].chars().all(|c| c == '0'),
        "{text} is not whole cents"
    );
    let whole: i64 = whole
        .parse()
        .unwrap_or_else(|_| panic!("not a decimal: {text}"));
    let frac: i64 = frac[..2]
        .parse()
        .unwrap_or_else(|_| panic!("not a decimal: {text}"));
    sign * (whole * 100 + frac)
}

#[test]
fn cents_reads_every_decimal_form() {
    assert_eq!(cents("1234.5"), 123_450);
    assert_eq!(cents("1234.56"), 123_456);
    assert_eq!(cents("7"), 700);
    assert_eq!(cents("-0.05"), -5);
    assert_eq!(cents("10.500"), 1050);
}
