//! Turning message fields into typed SQL values: each converter parses with a well-kept crate
//! (jiff for time, bigdecimal for decimals) and refuses, as `invalid_field` naming the column
//! and the value, anything its column would not keep exactly. Nothing is shifted, rounded or
//! truncated on the way.

mod number;
mod raw;
mod time;

use riverbed_core::{Failure, Message};
use serde_json::Value;

use crate::spec::{Column, ColumnType, SqlValue, ValueSource};
use crate::sqlgen::Dialect;

/// Longest stretch of a refused value quoted in its error.
const QUOTED_MAX: usize = 200;

fn invalid(c: &Column, shown: &str, why: &str) -> Failure {
    let mut shown = shown.to_owned();
    if shown.len() > QUOTED_MAX {
        let cut = (0..=QUOTED_MAX)
            .rev()
            .find(|i| shown.is_char_boundary(*i))
            .unwrap_or(0);
        shown.truncate(cut);
        shown.push_str("...");
    }
    Failure::new(
        "invalid_field",
        format!(
            "column `{}` ({:?}) cannot take {shown} from {}: {why}",
            c.name, c.ty, c.from
        ),
    )
}

/// The value of column `c` for `msg`, whose decoded body is `body` (if it has one), for a
/// database of dialect `d`.
pub fn value_of(
    c: &Column,
    msg: &Message,
    body: Option<&Value>,
    d: Dialect,
) -> Result<SqlValue, Failure> {
    let json = match &c.from {
        ValueSource::Pointer(p) => {
            let found = body.and_then(|b| riverbed_core::json_pointer(b, p));
            if let Some(Value::Number(n)) = found
                && n.is_f64()
                && exact_column(c.ty)
                && let Some(text) = raw::number_text(&msg.payload, p, n.as_f64().unwrap_or(0.0))
            {
                return convert_text(c, found.cloned().unwrap_or(Value::Null), text, d);
            }
            found.cloned().unwrap_or(Value::Null)
        }
        ValueSource::Key => msg.key.clone().map(Value::String).unwrap_or(Value::Null),
        ValueSource::Payload => return payload(c, msg, body),
        ValueSource::Position => msg.meta.position.map(Value::from).unwrap_or(Value::Null),
        ValueSource::MessageId => msg
            .meta
            .message_id
            .clone()
            .map(Value::String)
            .unwrap_or(Value::Null),
        ValueSource::Subject => msg
            .meta
            .subject
            .clone()
            .map(Value::String)
            .unwrap_or(Value::Null),
        ValueSource::ReceivedAt => {
            let ms = msg
                .meta
                .received_at
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            Value::from(ms)
        }
        ValueSource::Header(h) => match msg.headers.get(h) {
            None => Value::Null,
            Some(v) => serde_json::to_value(v).unwrap_or(Value::Null),
        },
        ValueSource::Equals { pointer, value } => {
            let found = body.and_then(|b| riverbed_core::json_pointer(b, pointer));
            Value::Bool(found.and_then(Value::as_str) == Some(value.as_str()))
        }
    };
    convert(c, json, d)
}

/// Columns that must see the digits a producer wrote, not their nearest `f64`.
fn exact_column(ty: ColumnType) -> bool {
    matches!(
        ty,
        ColumnType::Numeric
            | ColumnType::Integer
            | ColumnType::Int
            | ColumnType::SmallInt
            | ColumnType::Text
            | ColumnType::Bytes
    )
}

fn payload(c: &Column, msg: &Message, body: Option<&Value>) -> Result<SqlValue, Failure> {
    Ok(match c.ty {
        ColumnType::Bytes => SqlValue::Bytes(msg.payload.to_vec()),
        ColumnType::Json => match body {
            Some(b) => SqlValue::Json(b.clone()),
            None => return Err(Failure::malformed("payload is not JSON")),
        },
        _ => match std::str::from_utf8(&msg.payload) {
            Ok(s) => SqlValue::Text(s.to_owned()),
            Err(e) => {
                let shown = format!("{} payload bytes", msg.payload.len());
                return Err(invalid(c, &shown, &format!("not UTF-8 text ({e})")));
            }
        },
    })
}

