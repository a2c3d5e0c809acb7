//! A real Postfix instance per test: its own config, queue and data
//! directories, an smtpd on a chosen 127.0.N.x address and high port, and a
//! relayhost that hands everything to an smtp-sink so tests read what
//! arrived. Several instances run side by side: nothing is shared but the
//! binaries and the `postfix` user.

use super::{log_tail, pause, running_as_root, wait_for_port, CertFiles, Sink};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub struct Postfix {
    /// Where its smtpd listens.
    pub addr: SocketAddr,
    /// Where it relays everything it accepts.
    pub sink: Sink,
    config_dir: PathBuf,
    dir: tempfile::TempDir,
}

impl Postfix {
    /// Starts Postfix on a free port of `ip`, offering STARTTLS with `tls`
    /// when given, relaying to a fresh sink on `sink_ip`.
    pub fn start(ip: Ipv4Addr, sink_ip: Ipv4Addr, tls: Option<&CertFiles>) -> Postfix {
        Postfix::start_with(ip, sink_ip, tls, false)
    }

    /// Like `start`, but its smtpd refuses mail until the client has
    /// started TLS (`smtpd_tls_security_level = encrypt`).
    pub fn start_requiring_tls(ip: Ipv4Addr, sink_ip: Ipv4Addr, tls: &CertFiles) -> Postfix {
        Postfix::start_with(ip, sink_ip, Some(tls), true)
    }

    fn start_with(ip: Ipv4Addr, sink_ip: Ipv4Addr, tls: Option<&CertFiles>, require_tls: bool) -> Postfix {
        let sink = Sink::start(sink_ip);
        let addr = SocketAddr::new(ip.into(), super::free_port(ip));
        let dir = tempfile::tempdir().expect("postfix temp dir");
        // Postfix's daemons run as the unprivileged `postfix` user and must
        // traverse the instance directory.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod postfix dir");
        let config_dir = dir.path().join("etc");
        let data_dir = dir.path().join("data");
        let queue_dir = dir.path().join("queue");
        for path in [&config_dir, &data_dir, &queue_dir] {
            std::fs::create_dir_all(path).expect("postfix dirs");
        }
        let status = privileged("chown")
            .arg("postfix")
            .arg(&data_dir)
            .status()
            .expect("chown");
        assert!(status.success(), "cannot chown {data_dir:?} to postfix");

        let tls_lines = match tls {
            Some(files) => {
                for path in [&files.cert, &files.key] {
                    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644));
                }
                format!(
                    "smtpd_tls_cert_file = {}\nsmtpd_tls_key_file = {}\nsmtpd_tls_security_level = {}\n",
                    files.cert.display(),
                    files.key.display(),
                    if require_tls { "encrypt" } else { "may" }
                )
            }
            None => "smtpd_tls_security_level = none\n".to_string(),
        };
        let tag = format!("postfix-{}", addr.to_string().replace([':', '.'], "-"));
        let main_cf = format!(
            "compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.{tag}.test
mydomain = {tag}.test
myorigin = $myhostname
# Only 127.0.0.1 is a configured address; the smtpd below binds its own
# 127.0.N.x in master.cf, which Linux allows on lo.
inet_interfaces = loopback-only
inet_protocols = ipv4
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
mynetworks = 127.0.0.0/8
smtpd_tls_loglevel = 1
relayhost = [{sink_ip}]:{sink_port}
smtp_tls_security_level = none
smtpd_peername_lookup = no
# Never touch headers: tests compare what arrives with what was sent.
local_header_rewrite_clients =
{tls_lines}maillog_file_prefixes = /
maillog_file = {log}
syslog_name = {tag}
",
            queue = queue_dir.display(),
            data = data_dir.display(),
            sink_ip = sink.addr.ip(),
            sink_port = sink.addr.port(),
            log = dir.path().join("maillog").display(),
        );
        std::fs::write(config_dir.join("main.cf"), main_cf).expect("main.cf");
        std::fs::write(config_dir.join("master.cf"), master_cf(addr)).expect("master.cf");

        let postfix = Postfix {
            addr,
            sink,
            config_dir,
            dir,
        };
        let started = postfix.control("start");
        assert!(
            started.status.success(),
            "postfix start failed: {}{}\n{}",
            String::from_utf8_lossy(&started.stdout),
            String::from_utf8_lossy(&started.stderr),
            log_tail(&postfix.maillog(), 30)
        );
        assert!(
            wait_for_port(addr, Duration::from_secs(20)),
            "postfix smtpd never listened on {addr}:\n{}",
            log_tail(&postfix.maillog(), 30)
        );
        postfix
    }

    pub fn maillog(&self) -> PathBuf {
        self.dir.path().join("maillog")
    }

    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    fn control(&self, verb: &str) -> Output {
        privileged("postfix")
            .arg("-c")
            .arg(&self.config_dir)
            .arg(verb)
            .output()
            .expect("run postfix")
    }

    fn master_pid(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.path().join("queue/pid/master.pid"))
            .ok()
            .map(|pid| pid.trim().to_string())
            .filter(|pid| !pid.is_empty())
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- postfix {} maillog (tail) ---\n{}",
                self.addr,
                log_tail(&self.maillog(), 40)
            );
        }
        let pid = self.master_pid();
        let _ = self.control("stop");
        let Some(pid) = pid else { return };
        // `postfix stop` only signals master; wait for it, then insist.
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(&pid) && Instant::now() < deadline {
            pause(Duration::from_millis(50));
        }
        if alive(&pid) {
            let _ = privileged("kill").args(["-KILL", &pid]).status();
        }
    }
}

/// A process counts as gone once it exits, even if nobody reaped it yet.
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z')
        })
        .unwrap_or(false)
}

/// Postfix must be started as root; without it, go through `sudo -n`.
fn privileged(program: &str) -> Command {
    if running_as_root() {
        Command::new(program)
    } else {
        let mut command = Command::new("sudo");
        command.arg("-n").arg(program);
        command
    }
}

/// The stock services with chroot off (the instance directory is not a
/// chroot jail) plus one smtpd on `addr`.
fn master_cf(addr: SocketAddr) -> String {
    format!(
        "{addr} inet n - n - - smtpd
pickup    unix  n - n 60    1 pickup
cleanup   unix  n - n -     0 cleanup
qmgr      unix  n - n 300   1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n -     - trivial-rewrite
bounce    unix  - - n -     0 bounce
defer     unix  - - n -     0 bounce
trace     unix  - - n -     0 bounce
verify    unix  - - n -     1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -     - proxymap
smtp      unix  - - n -     - smtp
relay     unix  - - n -     - smtp
showq     unix  n - n -     - showq
error     unix  - - n -     - error
retry     unix  - - n -     - error
discard   unix  - - n -     - discard
anvil     unix  - - n -     1 anvil
scache    unix  - - n -     1 scache
postlog   unix-dgram n - n - 1 postlogd
"
    )
}
