//! Processes a test starts (the zai-dash binary, Prometheus, Alertmanager, VictoriaMetrics,
//! promtool, mount), killed when the test ends, whether it passes or panics.
//!
//! A process left behind by a failed test keeps scraping, listening and writing: a zai-dash
//! left over from one run scraped loopback ports that a later run's fake targets reused, and
//! broke that run. So every process is started through [`spawn`] (or [`run`] / [`output`] for
//! one that must finish), which
//! - puts it in a **process group of its own** (`process_group(0)`), so killing the group also
//!   kills anything it started, and a terminal's Ctrl-C (sent to the foreground group) does not
//!   reach it half-way: the test decides;
//! - asks the kernel to **SIGKILL it when the thread that started it ends**
//!   (`PR_SET_PDEATHSIG`), which covers the test binary itself being killed (Ctrl-C, a CI
//!   timeout) when no destructor runs. Tests start processes from the test's own thread (the
//!   body of a `#[tokio::test]` runs on it), which lives until the test is over;
//! - returns a [`ChildGuard`] whose `Drop` kills the whole group and reaps the child.
//!
//! The group is only ever signalled while its leader is not yet reaped (its id cannot have
//! been reused then): exits are observed with `waitid(WNOWAIT)` first, the rest of the group
//! killed, and only then the leader reaped.

use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// A started process (the leader of its own group), killed with its group on drop.
pub struct ChildGuard {
    child: Child,
    /// What was started, for messages.
    name: String,
    /// Set once the leader was reaped (by a wait, or by the kill on drop).
    status: Option<ExitStatus>,
}

/// Starts `cmd` in its own process group, to be killed when the guard drops (see the module).
pub fn spawn(cmd: &mut Command) -> io::Result<ChildGuard> {
    let name = format!("{cmd:?}");
    cmd.process_group(0);
    // SAFETY: `prctl` is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    Ok(ChildGuard { child, name, status: None })
}

impl ChildGuard {
    /// The leader's process id (also its group's id).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn take_stdout(&mut self) -> ChildStdout {
        self.child.stdout.take().expect("stdout is piped and not taken yet")
    }

    pub fn take_stderr(&mut self) -> ChildStderr {
        self.child.stderr.take().expect("stderr is piped and not taken yet")
    }

    pub fn take_stdin(&mut self) -> ChildStdin {
        self.child.stdin.take().expect("stdin is piped and not taken yet")
    }

    /// Sends `signal` to the leader alone (SIGTERM to see a clean shutdown); no-op once reaped.
    pub fn signal(&self, signal: i32) {
        if self.status.is_none() {
            // SAFETY: plain syscall; the pid is ours and not reaped yet.
            unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        }
    }

    /// The exit status once the leader has exited (the rest of its group is killed then).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() && self.exited(false) {
            self.reap();
        }
        self.status
    }

    /// Whether the leader is still running.
    pub fn running(&mut self) -> bool {
        self.try_wait().is_none()
    }

    /// Waits for the leader to exit (blocking), then kills the rest of its group.
    pub fn wait(&mut self) -> ExitStatus {
        if self.status.is_none() {
            self.exited(true);
            self.reap();
        }
        self.status.expect("reaped")
    }

    /// Waits at most `limit` for the leader to exit; `None` (still running) after that.
    pub fn wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL to the whole group, then reaps the leader: no flush, no goodbye.
    pub fn kill(&mut self) -> ExitStatus {
        if self.status.is_none() {
            self.kill_group();
            self.exited(true);
            self.reap();
        }
        self.status.expect("reaped")
    }

    /// Whether the leader has exited, without reaping it (`waitid` with `WNOWAIT`), so that its
    /// group id stays ours until [`Self::reap`].
    fn exited(&self, block: bool) -> bool {
        let flags = libc::WEXITED | libc::WNOWAIT | if block { 0 } else { libc::WNOHANG };
        loop {
            // SAFETY: `info` is a plain C struct the call fills in.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            let rc = unsafe { libc::waitid(libc::P_PID, self.child.id() as libc::id_t, &mut info, flags) };
            if rc == 0 {
                // With WNOHANG and nothing to report, the kernel leaves si_pid at 0.
                return unsafe { info.si_pid() } != 0;
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                panic!("waitid on {} failed: {err}", self.name);
            }
        }
    }

    /// Kills what is left of the group (the leader has exited or is being killed) and reaps the
    /// leader.
    fn reap(&mut self) {
        self.kill_group();
        self.status = Some(self.child.wait().unwrap_or_else(|e| panic!("cannot reap {}: {e}", self.name)));
    }

    fn kill_group(&self) {
        // SAFETY: plain syscall; the group is the unreaped leader's, so the id is still ours.
        unsafe { libc::killpg(self.child.id() as libc::pid_t, libc::SIGKILL) };
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.kill_group();
            // Never panic in a destructor (the test may be unwinding already).
            let _ = self.child.wait();
        }
    }
}

/// Runs `cmd` to completion within `limit`, feeding it `input` on stdin (else no stdin), and
/// returns its output; an error when it cannot start or does not finish in time (it is killed
/// with its group then).
pub fn run(cmd: &mut Command, input: Option<&[u8]>, limit: Duration) -> io::Result<Output> {
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = spawn(cmd)?;
    let pump = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = pump(Box::new(child.take_stdout()));
    let stderr = pump(Box::new(child.take_stderr()));
    if let Some(bytes) = input {
        let mut stdin = child.take_stdin();
        // A command that exits without reading its input closes the pipe: not our failure.
        let _ = stdin.write_all(bytes);
    }
    let Some(status) = child.wait_for(limit) else {
        let name = child.name.clone();
        drop(child);
        return Err(io::Error::new(io::ErrorKind::TimedOut, format!("{name} did not finish within {limit:?}")));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    Ok(Output { status, stdout, stderr })
}

/// [`run`] without input, panicking (after killing it) when it cannot start or does not finish
/// within `limit`: a binary that should refuse to start but serves instead fails the test
/// instead of hanging it.
pub fn output(cmd: &mut Command, limit: Duration) -> Output {
    run(cmd, None, limit).unwrap_or_else(|e| panic!("{e}"))
}
