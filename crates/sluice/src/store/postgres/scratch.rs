//! A private PostgreSQL server for tests: `initdb` and `pg_ctl` in a
//! temporary directory, listening on a loopback port with its unix socket
//! in that directory; stopped when dropped (also when a test panics).
//! No system service is used or touched.
//!
//! The binaries come from `SLUICE_PG_BIN`, else the newest
//! `/usr/lib/postgresql/*/bin` (Debian's `postgresql` package;
//! scripts/test.sh installs it). PostgreSQL refuses to run as root, so
//! under root the server runs as the `postgres` user the package creates.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running scratch server.
pub struct ScratchPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    run_as: Option<String>,
    port: u16,
}

/// Why a scratch server could not start.
#[derive(Debug, thiserror::Error)]
#[error("scratch PostgreSQL: {0}")]
pub struct ScratchError(String);

fn fail(e: impl std::fmt::Display) -> ScratchError {
    ScratchError(e.to_string())
}

/// The directory of `initdb` and `pg_ctl`.
pub fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SLUICE_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let major = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("pg_ctl").exists().then_some((major, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

impl ScratchPostgres {
    /// Creates a cluster and starts it; returns once it accepts connections.
    pub fn start() -> Result<ScratchPostgres, ScratchError> {
        let bin = bin_dir()
            .ok_or_else(|| fail("no PostgreSQL binaries under /usr/lib/postgresql (run scripts/test.sh)"))?;
        let dir = tempfile::Builder::new()
            .prefix("sluice-pg")
            .tempdir()
            .map_err(fail)?;
        let run_as = if rustix::process::geteuid().is_root() {
            Some("postgres".to_string())
        } else {
            None
        };
        if let Some(user) = &run_as {
            let status = Command::new("chown")
                .arg(format!("{user}:"))
                .arg(dir.path())
                .status()
                .map_err(fail)?;
            if !status.success() {
                return Err(fail(format!("cannot give {} to {user}", dir.path().display())));
            }
        }
        let mut server = ScratchPostgres {
            dir,
            bin,
            run_as,
            port: 0,
        };
        let data = server.data_dir();
        server.run(
            "initdb",
            &[
                "-D",
                path_str(&data)?,
                "-U",
                "sluice",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                // A test cluster is thrown away: its creation need not be durable.
                "--no-sync",
            ],
        )?;
        // A port free now; another process taking it before the server
        // binds makes the start fail, and the start is retried.
        let mut attempt = 0;
        loop {
            server.port = free_port()?;
            match server.start_again() {
                Ok(()) => return Ok(server),
                Err(error) if attempt == 2 => return Err(error),
                Err(_) => attempt += 1,
            }
        }
    }

    /// What the server logged so far (errors, deadlocks found).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Starts the server again after [`stop`](Self::stop), on the same port.
    pub fn start_again(&self) -> Result<(), ScratchError> {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c max_connections=100",
            self.port,
            path_str(self.dir.path())?
        );
        let log = self.dir.path().join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                path_str(&self.data_dir())?,
                "-o",
                &options,
                "-l",
                path_str(&log)?,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
        .map_err(|error| {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            fail(format!("{error}\n{log}"))
        })
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<(), ScratchError> {
        let program = self.bin.join(program);
        let mut command = match &self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(&program);
                command
            }
            None => Command::new(&program),
        };
        let output = command
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .map_err(|e| fail(format!("cannot run {}: {e}", program.display())))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(fail(format!(
                "{} failed: {}{}",
                program.display(),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )))
        }
    }

    /// The server's TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for `[store] url`, to database `database` (created by
    /// [`create_database`](Self::create_database), or `postgres`).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://sluice@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates an empty database.
    pub fn create_database(&self, name: &str) -> Result<(), ScratchError> {
        let port = self.port.to_string();
        self.run(
            "createdb",
            &["-h", "127.0.0.1", "-p", &port, "-U", "sluice", name],
        )
    }

    /// Stops the server at once (as a crash would): what was committed
    /// survives, as PostgreSQL promises.
    pub fn stop(&self) -> Result<(), ScratchError> {
        self.run(
            "pg_ctl",
            &["-D", path_str(&self.data_dir())?, "-m", "immediate", "-w", "stop"],
        )
    }
}

impl Drop for ScratchPostgres {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            // Already stopped by the test, or never fully started.
            if self.data_dir().join("postmaster.pid").exists() {
                eprintln!("{error}");
            }
        }
    }
}

fn path_str(path: &Path) -> Result<&str, ScratchError> {
    path.to_str()
        .ok_or_else(|| fail(format!("{} is not UTF-8", path.display())))
}

fn free_port() -> Result<u16, ScratchError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(fail)?;
    Ok(listener.local_addr().map_err(fail)?.port())
}
