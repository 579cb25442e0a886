//! `wardbox alerts …`: the alerts the detector raised, from the console: list, show one,
//! acknowledge one with a reason (who and when recorded, audited with the reason as a digest),
//! and send a test message to every configured destination.
//!
//! Acknowledging here is the same review as "Mark reviewed" on the Alerts page: one review per
//! alert, never overwritten. The reason stays in the store; the audit record keeps its digest,
//! since it is free text and may name a patient.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::json;

use super::{CliError, CliResult, DEFAULT_CONFIG, cli_actor, load_config};
use crate::alerting::{StoredAlert, deliver, outbox, workflow};
use crate::audit::TextDigest;

/// Longest reason accepted (the web form's limit).
const MAX_REASON_CHARS: usize = 2000;

#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// The alerts, newest first, with their review and delivery states.
    List {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Only alerts nobody has acknowledged yet.
        #[arg(long)]
        open: bool,
        /// How many to list.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One alert: rule, threshold, what was observed, its audit records, review, deliveries.
    Show {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        id: i64,
    },
    /// Acknowledge an alert with the reason (what you found). Recorded with who and when, and
    /// audited; an alert is acknowledged once.
    Ack {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        id: i64,
        #[arg(long)]
        reason: String,
    },
    /// Assign an alert to an administrator or auditor account.
    Assign {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        id: i64,
        #[arg(long)]
        to: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Record what an alert was: false_positive, policy_violation or possible_breach (which
    /// starts the 60-day notification clock), with the reason.
    Dispose {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        id: i64,
        #[arg(long)]
        disposition: String,
        #[arg(long)]
        note: String,
    },
    /// Close an alert that has a disposition, with a closing note.
    Close {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        id: i64,
        #[arg(long)]
        note: String,
    },
    /// Send a test message to each configured destination (syslog, e-mail) now, through the
    /// same TLS clients and firewall rules as the alerts; say for each whether it arrived.
    Test {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

fn line(s: &StoredAlert) -> String {
    let review = match (&s.reviewed_by, &s.reviewed_at) {
        (Some(by), Some(at)) => format!("acknowledged by {by} at {at}"),
        _ => "open".to_string(),
    };
    format!("{:>6}  {}  {:<24} {:<22} {}  [{review}]", s.id, s.alert.at, s.alert.rule.as_str(), s.alert.subject, s.alert.observed)
}

pub fn run(cmd: AlertsCommand) -> CliResult {
    match cmd {
        AlertsCommand::List { config, open, limit, json } => {
            let config = load_config(&config)?;
            let (store, _) = super::audit::open(&config)?;
            let mut alerts = outbox::list(store.conn(), if open { usize::MAX >> 1 } else { limit })?;
            if open {
                alerts.retain(|a| a.reviewed_by.is_none());
                alerts.truncate(limit);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&alerts).map_err(|e| CliError::new(e.to_string()))?);
            } else {
                println!("{} alerts not yet acknowledged", outbox::unreviewed_count(store.conn())?);
                for a in &alerts {
                    println!("{}", line(a));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AlertsCommand::Show { config, id } => {
            let config = load_config(&config)?;
            let (store, _) = super::audit::open(&config)?;
            let s = outbox::get(store.conn(), id)?.ok_or_else(|| CliError::new(format!("there is no alert {id} (wardbox alerts list)")))?;
            let seqs: Vec<String> = s.alert.seqs.iter().map(u64::to_string).collect();
            println!("alert {id}: {} {}", s.alert.rule.as_str(), s.alert.subject);
            println!("  at:            {}", s.alert.at);
            println!("  observed:      {}", s.alert.observed);
            println!("  threshold:     {}", s.alert.threshold);
            println!("  audit records: {}", seqs.join(", "));
            match (&s.reviewed_by, &s.reviewed_at) {
                (Some(by), Some(at)) => {
                    println!("  acknowledged:  by {by} at {at}");
                    println!("  reason:        {}", s.review_note.as_deref().unwrap_or(""));
                }
                _ => println!("  acknowledged:  not yet"),
            }
            if let Some(st) = workflow::status(store.conn(), id)? {
                println!("  assigned to:   {}", st.assigned_to.as_deref().unwrap_or("nobody"));
                println!("  disposition:   {}", st.disposition.map_or("none yet", workflow::Disposition::label));
                if let (Some(workflow::Disposition::PossibleBreach), Some(from), None) = (st.disposition, &st.breach_clock_from, &st.closed_at)
                    && let Some((due, left)) = workflow::breach_deadline(from, jiff::Timestamp::now())
                {
                    println!("  POSSIBLE BREACH since {from}: notify by {due} ({left} days left)");
                }
                if let (Some(by), Some(at)) = (&st.closed_by, &st.closed_at) {
                    println!("  closed:        by {by} at {at}");
                }
            }
            for (dest, state, attempts, error) in &s.deliveries {
                println!("  delivery:      {dest}: {state} after {attempts} attempts{}", error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default());
            }
            Ok(ExitCode::SUCCESS)
        }
        AlertsCommand::Ack { config, id, reason } => {
            let config = load_config(&config)?;
            let reason = reason.trim().to_string();
            if reason.is_empty() {
                return Err(CliError::new("--reason is empty: say what you found; nothing was changed"));
            }
            if reason.chars().count() > MAX_REASON_CHARS {
                return Err(CliError::new(format!("--reason is longer than {MAX_REASON_CHARS} characters; nothing was changed")));
            }
            let (store, volume) = super::audit::open(&config)?;
            let by = cli_actor();
            let at = jiff::Timestamp::now().to_string();
            workflow::apply(store.conn(), id, &workflow::Action::Acknowledge, &reason, &by, &at)
                .map_err(|e| CliError::new(format!("{e} (wardbox alerts show {id}); nothing was changed")))?;
            super::audit::record(&store, &volume, json!({ "action": "alert_review", "alert": id, "note": TextDigest::of(&reason) }))?;
            println!("alert {id} acknowledged by {by}");
            Ok(ExitCode::SUCCESS)
        }
        AlertsCommand::Assign { config, id, to, note } => step(&config, id, workflow::Action::Assign(to), &note),
        AlertsCommand::Dispose { config, id, disposition, note } => {
            let d = workflow::Disposition::parse(&disposition).ok_or_else(|| {
                CliError::new(format!("--disposition {disposition:?}: say false_positive, policy_violation or possible_breach; nothing was changed"))
            })?;
            step(&config, id, workflow::Action::Dispose(d), &note)
        }
        AlertsCommand::Close { config, id, note } => step(&config, id, workflow::Action::Close, &note),
        AlertsCommand::Test { config } => {
            let config = load_config(&config)?;
            let d = &config.alert_delivery;
            if d.destinations().is_empty() {
                return Err(CliError::new("no alert destination is configured ([alert_delivery.syslog], [alert_delivery.email]); nothing was sent"));
            }
            let (store, volume) = super::audit::open(&config)?;
            let now = jiff::Timestamp::now();
            let results = super::runtime()?.block_on(deliver::send_test(d, &now));
            let mut failed = false;
            let mut outcome = serde_json::Map::new();
            for (dest, result) in &results {
                match result {
                    Ok(()) => println!("{}: test message sent", dest.as_str()),
                    Err(e) => {
                        failed = true;
                        println!("{}: FAILED: {e}", dest.as_str());
                    }
                }
                outcome.insert(dest.as_str().into(), json!(if result.is_ok() { "sent" } else { "failed" }));
            }
            super::audit::record(&store, &volume, json!({ "action": "alert_test", "outcome": outcome }))?;
            if failed { Err(CliError::check_failed("a test message was not delivered")) } else { Ok(ExitCode::SUCCESS) }
        }
    }
}

/// One workflow step from the console, as on the alert's page: checked, recorded with its
/// note, audited with the note's digest.
fn step(config: &std::path::Path, id: i64, action: workflow::Action, note: &str) -> CliResult {
    let config = load_config(config)?;
    let (store, volume) = super::audit::open(&config)?;
    let by = cli_actor();
    let at = jiff::Timestamp::now().to_string();
    let note = note.trim();
    workflow::apply(store.conn(), id, &action, note, &by, &at).map_err(|e| CliError::new(format!("{e}; nothing was changed")))?;
    let (name, value) = match &action {
        workflow::Action::Acknowledge => ("alert_review", None),
        workflow::Action::Assign(who) => ("alert_assign", Some(who.clone())),
        workflow::Action::Dispose(d) => ("alert_disposition", Some(d.as_str().to_string())),
        workflow::Action::Close => ("alert_close", None),
    };
    let mut detail = json!({ "action": name, "alert": id });
    if let Some(v) = value {
        detail["value"] = json!(v);
    }
    if !note.is_empty() {
        detail["note"] = json!(TextDigest::of(note));
    }
    super::audit::record(&store, &volume, detail)?;
    println!("alert {id}: {name} recorded by {by}");
    Ok(ExitCode::SUCCESS)
}
