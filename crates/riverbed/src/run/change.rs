//! A requested change of the running configuration, turned into the new file text: a whole new
//! text (`PUT /api/config` with TOML, SIGHUP), or key-value pairs applied to the current text
//! (`PUT /api/config` with JSON, the control queue), keeping its comments and layout.
//!
//! Keys are dotted paths: `pipeline.partitions`, `retry.max_attempts`, `source.prefetch`.
//! Entries of `[[sinks]]`, `[[processors]]` and `[[tasks]]` are chosen by their `name`:
//! `sinks.postgres.batch.max_size`. A nested JSON object stands for its dotted keys
//! (`{"pipeline": {"partitions": 4}}` is `{"pipeline.partitions": 4}`); `null` removes a key.
//! The tables the process itself is made of (`admin`, `control`, `cluster`) cannot change
//! while it runs.

use serde_json::Value as Json;
use toml_edit::{DocumentMut, Item, TableLike, Value};

/// What the change asks for.
#[derive(Debug, Clone)]
pub enum Change {
    /// A whole new pipeline file.
    Replace(String),
    /// Key-value pairs applied to the current file.
    Patch(serde_json::Map<String, Json>),
}

/// The tables read once, at the start of the process.
const FIXED: [&str; 3] = ["admin", "control", "cluster"];

/// Why a change cannot even be tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// It does not parse, or names what does not exist.
    Malformed(String),
    /// It touches a table that only a restart can change.
    Fixed(String),
}

impl Invalid {
    #[cfg(test)]
    pub fn message(&self) -> &str {
        match self {
            Invalid::Malformed(m) | Invalid::Fixed(m) => m,
        }
    }
}

/// The text `change` makes of `current`, and the keys it sets.
pub fn apply(current: &str, change: &Change) -> Result<(String, Vec<String>), Invalid> {
    match change {
        Change::Replace(text) => {
            let changed = fixed_unchanged(current, text)?;
            Ok((text.clone(), changed))
        }
        Change::Patch(pairs) => {
            let mut flat = Vec::new();
            flatten("", pairs, &mut flat);
            if flat.is_empty() {
                return Err(Invalid::Malformed("the change sets no key".into()));
            }
            let mut doc: DocumentMut = current
                .parse()
                .map_err(|e| Invalid::Malformed(format!("the current file does not parse: {e}")))?;
            for (key, value) in &flat {
                set(&mut doc, key, value)?;
            }
            Ok((doc.to_string(), flat.into_iter().map(|(k, _)| k).collect()))
        }
    }
}

/// Nested objects become dotted keys.
fn flatten(prefix: &str, pairs: &serde_json::Map<String, Json>, out: &mut Vec<(String, Json)>) {
    for (k, v) in pairs {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Json::Object(inner) if !inner.is_empty() => flatten(&key, inner, out),
            _ => out.push((key, v.clone())),
        }
    }
}

/// Sets (or, for `null`, removes) `key` in `doc`, keeping the comment beside a value it replaces.
fn set(doc: &mut DocumentMut, key: &str, value: &Json) -> Result<(), Invalid> {
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(Invalid::Malformed(format!(
            "`{key}`: an empty part in the key"
        )));
    }
    if FIXED.contains(&parts[0]) {
        return Err(Invalid::Fixed(format!(
            "`{key}`: [{}] is read once at start; restart the process to change it",
            parts[0]
        )));
    }
    let (last, walk) = parts.split_last().expect("split gives one part at least");
    let mut table: &mut dyn TableLike = doc.as_table_mut();
    let mut rest = walk.iter();
    let mut path = String::new();
    while let Some(part) = rest.next() {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(part);
        let item = table.entry(part).or_insert(toml_edit::table());
        table = match item {
            Item::Table(t) => t,
            Item::Value(Value::InlineTable(t)) => t,
            Item::ArrayOfTables(entries) => {
                let found = rest.next().and_then(|name| {
                    let t = entries
                        .iter_mut()
                        .find(|t| t.get("name").and_then(Item::as_str) == Some(*name))?;
                    Some((name, t))
                });
                let Some((name, t)) = found else {
                    return Err(Invalid::Malformed(format!(
                        "`{key}`: no entry of `{path}` by that name (entries are chosen by \
                         name: `{path}.NAME.field`)"
                    )));
                };
                path.push('.');
                path.push_str(name);
                t
            }
            _ => {
                return Err(Invalid::Malformed(format!(
                    "`{key}`: `{path}` is not a table"
                )));
            }
        };
    }
    if matches!(table.get(last), Some(Item::ArrayOfTables(_))) {
        return Err(Invalid::Malformed(format!(
            "`{key}`: a list of entries; choose one by its name (`{key}.NAME.field`)"
        )));
    }
    if value.is_null() {
        table.remove(last);
        return Ok(());
    }
    let mut new = to_value(key, value)?;
    match table.get_mut(last) {
        Some(Item::Value(old)) => {
            *new.decor_mut() = old.decor().clone();
            *old = new;
        }
        _ => {
            table.insert(last, Item::Value(new));
        }
    }
    Ok(())
}

