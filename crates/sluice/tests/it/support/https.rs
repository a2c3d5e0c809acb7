//! A small HTTPS server for MTA-STS policies (RFC 8461 3.3): rustls with a
//! certificate from the test CA, one policy body per `Host`, every request
//! recorded. A real TLS server on a real socket; it answers one request
//! per connection and stops when dropped.

use super::CertFiles;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct PolicyServer {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PolicyServer {
    /// Serves `policies` (host name, policy text) on `addr` with `cert`; a
    /// text starting with `HTTP/1.1 ` is sent as the whole response.
    pub fn start(addr: SocketAddr, cert: &CertFiles, policies: &[(&str, &str)]) -> PolicyServer {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert.cert)
            .expect("read certificate")
            .collect::<Result<_, _>>()
            .expect("parse certificate");
        let key = PrivateKeyDer::from_pem_file(&cert.key).expect("read key");
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("protocol versions")
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .expect("server certificate"),
        );
        let listener = TcpListener::bind(addr).expect("bind policy server");
        let addr = listener.local_addr().expect("local addr");
        let policies: Vec<(String, String)> = policies
            .iter()
            .map(|(host, body)| (host.to_ascii_lowercase(), body.to_string()))
            .collect();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (requests, stop) = (requests.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        if let Some(host) = serve(stream, config.clone(), &policies) {
                            requests.lock().expect("requests").push(host);
                        }
                    }
                }
            })
        };
        PolicyServer {
            addr,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// The `Host` of every request answered, in order.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("requests").clone()
    }
}

impl Drop for PolicyServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One request: the policy of its `Host`, or 404. Returns the host asked.
fn serve(
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
    policies: &[(String, String)],
) -> Option<String> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    let connection = rustls::ServerConnection::new(config).ok()?;
    let mut tls = rustls::StreamOwned::new(connection, stream);
    let mut request = Vec::new();
    let mut buffer = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
        let read = tls.read(&mut buffer).ok()?;
        if read == 0 {
            return None;
        }
        request.extend_from_slice(&buffer[..read]);
    }
    let request = String::from_utf8_lossy(&request).to_string();
    let host = request
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("host")
                .then(|| value.trim().to_ascii_lowercase())
        })
        .unwrap_or_default();
    let bare_host = host.split(':').next().unwrap_or("").to_string();
    let path_ok = request.starts_with("GET /.well-known/mta-sts.txt ");
    let response = match policies.iter().find(|(name, _)| *name == bare_host) {
        // A whole response given by the test (redirects and the like).
        Some((_, raw)) if path_ok && raw.starts_with("HTTP/1.1 ") => raw.clone(),
        Some((_, body)) if path_ok => format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
        _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
    };
    let _ = tls.write_all(response.as_bytes());
    tls.conn.send_close_notify();
    let _ = tls.flush();
    Some(bare_host)
}