/// Converts `v` (a JSON value taken from a message) for column `c` in a database of dialect
/// `d`. A JSON number here is read as `serde_json` decoded it; [`value_of`] passes the
/// producer's digits to exact columns instead.
pub fn convert(c: &Column, v: Value, d: Dialect) -> Result<SqlValue, Failure> {
    let text = match &v {
        Value::Null => return Ok(SqlValue::Null),
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    convert_text(c, v, &text, d)
}

/// Converts `v` whose text (a string's content, a number's digits) is `text`.
fn convert_text(c: &Column, v: Value, text: &str, d: Dialect) -> Result<SqlValue, Failure> {
    let scalar = matches!(v, Value::String(_) | Value::Number(_));
    let shown = match &v {
        Value::Number(_) => text.to_owned(),
        other => other.to_string(),
    };
    let refuse = |why: &str| Err(invalid(c, &shown, why));
    let int = |min: i64, max: i64| match &v {
        Value::Number(n) if n.is_i64() && (min..=max).contains(&n.as_i64().unwrap_or(0)) => {
            Ok(SqlValue::Int(n.as_i64().unwrap_or(0)))
        }
        _ if scalar => number::integer(text, min, max)
            .map(SqlValue::Int)
            .map_err(|why| invalid(c, &shown, why)),
        _ => refuse("not an integer"),
    };
    match c.ty {
        ColumnType::Text => Ok(SqlValue::Text(match v {
            Value::String(s) => s,
            Value::Number(_) => text.to_owned(),
            other => other.to_string(),
        })),
        ColumnType::SmallInt => int(i16::MIN.into(), i16::MAX.into()),
        ColumnType::Int => int(i32::MIN.into(), i32::MAX.into()),
        ColumnType::Integer => int(i64::MIN, i64::MAX),
        ColumnType::Real if scalar => number::real(text)
            .map(SqlValue::Float)
            .map_err(|why| invalid(c, &shown, why)),
        ColumnType::Numeric if scalar => number::numeric(text, d)
            .map(SqlValue::Text)
            .map_err(|why| invalid(c, &shown, why)),
        ColumnType::Boolean => match (&v, text) {
            (Value::Bool(b), _) => Ok(SqlValue::Bool(*b)),
            (Value::String(_), "true") => Ok(SqlValue::Bool(true)),
            (Value::String(_), "false") => Ok(SqlValue::Bool(false)),
            _ => refuse("not a boolean (true or false)"),
        },
        ColumnType::Json => Ok(SqlValue::Json(v)),
        ColumnType::Bytes => Ok(SqlValue::Bytes(match v {
            Value::String(s) => s.into_bytes(),
            Value::Number(_) => text.as_bytes().to_vec(),
            other => other.to_string().into_bytes(),
        })),
        ColumnType::Timestamp => match &v {
            Value::Number(n) => match n.as_i64() {
                Some(ms) => time::timestamp_ms(ms, d),
                None => Err("not whole milliseconds since the epoch".into()),
            },
            Value::String(_) => time::timestamp(text, d),
            _ => Err("not a timestamp".into()),
        }
        .map(SqlValue::Timestamp)
        .map_err(|why| invalid(c, &shown, &why)),
        ColumnType::Date if matches!(v, Value::String(_)) => time::date(text)
            .map(SqlValue::Date)
            .map_err(|why| invalid(c, &shown, &why)),
        ColumnType::Time if matches!(v, Value::String(_)) => time::time(text, d)
            .map(SqlValue::Time)
            .map_err(|why| invalid(c, &shown, &why)),
        ColumnType::Real | ColumnType::Numeric => refuse("not a number"),
        ColumnType::Date | ColumnType::Time => refuse("not text"),
    }
}

pub(crate) use time::timestamp_text;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
