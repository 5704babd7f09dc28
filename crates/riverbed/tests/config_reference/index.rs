//! Reads the workspace's sources and keeps every deserialisable struct and enum with its doc
//! comments, serde attributes and default functions: what the reference is generated from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use quote::ToTokens;
use syn::{Attribute, Expr, Fields, Item, Lit, Meta, Type};

/// How a field gets its value when the file leaves it out.
#[derive(Clone)]
pub enum Default {
    /// It must be written.
    None,
    /// `#[serde(default)]`: the type's default.
    Trait,
    /// `#[serde(default = "path")]`: the function's body, if it is one expression.
    Function(Option<Expr>),
}

#[derive(Clone)]
pub struct Field {
    pub name: String,
    pub doc: String,
    pub ty: Type,
    pub default: Default,
    pub flatten: bool,
}

#[derive(Clone)]
pub struct Variant {
    pub name: String,
    pub doc: String,
    /// The wrapped type of a newtype variant (`Amqp(Box<AmqpSourceConfig>)`).
    pub inner: Option<Type>,
    /// The fields of a struct variant.
    pub fields: Vec<Field>,
    /// Marked `#[default]`.
    pub default: bool,
}

#[derive(Clone)]
pub enum Shape {
    Struct {
        fields: Vec<Field>,
        /// `#[serde(default)]` on the struct: every field has one.
        defaulted: bool,
    },
    Enum {
        variants: Vec<Variant>,
        untagged: bool,
    },
}

#[derive(Clone)]
pub struct Definition {
    pub name: String,
    /// The crate directory it was found in (`riverbed-amqp`).
    pub krate: String,
    pub doc: String,
    pub shape: Shape,
}

/// Every deserialisable type of the workspace, by name.
#[derive(Default)]
pub struct Index {
    types: BTreeMap<String, Vec<Definition>>,
}

impl Index {
    /// Indexes every `.rs` file under `crates/*/src`.
    pub fn of_workspace(root: &Path) -> Index {
        let mut index = Index::default();
        let mut crates: Vec<PathBuf> = std::fs::read_dir(root.join("crates"))
            .expect("the crates directory")
            .map(|e| e.unwrap().path())
            .collect();
        crates.sort();
        for dir in crates {
            let krate = dir.file_name().unwrap().to_string_lossy().into_owned();
            let mut files = Vec::new();
            rust_files(&dir.join("src"), &mut files);
            for file in files {
                let text = std::fs::read_to_string(&file).unwrap();
                let parsed = syn::parse_file(&text)
                    .unwrap_or_else(|e| panic!("{} does not parse: {e}", file.display()));
                let functions = default_functions(&parsed.items);
                index.add_items(&krate, &parsed.items, &functions);
            }
        }
        index
    }

    fn add_items(&mut self, krate: &str, items: &[Item], functions: &BTreeMap<String, Expr>) {
        for item in items {
            let definition = match item {
                Item::Struct(s) if derives_deserialize(&s.attrs) => {
                    let rename_all = serde_value(&s.attrs, "rename_all");
                    Some(Definition {
                        name: s.ident.to_string(),
                        krate: krate.to_owned(),
                        doc: doc(&s.attrs),
                        shape: Shape::Struct {
                            fields: fields(&s.fields, rename_all.as_deref(), functions),
                            defaulted: serde_flag(&s.attrs, "default"),
                        },
                    })
                }
                Item::Enum(e) if derives_deserialize(&e.attrs) => {
                    let rename_all = serde_value(&e.attrs, "rename_all");
                    let variants = e
                        .variants
                        .iter()
                        .filter(|v| !serde_flag(&v.attrs, "skip"))
                        .map(|v| {
                            let name = serde_value(&v.attrs, "rename").unwrap_or_else(|| {
                                renamed(&v.ident.to_string(), rename_all.as_deref())
                            });
                            let (inner, fields) = match &v.fields {
                                Fields::Unnamed(u) if u.unnamed.len() == 1 => {
                                    (Some(u.unnamed[0].ty.clone()), Vec::new())
                                }
                                Fields::Named(_) => {
                                    (None, self::fields(&v.fields, None, functions))
                                }
                                _ => (None, Vec::new()),
                            };
                            Variant {
                                name,
                                doc: doc(&v.attrs),
                                inner,
                                fields,
                                default: v.attrs.iter().any(|a| a.path().is_ident("default")),
                            }
                        })
                        .collect();
                    Some(Definition {
                        name: e.ident.to_string(),
                        krate: krate.to_owned(),
                        doc: doc(&e.attrs),
                        shape: Shape::Enum {
                            variants,
                            untagged: serde_flag(&e.attrs, "untagged"),
                        },
                    })
                }
                Item::Mod(m) => {
                    if let Some((_, inner)) = &m.content {
                        let mut functions = functions.clone();
                        functions.extend(default_functions(inner));
                        self.add_items(krate, inner, &functions);
                    }
                    None
                }
                _ => None,
            };
            if let Some(d) = definition {
                self.types.entry(d.name.clone()).or_default().push(d);
            }
        }
    }

