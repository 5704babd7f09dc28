//! Which letters a `riverbed dlq` command applies to: `--filter reason=...`, `--since`, ids.

use anyhow::{Result, bail};

/// The selection options shared by every `dlq` command.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SelectArgs {
    /// Only letters matching this: `reason=NAME` or `stage=NAME` (repeat to require several).
    #[arg(long = "filter", value_name = "FIELD=VALUE")]
    pub filters: Vec<String>,
    /// Only letters dead-lettered at or after this time: RFC 3339 (`2026-05-01T12:00:00Z`) or
    /// a duration before now (`90m`, `2h`, `1d`).
    #[arg(long, value_name = "TIME_OR_DURATION")]
    pub since: Option<String>,
    /// Embedded logs: only this topic.
    #[arg(long)]
    pub topic: Option<String>,
}

/// The checked selection.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selection {
    /// The letter's reason must be this.
    pub reason: Option<String>,
    /// The letter's stage must be this.
    pub stage: Option<String>,
    /// The letter must have been dead-lettered at or after this (ms since the Unix epoch).
    pub since_ms: Option<i64>,
    /// When not empty, the letter's id must be one of these.
    pub ids: Vec<String>,
}

impl Selection {
    /// Parses the options; `now_ms` anchors a `--since` duration.
    pub fn parse(args: &SelectArgs, ids: &[String], now_ms: i64) -> Result<Self> {
        let mut s = Selection {
            ids: ids.to_vec(),
            ..Selection::default()
        };
        for f in &args.filters {
            let Some((field, value)) = f.split_once('=') else {
                bail!("--filter {f}: expected FIELD=VALUE, such as reason=malformed_payload")
            };
            let slot = match field.trim() {
                "reason" => &mut s.reason,
                "stage" => &mut s.stage,
                other => bail!("--filter {f}: unknown field `{other}` (expected reason or stage)"),
            };
            if slot.is_some() {
                bail!("--filter {f}: `{}` is filtered twice", field.trim());
            }
            *slot = Some(value.trim().to_owned());
        }
        s.since_ms = args
            .since
            .as_deref()
            .map(|t| since_ms(t, now_ms))
            .transpose()?;
        Ok(s)
    }

    /// Whether no condition is set (the command applies to every letter).
    pub fn is_everything(&self) -> bool {
        self.reason.is_none()
            && self.stage.is_none()
            && self.since_ms.is_none()
            && self.ids.is_empty()
    }

    /// Whether a letter with these facts is selected. A letter without a failure time never
    /// matches `--since`.
    pub fn matches(&self, id: &str, reason: &str, stage: Option<&str>, at_ms: Option<i64>) -> bool {
        self.reason.as_deref().is_none_or(|r| r == reason)
            && self.stage.as_deref().is_none_or(|s| Some(s) == stage)
            && self
                .since_ms
                .is_none_or(|t| at_ms.is_some_and(|at| at >= t))
            && (self.ids.is_empty() || self.ids.iter().any(|i| i == id))
    }
}

/// `--since`: an RFC 3339 time, or a duration before `now_ms`.
fn since_ms(text: &str, now_ms: i64) -> Result<i64> {
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Ok(t.as_millisecond());
    }
    match text.parse::<jiff::SignedDuration>() {
        Ok(d) if !d.is_negative() => {
            Ok(now_ms.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
        }
        _ => bail!(
            "--since {text}: expected an RFC 3339 time (2026-05-01T12:00:00Z) or a duration \
             (90m, 2h, 1d)"
        ),
    }
}

/// Now, in ms since the Unix epoch.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// A time in ms since the Unix epoch as RFC 3339 text.
pub fn rfc3339(ms: i64) -> Option<String> {
    jiff::Timestamp::from_millisecond(ms)
        .ok()
        .map(|t| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(filters: &[&str], since: Option<&str>) -> SelectArgs {
        SelectArgs {
            filters: filters.iter().map(|f| f.to_string()).collect(),
            since: since.map(str::to_owned),
            topic: None,
        }
    }

    #[test]
    fn filters_and_since_parse_and_match() {
        let now = 10 * 3_600_000;
        let s =
            Selection::parse(&args(&["reason=bad", "stage = out"], Some("2h")), &[], now).unwrap();
        assert_eq!(s.reason.as_deref(), Some("bad"));
        assert_eq!(s.since_ms, Some(8 * 3_600_000));
        assert!(s.matches("m1", "bad", Some("out"), Some(9 * 3_600_000)));
        assert!(
            !s.matches("m1", "bad", Some("out"), Some(7 * 3_600_000)),
            "too old"
        );
        assert!(
            !s.matches("m1", "bad", Some("out"), None),
            "no time: never since"
        );
        assert!(!s.matches("m1", "other", Some("out"), Some(9 * 3_600_000)));
        assert!(!s.matches("m1", "bad", None, Some(9 * 3_600_000)));
        let t = Selection::parse(&args(&[], Some("2026-05-01T00:00:00Z")), &[], 0).unwrap();
        assert_eq!(t.since_ms, Some(1_777_593_600_000));
        let ids = Selection::parse(&args(&[], None), &["a".into()], 0).unwrap();
        assert!(ids.matches("a", "x", None, None) && !ids.matches("b", "x", None, None));
        assert!(
            Selection::parse(&args(&[], None), &[], 0)
                .unwrap()
                .is_everything()
        );
    }

    #[test]
    fn bad_filters_are_refused_naming_them() {
        let e = |f: &[&str], since| {
            Selection::parse(&args(f, since), &[], 0)
                .unwrap_err()
                .to_string()
        };
        assert!(e(&["reason"], None).contains("expected FIELD=VALUE"));
        assert!(e(&["colour=red"], None).contains("unknown field `colour`"));
        assert!(e(&["reason=a", "reason=b"], None).contains("filtered twice"));
        assert!(e(&[], Some("yesterday")).contains("--since yesterday"));
    }
}
