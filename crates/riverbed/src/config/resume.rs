//! Checks of stored offsets: which sinks a stream resumes after, and that no two sinks share
//! an offsets consumer.

use riverbed_amqp::QueueType;
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

/// The sinks whose stored positions a stream resumes after: the one `resume_from` names,
/// which must store offsets, and every other sink that does (the lowest position of all is
/// where nothing is missing). Sinks that store no offsets may run alongside: every stored
/// position is capped at the source's settled prefix (a message is settled once every sink
/// committed it or its dead letter was stored), so a resume never skips their messages.
pub(super) fn check_resume(
    c: &Checker<'_>,
    name: &Spanned<String>,
    sinks: &[SinkPlan],
    source: &SourceKind,
) -> Result<Vec<usize>, ConfigError> {
    let amqp = match source {
        SourceKind::Amqp(amqp) => amqp,
        SourceKind::Nats(_) => return check_sinks(c, name, sinks),
        _ => {
            return c.err(
                name.span(),
                "`pipeline.resume_from` applies to a stream source (kind = \"amqp\", \
                 queue_type = \"stream\", or kind = \"nats\")",
            );
        }
    };
    if amqp.queue_type != Some(QueueType::Stream) {
        return c.err(
            name.span(),
            "`pipeline.resume_from` applies to a stream source: the amqp source needs \
             queue_type = \"stream\" (a queue has no offsets to resume after)",
        );
    }
    check_sinks(c, name, sinks)
}

/// The sink `resume_from` names stores offsets; every other sink storing offsets counts too.
fn check_sinks(
    c: &Checker<'_>,
    name: &Spanned<String>,
    sinks: &[SinkPlan],
) -> Result<Vec<usize>, ConfigError> {
    let Some(named) = sinks.iter().position(|s| &s.name == name.get_ref()) else {
        return c.err(
            name.span(),
            format!(
                "`pipeline.resume_from`: no sink is named `{}`",
                name.get_ref()
            ),
        );
    };
    if offsets_consumer(&sinks[named].kind).is_none() {
        return c.err(
            name.span(),
            format!(
                "`pipeline.resume_from`: sink `{}` stores no offsets (set its `offsets`)",
                name.get_ref()
            ),
        );
    }
    let others =
        (0..sinks.len()).filter(|&i| i != named && offsets_consumer(&sinks[i].kind).is_some());
    Ok(std::iter::once(named).chain(others).collect())
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
    fn sinks_without_offsets_may_run_next_to_resume_from() {
        // Stored positions never pass the settled prefix: a resume cannot skip what `copy`
        // (or a Redis counter, or stdout) has not committed.
        let copy = COPY.replace("offsets = \"copy\"\n", "");
        let out = "\n[[sinks]]\nname = \"out\"\nkind = \"stdout\"\n";
        let copy2 = COPY.replace("copy", "copy2");
        let plan = load_str(&format!("{STREAM}{copy}{out}{copy2}")).unwrap();
        assert_eq!(
            plan.resume_from,
            [0, 3],
            "every sink storing offsets counts"
        );
        let named = format!("{STREAM}{copy}")
            .replace("resume_from = \"history\"", "resume_from = \"copy\"");
        let e = load_str(&named).unwrap_err().to_string();
        assert!(
            e.starts_with(
                "line 3, column 15: `pipeline.resume_from`: sink `copy` stores no offsets (set its `offsets`)"
            ),
            "{e}"
        );
        assert!(!e.contains("would be skipped"), "{e}");
    }

    #[test]
    fn resume_from_needs_a_stream() {
        let queue = STREAM.replace("queue_type = \"stream\"\nstream_offset = \"first\"\n", "");
        let e = load_str(&queue).unwrap_err().to_string();
        assert!(
            e.starts_with(
                "line 3, column 15: `pipeline.resume_from` applies to a stream source: the amqp \
                 source needs queue_type = \"stream\""
            ),
            "{e}"
        );
        let quorum = STREAM.replace(
            "queue_type = \"stream\"\nstream_offset = \"first\"",
            "queue_type = \"quorum\"",
        );
        let e = load_str(&quorum).unwrap_err().to_string();
        assert!(e.contains("needs queue_type = \"stream\""), "{e}");
    }

    #[test]
    fn a_sqlite_sink_storing_offsets_needs_a_key() {
        let keyless = COPY.replace("key = [\"id\"]\n", "");
        let e = load_str(&format!("{STREAM}{keyless}"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("line 27, column 11: `offsets` needs `key`"),
            "{e}"
        );
        // Without a pipeline resuming from it, too: its stored positions are for a resume.
        let alone = format!("[source]\nkind = \"generate\"\n{keyless}");
        let e = load_str(&alone).unwrap_err().to_string();
        assert!(
            e.starts_with("line 9, column 11: `offsets` needs `key`"),
            "{e}"
        );
        let plain = keyless.replace("offsets = \"copy\"\n", "");
        load_str(&format!("[source]\nkind = \"generate\"\n{plain}")).unwrap();
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
