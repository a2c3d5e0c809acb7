//! `sluice rule ...`: mail flow rules. `new` builds a `[[rule]]` from flags
//! and `set` changes only the keys whose flags are given; the node validates
//! either exactly as it validates `apply`, and a refusal is exit 2.

use super::client::{segment, ApiClient};
use super::output::{json, Table};
use super::{Failure, GlobalArgs, JsonFlag};
use crate::config::objects::ObjectSet;
use crate::config::rule_object::{
    HeaderWords, OrganizationScope, RejectWith, RuleMode, RuleObject, RulePredicates, SetHeader,
};
use clap::{Args, Subcommand, ValueEnum};

/// `sluice rule ...`.
#[derive(Debug, Subcommand)]
pub enum RuleCommand {
    /// List rules in the order they run (priority, then name).
    List(JsonFlag),
    /// Show one rule as a `[[rule]]` table (the shape `apply -f` takes).
    Show {
        /// Rule name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create a rule.
    New(Box<NewRuleArgs>),
    /// Change the keys named by the flags given; the rest stay.
    Set {
        /// Rule name.
        name: String,
        /// The keys to change (boxed: the flags outweigh every other verb).
        #[command(flatten)]
        flags: Box<RuleFlags>,
    },
    /// Remove a rule.
    Remove {
        /// Rule name.
        name: String,
    },
    /// Enable a rule.
    Enable {
        /// Rule name.
        name: String,
    },
    /// Disable a rule (kept, not evaluated).
    Disable {
        /// Rule name.
        name: String,
    },
}

/// `sluice rule new`.
#[derive(Debug, Args)]
pub struct NewRuleArgs {
    /// Unique name.
    #[arg(long)]
    pub name: String,
    /// The rule's keys; those not given take their defaults.
    #[command(flatten)]
    pub flags: RuleFlags,
}

/// `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuleModeArg {
    /// Apply the actions.
    Enforce,
    /// Record the match in the trace, change nothing.
    Audit,
}

/// `--sent-to-scope`, `--from-scope`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScopeArg {
    /// Inside the organisation.
    #[value(name = "in_organization", alias = "in-organization")]
    InOrganization,
    /// Outside it.
    #[value(name = "not_in_organization", alias = "not-in-organization")]
    NotInOrganization,
}

/// The flags naming a rule's keys. Each is `None` (or empty) when not given,
/// so `set` can tell "leave alone" from "change". Scalars replace, repeated
/// flags replace the whole list; an empty text clears an optional action.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct RuleFlags {
    /// Lower runs first.
    #[arg(long, value_name = "P")]
    pub priority: Option<u32>,
    /// enforce, or audit (record the match, act not).
    #[arg(long, value_enum)]
    pub mode: Option<RuleModeArg>,
    /// Later rules do not run once this one matched (`=false` to turn off).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub stop_processing: Option<bool>,
    /// Free text.
    #[arg(long, value_name = "TEXT")]
    pub comment: Option<String>,
    /// Condition: recipient inside or outside the organisation.
    #[arg(long, value_enum, value_name = "SCOPE")]
    pub sent_to_scope: Option<ScopeArg>,
    /// Condition: sender inside or outside the organisation.
    #[arg(long, value_enum, value_name = "SCOPE")]
    pub from_scope: Option<ScopeArg>,
    /// Condition: envelope sender domain (repeatable).
    #[arg(long, value_name = "D")]
    pub sender_domain_is: Vec<String>,
    /// Condition: recipient domain (repeatable).
    #[arg(long, value_name = "D")]
    pub recipient_domain_is: Vec<String>,
    /// Condition: a header holds one of the words, 'Header:word1,word2'.
    #[arg(long, value_name = "HEADER:WORDS", value_parser = parse_header_words)]
    pub header_contains: Option<HeaderWords>,
    /// Exception: a header holds one of the words, 'Header:word1,word2'.
    #[arg(long, value_name = "HEADER:WORDS", value_parser = parse_header_words)]
    pub except_header_contains: Option<HeaderWords>,
    /// Condition: a word in the subject or text (repeatable).
    #[arg(long, value_name = "W")]
    pub subject_or_body_contains: Vec<String>,
    /// Action: route through this outbound connector.
    #[arg(long, value_name = "NAME")]
    pub route_via_connector: Option<String>,
    /// Action: text put before the subject.
    #[arg(long, value_name = "TEXT")]
    pub prepend_subject: Option<String>,
    /// Action: add or replace a header, 'Name: value'.
    #[arg(long, value_name = "'NAME: VALUE'", value_parser = parse_set_header)]
    pub set_header: Option<SetHeader>,
    /// Action: remove a header.
    #[arg(long, value_name = "NAME")]
    pub remove_header: Option<String>,
    /// Action: replace the matching recipients (repeatable).
    #[arg(long, value_name = "ADDR")]
    pub redirect_to: Vec<String>,
    /// Action: add a hidden recipient (repeatable).
    #[arg(long, value_name = "ADDR")]
    pub bcc: Vec<String>,
    /// Action: refuse the message, 'CODE TEXT' (e.g. '5.7.1 Not allowed').
    #[arg(long, value_name = "'CODE TEXT'", value_parser = parse_reject)]
    pub reject: Option<RejectWith>,
    /// Action: drop the message silently (`=false` to turn off).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub delete: Option<bool>,
    /// Action: hold the message in quarantine (`=false` to turn off).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub quarantine: Option<bool>,
    /// Action: send this notice to the envelope sender.
    #[arg(long, value_name = "TEXT")]
    pub notify_sender: Option<String>,
}

