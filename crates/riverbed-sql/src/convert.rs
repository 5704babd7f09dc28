//! Turning message fields into typed SQL values.

use riverbed_core::{Failure, Message};
use serde_json::Value;

use crate::spec::{Column, ColumnType, SqlValue, ValueSource};

fn invalid(c: &Column, v: &dyn std::fmt::Display) -> Failure {
    Failure::new(
        "invalid_field",
        format!(
            "column `{}` ({:?}) cannot take {v} from {}",
            c.name, c.ty, c.from
        ),
    )
}

/// The value of column `c` for `msg`, whose decoded body is `body` (if it has one).
pub fn value_of(c: &Column, msg: &Message, body: Option<&Value>) -> Result<SqlValue, Failure> {
    let json = match &c.from {
        ValueSource::Pointer(p) => body
            .and_then(|b| riverbed_core::json_pointer(b, p))
            .cloned()
            .unwrap_or(Value::Null),
        ValueSource::Key => msg.key.clone().map(Value::String).unwrap_or(Value::Null),
        ValueSource::Payload => {
            return Ok(match c.ty {
                ColumnType::Bytes => SqlValue::Bytes(msg.payload.to_vec()),
                ColumnType::Json => match body {
                    Some(b) => SqlValue::Json(b.clone()),
                    None => return Err(Failure::malformed("payload is not JSON")),
                },
                _ => SqlValue::Text(String::from_utf8_lossy(&msg.payload).into_owned()),
            });
        }
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
    convert(c, json)
}

fn convert(c: &Column, v: Value) -> Result<SqlValue, Failure> {
    if v.is_null() {
        return Ok(SqlValue::Null);
    }
    Ok(match c.ty {
        ColumnType::Text => match v {
            Value::String(s) => SqlValue::Text(s),
            other => SqlValue::Text(other.to_string()),
        },
        ColumnType::Integer => match &v {
            Value::Number(n) if n.is_i64() => SqlValue::Int(n.as_i64().expect("checked")),
            Value::Number(n)
                if n.as_f64()
                    .is_some_and(|f| f.fract() == 0.0 && f.abs() < 9.0e15) =>
            {
                SqlValue::Int(n.as_f64().expect("checked") as i64)
            }
            Value::String(s) => SqlValue::Int(s.trim().parse().map_err(|_| invalid(c, &v))?),
            _ => return Err(invalid(c, &v)),
        },
        ColumnType::Real => match &v {
            Value::Number(n) => SqlValue::Float(n.as_f64().ok_or_else(|| invalid(c, &v))?),
            Value::String(s) => SqlValue::Float(s.trim().parse().map_err(|_| invalid(c, &v))?),
            _ => return Err(invalid(c, &v)),
        },
        ColumnType::Numeric => match &v {
            Value::Number(n) => SqlValue::Text(n.to_string()),
            Value::String(s) if is_decimal(s.trim()) => SqlValue::Text(s.trim().to_owned()),
            _ => return Err(invalid(c, &v)),
        },
        ColumnType::Boolean => match &v {
            Value::Bool(b) => SqlValue::Bool(*b),
            Value::String(s) if s == "true" || s == "false" => SqlValue::Bool(s == "true"),
            _ => return Err(invalid(c, &v)),
        },
        ColumnType::Json => SqlValue::Json(v),
        ColumnType::Bytes => match v {
            Value::String(s) => SqlValue::Bytes(s.into_bytes()),
            other => SqlValue::Bytes(other.to_string().into_bytes()),
        },
        ColumnType::Timestamp => match &v {
            Value::Number(n) => SqlValue::TimestampMs(n.as_i64().ok_or_else(|| invalid(c, &v))?),
            Value::String(s) => {
                SqlValue::TimestampMs(parse_rfc3339_ms(s).ok_or_else(|| invalid(c, &v))?)
            }
            _ => return Err(invalid(c, &v)),
        },
    })
}

fn is_decimal(s: &str) -> bool {
    let s = s.strip_prefix('-').unwrap_or(s);
    let mut parts = s.splitn(2, '.');
    let int = parts.next().unwrap_or("");
    let frac = parts.next();
    !int.is_empty()
        && int.chars().all(|c| c.is_ascii_digit())
        && frac.is_none_or(|f| !f.is_empty() && f.chars().all(|c| c.is_ascii_digit()))
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)` into milliseconds since the epoch.
fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b'T' || b[10] == b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, se) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    let mut rest = &s[19..];
    let mut ms = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits: String = frac.chars().take_while(char::is_ascii_digit).collect();
        rest = &frac[digits.len()..];
        ms = format!("{:0<3}", &digits[..digits.len().min(3)])
            .parse()
            .ok()?;
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (o[1..3].parse::<i64>().ok()? * 60 + o[4..6].parse::<i64>().ok()?)
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + mi * 60 + se) - offset_min * 60) * 1000 + ms)
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn converts_and_refuses() {
        assert_eq!(
            convert(&col(ColumnType::Integer), serde_json::json!("42")).unwrap(),
            SqlValue::Int(42)
        );
        assert_eq!(
            convert(&col(ColumnType::Numeric), serde_json::json!(12.5)).unwrap(),
            SqlValue::Text("12.5".into())
        );
        assert!(convert(&col(ColumnType::Numeric), serde_json::json!("12,5")).is_err());
        assert_eq!(
            convert(&col(ColumnType::Integer), serde_json::json!("x"))
                .unwrap_err()
                .reason,
            "invalid_field"
        );
        assert_eq!(
            convert(
                &col(ColumnType::Timestamp),
                serde_json::json!("1970-01-02T00:00:01.5+01:00")
            )
            .unwrap(),
            SqlValue::TimestampMs(86_401_500 - 3_600_000)
        );
        assert_eq!(
            convert(
                &col(ColumnType::Timestamp),
                serde_json::json!("2024-02-29T12:00:00Z")
            )
            .unwrap(),
            SqlValue::TimestampMs(1_709_208_000_000)
        );
    }
}
