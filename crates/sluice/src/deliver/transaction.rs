//! One mail transaction on an established connection: MAIL FROM, RCPT TO
//! per recipient, DATA (dot-stuffed) or BDAT, with per-recipient results.
//!
//! With PIPELINING, MAIL, every RCPT and DATA go out in one write and the
//! replies are read in order (RFC 2920). A refused RCPT decides only its
//! recipient; the final reply decides the RCPT-accepted ones. A lost
//! connection or a 421 leaves every unanswered recipient temporarily
//! failed. The session is left clean (ready for the next MAIL) or reported
//! unusable.

use super::connection::{Connection, Phase, SessionError};
use super::{DeliveryJob, DeliverySettings, Outcome};
use crate::message::{BodyType, DsnReturn, Notify, Reply};
use smtp_proto::{
    EXT_8BIT_MIME, EXT_BINARY_MIME, EXT_CHUNKING, EXT_DSN, EXT_PIPELINING, EXT_SIZE, EXT_SMTP_UTF8,
};

/// How a transaction ended.
pub(super) enum Transaction {
    /// Every recipient has an outcome; `reusable` when the session is
    /// back in its initial state.
    Finished {
        /// One per job recipient, same order.
        outcomes: Vec<Outcome>,
        /// The connection may carry another transaction.
        reusable: bool,
    },
    /// The connection failed before MAIL FROM was answered: nothing was
    /// decided, so a cached connection that went stale can be replaced.
    NotStarted(SessionError),
}

/// Where the session stands after the exchange.
enum After {
    /// The final reply was read; nothing to reset.
    Clean,
    /// The transaction was abandoned; RSET before reuse.
    NeedsReset,
}

/// Runs one transaction for `job` on `connection`.
pub(super) async fn run(
    connection: &mut Connection,
    job: &DeliveryJob,
    settings: &DeliverySettings,
) -> Transaction {
    if let Some(reply) = refusal_before_mail(connection, job) {
        let outcomes = job
            .recipients
            .iter()
            .map(|_| Outcome::PermFail(reply.clone()))
            .collect();
        return Transaction::Finished {
            outcomes,
            reusable: true,
        };
    }
    let mut progress = Progress {
        outcomes: vec![None; job.recipients.len()],
        mail_answered: false,
    };
    match exchange(connection, job, settings, &mut progress).await {
        Ok(after) => {
            let reusable = match after {
                After::Clean => true,
                After::NeedsReset => reset(connection, settings).await,
            };
            Transaction::Finished {
                outcomes: progress.finish(None, &connection.peer),
                reusable,
            }
        }
        Err(error) if !progress.mail_answered => Transaction::NotStarted(error),
        Err(error) => Transaction::Finished {
            outcomes: progress.finish(Some(&error), &connection.peer),
            reusable: false,
        },
    }
}

/// Sends RSET; the connection is reusable only on 250.
pub(super) async fn reset(connection: &mut Connection, settings: &DeliverySettings) -> bool {
    if connection
        .send(b"RSET\r\n", Phase::Rset, settings.command_timeout)
        .await
        .is_err()
    {
        return false;
    }
    matches!(
        connection.read_reply(Phase::Rset, settings.command_timeout).await,
        Ok(reply) if reply.is_positive()
    )
}

struct Progress {
    outcomes: Vec<Option<Outcome>>,
    mail_answered: bool,
}

impl Progress {
    /// Fills every undecided recipient: from the error when the session
    /// broke, otherwise (an invariant slip) with a generic temporary failure.
    fn finish(self, error: Option<&SessionError>, peer: &str) -> Vec<Outcome> {
        let fallback = match error {
            Some(error) => error.to_reply(peer),
            None => Reply::new(451, [4, 3, 0], format!("{peer}: no final reply")),
        };
        self.outcomes
            .into_iter()
            .map(|outcome| outcome.unwrap_or_else(|| Outcome::TempFail(fallback.clone())))
            .collect()
    }

    /// Records `reply` for every recipient in `indices`.
    fn decide(&mut self, indices: &[usize], reply: &Reply, success: fn(Reply) -> Outcome) {
        for &index in indices {
            self.outcomes[index] = Some(classify(reply, success));
        }
    }
}

