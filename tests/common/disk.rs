//! A small tmpfs mounted for one test, to fill or remount read-only: a real full or read-only
//! disk under a running zai-dash. Mounting needs root (CI runs as root, like this machine); a
//! mount that fails fails the test with the reason, rather than skipping what it proves.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::process;

/// How long `mount` and `umount` may take.
const LIMIT: Duration = Duration::from_secs(30);

/// A tmpfs of `size` at a fresh directory; unmounted on drop.
pub struct SmallDisk {
    pub dir: PathBuf,
}

impl SmallDisk {
    pub fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap().keep();
        let out = process::run(
            Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(&dir),
            None,
            LIMIT,
        );
        match out {
            Ok(o) if o.status.success() => Self { dir },
            Ok(o) => panic!("cannot mount a tmpfs (run as root, as CI does): {}", String::from_utf8_lossy(&o.stderr)),
            Err(e) => panic!("cannot run mount: {e}"),
        }
    }

    pub fn remount(&self, mode: &str) {
        let out = process::output(Command::new("mount").args(["-o", &format!("remount,{mode}")]).arg(&self.dir), LIMIT);
        assert!(out.status.success(), "remount {mode}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Fills the disk until the file system says it is full; returns the filler file, whose
    /// removal gives the space back.
    pub fn fill(&self) -> PathBuf {
        let filler = self.dir.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        loop {
            if std::io::Write::write_all(&mut f, &block).is_err() {
                break;
            }
        }
        // Whatever the last write left: fill byte by byte.
        while std::io::Write::write_all(&mut f, &[0]).is_ok() {}
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = process::run(Command::new("umount").arg("-l").arg(&self.dir), None, LIMIT);
        let _ = std::fs::remove_dir(&self.dir);
    }
}
