//! The detector's relations between users and patients (own record, a co-worker's, the same
//! surname), built from the names in the encrypted store.
//!
//! The names are read into memory, compared by `wardbox_alerts::Relations::build`, and wiped;
//! only (user name, hashed patient id, relation) stays. Nothing here writes a name anywhere:
//! not to the log, not to the audit chain, not to another table. The patient's name is the one
//! their record gives (the label of `rag_patients`, re-identified; "Dolores Castellanos, born
//! 1948-07-19" compares as "Dolores Castellanos"), never the names found in notes, which name
//! relatives and staff too.

use rusqlite::Connection;
use wardbox_alerts::Relations;
use wardbox_alerts::config::RelatedRecords;
use wardbox_rag::index::{self, Access};
use zeroize::Zeroize;

/// What changes when accounts or patients (or their names) change, cheaply: counts, highest
/// ids and the total length of the names. The relations are rebuilt when it moves.
pub fn fingerprint(conn: &Connection) -> rusqlite::Result<String> {
    conn.query_row(
        "SELECT (SELECT count(*) || ':' || coalesce(max(id), 0) || ':' || coalesce(sum(length(display_name)), 0) FROM users)
             || '/' || (SELECT count(*) || ':' || coalesce(max(id), 0) || ':' || coalesce(sum(length(label)), 0) FROM rag_patients)",
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
    let relations = Relations::build(
        cfg,
        staff.iter().map(|(u, n)| (u.as_str(), n.as_str())),
        patients.iter().map(|(p, n)| (p.as_str(), n.as_str())),
    );
    for (user, name) in staff.iter_mut().chain(patients.iter_mut()) {
        user.zeroize();
        name.zeroize();
    }
    Ok(relations)
}

/// The name part of a record's label: "Dolores Castellanos, born 1948-07-19" → "Dolores Castellanos".
fn record_name(label: &str) -> String {
    label.split(", born ").next().unwrap_or(label).trim().to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_birth_date_is_not_part_of_the_name() {
        assert_eq!(super::record_name("Dolores Castellanos, born 1948-07-19"), "Dolores Castellanos");
        assert_eq!(super::record_name("Castellanos, Dolores"), "Castellanos, Dolores");
    }
}
