//! The detector's relations between users and patients (own record, a co-worker's, the same
//! surname, the same address, a record naming the user as its contact), built from the names,
//! addresses and contacts in the encrypted store.
//!
//! The names are read into memory, compared by `wardbox_alerts::Relations::build`, and wiped;
//! only (user name, hashed patient id, relation) stays. Nothing here writes a name anywhere:
//! not to the log, not to the audit chain, not to another table. The patient's name is the one
//! their record gives (the label of `rag_patients`, re-identified; "Dolores Castellanos, born
//! 1948-07-19" compares as "Dolores Castellanos"), never the names found in notes, which name
//! relatives and staff too.
//!
//! Addresses the same way: the account's postal address (`users.postal_address`, set by an
//! administrator with `wardbox users address`, or taken from the directory at each sign-in;
//! in the encrypted store like the other account fields) against the address lines of the
//! patient's records (`rag_pseudonyms`, category `ADDRESS`), read, compared by
//! `Relations::add_addresses` and wiped.
//!
//! Contacts the same way: the names of the contacts a patient's FHIR record gives (next of
//! kin, emergency contact: `rag_contacts`, pseudonyms re-identified with the patient's map)
//! against the staff's display names, compared by `Relations::add_next_of_kin` and wiped.

use rusqlite::Connection;
use wardbox_alerts::Relations;
use wardbox_alerts::config::RelatedRecords;
use wardbox_rag::index::{self, Access};
use zeroize::Zeroize;

/// Store migration 15: the staff member's postal address, for the `same_address` rule.
pub const MIGRATION_NAME: &str = "staff postal addresses";
pub const MIGRATION_SQL: &str = "ALTER TABLE users ADD COLUMN postal_address TEXT;";

/// Store migration 16: who set each postal address, so that a directory sign-in refreshes
/// the directory's address and leaves an administrator's alone (addresses stored before it
/// were all set with `wardbox users address`), and a count of its changes, so that the feed
/// notices a change even when the new address is as long as the old one.
pub const SOURCE_MIGRATION_NAME: &str = "who set a staff postal address";
pub const SOURCE_MIGRATION_SQL: &str = "
    ALTER TABLE users ADD COLUMN postal_address_source TEXT CHECK (postal_address_source IN ('admin', 'directory'));
    ALTER TABLE users ADD COLUMN postal_address_changes INTEGER NOT NULL DEFAULT 0;
    UPDATE users SET postal_address_source = 'admin' WHERE postal_address IS NOT NULL;
";

/// Longest postal address accepted.
pub const MAX_ADDRESS_CHARS: usize = 200;

/// Why an address cannot be kept, or `Ok` when it can: an empty one, one over
/// [`MAX_ADDRESS_CHARS`], one with control characters other than line breaks, or one the
/// comparison cannot read as an address (no house number and street: `AddressKey::of`).
/// The message never quotes the address (it may be logged).
pub fn check_address(address: &str) -> Result<(), String> {
    let a = address.trim();
    if a.is_empty() || a.chars().count() > MAX_ADDRESS_CHARS {
        return Err(format!("the postal address must be 1 to {MAX_ADDRESS_CHARS} characters"));
    }
    if a.chars().any(|c| c.is_control() && c != '\n') {
        return Err("the postal address may not hold control characters".into());
    }
    if wardbox_alerts::relations::AddressKey::of(a).is_none() {
        return Err("the postal address needs a house number and a street (\"12 Elm Street, Springfield\")".into());
    }
    Ok(())
}

/// Set (or with `None` clear) an account's postal address as an administrator. The address
/// is trimmed; one [`check_address`] refuses is refused and nothing changes. An address set
/// here is the administrator's: directory sign-ins leave it alone until it is cleared.
pub fn set_postal_address(conn: &Connection, username: &str, address: Option<&str>) -> Result<(), String> {
    let address = address.map(str::trim);
    if let Some(a) = address {
        check_address(a)?;
    }
    let source = address.map(|_| "admin");
    let n = conn
        .execute(
            "UPDATE users SET postal_address = ?1, postal_address_source = ?2, postal_address_changes = postal_address_changes + 1 WHERE username = ?3",
            rusqlite::params![address, source, username],
        )
        .map_err(|e| e.to_string())?;
    if n == 0 { Err(format!("there is no user {username}")) } else { Ok(()) }
}

