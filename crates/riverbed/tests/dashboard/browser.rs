//! Headless Chromium through chromedriver: the driver runs on a free port in a process group
//! of its own, and the guard kills the group (driver and browsers) when dropped, also on panic.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use riverbed_core::testing::require_program;

/// Where Debian puts the browser and its driver.
pub fn programs() -> Option<(PathBuf, PathBuf)> {
    let chromium = require_program("chromium", vec!["/usr/bin/chromium".into()])?;
    let driver = require_program("chromedriver", vec!["/usr/bin/chromedriver".into()])?;
    Some((chromium, driver))
}

/// A running chromedriver; dropping it kills its process group.
pub struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    /// Starts `driver` on `port` and waits until it listens.
    pub fn start(driver: &Path, port: u16) -> Driver {
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let guard = Driver { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        guard
    }

    /// A headless browser session of `width` x `height` CSS pixels with its own profile.
    pub async fn session(&self, chromium: &Path, profile: &Path, size: (u32, u32)) -> Client {
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--force-device-scale-factor=1".to_owned(),
            format!("--window-size={},{}", size.0, size.1),
            format!("--user-data-dir={}", profile.display()),
        ];
        let caps = serde_json::json!({
            "goog:chromeOptions": {"binary": chromium, "args": args},
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!()
        };
        ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a chromedriver session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}
