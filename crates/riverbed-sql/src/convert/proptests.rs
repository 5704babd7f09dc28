//! Property tests: what a producer formats, each converter parses back to the same value, and
//! what the sink binds for the database parses back to the same value too.

use jiff::civil::{Date, Time};
use jiff::{Timestamp, tz::Offset};
use proptest::prelude::*;
use serde_json::{Value, json};

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

/// Instants from the year 1 to 9999, to the microsecond.
fn instant() -> impl Strategy<Value = Timestamp> {
    (-62_135_596_800_000_000_i64..253_402_300_799_999_999)
        .prop_map(|us| Timestamp::from_microsecond(us).expect("in jiff's range"))
}

fn offset() -> impl Strategy<Value = Offset> {
    (-18 * 60..=18 * 60_i32).prop_map(|m| Offset::from_seconds(m * 60).expect("within ±18h"))
}

fn date() -> impl Strategy<Value = Date> {
    (1_i16..=9999, 1_i8..=12, 1_i8..=31)
        .prop_filter_map("a real day", |(y, m, d)| Date::new(y, m, d).ok())
}

fn time() -> impl Strategy<Value = Time> {
    (0_i8..24, 0_i8..60, 0_i8..60, 0_i32..1_000_000)
        .prop_map(|(h, m, s, us)| Time::new(h, m, s, us * 1000).expect("a valid time"))
}

proptest! {
    #[test]
    fn timestamps_round_trip_at_any_offset(t in instant(), o in offset()) {
        let local = o.to_datetime(t);
        let text = format!("{}{}", local, o);
        let got = pg(ColumnType::Timestamp, json!(text));
        prop_assert_eq!(got.as_ref().ok(), Some(&SqlValue::Timestamp(t)), "{}", text);
        let bound = timestamp_text(t);
        prop_assert_eq!(bound.parse::<Timestamp>().ok(), Some(t));
    }

    #[test]
    fn millisecond_timestamps_round_trip(t in instant()) {
        let ms = t.as_millisecond();
        let got = convert(&col(ColumnType::Timestamp), json!(ms), Dialect::Sqlite);
        let SqlValue::Timestamp(back) = got.unwrap() else { panic!("not a timestamp") };
        prop_assert_eq!(back.as_millisecond(), ms);
    }

    #[test]
    fn dates_round_trip(d in date()) {
        let got = pg(ColumnType::Date, json!(d.to_string()));
        prop_assert_eq!(got.ok(), Some(SqlValue::Date(d)));
    }

    #[test]
    fn times_round_trip(t in time()) {
        let text = t.strftime("%H:%M:%S%.f").to_string();
        let got = pg(ColumnType::Time, json!(text));
        prop_assert_eq!(got.ok(), Some(SqlValue::Time(t)), "{}", text);
        prop_assert_eq!(t.to_string().parse::<Time>().ok(), Some(t));
    }

    #[test]
    fn integers_round_trip_within_their_width(i in any::<i64>()) {
        for (ty, min, max) in [
            (ColumnType::SmallInt, i64::from(i16::MIN), i64::from(i16::MAX)),
            (ColumnType::Int, i64::from(i32::MIN), i64::from(i32::MAX)),
            (ColumnType::Integer, i64::MIN, i64::MAX),
        ] {
            let want = (min..=max).contains(&i).then_some(SqlValue::Int(i));
            prop_assert_eq!(pg(ty, json!(i)).ok(), want.clone());
            prop_assert_eq!(pg(ty, json!(i.to_string())).ok(), want);
        }
    }

    #[test]
    fn decimals_round_trip_digit_for_digit(units in any::<i128>(), scale in 0_u32..40) {
        let digits = units.unsigned_abs().to_string();
        let sign = if units < 0 { "-" } else { "" };
        let text = if scale == 0 {
            format!("{sign}{digits}")
        } else {
            let padded = format!("{digits:0>width$}", width = scale as usize + 1);
            let (int, frac) = padded.split_at(padded.len() - scale as usize);
            format!("{sign}{int}.{frac}")
        };
        let payload = format!(r#"{{"v": {text}}}"#);
        let msg = Message::new(payload.clone().into_bytes());
        let body: Value = serde_json::from_str(&payload).unwrap();
        let got = value_of(&col(ColumnType::Numeric), &msg, Some(&body), Dialect::Postgres);
        prop_assert_eq!(got.ok(), Some(SqlValue::Text(text)));
    }

    #[test]
    fn reals_round_trip_bit_for_bit(f in any::<f64>().prop_filter("finite", |f| f.is_finite())) {
        let SqlValue::Float(back) = pg(ColumnType::Real, json!(f.to_string())).unwrap() else {
            panic!("not a float")
        };
        prop_assert_eq!(back.to_bits(), f.to_bits());
        prop_assert_eq!(pg(ColumnType::Real, json!(f)).ok(), Some(SqlValue::Float(f)));
    }

    #[test]
    fn booleans_round_trip(b in any::<bool>()) {
        prop_assert_eq!(pg(ColumnType::Boolean, json!(b)).ok(), Some(SqlValue::Bool(b)));
        prop_assert_eq!(pg(ColumnType::Boolean, json!(b.to_string())).ok(), Some(SqlValue::Bool(b)));
    }

    #[test]
    fn json_and_text_pass_unchanged(s in ".*") {
        prop_assert_eq!(pg(ColumnType::Text, json!(s.clone())).ok(), Some(SqlValue::Text(s.clone())));
        prop_assert_eq!(pg(ColumnType::Json, json!({"s": s.clone()})).ok(), Some(SqlValue::Json(json!({"s": s}))));
    }
}
