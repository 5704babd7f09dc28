//! Integers, reals and decimals: exact or refused, never rounded into their column.

use std::str::FromStr;

use bigdecimal::{BigDecimal, ToPrimitive};

use crate::sqlgen::Dialect;

/// Most digits before the decimal point a PostgreSQL `numeric` holds.
const PG_MAX_INTEGER_DIGITS: i64 = 131_072;
/// Most digits after the decimal point a PostgreSQL `numeric` holds.
const PG_MAX_SCALE: i64 = 16_383;
/// Significant digits SQLite keeps when it turns text into a REAL (NUMERIC affinity).
const SQLITE_REAL_DIGITS: u64 = 15;

/// An exact decimal from text (`12.50`, `-0.5`, `1e3`); `None` for anything else (`NaN`,
/// `1_000`, `12,5`, hex).
pub(crate) fn decimal(text: &str) -> Option<BigDecimal> {
    if text.is_empty() || text.contains('_') {
        return None;
    }
    BigDecimal::from_str(text).ok()
}

/// Digits before the decimal point (of the value without trailing zeros), and its scale.
fn shape(d: &BigDecimal) -> (i64, i64) {
    let n = d.normalized();
    let (_, scale) = n.as_bigint_and_exponent();
    (n.digits() as i64 - scale, scale)
}

/// The integer `text` stands for, if it is one within `min..=max` (`42`, `42.0`, `4.2e1`).
pub(crate) fn integer(text: &str, min: i64, max: i64) -> Result<i64, &'static str> {
    let n = match text.parse::<i64>() {
        Ok(n) => n,
        Err(_) => {
            let d = decimal(text).ok_or("not a number")?;
            let (int_digits, scale) = shape(&d);
            if scale > 0 {
                return Err("has a fraction: it would be rounded");
            }
            if int_digits > 19 {
                return Err("out of range for the column");
            }
            d.to_i64().ok_or("out of range for the column")?
        }
    };
    if n < min || n > max {
        return Err("out of range for the column");
    }
    Ok(n)
}

/// A finite `f64` from text: a `real` column holds the nearest double by definition (as
/// PostgreSQL's `double precision` and SQLite's REAL do); what overflows it is refused.
pub(crate) fn real(text: &str) -> Result<f64, &'static str> {
    let f: f64 = text.parse().map_err(|_| "not a number")?;
    if !f.is_finite() {
        return Err("not a finite number: it overflows a double");
    }
    Ok(f)
}

/// The exact decimal text to bind for a `numeric` column: checked against what the database
/// keeps exactly (SQLite keeps an integer literal within i64 exactly, anything else through a
/// REAL of 15 significant digits).
pub(crate) fn numeric(text: &str, d: Dialect) -> Result<String, &'static str> {
    let value = decimal(text).ok_or("not a decimal number")?;
    let (int_digits, scale) = shape(&value);
    match d {
        Dialect::Postgres if int_digits > PG_MAX_INTEGER_DIGITS || scale > PG_MAX_SCALE => {
            Err("outside the range of a PostgreSQL numeric")
        }
        Dialect::Sqlite
            if value.normalized().digits() > SQLITE_REAL_DIGITS && text.parse::<i64>().is_err() =>
        {
            Err("more than 15 significant digits: SQLite would round it")
        }
        _ => Ok(text.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_exact_and_in_range() {
        assert_eq!(integer("42", i64::MIN, i64::MAX), Ok(42));
        assert_eq!(integer("42.0", i64::MIN, i64::MAX), Ok(42));
        assert_eq!(integer("4.2e1", i64::MIN, i64::MAX), Ok(42));
        assert!(integer("42.5", i64::MIN, i64::MAX).is_err());
        assert!(integer("1.0000000000000001", i64::MIN, i64::MAX).is_err());
        assert!(integer("32768", i16::MIN.into(), i16::MAX.into()).is_err());
        assert!(integer("9223372036854775808", i64::MIN, i64::MAX).is_err());
        assert!(integer("1e999999999", i64::MIN, i64::MAX).is_err());
        assert!(integer("1_000", i64::MIN, i64::MAX).is_err());
    }

    #[test]
    fn reals_refuse_what_overflows_a_double() {
        assert_eq!(real("-66344362501269880"), Ok(-6.634436250126988e16));
        assert!(real("inf").is_err());
        assert!(real("-1e309").is_err());
    }

    #[test]
    fn decimals_keep_their_digits_or_are_refused() {
        let pg = Dialect::Postgres;
        let sq = Dialect::Sqlite;
        assert_eq!(
            numeric("0.1000000000000000055", pg).unwrap(),
            "0.1000000000000000055"
        );
        assert!(numeric("0.1000000000000000055", sq).is_err());
        assert_eq!(
            numeric("9223372036854775807", sq).unwrap(),
            "9223372036854775807"
        );
        assert!(numeric("9223372036854775808", sq).is_err());
        assert_eq!(numeric("12.50", sq).unwrap(), "12.50");
        assert!(numeric("1e200000", pg).is_err());
        assert!(numeric("NaN", pg).is_err());
        assert!(numeric("12,5", pg).is_err());
    }
}