/// The TOML value of a JSON value; a number is an integer when JSON wrote it as one.
fn to_value(key: &str, v: &Json) -> Result<Value, Invalid> {
    Ok(match v {
        Json::Bool(b) => Value::from(*b),
        Json::String(s) => Value::from(s.as_str()),
        Json::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Value::from(i),
            (None, Some(_)) if n.is_u64() => {
                return Err(Invalid::Malformed(format!(
                    "`{key}`: {n} does not fit a TOML integer"
                )));
            }
            (None, Some(f)) => Value::from(f),
            (None, None) => return Err(Invalid::Malformed(format!("`{key}`: {n} is no number"))),
        },
        Json::Array(items) => {
            let mut a = toml_edit::Array::new();
            for i in items {
                a.push(to_value(key, i)?);
            }
            Value::Array(a)
        }
        Json::Object(fields) => {
            let mut t = toml_edit::InlineTable::new();
            for (k, f) in fields {
                t.insert(k, to_value(key, f)?);
            }
            Value::InlineTable(t)
        }
        Json::Null => return Err(Invalid::Malformed(format!("`{key}`: null inside a value"))),
    })
}

/// Refuses a new text whose fixed tables differ from the current one's; the top-level tables
/// that changed otherwise.
fn fixed_unchanged(current: &str, new: &str) -> Result<Vec<String>, Invalid> {
    let parse = |t: &str| t.parse::<toml::Table>().ok();
    let (Some(old), Some(new)) = (parse(current), parse(new)) else {
        // A text that does not parse is refused by the check, with its line.
        return Ok(Vec::new());
    };
    for name in FIXED {
        if old.get(name) != new.get(name) {
            return Err(Invalid::Fixed(format!(
                "[{name}] is read once at start; restart the process to change it"
            )));
        }
    }
    let mut changed: Vec<String> = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect();
    changed.extend(old.keys().filter(|k| !new.contains_key(*k)).cloned());
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FILE: &str = r#"# the pipeline
[pipeline]
partitions = 2   # two batchers

[source]
kind = "generate"

[[sinks]]
name = "a"
kind = "noop"

[[sinks]]
name = "b"
kind = "noop"
batch = { max_size = 10 }
"#;

    fn patch(v: Json) -> Change {
        Change::Patch(v.as_object().unwrap().clone())
    }

    #[test]
    fn pairs_set_keys_and_keep_comments() {
        let (text, keys) = apply(
            FILE,
            &patch(
                json!({"pipeline.partitions": 4, "sinks.b.batch.max_size": 100,
                          "sinks": {"a": {"batch": {"max_wait": "1s"}}}}),
            ),
        )
        .unwrap();
        let t: toml::Table = text.parse().unwrap();
        assert_eq!(t["pipeline"]["partitions"].as_integer(), Some(4));
        let sinks = t["sinks"].as_array().unwrap();
        assert_eq!(sinks[1]["batch"]["max_size"].as_integer(), Some(100));
        assert_eq!(sinks[0]["batch"]["max_wait"].as_str(), Some("1s"));
        assert!(text.contains("# the pipeline") && text.contains("# two batchers"));
        assert_eq!(keys.len(), 3);
    }

    #[test]
    fn null_removes_a_key_and_new_tables_are_made() {
        let (text, _) = apply(
            FILE,
            &patch(json!({"pipeline.partitions": null, "retry.max_attempts": 3})),
        )
        .unwrap();
        let t: toml::Table = text.parse().unwrap();
        assert!(t["pipeline"].get("partitions").is_none());
        assert_eq!(t["retry"]["max_attempts"].as_integer(), Some(3));
    }

    #[test]
    fn unknown_entries_and_fixed_tables_are_refused() {
        let e = apply(FILE, &patch(json!({"sinks.c.batch.max_size": 1}))).unwrap_err();
        assert!(
            e.message().contains("no entry of `sinks` by that name"),
            "{e:?}"
        );
        let e = apply(FILE, &patch(json!({"admin.listen": "0.0.0.0:1"}))).unwrap_err();
        assert!(matches!(e, Invalid::Fixed(_)), "{e:?}");
        let e = apply(FILE, &patch(json!({"source.kind.x": 1}))).unwrap_err();
        assert!(e.message().contains("is not a table"), "{e:?}");
        let e = apply(FILE, &patch(json!({"sinks.batch": 1}))).unwrap_err();
        assert!(e.message().contains("entries are chosen by name"), "{e:?}");
        assert!(apply(FILE, &patch(json!({}))).is_err());
    }

    #[test]
    fn a_new_text_may_not_change_fixed_tables() {
        let with_admin = format!("{FILE}\n[admin]\nlisten = \"127.0.0.1:1\"\n");
        let e = apply(FILE, &Change::Replace(with_admin.clone())).unwrap_err();
        assert!(matches!(e, Invalid::Fixed(_)));
        let moved = with_admin.replace("partitions = 2", "partitions = 3");
        let (_, changed) = apply(&with_admin, &Change::Replace(moved)).unwrap();
        assert_eq!(changed, vec!["pipeline".to_owned()]);
    }
}
