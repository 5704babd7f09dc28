//! Checks of stored offsets: which sinks a stream resumes after, and that no two sinks share
//! an offsets consumer.

use toml::Spanned;

use super::check::{Checker, SinkPlan, SinkPlanKind};
use super::load::ConfigError;
use super::raw::{SinkEntry, SourceKind};

/// The offsets consumer a sink stores positions under, if it does.
pub(super) fn offsets_consumer(kind: &SinkPlanKind) -> Option<&str> {
    match kind {
        SinkPlanKind::Sqlite { offsets, .. } => offsets.as_deref(),
        SinkPlanKind::Postgres(p) => p.offsets.as_deref(),
        _ => None,
    }
}

/// Two sinks storing offsets under one consumer name would mix their positions.
pub(super) fn check_consumers(
    c: &Checker<'_>,
    raw: &[SinkEntry],
    sinks: &[SinkPlan],
) -> Result<(), ConfigError> {
    for (i, s) in sinks.iter().enumerate() {
        let Some(consumer) = offsets_consumer(&s.kind) else {
            continue;
        };
        if let Some(other) = sinks[..i]
            .iter()
            .find(|o| offsets_consumer(&o.kind) == Some(consumer))
        {
            return c.err(
                raw[i].name.span(),
                format!(
                    "sink `{}`: `offsets` consumer `{consumer}` is also used by sink `{}` (each \
                     sink needs its own)",
                    s.name, other.name
                ),
            );
        }
    }
    Ok(())
}

/// The sinks whose stored positions a stream resumes after: the one `resume_from` names and
/// every other sink, which must all store offsets (a sink that does not could hold
/// uncommitted messages below the resume point: they would be skipped). A `noop` sink
/// commits nothing and needs none.
pub(super) fn check_resume(
    c: &Checker<'_>,
    name: &Spanned<String>,
    sinks: &[SinkPlan],
    source: &SourceKind,
) -> Result<Vec<usize>, ConfigError> {
    if !matches!(source, SourceKind::Amqp(_)) {
        return c.err(
            name.span(),
            "`pipeline.resume_from` applies to a stream source (kind = \"amqp\")",
        );
    }
    let Some(named) = sinks.iter().position(|s| &s.name == name.get_ref()) else {
        return c.err(
            name.span(),
            format!(
                "`pipeline.resume_from`: no sink is named `{}`",
                name.get_ref()
            ),
        );
    };
    let mut from = vec![named];
    for (i, s) in sinks.iter().enumerate() {
        let stores = offsets_consumer(&s.kind).is_some();
        if stores && i != named {
            from.push(i);
        }
        if stores || matches!(s.kind, SinkPlanKind::Noop) {
            continue;
        }
        let why = match i == named {
            true => String::new(),
            false => format!(
                ": the stream resumes after the lowest position of all sinks, and messages \
                 `{}` has not committed would be skipped",
                s.name
            ),
        };
        return c.err(
            name.span(),
            format!(
                "`pipeline.resume_from`: sink `{}` stores no offsets (set its `offsets`){why}",
                s.name
            ),
        );
    }
    Ok(from)
}

#[cfg(test)]
mod tests {
    use super::super::load_str;

    const STREAM: &str = r#"[pipeline]
partitions = 2
resume_from = "history"

[source]
kind = "amqp"
urls = ["amqp://guest:guest@127.0.0.1:5672/%2f"]
queue = "orders.history"
queue_type = "stream"
stream_offset = "first"

[[sinks]]
name = "history"
kind = "postgres"
connection = { url = "postgres://postgres@127.0.0.1:5432/test" }
mode = "append"
table = "history"
key = ["id"]
offsets = "history"
columns = [{ name = "id", type = "text", from = "/id" }]
"#;

    const COPY: &str = r#"
[[sinks]]
name = "copy"
kind = "sqlite"
path = "copy.db"
table = "copy"
key = ["id"]
offsets = "copy"
columns = [{ name = "id", type = "text", from = "/id" }]
"#;

    #[test]
    fn a_stream_resumes_after_the_lowest_position_of_every_sink() {
        assert_eq!(load_str(STREAM).unwrap().resume_from, [0]);
        let plan = load_str(&format!("{STREAM}{COPY}")).unwrap();
        assert_eq!(plan.resume_from, [0, 1]);
        let noop = "\n[[sinks]]\nname = \"nothing\"\nkind = \"noop\"\n";
        assert_eq!(
            load_str(&format!("{STREAM}{noop}")).unwrap().resume_from,
            [0]
        );
    }

    #[test]
    fn a_sink_without_offsets_next_to_resume_from_is_refused() {
        let text = format!("{STREAM}{}", COPY.replace("offsets = \"copy\"\n", ""));
        let e = load_str(&text).unwrap_err().to_string();
        assert!(
            e.starts_with(
                "line 3, column 15: `pipeline.resume_from`: sink `copy` stores no offsets"
            ),
            "{e}"
        );
        assert!(e.contains("would be skipped"), "{e}");
    }

    #[test]
    fn two_sinks_sharing_an_offsets_consumer_are_refused() {
        let text = format!(
            "{STREAM}{}",
            COPY.replace("offsets = \"copy\"", "offsets = \"history\"")
        );
        let e = load_str(&text).unwrap_err().to_string();
        assert!(
            e.contains("sink `copy`: `offsets` consumer `history` is also used by sink `history`"),
            "{e}"
        );
    }
}
