//! A node whose queue stays put: an on-premises connector relays to
//! fabrikam.test through a smart host that defers every recipient, and the
//! next retry is an hour away, so only the test's own verbs move an entry.

use super::{on_prem_relay, swaks, Net, Node, NodeOptions, Sink};

/// The node's address in the test's net.
const NODE: u8 = 1;
/// The deferring smart host's address.
const DESTINATION: u8 = 21;
/// The on-premises server's address, the only source allowed to relay.
const ON_PREM: u8 = 40;

/// A node queueing mail it cannot deliver yet. Fields drop in order: the
/// node stops before its destination.
pub struct DeferringRelay {
    pub node: Node,
    pub destination: Sink,
    net: Net,
}

impl DeferringRelay {
    pub fn start(net: Net) -> DeferringRelay {
        let destination = Sink::start_with(
            net.ip(DESTINATION),
            &["-r", "RCPT", "-b", "451 4.3.0 try again later"],
        );
        let mut options = NodeOptions::new(
            net.ip(NODE),
            &on_prem_relay(net.ip(ON_PREM), "Fabrikam", "fabrikam.test", destination.addr),
        );
        // Far enough out that only a manual retry attempts again in a test.
        options.retry = vec!["1h".to_string()];
        let node = Node::start(options);
        DeferringRelay {
            node,
            destination,
            net,
        }
    }

    /// Sends one message from alice@contoso.test through the on-premises
    /// connector to `to` (comma-separated); asserts the node accepted it.
    pub fn relay(&self, to: &str, message_id: &str) {
        let on_prem = self.net.ip(ON_PREM).to_string();
        let run = swaks(
            self.node.smtp,
            &[
                "--local-interface",
                &on_prem,
                "--from",
                "alice@contoso.test",
                "--to",
                to,
                "--header",
                &format!("Message-ID: <{message_id}>"),
            ],
        );
        assert!(run.delivered(), "{}", run.transcript);
    }
}
