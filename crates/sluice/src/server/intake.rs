//! The pipeline behind a session: header firewall, queue entry, durable
//! enqueue, trace. Rules and scanning join here as they land.

use crate::classify::header_firewall::strip_internal_headers;
use crate::classify::Classification;
use crate::config::objects::Policy;
use crate::message::{header_message_id, Reply};
use crate::queue::{self, Hold, Queue, QueueEntry, QueuedRecipient, RecipientStatus, Source};
use crate::receive::{Intake, Submission};
use crate::trace::{now_ms, TraceKind};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::watch;

/// Accepts complete messages from sessions into the queue.
pub struct Pipeline {
    /// The spool.
    pub queue: Queue,
    /// Current objects.
    pub policy: watch::Receiver<Arc<Policy>>,
}

impl Pipeline {
    fn retains_internal_headers(&self, classification: &Classification) -> bool {
        let policy = self.policy.borrow();
        classification
            .connector()
            .and_then(|name| policy.inbound.iter().find(|c| c.name == name))
            .is_some_and(|c| c.retain_internal_headers)
    }

    async fn take(&self, submission: Submission) -> Reply {
        let Submission {
            id,
            session,
            classification,
            envelope,
            routes,
            content,
        } = submission;
        let content = if self.retains_internal_headers(&classification) {
            content
        } else {
            strip_internal_headers(&content).0
        };
        let now = now_ms();
        let entry = QueueEntry {
            id: id.clone(),
            message_id: header_message_id(&content),
            from: envelope.mail_from,
            body: envelope.body,
            smtputf8: envelope.smtputf8,
            ret: envelope.ret,
            envid: envelope.envid,
            recipients: envelope
                .recipients
                .into_iter()
                .zip(routes)
                .map(|(r, route)| QueuedRecipient {
                    address: r.address,
                    notify: r.notify,
                    orcpt: r.orcpt,
                    route,
                    status: RecipientStatus::Queued { due_ms: now },
                    attempts: 0,
                })
                .collect(),
            size: content.len() as u64,
            received_at_ms: now,
            expires_at_ms: self.queue.expiry_from(now),
            hold: Hold::Active,
            source: Source {
                peer: session.peer.ip().to_string(),
                helo: session.helo.clone(),
                connector: classification.connector().map(str::to_string),
            },
        };
        let tls = session
            .tls
            .as_ref()
            .map(|t| format!("{} {}", t.version, t.cipher))
            .unwrap_or_else(|| "no TLS".to_string());
        let mut events = vec![queue::event(
            &entry,
            TraceKind::Received,
            None,
            Some(session.peer.to_string()),
            Some(format!("helo={} {tls} size={}", session.helo, entry.size)),
        )];
        for r in &entry.recipients {
            let mut routed = queue::event(
                &entry,
                TraceKind::Routed,
                Some(r.address.to_string()),
                None,
                Some(describe_route(&r.route)),
            );
            routed.connector = r.route.connector().map(str::to_string);
            events.push(routed);
        }
        match self.queue.enqueue(entry, content, events).await {
            Ok(()) => Reply::new(250, [2, 0, 0], format!("Ok: queued as {id}")),
            Err(error) => {
                tracing::error!(error = %error, "cannot queue message");
                Reply::new(451, [4, 3, 0], "Temporary local problem, try again later")
            }
        }
    }
}

/// A route as one line of the trace.
fn describe_route(route: &crate::route::Route) -> String {
    use crate::route::{NextHop, Route};
    match route {
        Route::Connector {
            connector,
            next_hop: NextHop::SmartHosts(hosts),
            tls,
            ..
        } => {
            let hosts: Vec<String> = hosts.iter().map(ToString::to_string).collect();
            format!(
                "connector {connector:?} via {} tls={}",
                hosts.join(", "),
                tls.name()
            )
        }
        Route::Connector {
            connector,
            next_hop: NextHop::Mx,
            tls,
            ..
        } => {
            format!("connector {connector:?} via MX tls={}", tls.name())
        }
        Route::Mailbox => "local mailbox".to_string(),
        Route::Mx => "MX tls=opportunistic".to_string(),
    }
}

impl Intake for Pipeline {
    fn accept(&self, submission: Submission) -> Pin<Box<dyn Future<Output = Reply> + Send + '_>> {
        Box::pin(self.take(submission))
    }
}
