//! Commands that print (`rules`, `rules --prometheus`, `grafana`, `canary --print-config`) whose
//! stdout reader has gone away, as `zai-dash rules | head` leaves it: they end quietly with
//! status 0 instead of panicking on the closed pipe.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::process;

/// Longest a command that must exit by itself may take.
const EXIT_LIMIT: Duration = Duration::from_secs(60);

/// Runs `args` with stdout a pipe whose reader is already closed (every write fails with
/// `EPIPE`, whatever the timing), and returns the exit code and stderr.
fn run_with_closed_stdout(args: &[&str]) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_zai-dash"));
    cmd.args(args).env_remove("ALERT_RULES").env_remove("CANARY_CONFIG");
    cmd.stdin(Stdio::null()).stdout(writer).stderr(Stdio::piped());
    let mut child = process::spawn(&mut cmd).unwrap();
    let mut stderr = String::new();
    child.take_stderr().read_to_string(&mut stderr).unwrap();
    let status = child.wait_for(EXIT_LIMIT).unwrap_or_else(|| panic!("{args:?} did not exit"));
    (status.code(), stderr)
}

#[test]
fn printing_commands_end_quietly_when_the_reader_goes_away() {
    for args in [&["rules"][..], &["rules", "--prometheus"], &["grafana"], &["canary", "--print-config"]] {
        let (code, stderr) = run_with_closed_stdout(args);
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?} wrote to stderr: {stderr}");
    }
}
