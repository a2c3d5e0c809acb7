//! The accept loop: one task per connection, caps on concurrent sessions
//! (all clients, and per client address), a clear 421 when the node runs out
//! of file descriptors, and a graceful stop.

use super::connection::{self, shutdown_requested};
use super::ReceiveContext;
use crate::message::Reply;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// How long a refused connection may take to receive its 421.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after a failed accept that could not be answered, so the loop
/// does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts SMTP connections on `listener` until `shutdown` turns true (or
/// its sender is dropped), then tells idle sessions 421 and waits for every
/// session to end. A session already handing a message to the intake
/// finishes that hand-over first.
pub async fn serve(listener: TcpListener, context: Arc<ReceiveContext>, mut shutdown: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(context.limits.max_connections));
    let per_address = Arc::new(PerAddress::default());
    // One descriptor held back: when accept fails for lack of descriptors,
    // releasing it lets the waiting client be told 421 instead of hanging
    // in the backlog while the loop fails again and again.
    let mut reserve = open_reserve();
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            () = shutdown_requested(&mut shutdown) => break,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Every reply is one write, but TLS adds writes of its
                    // own (session tickets after the handshake): with
                    // Nagle on, the reply behind them waits for the
                    // client's delayed ACK, 40 ms per connection.
                    if let Err(error) = stream.set_nodelay(true) {
                        tracing::debug!(peer = %peer, error = %error, "cannot set TCP_NODELAY");
                    }
                    let local = match stream.local_addr() {
                        Ok(local) => local,
                        Err(error) => {
                            tracing::warn!(peer = %peer, error = %error, "no local address");
                            continue;
                        }
                    };
                    let Some(address_slot) = per_address.claim(peer.ip(), context.limits.max_connections_per_ip) else {
                        tracing::warn!(peer = %peer, limit = context.limits.max_connections_per_ip, "per-address connection limit reached");
                        sessions.spawn(refuse(stream, Refusal::PerAddress.reply(&context.hostname)));
                        continue;
                    };
                    match slots.clone().try_acquire_owned() {
                        Ok(slot) => {
                            let context = context.clone();
                            let shutdown = shutdown.clone();
                            sessions.spawn(async move {
                                let _slots = (slot, address_slot);
                                connection::run(stream, peer, local, &context, shutdown).await;
                            });
                        }
                        Err(_) => {
                            tracing::warn!(peer = %peer, "connection limit reached");
                            sessions.spawn(refuse(stream, Refusal::Busy.reply(&context.hostname)));
                        }
                    }
                }
                Err(error) if out_of_descriptors(&error) => {
                    tracing::warn!(error = %error, sessions = sessions.len(), "accept failed: out of file descriptors");
                    if reserve.take().is_some() {
                        // The reserve is closed now, so this accept has a descriptor to use.
                        if let Ok(Ok((stream, peer))) = tokio::time::timeout(ACCEPT_BACKOFF, listener.accept()).await {
                            tracing::warn!(peer = %peer, "refused for lack of file descriptors");
                            refuse(stream, Refusal::OutOfDescriptors.reply(&context.hostname)).await;
                        }
                        reserve = open_reserve();
                    } else {
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        reserve = open_reserve();
                    }
                }
                Err(error) => {
                    tracing::warn!(error = %error, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    drop(listener);
    while sessions.join_next().await.is_some() {}
}

/// EMFILE (this process) or ENFILE (the whole system).
fn out_of_descriptors(error: &std::io::Error) -> bool {
    matches!(error.raw_os_error(), Some(23 | 24))
}

fn open_reserve() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

/// Sessions per client address. A claim is released when its guard drops.
#[derive(Default)]
struct PerAddress {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

struct AddressSlot {
    table: Arc<PerAddress>,
    ip: IpAddr,
}

impl PerAddress {
    /// A slot for one more session from `ip`, unless it already has `limit`.
    fn claim(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<AddressSlot> {
        // IPv4-mapped IPv6 peers count as the IPv4 address they are.
        let ip = ip.to_canonical();
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = counts.entry(ip).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut counts = self
            .table
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// Why a connection is turned away at connect.
enum Refusal {
    /// The node is at `max_connections`.
    Busy,
    /// The client address is at `max_connections_per_ip`.
    PerAddress,
    /// No file descriptor left for a session.
    OutOfDescriptors,
}

impl Refusal {
    fn reply(&self, hostname: &str) -> Reply {
        match self {
            Refusal::Busy => Reply::new(
                421,
                [4, 3, 2],
                format!("{hostname} Too many connections, try again later"),
            ),
            Refusal::PerAddress => Reply::new(
                421,
                [4, 7, 0],
                format!("{hostname} Too many connections from your address, try again later"),
            ),
            Refusal::OutOfDescriptors => Reply::new(
                421,
                [4, 3, 2],
                format!("{hostname} Out of resources, try again later"),
            ),
        }
    }
}

/// A 421 at connect, then close.
async fn refuse(mut stream: TcpStream, reply: Reply) {
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
        stream.write_all(reply.to_wire().as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}
