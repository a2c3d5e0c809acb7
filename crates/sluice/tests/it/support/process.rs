//! A child process that is killed and reaped when its guard drops.

use std::process::{Child, Command, Stdio};

/// Owns a running child; Drop sends SIGKILL and waits, so no test leaves a
/// process behind even when it panics half-way.
#[derive(Debug)]
pub struct Guarded {
    child: Option<Child>,
    what: String,
}

impl Guarded {
    /// Spawns `command` with stdin closed; panics with the program name when
    /// it cannot start (a missing peer should fail loudly, not skip).
    pub fn spawn(mut command: Command) -> Guarded {
        let what = format!("{command:?}");
        command.stdin(Stdio::null());
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {what}: {error}"));
        Guarded {
            child: Some(child),
            what,
        }
    }

    /// The process id, while it runs.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `Some(status)` once the process has exited on its own.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|child| child.try_wait().ok().flatten())
    }

    /// SIGKILL and reap: the abrupt stop a crash or power cut gives.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What was started, for messages.
    pub fn describe(&self) -> &str {
        &self.what
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.kill();
    }
}
