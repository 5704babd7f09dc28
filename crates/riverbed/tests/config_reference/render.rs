//! Writes the reference: one section per table of the file, from `RawConfig` down, each field
//! with its type, its default and its doc comment.

use std::fmt::Write;

use quote::ToTokens;
use syn::{Expr, GenericArgument, PathArguments, Type};

use super::index::{Default, Definition, Field, Index, Shape};

/// A table still to be written: its TOML header, the heading's note, its definition.
struct Pending<'a> {
    header: String,
    note: String,
    definition: &'a Definition,
    /// Fields of a `kind` variant are written under the table that chose it.
    extra: Vec<Field>,
}

/// The reference as files: `configuration.md` (the top level, with links) and one file per
/// top-level table, `configuration/<key>.md`, each holding the tables below it.
pub fn reference(index: &Index, root: &str, krate: &str) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = vec![(
        "configuration.md".into(),
        String::from(
            "# Pipeline file reference\n\n\
             Generated from the doc comments of the configuration structs by\n\
             `RIVERBED_BLESS=1 cargo test -p riverbed --test config_reference`; the test fails\n\
             when these files and the code disagree. Every section refuses unknown fields, naming\n\
             the field and its line. Any string value may use `${VAR}` or `${VAR:-default}`.\n\n\
             Types: a *duration* is written like `\"250ms\"`, `\"30s\"` or `\"5m\"`; a *table* is a\n\
             TOML table (`{ a = 1 }` inline or a `[section]`).\n",
        ),
    )];
    let root = index
        .resolve(&syn::parse_str(root).unwrap(), krate)
        .expect("the root type");
    let mut queue = vec![Pending {
        header: String::new(),
        note: String::new(),
        definition: root,
        extra: Vec::new(),
    }];
    let mut seen = std::collections::BTreeSet::new();
    while !queue.is_empty() {
        let next = queue.remove(0);
        let what = format!("{}::{}", next.definition.krate, next.definition.name);
        if !seen.insert((next.header.clone(), next.note.clone(), what)) {
            continue;
        }
        let key = next
            .header
            .trim_matches(['[', ']'])
            .split('.')
            .next()
            .unwrap_or_default()
            .to_owned();
        let name = if key.is_empty() {
            "configuration.md".to_owned()
        } else {
            format!("configuration/{key}.md")
        };
        if !files.iter().any(|(n, _)| *n == name) {
            let header = if next.header.starts_with("[[") {
                format!("[[{key}]]")
            } else {
                format!("[{key}]")
            };
            files[0].1.push_str(&format!(
                "\n`{header}`: see [{key}](configuration/{key}.md).\n"
            ));
            files.push((
                name.clone(),
                format!(
                    "# `{header}`\n\nPart of the [pipeline file reference](../configuration.md), generated from the code.\n"
                ),
            ));
        }
        let out = &mut files
            .iter_mut()
            .find(|(n, _)| *n == name)
            .expect("just added")
            .1;
        let mut found = Vec::new();
        write_table(out, index, &next, &mut found);
        queue.splice(0..0, found);
    }
    files
}

fn write_table<'a>(
    out: &mut String,
    index: &'a Index,
    t: &Pending<'a>,
    found: &mut Vec<Pending<'a>>,
) {
    let d = t.definition;
    let title = match (t.header.is_empty(), t.note.is_empty()) {
        (true, _) => "The top level".to_owned(),
        (false, true) => format!("`{}`", t.header),
        (false, false) => format!("`{}` {}", t.header, t.note),
    };
    let _ = write!(out, "\n## {title}\n\n");
    if !d.doc.is_empty() && !d.doc.starts_with('`') {
        let _ = writeln!(out, "{}\n", d.doc);
    }
    let (fields, defaulted) = match &d.shape {
        Shape::Struct { fields, defaulted } => (fields.clone(), *defaulted),
        Shape::Enum { .. } => (Vec::new(), false),
    };
    let mut rows = Vec::new();
    collect_rows(index, d, &fields, &t.extra, &mut rows);
    if rows.is_empty() {
        return;
    }
    out.push_str("| field | type | default | meaning |\n|---|---|---|---|\n");
    for (f, owner) in rows {
        let (ty, optional) = describe(index, &f.ty, &owner.krate);
        let default = default_text(index, &owner.krate, &f, optional, defaulted);
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} |",
            f.name,
            ty,
            default,
            f.doc.replace('|', "\\|")
        );
        queue_nested(index, t, &f, &owner.krate, found);
    }
}

