//! The converters' unit tests: what each column type takes, and what it refuses.

use serde_json::json;

use super::*;
use crate::spec::Ident;

fn col(ty: ColumnType) -> Column {
    Column {
        name: Ident::new("c").unwrap(),
        ty,
        from: ValueSource::Pointer("/v".into()),
        required: false,
    }
}

fn pg(ty: ColumnType, v: Value) -> Result<SqlValue, Failure> {
    convert(&col(ty), v, Dialect::Postgres)
}

fn refused(ty: ColumnType, v: Value) -> bool {
    matches!(pg(ty, v), Err(f) if f.reason == "invalid_field")
}

fn ts(s: &str) -> SqlValue {
    SqlValue::Timestamp(s.parse().unwrap())
}

/// The value the sink writes for `payload`'s field `/v` (the producer's digits included).
fn from_payload(ty: ColumnType, payload: &str, d: Dialect) -> Result<SqlValue, Failure> {
    let msg = Message::new(payload.as_bytes().to_vec());
    let body: Value = serde_json::from_str(payload).unwrap();
    value_of(&col(ty), &msg, Some(&body), d)
}

#[test]
fn converts_and_refuses() {
    assert_eq!(
        pg(ColumnType::Integer, json!("42")).unwrap(),
        SqlValue::Int(42)
    );
    assert_eq!(
        pg(ColumnType::Numeric, json!(12.5)).unwrap(),
        SqlValue::Text("12.5".into())
    );
    assert!(refused(ColumnType::Numeric, json!("12,5")));
    assert!(refused(ColumnType::Integer, json!("x")));
    assert_eq!(
        pg(ColumnType::Timestamp, json!("1970-01-02T00:00:01.5+01:00")).unwrap(),
        ts("1970-01-01T23:00:01.5Z")
    );
    assert_eq!(
        pg(ColumnType::Timestamp, json!(1_709_208_000_000_i64)).unwrap(),
        ts("2024-02-29T12:00:00Z")
    );
    assert_eq!(
        pg(ColumnType::Date, json!("2024-02-29")).unwrap(),
        SqlValue::Date(jiff::civil::date(2024, 2, 29))
    );
    assert_eq!(
        pg(ColumnType::Time, json!("23:59:59.999999")).unwrap(),
        SqlValue::Time(jiff::civil::time(23, 59, 59, 999_999_000))
    );
    assert_eq!(
        pg(ColumnType::Boolean, json!("true")).unwrap(),
        SqlValue::Bool(true)
    );
    assert_eq!(
        pg(ColumnType::Real, json!("-2.5")).unwrap(),
        SqlValue::Float(-2.5)
    );
}

#[test]
fn impossible_values_are_refused_not_shifted() {
    // Before jiff, Feb 30 was written as Mar 1 and hour 25 as the next day, without a word.
    assert!(refused(
        ColumnType::Timestamp,
        json!("2024-02-30T00:00:00Z")
    ));
    assert!(refused(
        ColumnType::Timestamp,
        json!("2024-01-01T25:00:00Z")
    ));
    assert!(refused(
        ColumnType::Timestamp,
        json!("2024-01-01T10:61:00Z")
    ));
    assert!(refused(
        ColumnType::Timestamp,
        json!("2024-01-01T10:00:00+02:99")
    ));
    assert!(refused(
        ColumnType::Timestamp,
        json!("2024-01-01T10:00:00+2:00")
    ));
    assert!(refused(
        ColumnType::Timestamp,
        json!("2024-13-01T10:00:00Z")
    ));
    assert!(refused(
        ColumnType::Timestamp,
        json!("2016-12-31T23:59:60Z")
    ));
    assert!(refused(ColumnType::Timestamp, json!("2024-01-01T10:00:00")));
    assert!(refused(
        ColumnType::Timestamp,
        json!("0000-01-01T00:00:00Z")
    ));
    assert!(refused(ColumnType::Timestamp, json!(1.5)));
    assert!(refused(ColumnType::Timestamp, json!(i64::MAX)));
    assert!(refused(ColumnType::Date, json!("2023-02-29")));
    assert!(refused(ColumnType::Date, json!("2024-02-29T10:00:00Z")));
    assert!(refused(ColumnType::Date, json!("24-02-01")));
    assert!(refused(ColumnType::Time, json!("24:00:00")));
    assert!(refused(ColumnType::Time, json!("12:00:00+02:00")));
    assert!(refused(ColumnType::Boolean, json!("yes")));
}

