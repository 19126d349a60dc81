//! Starting a Debian-packaged server on a free loopback port, with its files in a temporary
//! directory, and stopping it when the test is done.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running server.
pub struct Server {
    pub base: String,
    child: Child,
    /// Config and storage, removed on drop.
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary, or a panic saying how to install it.
pub fn binary(name: &str, package: &str) -> PathBuf {
    let candidates = [PathBuf::from(format!("/usr/bin/{name}")), PathBuf::from(name)];
    for c in candidates {
        if Command::new(&c)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return c;
        }
    }
    panic!(
        "`{name}` is not installed: run scripts/test, which installs Debian's `{package}` package, or `apt-get install -y {package}`."
    );
}

/// Starts `bin` with `args(dir, port)` until `ready_path` answers 200; another port is tried
/// when the one picked was taken in between (the server cannot report a port it chose itself).
pub async fn start(
    bin: &Path,
    dir: tempfile::TempDir,
    args: impl Fn(&Path, u16) -> Vec<String>,
    ready_path: &str,
) -> Server {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
    for attempt in 0..3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = std::fs::File::create(dir.path().join(format!("server-{attempt}.log"))).unwrap();
        let mut child = Command::new(bin)
            .args(args(dir.path(), port))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let base = format!("http://127.0.0.1:{port}");
        for _ in 0..200 {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            let ok = http.get(format!("{base}{ready_path}")).send().await.is_ok_and(|r| r.status().is_success());
            if ok {
                return Server { base, child, _dir: dir };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = std::fs::read_to_string(dir.path().join(format!("server-{attempt}.log"))).unwrap_or_default();
        eprintln!("{} attempt {attempt} did not become ready:\n{log}", bin.display());
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("{} did not start (see the logs above)", bin.display());
}
