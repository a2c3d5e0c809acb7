//! A real Postfix instance per test: its own config, queue and data
//! directories, an smtpd on a chosen 127.0.N.x address and high port, and a
//! relayhost that hands everything to an smtp-sink so tests read what
//! arrived, or (seed 001's on-premises server) one that keeps its own domain
//! in a sink and relays the rest to a sluice gateway over verified TLS with a
//! client certificate. Several instances run side by side: nothing is
//! shared but the binaries and the `postfix` user.

use super::{log_tail, pause, running_as_root, wait_for_port, CertFiles, Sink};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub struct Postfix {
    /// Where its smtpd listens.
    pub addr: SocketAddr,
    /// Where it relays everything it accepts (for `start_on_prem`: where
    /// its mail domain's mailboxes are, everything else going to the cloud).
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
        let instance = Instance::new(addr);
        let tls_lines = match tls {
            Some(files) => {
                readable(files);
                format!(
                    "smtpd_tls_cert_file = {}\nsmtpd_tls_key_file = {}\nsmtpd_tls_security_level = {}\n",
                    files.cert.display(),
                    files.key.display(),
                    if require_tls { "encrypt" } else { "may" }
                )
            }
            None => "smtpd_tls_security_level = none\n".to_string(),
        };
        let main_cf = format!(
            "{common}myhostname = postfix.{tag}.test
mydomain = {tag}.test
myorigin = $myhostname
relayhost = [{sink_ip}]:{sink_port}
smtp_tls_security_level = none
{tls_lines}",
            common = instance.common_main_cf(),
            tag = instance.tag,
            sink_ip = sink.addr.ip(),
            sink_port = sink.addr.port(),
        );
        instance.boot(sink, &main_cf, &master_cf(addr))
    }

    /// The on-premises server of seed 001: a Postfix that delivers
    /// `options.domain` to a fresh sink on `options.mailbox_ip` (its
    /// mailboxes) and relays everything else to `options.relayhost` (the
    /// cloud gateway) over verified TLS, presenting `options.client_cert`
    /// when given.
    pub fn start_on_prem(options: &OnPremOptions<'_>) -> Postfix {
        let sink = Sink::start(options.mailbox_ip);
        let addr = SocketAddr::new(options.ip.into(), super::free_port(options.ip));
        let instance = Instance::new(addr);
        readable(options.server_tls);
        let client_lines = match options.client_cert {
            Some(files) => {
                readable(files);
                format!(
                    "smtp_tls_cert_file = {}\nsmtp_tls_key_file = {}\n",
                    files.cert.display(),
                    files.key.display()
                )
            }
            None => String::new(),
        };
        let main_cf = format!(
            "{common}myhostname = {hostname}
mydomain = {domain}
myorigin = {domain}
relay_domains = {domain}
# The on-prem mailboxes: a sink, reached in clear through its own transport.
transport_maps = inline:{{ {domain}=mailbox:[{sink_ip}]:{sink_port} }}
relayhost = [{relay_ip}]:{relay_port}
smtp_bind_address = {ip}
# Everything else goes to the cloud over TLS that verifies the gateway's
# certificate and its name.
smtp_tls_security_level = secure
smtp_tls_secure_cert_match = {relay_name}
smtp_tls_CAfile = {ca}
smtp_tls_loglevel = 1
{client_lines}smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_security_level = may
",
            common = instance.common_main_cf(),
            hostname = options.hostname,
            domain = options.domain,
            sink_ip = sink.addr.ip(),
            sink_port = sink.addr.port(),
            relay_ip = options.relayhost.ip(),
            relay_port = options.relayhost.port(),
            ip = options.ip,
            relay_name = options.relayhost_name,
            ca = options.ca.display(),
            cert = options.server_tls.cert.display(),
            key = options.server_tls.key.display(),
        );
        let master = format!(
            "{}mailbox   unix  - - n -     - smtp -o smtp_tls_security_level=none\n",
            master_cf(addr)
        );
        instance.boot(sink, &main_cf, &master)
    }

    pub fn maillog(&self) -> PathBuf {
        self.dir.path().join("maillog")
    }

    /// The maillog's text so far.
    pub fn maillog_text(&self) -> String {
        std::fs::read_to_string(self.maillog()).unwrap_or_default()
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

/// What differs for an on-premises Postfix (`Postfix::start_on_prem`).
pub struct OnPremOptions<'a> {
    /// Its smtpd's address, and the source address of its deliveries.
    pub ip: Ipv4Addr,
    /// `myhostname`, the name in its certificates.
    pub hostname: &'a str,
    /// The on-prem mail domain, delivered to the mailbox sink.
    pub domain: &'a str,
    /// Where the mailbox sink listens.
    pub mailbox_ip: Ipv4Addr,
    /// Its smtpd's certificate (STARTTLS offered, not required).
    pub server_tls: &'a CertFiles,
    /// The cloud gateway everything else is relayed to.
    pub relayhost: SocketAddr,
    /// The name the relayhost's certificate must carry.
    pub relayhost_name: &'a str,
    /// The CA that signed the relayhost's certificate.
    pub ca: &'a Path,
    /// The client certificate presented to the relayhost; `None` makes
    /// the Postfix anonymous (TLS without a client certificate).
    pub client_cert: Option<&'a CertFiles>,
}