fn parse_header_words(text: &str) -> Result<HeaderWords, String> {
    let (header, words) = text
        .split_once(':')
        .ok_or_else(|| "expected 'Header:word1,word2'".to_string())?;
    let header = header.trim();
    let words: Vec<String> = words
        .split(',')
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .map(String::from)
        .collect();
    if header.is_empty() || words.is_empty() {
        return Err("expected 'Header:word1,word2' with a header name and at least one word".into());
    }
    Ok(HeaderWords {
        header: header.to_string(),
        words,
    })
}

fn parse_set_header(text: &str) -> Result<SetHeader, String> {
    let (header, value) = text
        .split_once(':')
        .ok_or_else(|| "expected 'Name: value'".to_string())?;
    if header.trim().is_empty() {
        return Err("expected 'Name: value' with a header name".into());
    }
    Ok(SetHeader {
        header: header.trim().to_string(),
        value: value.trim().to_string(),
    })
}

/// `5.7.1 Some text`; the code alone keeps the default text.
fn parse_reject(text: &str) -> Result<RejectWith, String> {
    let text = text.trim();
    let (code, reply) = text.split_once(' ').unwrap_or((text, ""));
    if code.is_empty() {
        return Err("expected 'CODE TEXT', e.g. '5.7.1 Not allowed'".into());
    }
    let mut reject: RejectWith =
        serde_json::from_value(serde_json::json!({ "code": code })).map_err(|e| e.to_string())?;
    if !reply.trim().is_empty() {
        reject.text = reply.trim().to_string();
    }
    Ok(reject)
}

/// `Some("")` clears, `Some(text)` sets, `None` leaves alone.
fn set_text(slot: &mut Option<String>, given: &Option<String>) {
    if let Some(text) = given {
        *slot = (!text.is_empty()).then(|| text.clone());
    }
}

fn set_list(slot: &mut Vec<String>, given: &[String]) {
    if !given.is_empty() {
        *slot = given.to_vec();
    }
}

fn scope(arg: ScopeArg) -> OrganizationScope {
    match arg {
        ScopeArg::InOrganization => OrganizationScope::InOrganization,
        ScopeArg::NotInOrganization => OrganizationScope::NotInOrganization,
    }
}

impl RuleFlags {
    /// Writes the given flags into `rule`, leaving every other key as it is.
    pub fn apply_to(&self, rule: &mut RuleObject) {
        if let Some(priority) = self.priority {
            rule.priority = priority;
        }
        if let Some(mode) = self.mode {
            rule.mode = match mode {
                RuleModeArg::Enforce => RuleMode::Enforce,
                RuleModeArg::Audit => RuleMode::Audit,
            };
        }
        if let Some(stop) = self.stop_processing {
            rule.stop_processing = stop;
        }
        if let Some(comment) = &self.comment {
            rule.comment = comment.clone();
        }
        let conditions = &mut rule.conditions;
        if let Some(arg) = self.sent_to_scope {
            conditions.sent_to_scope = Some(scope(arg));
        }
        if let Some(arg) = self.from_scope {
            conditions.from_scope = Some(scope(arg));
        }
        set_list(&mut conditions.sender_domain_is, &self.sender_domain_is);
        set_list(&mut conditions.recipient_domain_is, &self.recipient_domain_is);
        if let Some(words) = &self.header_contains {
            conditions.header_contains = Some(words.clone());
        }
        set_list(
            &mut conditions.subject_or_body_contains,
            &self.subject_or_body_contains,
        );
        if let Some(words) = &self.except_header_contains {
            rule.exceptions.header_contains = Some(words.clone());
        }
        let actions = &mut rule.actions;
        set_text(&mut actions.route_via_connector, &self.route_via_connector);
        set_text(&mut actions.prepend_subject, &self.prepend_subject);
        if let Some(header) = &self.set_header {
            actions.set_header = Some(header.clone());
        }
        set_text(&mut actions.remove_header, &self.remove_header);
        set_list(&mut actions.redirect_to, &self.redirect_to);
        set_list(&mut actions.bcc, &self.bcc);
        if let Some(reject) = &self.reject {
            actions.reject = Some(reject.clone());
        }
        if let Some(delete) = self.delete {
            actions.delete = delete;
        }
        if let Some(quarantine) = self.quarantine {
            actions.quarantine = quarantine;
        }
        set_text(&mut actions.notify_sender, &self.notify_sender);
    }
}