/// 2xx -> `success`, 5xx -> PermFail, anything else -> TempFail.
fn classify(reply: &Reply, success: fn(Reply) -> Outcome) -> Outcome {
    if reply.is_positive() {
        success(reply.clone())
    } else if reply.is_permanent() {
        Outcome::PermFail(reply.clone())
    } else {
        Outcome::TempFail(reply.clone())
    }
}

/// Conditions that make the message undeliverable to this server whatever
/// it would answer (so MAIL FROM is never sent).
fn refusal_before_mail(connection: &Connection, job: &DeliveryJob) -> Option<Reply> {
    if job.smtputf8 && !connection.offers(EXT_SMTP_UTF8) {
        return Some(Reply::new(
            550,
            [5, 6, 7],
            format!(
                "{} does not support SMTPUTF8, which this message requires",
                connection.peer
            ),
        ));
    }
    if job.body == BodyType::BinaryMime
        && !(connection.offers(EXT_BINARY_MIME) && connection.offers(EXT_CHUNKING))
    {
        return Some(Reply::new(
            554,
            [5, 6, 3],
            format!(
                "{} does not support BINARYMIME, which this message requires",
                connection.peer
            ),
        ));
    }
    let limit = connection.size_limit();
    if connection.offers(EXT_SIZE) && limit > 0 && job.content.len() > limit {
        return Some(Reply::new(
            552,
            [5, 3, 4],
            format!(
                "message of {} bytes exceeds the {limit}-byte limit of {}",
                job.content.len(),
                connection.peer
            ),
        ));
    }
    None
}

async fn exchange(
    connection: &mut Connection,
    job: &DeliveryJob,
    settings: &DeliverySettings,
    progress: &mut Progress,
) -> Result<After, SessionError> {
    let dsn = connection.offers(EXT_DSN);
    let use_bdat = job.body == BodyType::BinaryMime;
    let mail = mail_command(job, connection);
    let rcpts: Vec<Vec<u8>> = job
        .recipients
        .iter()
        .map(|r| rcpt_command(&r.address.to_string(), r.notify, r.orcpt.as_deref(), dsn))
        .collect();
    let all: Vec<usize> = (0..job.recipients.len()).collect();
    let mut accepted = Vec::with_capacity(all.len());

    let data_reply = if connection.offers(EXT_PIPELINING) {
        let mut batch = mail;
        for rcpt in &rcpts {
            batch.extend_from_slice(rcpt);
        }
        if !use_bdat {
            batch.extend_from_slice(b"DATA\r\n");
        }
        connection
            .send(&batch, Phase::Mail, settings.command_timeout)
            .await?;
        let mail_reply = connection
            .read_reply(Phase::Mail, settings.command_timeout)
            .await?;
        progress.mail_answered = true;
        for index in 0..rcpts.len() {
            let reply = connection
                .read_reply(Phase::Rcpt, settings.command_timeout)
                .await?;
            if mail_reply.is_positive() {
                record_rcpt(progress, &mut accepted, index, reply);
            }
        }
        if !mail_reply.is_positive() {
            progress.decide(&all, &mail_reply, Outcome::TempFail);
        }
        if use_bdat {
            None
        } else {
            Some(connection.read_reply(Phase::Data, settings.data_timeout).await?)
        }
    } else {
        connection
            .send(&mail, Phase::Mail, settings.command_timeout)
            .await?;
        let mail_reply = connection
            .read_reply(Phase::Mail, settings.command_timeout)
            .await?;
        progress.mail_answered = true;
        if !mail_reply.is_positive() {
            progress.decide(&all, &mail_reply, Outcome::TempFail);
            return Ok(After::NeedsReset);
        }
        for (index, rcpt) in rcpts.iter().enumerate() {
            connection
                .send(rcpt, Phase::Rcpt, settings.command_timeout)
                .await?;
            let reply = connection
                .read_reply(Phase::Rcpt, settings.command_timeout)
                .await?;
            record_rcpt(progress, &mut accepted, index, reply);
        }
        if accepted.is_empty() {
            return Ok(After::NeedsReset);
        }
        if use_bdat {
            None
        } else {
            connection
                .send(b"DATA\r\n", Phase::Data, settings.data_timeout)
                .await?;
            Some(connection.read_reply(Phase::Data, settings.data_timeout).await?)
        }
    };

    match data_reply {
        Some(reply) if reply.code == 354 => {
            // A server that says 354 with no accepted recipient (RFC 2920
            // forbids it) gets an empty message it has nobody to deliver to.
            let body = if accepted.is_empty() {
                b".\r\n".to_vec()
            } else {
                dot_stuff(&job.content)
            };
            for block in body.chunks(64 * 1024) {
                connection
                    .send(block, Phase::DataBlock, settings.data_block_timeout)
                    .await?;
            }
            let final_reply = connection
                .read_reply(Phase::FinalDot, settings.final_dot_timeout)
                .await?;
            progress.decide(&accepted, &final_reply, Outcome::Delivered);
            Ok(After::Clean)
        }
        Some(reply) => {
            progress.decide(&accepted, &reply, Outcome::TempFail);
            Ok(After::NeedsReset)
        }
        None if accepted.is_empty() => Ok(After::NeedsReset),
        None => {
            let mut chunk = format!("BDAT {} LAST\r\n", job.content.len()).into_bytes();
            chunk.extend_from_slice(&job.content);
            connection
                .send(&chunk, Phase::DataBlock, settings.data_block_timeout)
                .await?;
            let final_reply = connection
                .read_reply(Phase::FinalDot, settings.final_dot_timeout)
                .await?;
            progress.decide(&accepted, &final_reply, Outcome::Delivered);
            Ok(if final_reply.is_positive() {
                After::Clean
            } else {
                After::NeedsReset
            })
        }
    }
}

