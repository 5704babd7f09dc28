//! Timestamps, dates and times, parsed with jiff: an impossible or ambiguous value is refused,
//! never moved to a neighbouring valid one.

use jiff::Timestamp;
use jiff::civil::{Date, Time};
use jiff::fmt::strtime;

use crate::sqlgen::Dialect;

/// The smallest step each database keeps, in nanoseconds: PostgreSQL microseconds, SQLite
/// milliseconds (Riverbed stores integer milliseconds there).
fn timestamp_step(d: Dialect) -> i32 {
    match d {
        Dialect::Postgres => 1_000,
        Dialect::Sqlite => 1_000_000,
    }
}

/// A leap second (`23:59:60`) has no place on the POSIX time line: jiff and PostgreSQL would
/// both move it to a neighbouring second, so it is refused.
fn leap_second(text: &str) -> bool {
    text.contains(":60")
}

/// The first year both databases and jiff agree on (no year 0 or BC).
fn plausible_year(year: i16) -> Result<(), &'static str> {
    if year < 1 {
        return Err("before the year 1");
    }
    Ok(())
}

/// An RFC 3339 / ISO 8601 timestamp with an offset (`2024-02-29T12:00:00.5+01:00`).
pub(crate) fn timestamp(text: &str, d: Dialect) -> Result<Timestamp, String> {
    if leap_second(text) {
        return Err("a leap second".into());
    }
    let t: Timestamp = text.parse().map_err(|e: jiff::Error| e.to_string())?;
    checked(t, d)
}

/// Milliseconds since the epoch.
pub(crate) fn timestamp_ms(ms: i64, d: Dialect) -> Result<Timestamp, String> {
    checked(
        Timestamp::from_millisecond(ms).map_err(|e| e.to_string())?,
        d,
    )
}

fn checked(t: Timestamp, d: Dialect) -> Result<Timestamp, String> {
    plausible_year(jiff::tz::Offset::UTC.to_datetime(t).year())?;
    if t.subsec_nanosecond() % timestamp_step(d) != 0 {
        return Err(match d {
            Dialect::Postgres => "finer than a microsecond: PostgreSQL would round it".into(),
            Dialect::Sqlite => "finer than a millisecond: the column keeps milliseconds".into(),
        });
    }
    Ok(t)
}

/// A calendar date, `YYYY-MM-DD` and nothing else (a date-time would lose its time).
pub(crate) fn date(text: &str) -> Result<Date, String> {
    let date: Date = text.parse().map_err(|e: jiff::Error| e.to_string())?;
    if date.to_string() != text {
        return Err("not a date alone in the form YYYY-MM-DD".into());
    }
    plausible_year(date.year())?;
    Ok(date)
}

/// A time of day, `HH:MM`, `HH:MM:SS` or `HH:MM:SS.fff` (no offset: a `time` column has none).
pub(crate) fn time(text: &str, d: Dialect) -> Result<Time, String> {
    if leap_second(text) {
        return Err("a leap second".into());
    }
    let parsed = ["%H:%M:%S%.f", "%H:%M"]
        .iter()
        .find_map(|f| strtime::parse(f, text).and_then(|tm| tm.to_time()).ok())
        .ok_or("not a time of day (HH:MM[:SS[.fff]])")?;
    if d == Dialect::Postgres && parsed.subsec_nanosecond() % 1_000 != 0 {
        return Err("finer than a microsecond: PostgreSQL would round it".into());
    }
    Ok(parsed)
}

/// The text PostgreSQL reads back as the same instant (`2024-02-29T12:00:00.5Z`).
pub(crate) fn timestamp_text(t: Timestamp) -> String {
    t.to_string()
}