/// The fields of a table, flattened fields inlined, the chosen variant's fields after them.
fn collect_rows<'a>(
    index: &'a Index,
    owner: &'a Definition,
    fields: &[Field],
    extra: &[Field],
    rows: &mut Vec<(Field, &'a Definition)>,
) {
    for f in fields.iter().chain(extra) {
        if f.flatten {
            if let Some(inner) = index.resolve(strip(&f.ty), &owner.krate)
                && let Shape::Struct { fields, .. } = &inner.shape
            {
                collect_rows(index, inner, fields, &[], rows);
            }
            continue;
        }
        rows.push((f.clone(), owner));
    }
}

/// Queues the tables a field opens: a struct, an array of structs, or a choice by `kind`.
fn queue_nested<'a>(
    index: &'a Index,
    t: &Pending<'a>,
    f: &Field,
    krate: &str,
    found: &mut Vec<Pending<'a>>,
) {
    let (inner, array) = element(&f.ty);
    let Some(def) = index.resolve(inner, krate) else {
        return;
    };
    let header = match (t.header.is_empty(), array) {
        (true, true) => format!("[[{}]]", f.name),
        (true, false) => format!("[{}]", f.name),
        (false, true) => format!("[[{}.{}]]", t.header.trim_matches(['[', ']']), f.name),
        (false, false) => format!("[{}.{}]", t.header.trim_matches(['[', ']']), f.name),
    };
    match &def.shape {
        Shape::Struct { .. } => found.push(Pending {
            header,
            // A table under a `kind` keeps its context: `[sinks.connection]` of `postgres`.
            note: t.note.clone(),
            definition: def,
            extra: Vec::new(),
        }),
        Shape::Enum {
            variants,
            untagged: false,
        } if variants.iter().any(|v| v.inner.is_some()) => {
            // A choice by `kind`: for a field named `kind`, the variant's fields join its
            // table; otherwise the field is the table.
            let header = if f.name == "kind" {
                t.header.clone()
            } else {
                header
            };
            for v in variants {
                let Some(vdef) = v
                    .inner
                    .as_ref()
                    .and_then(|ty| index.resolve(strip(ty), &def.krate))
                else {
                    continue;
                };
                let mut extra = Vec::new();
                if f.name == "kind"
                    && let Shape::Struct { fields, .. } = &t.definition.shape
                {
                    extra = fields
                        .iter()
                        .filter(|x| x.name != "kind")
                        .cloned()
                        .collect();
                }
                let mut shown = vdef.clone();
                if shown.doc.is_empty() || shown.doc.starts_with('`') {
                    shown.doc = v.doc.clone();
                }
                found.push(Pending {
                    header: header.clone(),
                    note: format!("with `kind = \"{}\"`", v.name),
                    definition: Box::leak(Box::new(shown)),
                    extra: if f.name == "kind" { extra } else { Vec::new() },
                });
            }
        }
        Shape::Enum { .. } => {}
    }
}

/// `Spanned<T>`, `Box<T>` and `Option<T>` unwrapped.
fn strip(ty: &Type) -> &Type {
    match single_arg(ty, &["Spanned", "Box", "Option"]) {
        Some(inner) => strip(inner),
        None => ty,
    }
}

/// The element of an array type (and whether it is one), else the type itself.
fn element(ty: &Type) -> (&Type, bool) {
    let ty = strip(ty);
    match single_arg(ty, &["Vec"]) {
        Some(inner) => (strip(inner), true),
        None => (ty, false),
    }
}

fn last_ident(ty: &Type) -> Option<String> {
    match ty {
        Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()),
        _ => None,
    }
}

fn single_arg<'t>(ty: &'t Type, names: &[&str]) -> Option<&'t Type> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if !names.contains(&last.ident.to_string().as_str()) {
        return None;
    }
    match &last.arguments {
        PathArguments::AngleBracketed(a) => a.args.iter().find_map(|g| match g {
            GenericArgument::Type(t) => Some(t),
            _ => None,
        }),
        _ => None,
    }
}

/// A type in the words of the file, and whether it may be left out (`Option`).
fn describe(index: &Index, ty: &Type, krate: &str) -> (String, bool) {
    let optional = is_option(ty);
    (words(index, strip(ty), krate), optional)
}

fn is_option(ty: &Type) -> bool {
    match ty {
        _ if single_arg(ty, &["Option"]).is_some() => true,
        _ => single_arg(ty, &["Spanned", "Box"]).is_some_and(is_option),
    }
}