/// A 2xx to RCPT keeps the recipient for DATA; anything else decides it.
fn record_rcpt(progress: &mut Progress, accepted: &mut Vec<usize>, index: usize, reply: Reply) {
    if reply.is_positive() {
        accepted.push(index);
    } else {
        progress.decide(&[index], &reply, Outcome::TempFail);
    }
}

fn mail_command(job: &DeliveryJob, connection: &Connection) -> Vec<u8> {
    let mut command = format!("MAIL FROM:<{}>", job.mail_from);
    if connection.offers(EXT_SIZE) {
        command.push_str(&format!(" SIZE={}", job.content.len()));
    }
    match job.body {
        BodyType::EightBitMime if connection.offers(EXT_8BIT_MIME) => command.push_str(" BODY=8BITMIME"),
        BodyType::BinaryMime => command.push_str(" BODY=BINARYMIME"),
        _ => {}
    }
    if job.smtputf8 {
        command.push_str(" SMTPUTF8");
    }
    if connection.offers(EXT_DSN) {
        match job.ret {
            Some(DsnReturn::Full) => command.push_str(" RET=FULL"),
            Some(DsnReturn::Headers) => command.push_str(" RET=HDRS"),
            None => {}
        }
        if let Some(envid) = &job.envid {
            command.push_str(&format!(" ENVID={}", xtext(envid)));
        }
    }
    command.push_str("\r\n");
    command.into_bytes()
}

fn rcpt_command(address: &str, notify: Notify, orcpt: Option<&str>, dsn: bool) -> Vec<u8> {
    let mut command = format!("RCPT TO:<{address}>");
    if dsn {
        match notify {
            Notify::Default => {}
            Notify::Never => command.push_str(" NOTIFY=NEVER"),
            Notify::On {
                success,
                failure,
                delay,
            } => {
                let words: Vec<&str> = [(success, "SUCCESS"), (failure, "FAILURE"), (delay, "DELAY")]
                    .into_iter()
                    .filter_map(|(on, word)| on.then_some(word))
                    .collect();
                if !words.is_empty() {
                    command.push_str(&format!(" NOTIFY={}", words.join(",")));
                }
            }
        }
        if let Some(orcpt) = orcpt {
            // Stored decoded as `type;address`: encode the address again.
            let (kind, value) = orcpt.split_once(';').unwrap_or(("rfc822", orcpt));
            command.push_str(&format!(" ORCPT={kind};{}", xtext(value)));
        }
    }
    command.push_str("\r\n");
    command.into_bytes()
}