#[test]
fn nothing_is_rounded_or_truncated() {
    // Sub-microsecond digits were cut to milliseconds before.
    assert!(refused(
        ColumnType::Timestamp,
        json!("2024-01-01T10:00:00.123456789Z")
    ));
    assert_eq!(
        pg(ColumnType::Timestamp, json!("2024-01-01T10:00:00.123456Z")).unwrap(),
        ts("2024-01-01T10:00:00.123456Z")
    );
    let sqlite = convert(
        &col(ColumnType::Timestamp),
        json!("2024-01-01T10:00:00.1234Z"),
        Dialect::Sqlite,
    );
    assert_eq!(sqlite.unwrap_err().reason, "invalid_field");
    assert!(refused(ColumnType::Real, json!("NaN")));
    assert!(refused(ColumnType::Real, json!("1e400")));
    assert!(refused(ColumnType::Integer, json!(2.5)));
    assert!(refused(ColumnType::SmallInt, json!(32_768)));
    assert!(refused(ColumnType::Int, json!(-2_147_483_649_i64)));
    assert!(refused(ColumnType::Integer, json!(u64::MAX)));
    assert_eq!(
        pg(ColumnType::SmallInt, json!(-32_768)).unwrap(),
        SqlValue::Int(-32_768)
    );
    assert_eq!(
        pg(ColumnType::Integer, json!(3.0)).unwrap(),
        SqlValue::Int(3)
    );
}

#[test]
fn exact_columns_take_the_digits_the_producer_wrote() {
    let pg = Dialect::Postgres;
    // serde_json reads 0.1000000000000000055 as the f64 0.1: the numeric kept "0.1" before.
    assert_eq!(
        from_payload(ColumnType::Numeric, r#"{"v": 0.1000000000000000055}"#, pg).unwrap(),
        SqlValue::Text("0.1000000000000000055".into())
    );
    assert_eq!(
        from_payload(ColumnType::Numeric, r#"{"v": 2.50}"#, pg).unwrap(),
        SqlValue::Text("2.50".into())
    );
    // And 1.0000000000000001 reads as 1.0: an integer column took it as 1.
    let f = from_payload(ColumnType::Integer, r#"{"v": 1.0000000000000001}"#, pg).unwrap_err();
    assert_eq!(f.reason, "invalid_field");
    assert!(f.error.contains("1.0000000000000001"), "{}", f.error);
    assert!(
        from_payload(
            ColumnType::Numeric,
            r#"{"v": 0.1000000000000000055}"#,
            Dialect::Sqlite
        )
        .is_err()
    );
    // A text column wrote the number's f64 form: "2.5" for 2.50, "0.1" for 0.1000000000000000055.
    assert_eq!(
        from_payload(ColumnType::Text, r#"{"v": 0.1000000000000000055}"#, pg).unwrap(),
        SqlValue::Text("0.1000000000000000055".into())
    );
}

#[test]
fn a_payload_that_is_not_text_is_refused_not_replaced() {
    let mut c = col(ColumnType::Text);
    c.from = ValueSource::Payload;
    let msg = Message::new(vec![b'a', 0xff, b'b']);
    let f = value_of(&c, &msg, None, Dialect::Postgres).unwrap_err();
    assert_eq!(f.reason, "invalid_field");
    assert!(f.error.contains("not UTF-8"), "{}", f.error);
}

#[test]
fn the_error_names_the_column_and_the_value() {
    let f = pg(ColumnType::Timestamp, json!("2024-02-30T00:00:00Z")).unwrap_err();
    assert!(f.error.contains("column `c`"), "{}", f.error);
    assert!(f.error.contains("2024-02-30T00:00:00Z"), "{}", f.error);
    let long = "9".repeat(10_000);
    let f = pg(ColumnType::SmallInt, json!(long)).unwrap_err();
    assert!(
        f.error.len() < 400,
        "a huge value is quoted in part: {}",
        f.error.len()
    );
}