fn words(index: &Index, ty: &Type, krate: &str) -> String {
    if let Some(inner) = single_arg(ty, &["Vec"]) {
        return format!("array of {}", words(index, strip(inner), krate));
    }
    if let Type::Path(p) = ty
        && let Some(last) = p.path.segments.last()
        && ["BTreeMap", "HashMap", "IndexMap"].contains(&last.ident.to_string().as_str())
        && let PathArguments::AngleBracketed(a) = &last.arguments
        && let Some(GenericArgument::Type(v)) = a.args.iter().nth(1)
    {
        return format!("table of {}", words(index, strip(v), krate));
    }
    let name = last_ident(ty).unwrap_or_else(|| ty.to_token_stream().to_string());
    match name.as_str() {
        "String" | "ShortName" | "Template" => "string".into(),
        "bool" => "boolean".into(),
        "u8" | "u16" | "u32" | "u64" | "usize" | "i32" | "i64" | "NonZeroU16" | "NonZeroU32"
        | "NonZeroUsize" => "integer".into(),
        "f32" | "f64" => "number".into(),
        "Duration" => "duration".into(),
        "PathBuf" => "path".into(),
        "SocketAddr" => "address (`host:port`)".into(),
        _ => match index.resolve(ty, krate).map(|d| &d.shape) {
            Some(Shape::Struct { .. }) => "table".into(),
            Some(Shape::Enum { variants, .. })
                if variants
                    .iter()
                    .all(|v| v.inner.is_none() && v.fields.is_empty()) =>
            {
                variants
                    .iter()
                    .map(|v| format!("`\"{}\"`", v.name))
                    .collect::<Vec<_>>()
                    .join(" \\| ")
            }
            Some(Shape::Enum { untagged: true, .. }) => "value (see meaning)".into(),
            Some(Shape::Enum { .. }) => "table, chosen by `kind`".into(),
            None => "string".into(),
        },
    }
}

fn default_text(index: &Index, krate: &str, f: &Field, optional: bool, defaulted: bool) -> String {
    match &f.default {
        Default::Function(Some(e)) => literal(e).unwrap_or_else(|| "see meaning".into()),
        Default::Function(None) => "see meaning".into(),
        Default::Trait | Default::None if optional => "unset".into(),
        Default::Trait => match element(&f.ty) {
            (_, true) => "`[]`".into(),
            (ty, false) => match last_ident(ty).as_deref() {
                Some("bool") => "`false`".into(),
                Some("String") => "`\"\"`".into(),
                _ => match index.resolve(ty, krate).map(|d| &d.shape) {
                    Some(Shape::Struct { .. }) => "its defaults".into(),
                    Some(Shape::Enum { variants, .. }) => variants
                        .iter()
                        .find(|v| v.default)
                        .map_or_else(|| "see meaning".into(), |v| format!("`\"{}\"`", v.name)),
                    _ => "see meaning".into(),
                },
            },
        },
        Default::None if defaulted => "see meaning".into(),
        Default::None => "**required**".into(),
    }
}

/// A default function's body in TOML words, when it is a plain value.
fn literal(e: &Expr) -> Option<String> {
    let text = e.to_token_stream().to_string().replace(' ', "");
    let duration = |prefix: &str, unit: &str| {
        text.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(')'))
            .filter(|n| n.chars().all(|c| c.is_ascii_digit() || c == '_'))
            .map(|n| format!("`\"{}{unit}\"`", n.replace('_', "")))
    };
    if let Some(d) = duration("Duration::from_secs(", "s")
        .or_else(|| duration("Duration::from_millis(", "ms"))
        .or_else(|| duration("std::time::Duration::from_secs(", "s"))
        .or_else(|| duration("std::time::Duration::from_millis(", "ms"))
    {
        return Some(d);
    }
    match e {
        Expr::Lit(l) => Some(format!("`{}`", l.to_token_stream())),
        // `Spanned::new(0..0, value)`: a default with no place in the file.
        Expr::Call(c)
            if c.func.to_token_stream().to_string().replace(' ', "") == "Spanned::new" =>
        {
            c.args.iter().nth(1).and_then(literal)
        }
        Expr::MethodCall(m)
            if ["into", "to_owned", "to_string"].contains(&m.method.to_string().as_str())
                && matches!(&*m.receiver, Expr::Lit(_)) =>
        {
            Some(format!("`{}`", m.receiver.to_token_stream()))
        }
        _ => None,
    }
}
