//! A full disk is a temporary condition (issue 13 point 5): with the
//! node's data_dir on a small filesystem of its own (tmpfs) filled below
//! `[store] min_free`, new mail gets `452 4.3.1` at MAIL, at RCPT and at
//! the end of DATA, mail accepted before is still delivered, and once space
//! returns mail is accepted again. A spool write that fails for want of
//! space is a 452 too, never a 250 and never a crash. Net 234.

use crate::support::{pause, running_as_root, wait_until, Net, Node, NodeOptions, RawSmtp, Sink};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const NODE: u8 = 1;
const SINK: u8 = 20;
const CLIENT: u8 = 80;

/// Long enough for the node's cached measurement (one second) to expire.
const REMEASURE: Duration = Duration::from_millis(1500);
const MIN_FREE: u64 = 24_000_000;

/// A tmpfs mounted on a path; unmounted (lazily, whatever still holds it
/// open) on drop.
#[derive(Default)]
struct Tmpfs {
    point: Option<PathBuf>,
}

impl Tmpfs {
    /// Mounts 64 MiB on `point`; `Err` with the reason when not permitted.
    fn mount(&mut self, point: &Path) -> Result<(), String> {
        if !running_as_root() {
            return Err("not running as root".to_string());
        }
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs"])
            .arg(point)
            .output()
            .map_err(|error| format!("mount: {error}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        self.point = Some(point.to_path_buf());
        Ok(())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Some(point) = self.point.take() {
            let _ = Command::new("umount").arg("-l").arg(&point).status();
            let _ = std::fs::remove_dir_all(&point);
        }
    }
}

fn available(dir: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .expect("df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .and_then(|line| line.trim().parse().ok())
        .expect("df output")
}

/// Writes `filler` until at most `leave` octets are free (or the disk is
/// full: a write fails).
fn fill(filler: &Path, leave: u64) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(filler)
        .expect("filler");
    let chunk = vec![0x5a_u8; 256 * 1024];
    let dir = filler.parent().expect("filler dir");
    while available(dir) > leave {
        let want = usize::try_from((available(dir) - leave).min(chunk.len() as u64)).unwrap_or(chunk.len());
        if file.write_all(&chunk[..want.max(1)]).is_err() {
            break;
        }
        let _ = file.sync_data();
    }
}

fn objects(sink: std::net::SocketAddr) -> String {
    format!(
        r#"
[[accepted_domain]]
name = "contoso.test"
type = "internal_relay"

[[outbound_connector]]
name = "Sink"
recipient_domains = ["contoso.test"]
smart_hosts = ["{sink}"]
"#
    )
}

fn client(node: &Node, net: Net) -> RawSmtp {
    let (mut client, greeting) = RawSmtp::connect_from(node.smtp, net.ip(CLIENT)).expect("connect");
    assert_eq!(greeting.code, 220, "{greeting:?}");
    assert_eq!(client.command("EHLO full.test").expect("EHLO").code, 250);
    client
}

/// The reply must have `code`.
macro_rules! expect {
    ($reply:expr, $code:expr, $what:expr $(,)?) => {{
        let reply = $reply.unwrap_or_else(|error| panic!("{}: {error}", $what));
        assert_eq!(reply.code, $code, "{}: {reply:?}", $what);
        reply
    }};
}

/// The reply must be `452 4.3.1 Insufficient system storage`.
macro_rules! insufficient_storage {
    ($reply:expr, $what:expr $(,)?) => {{
        let reply = expect!($reply, 452, $what);
        assert!(
            reply.text.contains("4.3.1") && reply.text.contains("Insufficient system storage"),
            "{}: {reply:?}",
            $what
        );
    }};
}

fn message(subject: &str, body: &str) -> String {
    format!("Subject: {subject}\r\nFrom: load@fabrikam.test\r\n\r\n{body}")
}

#[test]
fn below_min_free_new_mail_is_deferred_while_delivery_goes_on() {
    let net = Net(234);
    let sink_addr = net.addr(SINK);
    let mut options = NodeOptions::new(net.ip(NODE), &objects(sink_addr));
    options.extra_toml = format!("[store]\nmin_free = \"{MIN_FREE}\"\n");
    // Declared before the node: the node stops first, then the mount goes.
    let mut tmpfs = Tmpfs::default();
    let mut node = Node::start(options);
    node.kill9();
    if let Err(reason) = tmpfs.mount(&node.data_dir()) {
        eprintln!("skipped: cannot mount a tmpfs for the data_dir ({reason})");
        return;
    }
    node.restart();
    node.apply("objects.toml", &objects(sink_addr));
    let data = node.data_dir();
    let filler = data.join("filler");

    // Accepted while the smart host is down: it waits in the queue.
    let mut early = client(&node, net);
    expect!(
        early.send_message(
            "load@fabrikam.test",
            &["bob@contoso.test"],
            &message("early", "accepted before\r\n"),
        ),
        250,
        "message before the disk filled",
    );
    // Transactions open when the disk fills: one before RCPT, one before DATA.
    let mut at_rcpt = client(&node, net);
    expect!(at_rcpt.command("MAIL FROM:<load@fabrikam.test>"), 250, "MAIL");
    let mut at_data = client(&node, net);
    expect!(at_data.command("MAIL FROM:<load@fabrikam.test>"), 250, "MAIL");
    expect!(at_data.command("RCPT TO:<bob@contoso.test>"), 250, "RCPT");

    fill(&filler, MIN_FREE / 2);
    assert!(
        available(&data) < MIN_FREE,
        "the filler left {} free",
        available(&data)
    );
    pause(REMEASURE);

    let mut late = client(&node, net);
    insufficient_storage!(late.command("MAIL FROM:<load@fabrikam.test>"), "MAIL");
    insufficient_storage!(at_rcpt.command("RCPT TO:<bob@contoso.test>"), "RCPT");
    expect!(at_data.command("DATA"), 354, "DATA");
    at_data
        .send_raw(format!("{}\r\n.\r\n", message("crossed", "while the disk filled")).as_bytes())
        .expect("content");
    insufficient_storage!(at_data.read_reply(), "end of DATA");

    // Delivery goes on while new mail waits: the smart host comes up and
    // gets the message accepted before.
    let mut sink = Sink::start_on(sink_addr);
    let delivered = sink.wait_for(1, Duration::from_secs(30));
    assert_eq!(
        delivered.len(),
        1,
        "the early message was not delivered while the disk was full"
    );
    assert_eq!(delivered[0].header("Subject").as_deref(), Some("early"));
    insufficient_storage!(late.command("MAIL FROM:<load@fabrikam.test>"), "MAIL, still full");

    // Space returns: accepted again, and delivered.
    std::fs::remove_file(&filler).expect("remove filler");
    pause(REMEASURE);
    expect!(
        late.command("MAIL FROM:<load@fabrikam.test>"),
        250,
        "MAIL after space returned",
    );
    expect!(
        late.command("RCPT TO:<bob@contoso.test>"),
        250,
        "RCPT after space returned",
    );
    expect!(late.command("DATA"), 354, "DATA after space returned");
    late.send_raw(format!("{}\r\n.\r\n", message("after", "space is back")).as_bytes())
        .expect("content");
    expect!(late.read_reply(), 250, "end of DATA after space returned");
    let delivered = sink.wait_for(2, Duration::from_secs(30));
    assert_eq!(
        delivered.len(),
        2,
        "the message after space returned was not delivered"
    );
    assert_eq!(delivered[1].header("Subject").as_deref(), Some("after"));

    // The disk fills up completely while a large message is being spooled:
    // that message gets 452, nothing is queued, and the node lives on.
    let mut large = client(&node, net);
    expect!(large.command("MAIL FROM:<load@fabrikam.test>"), 250, "MAIL");
    expect!(large.command("RCPT TO:<bob@contoso.test>"), 250, "RCPT");
    expect!(large.command("DATA"), 354, "DATA");
    let line = format!("{}\r\n", "x".repeat(998));
    large.send_raw(b"Subject: large\r\n\r\n").expect("header");
    for _ in 0..1024 {
        large.send_raw(line.as_bytes()).expect("first megabyte");
    }
    fill(&filler, 0);
    // More than the node can have buffered: it reaches the full disk.
    for _ in 0..4096 {
        if large.send_raw(line.as_bytes()).is_err() {
            break;
        }
    }
    let _ = large.send_raw(b".\r\n");
    insufficient_storage!(large.read_reply(), "spool write on a full disk");
    std::fs::remove_file(&filler).expect("remove filler");
    pause(REMEASURE);
    let mut last = client(&node, net);
    expect!(
        last.send_message(
            "load@fabrikam.test",
            &["bob@contoso.test"],
            &message("last", "after a full disk\r\n"),
        ),
        250,
        "message after the disk was full",
    );
    let delivered = sink.wait_for(3, Duration::from_secs(30));
    let subjects: Vec<_> = delivered.iter().filter_map(|m| m.header("Subject")).collect();
    assert_eq!(subjects, ["early", "after", "last"], "delivered: {subjects:?}");
    assert!(
        wait_until(Duration::from_secs(30), || node.queue_json().is_empty()),
        "mail left in the queue: {:?}",
        node.queue_json()
    );
    assert!(!node.log().contains("panicked"), "{}", node.log());
    sink.stop();
}