/// What a directory sign-in did to the account's postal address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectoryAddress {
    /// The directory's address was stored: new, or changed there since the last sign-in.
    Stored,
    /// The directory's address is the one already stored.
    Unchanged,
    /// The directory no longer gives a usable address: the one it gave before was removed,
    /// so a person who moved is not compared with their old neighbours.
    Cleared,
    /// An administrator set the address (`wardbox users address`): the directory does not
    /// override it, whatever it gives.
    KeptAdministrators,
    /// Nothing stored, nothing usable given.
    Nothing,
}

/// The decision (pure): what the account's address becomes after a directory sign-in, given
/// what is stored (the address and whether an administrator set it) and the directory's
/// usable address, if any.
pub fn directory_decision(stored: Option<&str>, set_by_admin: bool, directory: Option<&str>) -> DirectoryAddress {
    match (stored, directory) {
        (Some(_), _) if set_by_admin => DirectoryAddress::KeptAdministrators,
        (Some(old), Some(new)) if old == new => DirectoryAddress::Unchanged,
        (_, Some(_)) => DirectoryAddress::Stored,
        (Some(_), None) => DirectoryAddress::Cleared,
        (None, None) => DirectoryAddress::Nothing,
    }
}

/// Refresh a directory account's postal address from the directory at sign-in. `directory`
/// is the address the directory gave, already found usable by [`check_address`] (the caller
/// turns an unusable one into `None` and says so without quoting it).
pub fn refresh_from_directory(conn: &Connection, username: &str, directory: Option<&str>) -> Result<DirectoryAddress, String> {
    let directory = directory.map(str::trim);
    let (mut stored, source): (Option<String>, Option<String>) = conn
        .query_row(
            "SELECT postal_address, postal_address_source FROM users WHERE username = ?1 AND source = 'ldap'",
            [username],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(|e| format!("the directory account {username}: {e}"))?;
    let decision = directory_decision(stored.as_deref(), source.as_deref() == Some("admin"), directory);
    stored.zeroize();
    let write = |address: Option<&str>| {
        let source = address.map(|_| "directory");
        conn.execute(
            "UPDATE users SET postal_address = ?1, postal_address_source = ?2, postal_address_changes = postal_address_changes + 1 WHERE username = ?3 AND source = 'ldap'",
            rusqlite::params![address, source, username],
        )
        .map_err(|e| e.to_string())
    };
    match decision {
        DirectoryAddress::Stored => write(directory)?,
        DirectoryAddress::Cleared => write(None)?,
        DirectoryAddress::Unchanged | DirectoryAddress::KeptAdministrators | DirectoryAddress::Nothing => 0,
    };
    Ok(decision)
}

/// What changes when accounts or patients (or their names, addresses or contacts) change,
/// cheaply: counts, highest ids, the total length of the names and addresses, the number of
/// staff address changes, and the patients' contacts. The relations are rebuilt when it moves.
pub fn fingerprint(conn: &Connection) -> rusqlite::Result<String> {
    conn.query_row(
        "SELECT (SELECT count(*) || ':' || coalesce(max(id), 0) || ':' || coalesce(sum(length(display_name)), 0) || ':' || coalesce(sum(length(postal_address)), 0) || ':' || coalesce(sum(postal_address_changes), 0) FROM users)
             || '/' || (SELECT count(*) || ':' || coalesce(max(id), 0) || ':' || coalesce(sum(length(label)), 0) FROM rag_patients)
             || '/' || (SELECT count(*) || ':' || coalesce(sum(length(original)), 0) FROM rag_pseudonyms WHERE category = 'ADDRESS')
             || '/' || (SELECT count(*) || ':' || coalesce(sum(length(name)), 0) FROM rag_contacts)",
        [],
        |r| r.get(0),
    )
}

/// Build the relations from the store's accounts and patients.
pub fn load(conn: &Connection, cfg: &RelatedRecords) -> Result<Relations, String> {
    let mut staff: Vec<(String, String)> = {
        let mut stmt = conn.prepare("SELECT username, display_name FROM users").map_err(|e| e.to_string())?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect::<Result<_, _>>())
            .map_err(|e| e.to_string())?
    };
    let mut patients: Vec<(String, String)> = index::directory(conn, &Access::AllPatients)
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter_map(|mut e| {
            let name = e.label.as_deref().map(record_name);
            e.label.zeroize();
            e.names.zeroize();
            name.map(|n| (e.owner.to_string(), n))
        })
        .collect();
    let mut relations = Relations::build(
        cfg,
        staff.iter().map(|(u, n)| (u.as_str(), n.as_str())),
        patients.iter().map(|(p, n)| (p.as_str(), n.as_str())),
    );
    let mut contacts: Vec<(String, String)> = if cfg.next_of_kin {
        index::contacts(conn).map_err(|e| e.to_string())?.into_iter().map(|(owner, name)| (owner.to_string(), name)).collect()
    } else {
        Vec::new()
    };
    relations.add_next_of_kin(
        cfg,
        staff.iter().map(|(u, n)| (u.as_str(), n.as_str())),
        patients.iter().map(|(p, n)| (p.as_str(), n.as_str())),
        contacts.iter().map(|(p, n)| (p.as_str(), n.as_str())),
    );
    let mut staff_addresses: Vec<(String, String)> = rows(conn, "SELECT username, postal_address FROM users WHERE postal_address IS NOT NULL")?;
    let mut patient_addresses: Vec<(String, String)> =
        rows(conn, "SELECT CAST(owner AS TEXT), original FROM rag_pseudonyms WHERE category = 'ADDRESS' ORDER BY owner, idx")?;
    relations.add_addresses(
        cfg,
        staff_addresses.iter().map(|(u, a)| (u.as_str(), a.as_str())),
        patient_addresses.iter().map(|(p, a)| (p.as_str(), a.as_str())),
    );
    for (user, text) in
        staff.iter_mut().chain(patients.iter_mut()).chain(staff_addresses.iter_mut()).chain(patient_addresses.iter_mut()).chain(contacts.iter_mut())
    {
        user.zeroize();
        text.zeroize();
    }
    Ok(relations)
}