    /// The definition a type path names, seen from crate `from`: a path starting with a crate
    /// name (`riverbed_amqp::AmqpSourceConfig`) picks that crate, else `from` is preferred.
    pub fn resolve(&self, ty: &Type, from: &str) -> Option<&Definition> {
        let Type::Path(p) = ty else { return None };
        let last = p.path.segments.last()?.ident.to_string();
        let candidates = self.types.get(&last)?;
        let named = p
            .path
            .segments
            .first()
            .map(|s| s.ident.to_string().replace('_', "-"));
        candidates
            .iter()
            .find(|d| Some(&d.krate) == named.as_ref())
            .or_else(|| candidates.iter().find(|d| d.krate == from))
            .or_else(|| candidates.first())
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Functions whose body is a single expression, by name: the candidates for `default = "..."`.
fn default_functions(items: &[Item]) -> BTreeMap<String, Expr> {
    items
        .iter()
        .filter_map(|item| match item {
            Item::Fn(f) if f.block.stmts.len() == 1 => match &f.block.stmts[0] {
                syn::Stmt::Expr(e, None) => Some((f.sig.ident.to_string(), e.clone())),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn fields(
    fields: &Fields,
    rename_all: Option<&str>,
    functions: &BTreeMap<String, Expr>,
) -> Vec<Field> {
    let Fields::Named(named) = fields else {
        return Vec::new();
    };
    named
        .named
        .iter()
        .filter(|f| !serde_flag(&f.attrs, "skip") && !serde_flag(&f.attrs, "skip_deserializing"))
        .map(|f| {
            let ident = f.ident.as_ref().unwrap().to_string();
            let default = match serde_value(&f.attrs, "default") {
                Some(path) => {
                    let name = path.rsplit("::").next().unwrap_or(&path).to_owned();
                    Default::Function(functions.get(&name).cloned())
                }
                None if serde_flag(&f.attrs, "default") => Default::Trait,
                None => Default::None,
            };
            Field {
                name: serde_value(&f.attrs, "rename")
                    .unwrap_or_else(|| renamed(&ident, rename_all)),
                doc: doc(&f.attrs),
                ty: f.ty.clone(),
                default,
                flatten: serde_flag(&f.attrs, "flatten"),
            }
        })
        .collect()
}

fn derives_deserialize(attrs: &[Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("derive") && a.to_token_stream().to_string().contains("Deserialize")
    })
}

/// The doc comment, its lines joined.
pub fn doc(attrs: &[Attribute]) -> String {
    let lines: Vec<String> = attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            Meta::NameValue(nv) => match &nv.value {
                Expr::Lit(l) => match &l.lit {
                    Lit::Str(s) => Some(s.value().trim().to_owned()),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        })
        .collect();
    lines.join(" ").trim().to_owned()
}

/// The serde meta items of `attrs`, e.g. `default = "f"` or `flatten`.
fn serde_metas(attrs: &[Attribute]) -> Vec<Meta> {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("serde"))
        .flat_map(|a| {
            a.parse_args_with(syn::punctuated::Punctuated::<Meta, syn::Token![,]>::parse_terminated)
                .map(|p| p.into_iter().collect::<Vec<_>>())
                .unwrap_or_default()
        })
        .collect()
}

fn serde_flag(attrs: &[Attribute], name: &str) -> bool {
    serde_metas(attrs)
        .iter()
        .any(|m| matches!(m, Meta::Path(p) if p.is_ident(name)))
}

fn serde_value(attrs: &[Attribute], name: &str) -> Option<String> {
    serde_metas(attrs).into_iter().find_map(|m| match m {
        Meta::NameValue(nv) if nv.path.is_ident(name) => match nv.value {
            Expr::Lit(l) => match l.lit {
                Lit::Str(s) => Some(s.value()),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    })
}

/// `ident` as serde's `rename_all` writes it (only the cases the workspace uses).
fn renamed(ident: &str, rename_all: Option<&str>) -> String {
    match rename_all {
        Some("snake_case") => {
            let mut out = String::new();
            for (i, c) in ident.chars().enumerate() {
                if c.is_uppercase() {
                    if i > 0 {
                        out.push('_');
                    }
                    out.extend(c.to_lowercase());
                } else {
                    out.push(c);
                }
            }
            out
        }
        Some("lowercase") => ident.to_lowercase(),
        Some("kebab-case") => renamed(ident, Some("snake_case")).replace('_', "-"),
        _ => ident.to_owned(),
    }
}
