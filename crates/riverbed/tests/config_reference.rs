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
    let text = render::reference(&index, "RawConfig", "riverbed");
    for must in [
        "`[pipeline]`",
        "`[source]` with `kind = \"amqp\"`",
        "`[[sinks]]` with `kind = \"postgres\"`",
        "`prefetch`",
    ] {
        assert!(text.contains(must), "the reference lacks {must}");
    }
    let path = root.join("docs/configuration.md");
    if std::env::var_os("RIVERBED_BLESS").is_some() {
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != text {
        let line = committed
            .lines()
            .zip(text.lines())
            .position(|(a, b)| a != b)
            .map_or(committed.lines().count().min(text.lines().count()), |i| i);
        panic!(
            "docs/configuration.md is out of date from line {} on (the code says: {:?}); \
             run `RIVERBED_BLESS=1 cargo test -p riverbed --test config_reference`",
            line + 1,
            text.lines().nth(line).unwrap_or("<end>")
        );
    }
}
