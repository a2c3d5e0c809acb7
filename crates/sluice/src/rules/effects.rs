//! What the matched rules do to one recipient, accumulated in rule order.

use super::Action;
use crate::message::{Address, Reply};

/// Header changes, applied to the recipient's copy in this order of rules.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HeaderEdit {
    /// Remove every instance of the header.
    Remove(String),
    /// Replace the header (or add it).
    Set {
        /// Header name.
        name: String,
        /// One-line value.
        value: String,
    },
    /// Put text before the subject.
    PrependSubject(String),
    /// Write `X-Sluice-Org-Scan` from the DLP result (resolved into a
    /// `Set` by the plan, which has the scan).
    StampScan,
}

/// What becomes of a recipient. Stronger dispositions win:
/// reject > delete > quarantine > deliver.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Disposition {
    /// Continue to routing.
    #[default]
    Deliver,
    /// Held in quarantine by this rule.
    Quarantine {
        /// Rule name.
        rule: String,
    },
    /// Dropped without notice by this rule.
    Delete {
        /// Rule name.
        rule: String,
    },
    /// Refused by this rule with this reply.
    Reject {
        /// Rule name.
        rule: String,
        /// The reply to the client (or the DSN's diagnostic).
        reply: Reply,
    },
}

impl Disposition {
    fn strength(&self) -> u8 {
        match self {
            Disposition::Deliver => 0,
            Disposition::Quarantine { .. } => 1,
            Disposition::Delete { .. } => 2,
            Disposition::Reject { .. } => 3,
        }
    }
}

/// Everything the enforced rules decided for one recipient.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    /// Deliver, quarantine, delete or reject.
    pub disposition: Disposition,
    /// Outbound connector chosen by a rule (the last one wins).
    pub route_via: Option<String>,
    /// Header changes in order.
    pub edits: Vec<HeaderEdit>,
    /// Replacement recipients.
    pub redirect_to: Option<Vec<Address>>,
    /// Added recipients.
    pub bcc: Vec<Address>,
    /// Notices to the sender.
    pub notify_sender: Vec<String>,
    /// Rules whose actions applied.
    pub applied: Vec<String>,
}

impl Effects {
    /// Adds one rule's actions.
    pub fn apply(&mut self, rule: &str, actions: &[Action]) {
        self.applied.push(rule.to_string());
        for action in actions {
            let stronger = |d: Disposition, current: &Disposition| d.strength() > current.strength();
            match action {
                Action::Reject(reply) => {
                    let d = Disposition::Reject {
                        rule: rule.to_string(),
                        reply: reply.clone(),
                    };
                    if stronger(d.clone(), &self.disposition) {
                        self.disposition = d;
                    }
                }
                Action::Delete => {
                    let d = Disposition::Delete {
                        rule: rule.to_string(),
                    };
                    if stronger(d.clone(), &self.disposition) {
                        self.disposition = d;
                    }
                }
                Action::Quarantine => {
                    let d = Disposition::Quarantine {
                        rule: rule.to_string(),
                    };
                    if stronger(d.clone(), &self.disposition) {
                        self.disposition = d;
                    }
                }
                Action::RedirectTo(to) => self.redirect_to = Some(to.clone()),
                Action::Bcc(to) => self.bcc.extend(to.iter().cloned()),
                Action::RouteVia(connector) => self.route_via = Some(connector.clone()),
                Action::Edit(edit) => self.edits.push(edit.clone()),
                Action::NotifySender(text) => self.notify_sender.push(text.clone()),
            }
        }
    }

    /// Nothing later rules do can change a refused or deleted recipient.
    pub fn is_final(&self) -> bool {
        matches!(
            self.disposition,
            Disposition::Reject { .. } | Disposition::Delete { .. }
        )
    }

    /// Whether two recipients can share one copy of the message.
    pub fn same_copy(&self, other: &Effects) -> bool {
        self.disposition == other.disposition
            && self.route_via == other.route_via
            && self.edits == other.edits
            && self.redirect_to == other.redirect_to
    }
}

/// Builds the reply of a `reject` action from `5.7.1` and a text.
pub fn reject_reply(code: &str, text: &str) -> Result<Reply, String> {
    let parts: Vec<u16> = code
        .split('.')
        .map(|p| p.parse::<u16>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{code:?} is not an enhanced status code like 5.7.1"))?;
    let [class, subject, detail] = parts.as_slice() else {
        return Err(format!("{code:?} is not an enhanced status code like 5.7.1"));
    };
    if *class != 5 || *subject > 999 || *detail > 999 {
        return Err(format!("{code:?}: a reject needs a permanent (5.x.x) code"));
    }
    if text.contains(['\r', '\n']) || text.trim().is_empty() {
        return Err("the text must be one non-empty line".into());
    }
    Ok(Reply::new(550, [*class, *subject, *detail], text.trim()))
}
