//! Checking a `[source] kind = "postgres_outbox"` section, each error at the field's line.

use std::ops::Range;

use riverbed_core::RetryMode;

use super::check::Checker;
use super::load::ConfigError;

/// The outbox relay's settings must check, and retries stay in the partition: the outbox
/// cannot hold a message back and hand it out later, and per-entity order needs the
/// partition to wait.
pub(super) fn check_outbox_source(
    c: &Checker<'_>,
    section: Range<usize>,
    o: &riverbed_sql::PostgresOutboxConfig,
    retry: RetryMode,
) -> Result<(), ConfigError> {
    if retry == RetryMode::Broker {
        return c.err(
            section,
            "`retry.mode = \"broker\"` needs a source that can hold messages back; a \
             `postgres_outbox` source keeps per-entity order and retries in the partition: use \
             `in_process`",
        );
    }
    if let Err(e) = o.check() {
        let text = e.to_string();
        let span = named_field(&text)
            .and_then(|f| field_span(c.text, section.clone(), f))
            .unwrap_or(section);
        return c.err(span, format!("`source`: {text}"));
    }
    Ok(())
}

/// The last segment of the first `` `field` `` an error names (`connection.max_connections`
/// gives `max_connections`).
fn named_field(error: &str) -> Option<&str> {
    let start = error.find('`')? + 1;
    let len = error[start..].find('`')?;
    error[start..start + len].rsplit('.').next()
}

/// Where `key = ...` is written inside the `[source]` table that starts at `section` (its
/// own lines and its `[source.*]` sub-tables, also inside inline tables).
fn field_span(text: &str, section: Range<usize>, key: &str) -> Option<Range<usize>> {
    let section = section.start..table_end(text, section.start);
    let body = text.get(section.clone())?;
    let mut from = 0;
    while let Some(i) = body[from..].find(key) {
        let at = from + i;
        let before = body[..at].chars().next_back();
        let after = body[at + key.len()..].trim_start();
        let starts = before.is_none_or(|ch| ch.is_whitespace() || ch == '{' || ch == ',');
        if starts && after.starts_with('=') {
            let start = section.start + at;
            return Some(start..start + key.len());
        }
        from = at + key.len();
    }
    None
}

/// Where the table starting at `start` ends: at the next header that is not one of its
/// sub-tables (`[source.connection]` belongs to `[source]`), else at the end of the text.
fn table_end(text: &str, start: usize) -> usize {
    let mut at = start;
    for line in text[start..].split_inclusive('\n') {
        let t = line.trim_start();
        if at > start && t.starts_with('[') && !t.starts_with("[source.") {
            return at;
        }
        at += line.len();
    }
    text.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_points_at_the_field_it_names() {
        let text = "[source]\nkind = \"x\"\nconnection = { url = \"u\", max_connections = 2 }\n";
        let span = field_span(text, 0..text.len(), "max_connections").unwrap();
        assert_eq!(&text[span], "max_connections");
        assert_eq!(
            named_field("a `connection.max_connections` b"),
            Some("max_connections")
        );
        assert_eq!(field_span(text, 0..text.len(), "connections"), None);
        let tables = "[source]\nkind = 1\n[source.connection]\nurl = 2\n[[sinks]]\nurl = 3\n";
        let span = field_span(tables, 0..8, "url").unwrap();
        assert_eq!(span.start, tables.find("url = 2").unwrap());
        assert_eq!(field_span(tables, 0..8, "name"), None);
    }
}
