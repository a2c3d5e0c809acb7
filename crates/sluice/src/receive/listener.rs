//! The accept loop: one task per connection, a cap on concurrent sessions,
//! and a graceful stop.

use super::connection::{self, shutdown_requested};
use super::ReceiveContext;
use crate::message::Reply;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// How long a refused connection may take to receive its 421.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after a failed accept (e.g. out of file descriptors) so the loop
/// does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts SMTP connections on `listener` until `shutdown` turns true (or
/// its sender is dropped), then tells idle sessions 421 and waits for every
/// session to end. A session already handing a message to the intake
/// finishes that hand-over first.
pub async fn serve(listener: TcpListener, context: Arc<ReceiveContext>, mut shutdown: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(context.limits.max_connections));
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            () = shutdown_requested(&mut shutdown) => break,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let local = match stream.local_addr() {
                        Ok(local) => local,
                        Err(error) => {
                            tracing::warn!(peer = %peer, error = %error, "no local address");
                            continue;
                        }
                    };
                    match slots.clone().try_acquire_owned() {
                        Ok(slot) => {
                            let context = context.clone();
                            let shutdown = shutdown.clone();
                            sessions.spawn(async move {
                                let _slot = slot;
                                connection::run(stream, peer, local, &context, shutdown).await;
                            });
                        }
                        Err(_) => {
                            tracing::warn!(peer = %peer, "connection limit reached");
                            let hostname = context.hostname.clone();
                            sessions.spawn(refuse_busy(stream, hostname));
                        }
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

/// 421 4.3.2 for a connection over the limit, then close.
async fn refuse_busy(mut stream: TcpStream, hostname: String) {
    let reply = Reply::new(
        421,
        [4, 3, 2],
        format!("{hostname} Too many connections, try again later"),
    );
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
        stream.write_all(reply.to_wire().as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}
