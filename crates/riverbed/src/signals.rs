//! Stop signals: the first SIGINT or SIGTERM drains; a second one exits at once.

/// Completes on the first SIGINT or SIGTERM; a second one ends the process immediately
/// (nothing unsettled is acknowledged, so the broker redelivers it).
pub async fn shutdown() {
    wait_one().await;
    tracing::info!("Stop requested; draining (send the signal again to exit at once)");
    tokio::spawn(async {
        wait_one().await;
        eprintln!("riverbed: second stop signal, exiting without draining");
        std::process::exit(130);
    });
}

async fn wait_one() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