/// A Postfix instance directory being set up.
struct Instance {
    addr: SocketAddr,
    tag: String,
    config_dir: PathBuf,
    dir: tempfile::TempDir,
}

impl Instance {
    fn new(addr: SocketAddr) -> Instance {
        let dir = tempfile::tempdir().expect("postfix temp dir");
        // Postfix's daemons run as the unprivileged `postfix` user and must
        // traverse the instance directory.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod postfix dir");
        let config_dir = dir.path().join("etc");
        for path in [&config_dir, &dir.path().join("data"), &dir.path().join("queue")] {
            std::fs::create_dir_all(path).expect("postfix dirs");
        }
        let data_dir = dir.path().join("data");
        let status = privileged("chown")
            .arg("postfix")
            .arg(&data_dir)
            .status()
            .expect("chown");
        assert!(status.success(), "cannot chown {data_dir:?} to postfix");
        Instance {
            addr,
            tag: format!("postfix-{}", addr.to_string().replace([':', '.'], "-")),
            config_dir,
            dir,
        }
    }

    /// The main.cf lines every instance shares.
    fn common_main_cf(&self) -> String {
        format!(
            "compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
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
smtpd_peername_lookup = no
# Never touch headers: tests compare what arrives with what was sent.
local_header_rewrite_clients =
maillog_file_prefixes = /
maillog_file = {log}
syslog_name = {tag}
",
            queue = self.dir.path().join("queue").display(),
            data = self.dir.path().join("data").display(),
            log = self.dir.path().join("maillog").display(),
            tag = self.tag,
        )
    }

    /// Writes the configuration and starts Postfix.
    fn boot(self, sink: Sink, main_cf: &str, master_cf: &str) -> Postfix {
        std::fs::write(self.config_dir.join("main.cf"), main_cf).expect("main.cf");
        std::fs::write(self.config_dir.join("master.cf"), master_cf).expect("master.cf");
        let postfix = Postfix {
            addr: self.addr,
            sink,
            config_dir: self.config_dir,
            dir: self.dir,
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
            wait_for_port(postfix.addr, Duration::from_secs(20)),
            "postfix smtpd never listened on {}:\n{}",
            postfix.addr,
            log_tail(&postfix.maillog(), 30)
        );
        postfix
    }
}

/// Certificates and keys must be readable by Postfix's daemons.
fn readable(files: &CertFiles) {
    for path in [&files.cert, &files.key] {
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644));
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
