//! The zai-dash binary a bench runs: `ZAI_DASH_BIN`, else the one cargo built for this bench
//! (same profile, same target directory), refused when it is older than the sources, so a
//! figure is never taken on a stale build.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, bail};

/// The binary under test; refuses one older than the sources it is built from.
pub fn zai_dash_binary() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("ZAI_DASH_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_zai-dash"));
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .with_context(|| format!("{} is missing: run `cargo build --release` first", bin.display()))?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let newest = ["src", "templates", "static", "build.rs", "Cargo.toml"]
        .iter()
        .map(|p| newest_mtime(&root.join(p)))
        .fold(SystemTime::UNIX_EPOCH, SystemTime::max);
    if newest > built {
        bail!("{} is older than the sources: run `cargo build --release` first", bin.display());
    }
    Ok(bin)
}

fn newest_mtime(path: &Path) -> SystemTime {
    let Ok(meta) = std::fs::metadata(path) else { return SystemTime::UNIX_EPOCH };
    let own = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    if !meta.is_dir() {
        return own;
    }
    std::fs::read_dir(path).into_iter().flatten().flatten().map(|e| newest_mtime(&e.path())).fold(own, SystemTime::max)
}
