//! `wardbox users …`: accounts from the console. The first administrator is made here at
//! provisioning; after that, administrators manage people in the web UI.
//!
//! Passwords are read from the terminal (no echo) or from standard input, never from the
//! command line, where `ps` and the shell history would keep them.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::json;
use zeroize::Zeroizing;

use super::{CliError, CliResult, DEFAULT_CONFIG, load_config};
use crate::web::accounts::{self, NewUser, Role};

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a local account; the password is read from the terminal or standard input.
    Add {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[arg(long)]
        username: String,
        /// The person's full name as shown in the UI.
        #[arg(long)]
        display_name: String,
        /// clinician, nurse, admin or auditor.
        #[arg(long)]
        role: Role,
        /// An emergency-access account: signs in only on the emergency page, loudly audited.
        #[arg(long)]
        break_glass: bool,
    },
    /// List accounts with their role and state.
    List {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Lift a lockout after failed sign-ins.
    Unlock {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[arg(long)]
        username: String,
    },
    /// Set or clear a person's postal address. It is compared, in memory, with the patients'
    /// addresses (alert rule `same_address`) and never written anywhere else. An address set
    /// here wins over the directory's for a directory account until it is cleared.
    Address {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[arg(long)]
        username: String,
        /// The address, its street and number first ("12 Elm Street, Springfield").
        #[arg(long, conflicts_with = "clear", required_unless_present = "clear")]
        address: Option<String>,
        /// Remove the address (a directory account takes the directory's again at its next
        /// sign-in).
        #[arg(long)]
        clear: bool,
    },
    /// Set a new password for a local account (read from the terminal or standard input).
    Passwd {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[arg(long)]
        username: String,
    },
}

/// Read a password: twice without echo on a terminal, one line from a pipe.
fn read_password() -> Result<Zeroizing<String>, CliError> {
    if std::io::stdin().is_terminal() {
        let first = Zeroizing::new(rpassword::prompt_password("Password: ")?);
        let again = Zeroizing::new(rpassword::prompt_password("Again: ")?);
        if *first != *again {
            return Err(CliError::new("the two passwords differ; nothing was changed"));
        }
        Ok(first)
    } else {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin().lock().read_line(&mut line)?;
        let trimmed = Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_string());
        Ok(trimmed)
    }
}

pub fn run(cmd: UsersCommand) -> CliResult {
    match cmd {
        UsersCommand::Add { config, username, display_name, role, break_glass } => {
            let config = load_config(&config)?;
            let password = read_password()?;
            // Check before opening anything, so a weak password changes nothing.
            accounts::check_password_strength(&password)?;
            let (store, volume) = super::audit::open(&config)?;
            let now = jiff::Timestamp::now().to_string();
            let new = NewUser { username: &username, display_name: &display_name, role, password: &password, break_glass };
            let user = accounts::add_user(store.conn(), &new, &now)?;
            super::audit::record(
                &store,
                &volume,
                json!({ "action": "user_create", "target": user.username, "role": user.role, "break_glass": break_glass }),
            )?;
            println!("created {} ({}){}", user.username, user.role, if break_glass { ", emergency access only" } else { "" });
            Ok(ExitCode::SUCCESS)
        }
        UsersCommand::List { config } => {
            let config = load_config(&config)?;
            let (store, _) = super::audit::open(&config)?;
            let now = jiff::Timestamp::now().as_second();
            println!("{:<24} {:<10} {:<6} {:<9} name", "user", "role", "source", "state");
            for u in accounts::list_users(store.conn())? {
                let state = if u.disabled {
                    "disabled"
                } else if u.is_locked(now) {
                    "LOCKED"
                } else {
                    "active"
                };
                let source = match u.source {
                    accounts::Source::Local if u.break_glass => "bglass",
                    accounts::Source::Local => "local",
                    accounts::Source::Ldap => "ldap",
                };
                println!("{:<24} {:<10} {:<6} {:<9} {}", u.username, u.role, source, state, u.display_name);
            }
            Ok(ExitCode::SUCCESS)
        }
        UsersCommand::Unlock { config, username } => {
            let config = load_config(&config)?;
            let (store, volume) = super::audit::open(&config)?;
            let name = accounts::normalize_username(&username)?;
            accounts::unlock(store.conn(), &name)?;
            super::audit::record(&store, &volume, json!({ "action": "user_unlock", "target": name }))?;
            println!("{name} unlocked");
            Ok(ExitCode::SUCCESS)
        }
        UsersCommand::Address { config, username, address, clear: _ } => {
            let config = load_config(&config)?;
            let name = accounts::normalize_username(&username)?;
            let (store, volume) = super::audit::open(&config)?;
            crate::alerting::relations::set_postal_address(store.conn(), &name, address.as_deref()).map_err(CliError::new)?;
            // The address itself stays in the store: the audit record says only that it changed.
            super::audit::record(&store, &volume, json!({ "action": "user_address", "target": name, "set": address.is_some() }))?;
            println!("postal address of {name} {}", if address.is_some() { "set" } else { "cleared" });
            Ok(ExitCode::SUCCESS)
        }
        UsersCommand::Passwd { config, username } => {
            let config = load_config(&config)?;
            let name = accounts::normalize_username(&username)?;
            let password = read_password()?;
            accounts::check_password_strength(&password)?;
            let (store, volume) = super::audit::open(&config)?;
            accounts::set_password(store.conn(), &name, &password)?;
            super::audit::record(&store, &volume, json!({ "action": "user_password", "target": name }))?;
            println!("password of {name} changed");
            Ok(ExitCode::SUCCESS)
        }
    }
}
