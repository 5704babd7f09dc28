//! Unit tests of the totals table's configuration and SQL.

use super::*;
use crate::spec::{Column, ValueSource};

fn sink(mode: WriteMode) -> TableSpec {
    let col = |n: &str, ty, required| Column {
        name: Ident::new(n).unwrap(),
        ty,
        from: ValueSource::Pointer(format!("/{n}")),
        required,
    };
    TableSpec {
        table: vec![Ident::new("tx").unwrap()],
        columns: vec![
            col("id", ColumnType::Text, true),
            col("provider", ColumnType::Text, true),
            col("amount", ColumnType::Numeric, true),
            col("note", ColumnType::Text, false),
            col("doc", ColumnType::Json, false),
        ],
        key: vec![Ident::new("id").unwrap()],
        mode,
        create: true,
    }
}

fn config(extra: &str) -> TotalsTableConfig {
    toml::from_str(&format!(
        "table = \"tx_totals\"\ngroup = [\"provider\"]\nsum = {{ sum = \"amount\" }}\n{extra}"
    ))
    .unwrap()
}

#[test]
fn the_insert_adds_only_returned_rows_to_the_totals() {
    let spec = config("max = { largest = \"amount\" }")
        .spec(&sink(WriteMode::Insert))
        .unwrap();
    assert_eq!(
        spec.wrap_insert(
            "INSERT INTO \"tx\" AS tgt (..) VALUES (..) ON CONFLICT (\"id\") DO NOTHING"
        ),
        "WITH ins AS (INSERT INTO \"tx\" AS tgt (..) VALUES (..) ON CONFLICT (\"id\") DO NOTHING \
         RETURNING \"provider\", \"amount\"), tot AS (INSERT INTO \"tx_totals\" AS tot \
         (\"provider\", \"count\", \"sum\", \"largest\") SELECT \"provider\", count(*), \
         sum(\"amount\"::numeric), max(\"amount\") FROM ins GROUP BY \"provider\" ORDER BY \
         \"provider\" ON CONFLICT (\"provider\") DO UPDATE SET \"count\" = tot.\"count\" + \
         excluded.\"count\", \"sum\" = coalesce(tot.\"sum\" + excluded.\"sum\", tot.\"sum\", \
         excluded.\"sum\"), \"largest\" = GREATEST(tot.\"largest\", excluded.\"largest\")) \
         SELECT count(*) FROM ins"
    );
    assert_eq!(
        spec.create_table(),
        "CREATE TABLE IF NOT EXISTS \"tx_totals\" (\"provider\" TEXT NOT NULL, \"count\" BIGINT \
         NOT NULL DEFAULT 0, \"sum\" NUMERIC, \"largest\" NUMERIC, PRIMARY KEY (\"provider\"))"
    );
    assert!(spec.seed && !spec.create);
}

#[test]
fn bad_totals_are_refused_naming_the_field() {
    let err = |c: TotalsTableConfig, mode| c.spec(&sink(mode)).unwrap_err();
    let upsert = WriteMode::Upsert {
        version: None,
        tombstone: None,
    };
    assert!(err(config(""), upsert).contains("append"));
    let nullable: TotalsTableConfig = toml::from_str("table = \"t2\"\ngroup = [\"note\"]").unwrap();
    assert!(err(nullable, WriteMode::Insert).contains("totals.group: column `note` must be"));
    let missing: TotalsTableConfig = toml::from_str("table = \"t2\"\ngroup = [\"nope\"]").unwrap();
    assert!(err(missing, WriteMode::Insert).contains("totals.group: `nope` is not among"));
    let json = config("max = { m = \"doc\" }");
    assert!(err(json, WriteMode::Insert).contains("totals.max: column `doc` is Json"));
    let text_sum: TotalsTableConfig =
        toml::from_str("table = \"t2\"\ngroup = [\"provider\"]\nsum = { s = \"note\" }").unwrap();
    assert!(err(text_sum, WriteMode::Insert).contains("totals.sum: column `note` is Text"));
    assert!(toml::from_str::<TotalsTableConfig>("table = \"t\"\ngroup = []\nsumm = {}").is_err());
    let twice = config("min = { sum = \"amount\" }");
    assert!(err(twice, WriteMode::Insert).contains("column `sum` is named twice"));
    let same: TotalsTableConfig = toml::from_str("table = \"tx\"\ngroup = [\"provider\"]").unwrap();
    assert!(err(same, WriteMode::Insert).contains("a table of their own"));
}