/// RFC 3461 xtext: `+`, `=`, controls, space and non-ASCII as `+HH`.
fn xtext(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if (33..=126).contains(&byte) && byte != b'+' && byte != b'=' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("+{byte:02X}"));
        }
    }
    out
}

/// The DATA payload: a `.` doubled at the start of every line (RFC 5321
/// 4.5.2), a final CRLF if the content lacks one, then `.` CRLF.
///
/// Every message leaves through here: whole lines are copied at once
/// between the line starts memchr finds, not byte by byte.
pub(super) fn dot_stuff(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + content.len() / 64 + 5);
    let mut line_start = 0;
    loop {
        if content.get(line_start) == Some(&b'.') {
            out.push(b'.');
        }
        match memchr::memchr(b'\n', &content[line_start..]) {
            Some(at) => {
                let next = line_start + at + 1;
                out.extend_from_slice(&content[line_start..next]);
                line_start = next;
            }
            None => {
                out.extend_from_slice(&content[line_start..]);
                break;
            }
        }
    }
    if !content.is_empty() && !content.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing_doubles_leading_dots_only() {
        assert_eq!(
            dot_stuff(b".hidden\r\nmid.dle\r\n..two\r\n.\r\n"),
            b"..hidden\r\nmid.dle\r\n...two\r\n..\r\n.\r\n".to_vec()
        );
        assert_eq!(dot_stuff(b"no newline"), b"no newline\r\n.\r\n".to_vec());
        assert_eq!(dot_stuff(b""), b".\r\n".to_vec());
        assert_eq!(dot_stuff(b"."), b"..\r\n.\r\n".to_vec());
        assert_eq!(dot_stuff(b"a\r\n."), b"a\r\n..\r\n.\r\n".to_vec());
        assert_eq!(dot_stuff(b"a\r\n\r\n"), b"a\r\n\r\n.\r\n".to_vec());
    }

    /// The line-at-a-time copy says what the rule says, byte for byte, on
    /// every short mix of dots, CR, LF and text.
    #[test]
    fn dot_stuffing_matches_the_rule_on_every_short_input() {
        fn by_the_rule(content: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
            let mut line_start = true;
            for &byte in content {
                if line_start && byte == b'.' {
                    out.push(b'.');
                }
                out.push(byte);
                line_start = byte == b'\n';
            }
            if !content.is_empty() && !content.ends_with(b"\r\n") {
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b".\r\n");
            out
        }
        let alphabet = [b'.', b'\r', b'\n', b'x'];
        for len in 0..=6u32 {
            for n in 0..4usize.pow(len) {
                let input: Vec<u8> = (0..len).map(|i| alphabet[n / 4usize.pow(i) % 4]).collect();
                assert_eq!(dot_stuff(&input), by_the_rule(&input), "{input:?}");
            }
        }
    }

    #[test]
    fn xtext_encodes_plus_equals_and_spaces() {
        assert_eq!(xtext("a+b=c d@x.test"), "a+2Bb+3Dc+20d@x.test");
    }

    #[test]
    fn rcpt_parameters_only_with_dsn() {
        let notify = Notify::On {
            success: true,
            failure: true,
            delay: false,
        };
        assert_eq!(
            rcpt_command("a@x.test", notify, Some("rfc822;a+b@x.test"), true),
            b"RCPT TO:<a@x.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+2Bb@x.test\r\n".to_vec()
        );
        assert_eq!(
            rcpt_command("a@x.test", notify, Some("rfc822;a@x.test"), false),
            b"RCPT TO:<a@x.test>\r\n".to_vec()
        );
        assert_eq!(
            rcpt_command("a@x.test", Notify::Never, None, true),
            b"RCPT TO:<a@x.test> NOTIFY=NEVER\r\n".to_vec()
        );
    }

    #[test]
    fn replies_classify_by_class() {
        let ok = Reply::new(250, [2, 0, 0], "ok");
        let soft = Reply::new(451, [4, 3, 0], "later");
        let hard = Reply::new(550, [5, 1, 1], "no such user");
        assert_eq!(classify(&ok, Outcome::Delivered), Outcome::Delivered(ok));
        assert_eq!(classify(&soft, Outcome::Delivered), Outcome::TempFail(soft));
        assert_eq!(classify(&hard, Outcome::Delivered), Outcome::PermFail(hard));
    }
}