/// A rule named `name` with every key at its default (as `apply` reads a
/// table holding only the name), then the flags applied.
pub(crate) fn new_rule(args: &NewRuleArgs) -> Result<RuleObject, Failure> {
    let mut rule: RuleObject = serde_json::from_value(serde_json::json!({ "name": args.name }))
        .map_err(|error| Failure::runtime(format!("cannot build the rule: {error}")))?;
    args.flags.apply_to(&mut rule);
    Ok(rule)
}

fn rule_path(name: &str) -> String {
    format!("rules/{}", segment(name))
}

pub(crate) fn run(global: &GlobalArgs, command: &RuleCommand) -> Result<(), Failure> {
    let client = ApiClient::connect(global)?;
    match command {
        RuleCommand::List(flag) => {
            let mut rules: Vec<RuleObject> = client.get("rules")?;
            rules.sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
            if flag.json {
                print!("{}", json(&rules)?);
            } else {
                print!("{}", rule_table(&rules));
            }
        }
        RuleCommand::Show { name, json: as_json } => {
            let rule: RuleObject = client.get(&rule_path(name))?;
            if *as_json {
                print!("{}", json(&rule)?);
            } else {
                print!("{}", rule_toml(&rule)?);
            }
        }
        RuleCommand::New(args) => {
            let rule = new_rule(args)?;
            client
                .post("rules", &rule)
                .map_err(|error| error.refused_as_invalid("rule"))?;
            println!("created rule {:?}", rule.name);
        }
        RuleCommand::Set { name, flags } => {
            change(&client, name, |rule| flags.apply_to(rule))?;
            println!("changed rule {name:?}");
        }
        RuleCommand::Remove { name } => {
            client.delete(&rule_path(name))?;
            println!("removed rule {name:?}");
        }
        RuleCommand::Enable { name } => {
            change(&client, name, |rule| rule.enabled = true)?;
            println!("enabled rule {name:?}");
        }
        RuleCommand::Disable { name } => {
            change(&client, name, |rule| rule.enabled = false)?;
            println!("disabled rule {name:?}");
        }
    }
    Ok(())
}

/// Fetches the rule, changes it and puts the whole of it back.
fn change(client: &ApiClient, name: &str, edit: impl FnOnce(&mut RuleObject)) -> Result<(), Failure> {
    let mut rule: RuleObject = client.get(&rule_path(name))?;
    edit(&mut rule);
    client
        .put(&rule_path(name), &rule)
        .map_err(|error| error.refused_as_invalid("rule"))?;
    Ok(())
}

/// The rule as an `apply` file holds it.
pub(crate) fn rule_toml(rule: &RuleObject) -> Result<String, Failure> {
    let set = ObjectSet {
        rules: vec![rule.clone()],
        ..ObjectSet::default()
    };
    toml::to_string(&set).map_err(|error| Failure::runtime(format!("cannot write TOML: {error}")))
}

/// `key=value` pairs of the keys that are set, by key (so the order does not
/// depend on serde_json's map features); a flag that is on shows as its key alone.
fn summary(value: serde_json::Value) -> Vec<String> {
    let serde_json::Value::Object(map) = value else {
        return Vec::new();
    };
    let mut pairs: Vec<(String, serde_json::Value)> = map.into_iter().collect();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    pairs
        .into_iter()
        .filter_map(|(key, value)| match value {
            serde_json::Value::Bool(false) | serde_json::Value::Null => None,
            serde_json::Value::Bool(true) => Some(key),
            other => Some(format!("{key}={}", compact(&other))),
        })
        .collect()
}

