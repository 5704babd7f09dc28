//! The library example runs and does what it says.

#[path = "../examples/library.rs"]
mod library;

#[tokio::test]
async fn the_library_example_processes_and_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let (report, totals) = library::run(dir.path(), 1000).await.unwrap();
    assert_eq!(report.stats.acked, 980);
    assert_eq!(report.stats.dead_lettered, 20);
    assert_eq!(totals.len(), 3);
    let letters = riverbed_embedded::list_dead_letters(
        &riverbed_embedded::EmbeddedLog::open(
            dir.path().join("orders.db"),
            riverbed_embedded::Durability::Full,
        )
        .await
        .unwrap(),
        Some("orders"),
        100,
    )
    .await
    .unwrap();
    assert_eq!(letters.len(), 20);
    assert!(
        letters
            .iter()
            .all(|l| l.letter.reason == "no_amount" && l.letter.stage == "add_vat")
    );
}
