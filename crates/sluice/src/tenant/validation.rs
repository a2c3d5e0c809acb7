//! The validation address of a scanner node: tenants' connector validation
//! messages are accepted, recorded (tenant, time, client address, TLS) and
//! never relayed. [`PartnerIntake`] sits in front of the node's pipeline and
//! takes those recipients out of each message before rules or the queue see
//! it; the record is on disk (fsync) before the 250.

use super::tenant_of_connector;
use crate::message::{Address, Reply};
use crate::receive::{Intake, Refusal, Submission};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

/// One validation message as the scanner saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ValidationRecord {
    /// When (RFC 3339).
    pub at: String,
    /// The tenant whose inbound connector the client matched; `None` when
    /// the client's address is listed for no tenant.
    pub tenant: Option<String>,
    /// Client address.
    pub client: String,
    /// Whether the session used TLS.
    pub tls: bool,
    /// The TLS version, when TLS was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<String>,
    /// Envelope sender.
    pub from: String,
    /// The test message's Message-ID.
    pub message_id: String,
}

/// Records kept; older ones are dropped when the file is rewritten.
const KEEP: usize = 1000;

/// Longest Message-ID or sender recorded: the client chose them.
const MAX_FIELD: usize = 256;

/// The validation records of a node: JSON lines in `data_dir`.
#[derive(Debug)]
pub struct ValidationLog {
    path: PathBuf,
    lock: std::sync::Mutex<()>,
}

fn clip(text: &str) -> String {
    text.chars().take(MAX_FIELD).collect()
}

impl ValidationLog {
    /// The log of the node whose data lives in `data_dir`.
    pub fn new(data_dir: &std::path::Path) -> ValidationLog {
        ValidationLog {
            path: data_dir.join("partner-validations.jsonl"),
            lock: std::sync::Mutex::new(()),
        }
    }

    /// Appends one record and syncs it to disk; past `KEEP` records the
    /// oldest are dropped.
    pub fn append(&self, record: &ValidationRecord) -> std::io::Result<()> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut records = self.read_unlocked();
        let line = serde_json::to_string(record).map_err(std::io::Error::other)?;
        if records.len() >= KEEP {
            records.drain(..records.len() + 1 - KEEP);
            records.push(record.clone());
            let mut text = String::new();
            for r in &records {
                text.push_str(&serde_json::to_string(r).map_err(std::io::Error::other)?);
                text.push('\n');
            }
            let temporary = self.path.with_extension("tmp");
            let mut file = std::fs::File::create(&temporary)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temporary, &self.path)?;
            return Ok(());
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        file.write_all(format!("{line}\n").as_bytes())?;
        file.sync_data()
    }

    /// Every record, oldest first (unreadable lines skipped).
    pub fn read(&self) -> Vec<ValidationRecord> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.read_unlocked()
    }

    fn read_unlocked(&self) -> Vec<ValidationRecord> {
        std::fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// The node's intake with the validation address taken care of first.
pub struct PartnerIntake {
    /// The node's pipeline (rules, queue).
    pub inner: Arc<dyn Intake>,
    /// `[partner] validation_address`.
    pub validation_address: Address,
    /// Where records go.
    pub log: Arc<ValidationLog>,
}

impl PartnerIntake {
    async fn take(&self, mut submission: Submission) -> Reply {
        let wanted = self.validation_address.to_string().to_ascii_lowercase();
        let is_validation: Vec<bool> = submission
            .envelope
            .recipients
            .iter()
            .map(|r| r.address.to_string().to_ascii_lowercase() == wanted)
            .collect();
        if !is_validation.contains(&true) {
            return self.inner.accept(submission).await;
        }
        let connector = submission.classification.connector().map(str::to_string);
        let record = ValidationRecord {
            at: crate::trace::rfc3339(crate::trace::now_ms()),
            tenant: connector
                .as_deref()
                .and_then(tenant_of_connector)
                .map(str::to_string),
            client: submission.session.peer.ip().to_string(),
            tls: submission.session.tls.is_some(),
            tls_version: submission.session.tls.as_ref().map(|t| t.version.clone()),
            from: clip(&submission.envelope.mail_from.to_string()),
            message_id: clip(
                &crate::message::header_message_id(submission.content.head()).unwrap_or_default(),
            ),
        };
        let log = self.log.clone();
        let written = tokio::task::spawn_blocking(move || {
            let result = log.append(&record);
            (record, result)
        })
        .await;
        match written {
            Ok((record, Ok(()))) => tracing::info!(
                tenant = record.tenant.as_deref().unwrap_or("-"),
                client = %record.client,
                tls = record.tls,
                "connector validation message recorded"
            ),
            Ok((_, Err(error))) => {
                tracing::error!(error = %error, "cannot record a validation message");
                return Reply::new(451, [4, 3, 0], "Temporary failure, try again later");
            }
            Err(error) => {
                tracing::error!(error = %error, "cannot record a validation message");
                return Reply::new(451, [4, 3, 0], "Temporary failure, try again later");
            }
        }
        let mut keep = is_validation.iter().map(|v| !v);
        submission
            .envelope
            .recipients
            .retain(|_| keep.next().unwrap_or(true));
        let mut keep = is_validation.iter().map(|v| !v);
        submission.routes.retain(|_| keep.next().unwrap_or(true));
        if submission.envelope.recipients.is_empty() {
            return Reply::new(250, [2, 0, 0], "Validation message recorded");
        }
        self.inner.accept(submission).await
    }
}

impl Intake for PartnerIntake {
    fn accept(&self, submission: Submission) -> Pin<Box<dyn Future<Output = Reply> + Send + '_>> {
        Box::pin(self.take(submission))
    }

    fn refused(&self, refusal: Refusal) {
        self.inner.refused(refusal)
    }
}