/// A value on one short line: lists joined by commas, tables' values by colons
/// (`header_contains=X-Foo:a,b`, the shape `--header-contains` takes).
fn compact(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Array(items) => items.iter().map(compact).collect::<Vec<_>>().join(","),
        serde_json::Value::Object(map) => map.values().map(compact).collect::<Vec<_>>().join(":"),
        other => other.to_string(),
    }
}

fn conditions_summary(rule: &RuleObject) -> String {
    let to_value = |p: &RulePredicates| serde_json::to_value(p).unwrap_or_default();
    let mut parts = summary(to_value(&rule.conditions));
    if parts.is_empty() {
        parts.push("(every message)".into());
    }
    let exceptions = summary(to_value(&rule.exceptions));
    if !exceptions.is_empty() {
        parts.push(format!("except {}", exceptions.join(" or ")));
    }
    parts.join("; ")
}

fn actions_summary(rule: &RuleObject) -> String {
    let parts = summary(serde_json::to_value(&rule.actions).unwrap_or_default());
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join("; ")
    }
}

pub(crate) fn rule_table(rules: &[RuleObject]) -> String {
    if rules.is_empty() {
        return "no rules\n".to_string();
    }
    let mut table = Table::new(&[
        "PRIORITY",
        "NAME",
        "MODE",
        "ENABLED",
        "STOP",
        "CONDITIONS",
        "ACTIONS",
    ]);
    let yes_no = |on: bool| if on { "yes" } else { "no" }.to_string();
    for rule in rules {
        table.row(vec![
            rule.priority.to_string(),
            rule.name.clone(),
            match rule.mode {
                RuleMode::Enforce => "enforce",
                RuleMode::Audit => "audit",
            }
            .into(),
            yes_no(rule.enabled),
            yes_no(rule.stop_processing),
            conditions_summary(rule),
            actions_summary(rule),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(toml_text: &str) -> RuleObject {
        toml::from_str::<ObjectSet>(toml_text).unwrap().rules.remove(0)
    }

    const SCANNER_RULE: &str = r#"
[[rule]]
name = "External mail through the scanner"
priority = 1
[rule.conditions]
sent_to_scope = "not_in_organization"
[rule.exceptions]
header_contains = { header = "X-Sluice-Org-Scan", words = ["verdict=pass"] }
[rule.actions]
route_via_connector = "To scanner"
"#;

    #[test]
    fn rule_table_summarises_conditions_exceptions_and_actions() {
        let mut block = rule(
            "[[rule]]\nname = \"Block cards\"\nmode = \"audit\"\nstop_processing = true\nenabled = false\n\
             [rule.actions]\nquarantine = true\nnotify_sender = \"held\"\nbcc = [\"a@x.test\", \"b@x.test\"]\n",
        );
        block.priority = 0;
        let text = rule_table(&[block, rule(SCANNER_RULE)]);
        assert_eq!(
            text,
            "PRIORITY  NAME                               MODE     ENABLED  STOP  CONDITIONS                                                                                ACTIONS\n\
             0         Block cards                        audit    no       yes   (every message)                                                                           bcc=a@x.test,b@x.test; notify_sender=held; quarantine\n\
             1         External mail through the scanner  enforce  yes      no    sent_to_scope=not_in_organization; except header_contains=X-Sluice-Org-Scan:verdict=pass  route_via_connector=To scanner\n"
        );
        assert_eq!(rule_table(&[]), "no rules\n");
    }

    #[test]
    fn rule_show_is_an_applicable_toml_table() {
        let original = rule(SCANNER_RULE);
        let text = rule_toml(&original).unwrap();
        assert!(
            text.starts_with("[[rule]]\nname = \"External mail through the scanner\""),
            "{text}"
        );
        let back: ObjectSet = toml::from_str(&text).unwrap();
        assert_eq!(back.rules, vec![original]);
    }

    fn flags(args: &[&str]) -> RuleFlags {
        let cli = super::super::Cli::try_parse_from(
            ["sluice", "rule", "set", "x"]
                .into_iter()
                .chain(args.iter().copied()),
        )
        .unwrap();
        match cli.command {
            super::super::Command::Rule(RuleCommand::Set { flags, .. }) => *flags,
            other => panic!("{other:?}"),
        }
    }

    use clap::Parser;

    #[test]
    fn new_builds_the_rule_the_flags_describe() {
        let args = NewRuleArgs {
            name: "External mail through the scanner".into(),
            flags: flags(&[
                "--priority",
                "1",
                "--sent-to-scope",
                "not_in_organization",
                "--except-header-contains",
                "X-Sluice-Org-Scan: verdict=pass",
                "--route-via-connector",
                "To scanner",
            ]),
        };
        assert_eq!(new_rule(&args).unwrap(), rule(SCANNER_RULE));

        let args = NewRuleArgs {
            name: "Everything".into(),
            flags: flags(&[
                "--mode",
                "audit",
                "--stop-processing",
                "--from-scope",
                "in-organization",
                "--sender-domain-is",
                "contoso.test",
                "--sender-domain-is",
                "fabrikam.test",
                "--recipient-domain-is",
                "tailspin.test",
                "--header-contains",
                "X-Class:secret, internal",
                "--subject-or-body-contains",
                "invoice",
                "--prepend-subject",
                "[EXT] ",
                "--set-header",
                "X-Flag: yes: really",
                "--remove-header",
                "X-Old",
                "--redirect-to",
                "audit@contoso.test",
                "--bcc",
                "copy@contoso.test",
                "--reject",
                "5.7.1 Not allowed here",
                "--delete",
                "--quarantine",
                "--notify-sender",
                "Your message was held",
                "--comment",
                "made by hand",
            ]),
        };
        let built = new_rule(&args).unwrap();
        let expected = rule(
            r#"
[[rule]]
name = "Everything"
comment = "made by hand"
mode = "audit"
stop_processing = true
[rule.conditions]
from_scope = "in_organization"
sender_domain_is = ["contoso.test", "fabrikam.test"]
recipient_domain_is = ["tailspin.test"]
header_contains = { header = "X-Class", words = ["secret", "internal"] }
subject_or_body_contains = ["invoice"]
[rule.actions]
prepend_subject = "[EXT] "
set_header = { header = "X-Flag", value = "yes: really" }
remove_header = "X-Old"
redirect_to = ["audit@contoso.test"]
bcc = ["copy@contoso.test"]
reject = { code = "5.7.1", text = "Not allowed here" }
delete = true
quarantine = true
notify_sender = "Your message was held"
"#,
        );
        assert_eq!(built, expected);
    }

    #[test]
    fn set_changes_only_the_keys_given() {
        let mut stored = rule(SCANNER_RULE);
        stored.actions.bcc = vec!["old@contoso.test".into()];
        let mut changed = stored.clone();
        flags(&[
            "--priority",
            "7",
            "--bcc",
            "new@contoso.test",
            "--stop-processing",
        ])
        .apply_to(&mut changed);
        let mut expected = stored.clone();
        expected.priority = 7;
        expected.actions.bcc = vec!["new@contoso.test".into()];
        expected.stop_processing = true;
        assert_eq!(changed, expected);

        // Booleans turn off with =false, optional texts clear when empty.
        flags(&["--stop-processing=false", "--route-via-connector", ""]).apply_to(&mut changed);
        assert!(!changed.stop_processing);
        assert_eq!(changed.actions.route_via_connector, None);
        assert_eq!(changed.actions.bcc, vec!["new@contoso.test".to_string()]);

        // No flags, no change.
        let mut untouched = stored.clone();
        RuleFlags::default().apply_to(&mut untouched);
        assert_eq!(untouched, stored);
    }

    #[test]
    fn malformed_flag_values_are_usage_errors() {
        let parse = |args: &[&str]| {
            super::super::Cli::try_parse_from(["sluice", "rule", "new", "--name", "x"].iter().chain(args))
        };
        for bad in [
            &["--header-contains", "no colon"][..],
            &["--header-contains", "X-Foo:"],
            &["--except-header-contains", ":word"],
            &["--set-header", "novalue"],
            &["--reject", " "],
            &["--sent-to-scope", "outside"],
            &["--mode", "loud"],
            &["--priority", "-1"],
            &["--quarantine=perhaps"],
        ] {
            let error = parse(bad).unwrap_err();
            assert_eq!(error.exit_code(), 2, "{bad:?}");
        }
        assert!(parse(&["--reject", "5.7.1"]).is_ok());
        let missing = super::super::Cli::try_parse_from(["sluice", "rule", "new"]).unwrap_err();
        assert_eq!(missing.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn reject_with_a_code_alone_keeps_the_default_text() {
        let reject = parse_reject("5.7.1").unwrap();
        assert_eq!(reject.code, "5.7.1");
        assert_eq!(reject.text, "Delivery not authorized, message refused");
        let reject = parse_reject("5.7.128  Go away ").unwrap();
        assert_eq!(
            (reject.code.as_str(), reject.text.as_str()),
            ("5.7.128", "Go away")
        );
    }
}
