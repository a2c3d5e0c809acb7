//! Postfix's `smtp-sink`: a real SMTP server that writes every message it
//! accepts to its own file, or refuses chosen commands with 4xx/5xx.

use super::{running_as_root, wait_for_port, wait_until, Guarded};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A running smtp-sink and the directory it dumps messages into.
pub struct Sink {
    pub addr: SocketAddr,
    dumps: PathBuf,
    _dir: tempfile::TempDir,
    process: Guarded,
}

/// One message as smtp-sink recorded it.
#[derive(Debug, Clone)]
pub struct SinkMessage {
    /// `X-Mail-Args` (the MAIL FROM argument).
    pub mail_from: String,
    /// One `X-Rcpt-Args` per RCPT.
    pub rcpt_to: Vec<String>,
    /// The message as the client sent it, line ends as `\n`, without the
    /// sink's own `X-*` records and its `Received` header.
    pub content: String,
}

impl SinkMessage {
    /// A message read elsewhere (e.g. a node's Maildir), envelope unknown.
    pub fn from_bytes(bytes: &[u8]) -> SinkMessage {
        SinkMessage {
            mail_from: String::new(),
            rcpt_to: Vec::new(),
            content: String::from_utf8_lossy(bytes).replace("\r\n", "\n"),
        }
    }

    /// Every field `name` (case-insensitive), unfolded, top to bottom.
    pub fn headers_named(&self, name: &str) -> Vec<String> {
        let headers = self.content.split("\n\n").next().unwrap_or("");
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in headers.lines() {
            if line.starts_with([' ', '\t']) {
                if let Some((_, value)) = fields.last_mut() {
                    value.push(' ');
                    value.push_str(line.trim());
                }
            } else if let Some((field, value)) = line.split_once(':') {
                fields.push((field.to_string(), value.trim().to_string()));
            }
        }
        fields
            .into_iter()
            .filter(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
            .collect()
    }

    /// The value of the first header `name` (case-insensitive), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let headers = self.content.split("\n\n").next().unwrap_or("");
        let mut found: Option<String> = None;
        for line in headers.lines() {
            if line.starts_with([' ', '\t']) {
                if let Some(value) = found.as_mut() {
                    value.push(' ');
                    value.push_str(line.trim());
                }
                continue;
            }
            if found.is_some() {
                break;
            }
            if let Some((field, value)) = line.split_once(':') {
                if field.eq_ignore_ascii_case(name) {
                    found = Some(value.trim().to_string());
                }
            }
        }
        found
    }
}

impl Sink {
    /// A sink that accepts everything, on a free port of `ip`.
    pub fn start(ip: Ipv4Addr) -> Sink {
        Sink::start_with(ip, &[])
    }

    /// A sink on a given port (e.g. `delivery.mx_port`).
    pub fn start_on(addr: SocketAddr) -> Sink {
        Sink::spawn(addr, &[])
    }

    /// A sink started with extra smtp-sink options, e.g.
    /// `["-f", "RCPT", "-B", "550 5.1.1 no such user"]` to refuse RCPT.
    pub fn start_with(ip: Ipv4Addr, options: &[&str]) -> Sink {
        Sink::spawn(SocketAddr::new(ip.into(), super::free_port(ip)), options)
    }

    /// A sink refusing every RCPT with `reply` (a permanent 5xx).
    pub fn refusing_rcpt(ip: Ipv4Addr, reply: &str) -> Sink {
        Sink::start_with(ip, &["-f", "RCPT", "-B", reply])
    }

    pub fn spawn(addr: SocketAddr, options: &[&str]) -> Sink {
        let dir = tempfile::tempdir().expect("sink temp dir");
        let dumps = dir.path().join("messages");
        std::fs::create_dir_all(&dumps).expect("sink dump dir");
        let mut command = Command::new("/usr/sbin/smtp-sink");
        if running_as_root() {
            // smtp-sink refuses to run as root without a user to switch to.
            command.args(["-u", "root"]);
        }
        command
            .args(options)
            .arg("-d")
            .arg(format!("{}/m.", dumps.display()))
            .arg(format!("{addr}"))
            .arg("100")
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("sink.log")).expect("sink log"),
            ));
        let mut process = Guarded::spawn(command);
        let up = wait_for_port(addr, Duration::from_secs(10));
        assert!(
            up && process.exited().is_none(),
            "smtp-sink did not start on {addr}: {}",
            std::fs::read_to_string(dir.path().join("sink.log")).unwrap_or_default()
        );
        Sink {
            addr,
            dumps,
            _dir: dir,
            process,
        }
    }

    /// Stops the sink now (a smart host going down).
    pub fn stop(&mut self) {
        self.process.kill();
    }

    pub fn dump_dir(&self) -> &Path {
        &self.dumps
    }

    /// How many transactions reached DATA's end.
    pub fn count(&self) -> usize {
        self.messages().len()
    }

    /// Every message received so far, oldest first.
    pub fn messages(&self) -> Vec<SinkMessage> {
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&self.dumps)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|entry| {
                        let modified = entry
                            .metadata()
                            .and_then(|m| m.modified())
                            .unwrap_or(std::time::UNIX_EPOCH);
                        (modified, entry.path())
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
            .into_iter()
            .filter_map(|(_, path)| std::fs::read(&path).ok())
            .filter_map(|bytes| parse_dump(&String::from_utf8_lossy(&bytes)))
            .collect()
    }

    /// Waits until at least `n` messages arrived; returns them all.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<SinkMessage> {
        wait_until(timeout, || self.count() >= n);
        self.messages()
    }
}

/// Splits a dump file into the sink's records and the message. A dump is
/// only complete once the empty line smtp-sink appends after "." is there,
/// so a transaction still in progress parses as `None`.
fn parse_dump(text: &str) -> Option<SinkMessage> {
    let mut mail_from = None;
    let mut rcpt_to = Vec::new();
    let mut rest = text;
    loop {
        let (line, after) = rest.split_once('\n')?;
        if let Some(value) = line.strip_prefix("X-Mail-Args: ") {
            mail_from = Some(value.to_string());
        } else if let Some(value) = line.strip_prefix("X-Rcpt-Args: ") {
            rcpt_to.push(value.to_string());
        } else if line.starts_with("Received: ") && line.contains("([") {
            // The sink's own three-line Received header ends its records.
            let mut after = after;
            for _ in 0..2 {
                after = after.split_once('\n')?.1;
            }
            rest = after;
            break;
        } else if !line.starts_with("X-") {
            return None;
        }
        rest = after;
    }
    let content = rest.strip_suffix('\n')?;
    Some(SinkMessage {
        mail_from: mail_from?,
        rcpt_to,
        content: content.to_string(),
    })
}
