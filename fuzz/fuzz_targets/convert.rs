//! Every SQL value converter, on any payload and on any string: never a panic, and what a
//! converter accepts is bound as text that reads back as the same value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use riverbed_core::Message;
use riverbed_sql::{Column, ColumnType, Dialect, Ident, SqlValue, TableSpec, WriteMode, row_of};

const TYPES: [ColumnType; 13] = [
    ColumnType::Text,
    ColumnType::SmallInt,
    ColumnType::Int,
    ColumnType::Integer,
    ColumnType::Real,
    ColumnType::Numeric,
    ColumnType::Boolean,
    ColumnType::Json,
    ColumnType::Bytes,
    ColumnType::Timestamp,
    ColumnType::Date,
    ColumnType::Time,
    ColumnType::Text,
];

fn spec(ty: ColumnType, from: &str) -> TableSpec {
    TableSpec {
        table: vec![Ident::new("t").unwrap()],
        columns: vec![Column {
            name: Ident::new("c").unwrap(),
            ty,
            from: from.parse().unwrap(),
            required: false,
        }],
        key: Vec::new(),
        mode: WriteMode::Insert,
        create: false,
    }
}

fn check(ty: ColumnType, v: &SqlValue) {
    match (ty, v) {
        (_, SqlValue::Null) => {}
        (ColumnType::SmallInt, SqlValue::Int(i)) => assert!(i16::try_from(*i).is_ok()),
        (ColumnType::Int, SqlValue::Int(i)) => assert!(i32::try_from(*i).is_ok()),
        (ColumnType::Timestamp, SqlValue::Timestamp(t)) => {
            assert_eq!(t.to_string().parse::<jiff::Timestamp>().ok(), Some(*t));
        }
        (ColumnType::Date, SqlValue::Date(d)) => {
            assert_eq!(d.to_string().parse::<jiff::civil::Date>().ok(), Some(*d));
        }
        (ColumnType::Time, SqlValue::Time(t)) => {
            assert_eq!(t.to_string().parse::<jiff::civil::Time>().ok(), Some(*t));
        }
        (ColumnType::Real, SqlValue::Float(f)) => assert!(f.is_finite()),
        _ => {}
    }
}

fn convert_all(payload: &[u8]) {
    let msg = Message::new(payload.to_vec());
    for (i, ty) in TYPES.iter().enumerate() {
        let from = if i == TYPES.len() - 1 {
            "$payload"
        } else {
            "/v"
        };
        for d in [Dialect::Postgres, Dialect::Sqlite] {
            if let Ok(row) = row_of(&spec(*ty, from), &msg, d) {
                check(*ty, &row[0]);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    convert_all(data);
    let text = String::from_utf8_lossy(data);
    convert_all(serde_json::json!({ "v": text }).to_string().as_bytes());
});
