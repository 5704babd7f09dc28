//! The configuration reference (`docs/configuration.md`) is generated from the doc comments of
//! the structs the pipeline file is read into, so it cannot drift from the code: this test
//! regenerates it and fails when the committed file differs.
//! `RIVERBED_BLESS=1 cargo test -p riverbed --test config_reference` writes it.

mod config_reference {
    pub mod index;
    pub mod render;
}

use std::path::Path;

use config_reference::{index::Index, render};

#[test]
fn the_configuration_reference_matches_the_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let index = Index::of_workspace(&root);
    let files = render::reference(&index, "RawConfig", "riverbed");
    let all: String = files.iter().map(|(_, t)| t.as_str()).collect();
    for must in [
        "`[pipeline]`",
        "`[source]` with `kind = \"amqp\"`",
        "`[[sinks]]` with `kind = \"postgres\"`",
        "`prefetch`",
    ] {
        assert!(all.contains(must), "the reference lacks {must}");
    }
    let docs = root.join("docs");
    let bless = std::env::var_os("RIVERBED_BLESS").is_some();
    if bless {
        let _ = std::fs::remove_dir_all(docs.join("configuration"));
        std::fs::create_dir_all(docs.join("configuration")).unwrap();
    }
    for (name, text) in &files {
        assert!(
            text.lines().count() <= 500,
            "{name} is over 500 lines: split the reference further"
        );
        let path = docs.join(name);
        if bless {
            std::fs::write(&path, text).unwrap();
            continue;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != *text {
            let line = committed
                .lines()
                .zip(text.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(committed.lines().count().min(text.lines().count()));
            panic!(
                "docs/{name} is out of date from line {} on (the code says: {:?}); run \
                 `RIVERBED_BLESS=1 cargo test -p riverbed --test config_reference`",
                line + 1,
                text.lines().nth(line).unwrap_or("<end>")
            );
        }
    }
    let listed: Vec<String> = std::fs::read_dir(docs.join("configuration"))
        .map(|d| {
            d.map(|e| format!("configuration/{}", e.unwrap().file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default();
    if let Some(stale) = listed.iter().find(|l| !files.iter().any(|(n, _)| n == *l)) {
        panic!("docs/{stale} documents nothing any more: remove it (or bless)");
    }
}