/// Two-column text rows.
fn rows(conn: &Connection, sql: &str) -> Result<Vec<(String, String)>, String> {
    let mut stmt = conn.prepare(sql).map_err(|e| e.to_string())?;
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .and_then(|rows| rows.collect::<Result<_, _>>())
        .map_err(|e| e.to_string())
}

/// The name part of a record's label: "Dolores Castellanos, born 1948-07-19" → "Dolores Castellanos".
fn record_name(label: &str) -> String {
    label.split(", born ").next().unwrap_or(label).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::DirectoryAddress::*;
    use super::directory_decision;

    #[test]
    fn the_directory_refreshes_its_own_address_and_never_an_administrators() {
        let (home, moved) = (Some("12 Elm Street"), Some("3 Oak Road"));
        assert_eq!(directory_decision(None, false, home), Stored);
        assert_eq!(directory_decision(home, false, home), Unchanged);
        assert_eq!(directory_decision(home, false, moved), Stored);
        assert_eq!(directory_decision(home, false, None), Cleared, "removed in the directory");
        assert_eq!(directory_decision(None, false, None), Nothing);
        assert_eq!(directory_decision(home, true, moved), KeptAdministrators);
        assert_eq!(directory_decision(home, true, None), KeptAdministrators, "an empty attribute clears no administrator's address");
    }

    #[test]
    fn the_birth_date_is_not_part_of_the_name() {
        assert_eq!(super::record_name("Dolores Castellanos, born 1948-07-19"), "Dolores Castellanos");
        assert_eq!(super::record_name("Castellanos, Dolores"), "Castellanos, Dolores");
    }
}
