//! Starting a Debian-packaged server on a free loopback port, with its files in a temporary
//! directory, and stopping it (with anything it started) when the test is done, passed or
//! panicked (`tests/common/process.rs`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::process::{self, ChildGuard};

/// A running server.
pub struct Server {
    pub base: String,
    /// Killed with its process group on drop.
    _child: ChildGuard,
    /// Config and storage, removed on drop (after the process is gone).
    _dir: tempfile::TempDir,
}

/// The binary, or a panic saying how to install it.
pub fn binary(name: &str, package: &str) -> PathBuf {
    let candidates = [PathBuf::from(format!("/usr/bin/{name}")), PathBuf::from(name)];
    for c in candidates {
        if process::run(Command::new(&c).arg("--version"), None, Duration::from_secs(30))
            .is_ok_and(|out| out.status.success())
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
        let mut child =
            process::spawn(Command::new(bin).args(args(dir.path(), port)).stdout(Stdio::null()).stderr(log))
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let base = format!("http://127.0.0.1:{port}");
        for _ in 0..200 {
            if !child.running() {
                break;
            }
            let ok = http.get(format!("{base}{ready_path}")).send().await.is_ok_and(|r| r.status().is_success());
            if ok {
                return Server { base, _child: child, _dir: dir };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = std::fs::read_to_string(dir.path().join(format!("server-{attempt}.log"))).unwrap_or_default();
        eprintln!("{} attempt {attempt} did not become ready:\n{log}", bin.display());
        child.kill();
    }
    panic!("{} did not start (see the logs above)", bin.display());
}
