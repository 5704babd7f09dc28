//! Real services in tests: skipping (or failing in CI) when one is missing, and a lock that
//! keeps a test which restarts a service away from every other test of that service.

use std::fs::{File, OpenOptions};
use std::path::PathBuf;

/// Whether a test that needs the service at `addr` (such as `127.0.0.1:5672`) can run.
///
/// When the service answers: true. When it does not: with `RIVERBED_REQUIRE_SERVICES=1` (CI)
/// the test fails with the reason; otherwise it prints why it skips and returns false.
pub fn require_service(name: &str, addr: &str) -> bool {
    let reachable = addr
        .parse()
        .ok()
        .and_then(|a| {
            std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(2)).ok()
        })
        .is_some();
    if reachable {
        return true;
    }
    let required = std::env::var("RIVERBED_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "{name} at {addr} does not answer and RIVERBED_REQUIRE_SERVICES=1: this test may not skip"
    );
    eprintln!(
        "skipping: {name} at {addr} does not answer (set RIVERBED_REQUIRE_SERVICES=1 to fail instead)"
    );
    false
}

/// A held lock on a shared service, released when dropped.
///
/// It is a file lock (`flock`), so it orders tests across test binaries and processes
/// (`cargo test` of several crates at once, `cargo nextest`), not only within one binary. The
/// benchmark harness does not take it: do not run it while tests that restart services run.
#[derive(Debug)]
pub struct ServiceLock {
    _file: File,
}

/// Takes the lock of service `name` (`"rabbitmq"`, `"redis"`, `"postgres"`): shared for a test
/// that only uses the service, exclusive for one that stops, restarts or disconnects it.
pub async fn lock_service(name: &str, exclusive: bool) -> ServiceLock {
    let path = lock_path(name);
    tokio::task::spawn_blocking(move || {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("cannot open the service lock {}: {e}", path.display()));
        let locked = if exclusive {
            file.lock()
        } else {
            file.lock_shared()
        };
        locked.unwrap_or_else(|e| panic!("cannot lock {}: {e}", path.display()));
        ServiceLock { _file: file }
    })
    .await
    .expect("the lock task does not panic")
}

fn lock_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("riverbed-test-{name}.lock"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn exclusive_waits_for_shared_holders() {
        let name = format!("unit-{}", std::process::id());
        let shared_a = lock_service(&name, false).await;
        let shared_b = lock_service(&name, false).await;
        let exclusive = tokio::spawn({
            let name = name.clone();
            async move { lock_service(&name, true).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !exclusive.is_finished(),
            "exclusive must wait for both shared holders"
        );
        drop(shared_a);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!exclusive.is_finished(), "one shared holder is still there");
        drop(shared_b);
        let held = tokio::time::timeout(Duration::from_secs(5), exclusive)
            .await
            .expect("exclusive granted once the shared holders are gone")
            .unwrap();
        drop(held);
        let _ = std::fs::remove_file(lock_path(&name));
    }
}
