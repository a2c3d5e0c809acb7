//! SMTP clients for tests: swaks for ordinary sessions (STARTTLS, source
//! address choice), and a raw client over `TcpStream` for byte-exact
//! injection where a polite client would fix the input.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

/// What one swaks run did.
#[derive(Debug)]
pub struct SwaksRun {
    /// swaks' exit code: 0 delivered, 23 refused at MAIL, 24 at RCPT,
    /// 25 at DATA, 26 after the message (end of DATA), others on
    /// connection or TLS trouble.
    pub code: Option<i32>,
    /// The transcript (stdout and stderr).
    pub transcript: String,
}

impl SwaksRun {
    pub fn delivered(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs swaks against `server` with `args` (e.g. `--from`, `--to`,
/// `--tls`, `--local-interface`, `--data`), bounded in time.
pub fn swaks(server: SocketAddr, args: &[&str]) -> SwaksRun {
    let output = Command::new("timeout")
        .arg("60")
        .arg("swaks")
        .arg("--server")
        .arg(server.ip().to_string())
        .arg("--port")
        .arg(server.port().to_string())
        .args(["--timeout", "20", "--helo", "client.test"])
        .args(args)
        .output()
        .expect("run swaks");
    SwaksRun {
        code: output.status.code(),
        transcript: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// A minimal SMTP client that sends exactly the bytes it is given.
pub struct RawSmtp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

/// A TCP connection to `addr` from `source` (port chosen by the kernel).
pub fn connect_from(addr: SocketAddr, source: std::net::Ipv4Addr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(source.into(), 0).into())?;
    socket.connect_timeout(&addr.into(), Duration::from_secs(5))?;
    Ok(socket.into())
}

/// One reply: code and the full text of every line.
#[derive(Debug, Clone)]
pub struct RawReply {
    pub code: u16,
    pub text: String,
}

impl RawSmtp {
    /// Connects and reads the greeting.
    pub fn connect(addr: SocketAddr) -> std::io::Result<(RawSmtp, RawReply)> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        RawSmtp::greeted(stream)
    }

    /// Connects from `source` (a loopback address of the test's net, so the
    /// node classifies the session by it) and reads the greeting.
    pub fn connect_from(
        addr: SocketAddr,
        source: std::net::Ipv4Addr,
    ) -> std::io::Result<(RawSmtp, RawReply)> {
        RawSmtp::greeted(connect_from(addr, source)?)
    }

    fn greeted(stream: TcpStream) -> std::io::Result<(RawSmtp, RawReply)> {
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        stream.set_write_timeout(Some(Duration::from_secs(20)))?;
        let mut client = RawSmtp {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        let greeting = client.read_reply()?;
        Ok((client, greeting))
    }

    /// Sends `bytes` as they are, nothing added.
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes)?;
        self.writer.flush()
    }

    /// Waits up to `timeout` for each reply from now on.
    pub fn set_reply_timeout(&mut self, timeout: Duration) -> std::io::Result<()> {
        self.writer.set_read_timeout(Some(timeout))
    }

    /// Sends `line` plus CRLF and reads one reply.
    pub fn command(&mut self, line: &str) -> std::io::Result<RawReply> {
        self.send_raw(format!("{line}\r\n").as_bytes())?;
        self.read_reply()
    }

    /// Reads one (possibly multi-line) reply.
    pub fn read_reply(&mut self) -> std::io::Result<RawReply> {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            let read = self.reader.read_line(&mut line)?;
            if read == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("connection closed after {text:?}"),
                ));
            }
            text.push_str(&line);
            let bytes = line.as_bytes();
            if bytes.len() < 4 || bytes[3] != b'-' {
                let code = line.get(..3).and_then(|code| code.parse().ok()).ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("not an SMTP reply: {line:?}"),
                    )
                })?;
                return Ok(RawReply { code, text });
            }
        }
    }

    /// Whatever the server still sends until it closes or goes quiet.
    pub fn drain(&mut self, quiet: Duration) -> String {
        let _ = self.writer.set_read_timeout(Some(quiet));
        let mut rest = Vec::new();
        let _ = self.reader.read_to_end(&mut rest);
        String::from_utf8_lossy(&rest).into_owned()
    }

    /// A whole transaction with ordinary commands: EHLO, MAIL, RCPT each,
    /// DATA, then `content` (CRLF lines without the last CRLF, dot-stuffed
    /// by the caller) and the
    /// terminating dot. Returns the reply to the final dot, or the first
    /// reply that refused the transaction.
    pub fn send_message(&mut self, from: &str, to: &[&str], content: &str) -> std::io::Result<RawReply> {
        let ehlo = self.command("EHLO client.test")?;
        if ehlo.code != 250 {
            return Ok(ehlo);
        }
        let mail = self.command(&format!("MAIL FROM:<{from}>"))?;
        if mail.code != 250 {
            return Ok(mail);
        }
        for rcpt in to {
            let reply = self.command(&format!("RCPT TO:<{rcpt}>"))?;
            if reply.code != 250 {
                return Ok(reply);
            }
        }
        let data = self.command("DATA")?;
        if data.code != 354 {
            return Ok(data);
        }
        self.send_raw(content.as_bytes())?;
        self.send_raw(b"\r\n.\r\n")?;
        self.read_reply()
    }
}
