//! Conversations: a clinician's questions about one patient and the answers, kept so that a
//! follow-up carries the earlier turns and a conversation can be resumed after a reload.
//!
//! Kept in the store (SQLCipher: encrypted at rest like every table), de-identified as the
//! model saw them (the page re-identifies them for their owner, as it does the index's text).
//! A conversation belongs to the user who had it: every read and write names the user and the
//! patient, so nobody else's conversation can be reached by its id. Auditors see what the
//! audit trail records of each turn (conversation id, turn number, digests), never the text.
//! Conversations not touched for the clinic's retention period are deleted.

use rusqlite::{Connection, OptionalExtension, params};
use wardbox_rag::answer::Turn;

pub const MIGRATION_NAME: &str = "clinical conversations";

/// The conversations table (owner, patient, times) and their turns; deleting a conversation
/// deletes its turns.
pub const MIGRATION_SQL: &str = "
CREATE TABLE conversations (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL,
    patient INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX conversations_by_owner ON conversations(username, patient, updated_at);
CREATE INDEX conversations_by_age ON conversations(updated_at);
CREATE TABLE conversation_turns (
    conversation INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    turn INTEGER NOT NULL,
    at INTEGER NOT NULL,
    question TEXT NOT NULL,
    answer TEXT NOT NULL,
    PRIMARY KEY (conversation, turn)
);
";

/// A conversation as listed: no text but the first question, for its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub id: i64,
    pub started_at: i64,
    pub updated_at: i64,
    pub turns: usize,
    /// The first question, de-identified.
    pub first_question: String,
}

/// Start a conversation of `username` about `patient`.
pub fn start(conn: &Connection, username: &str, patient: i64, now: i64) -> rusqlite::Result<i64> {
    conn.execute("INSERT INTO conversations (username, patient, started_at, updated_at) VALUES (?1, ?2, ?3, ?3)", params![username, patient, now])?;
    Ok(conn.last_insert_rowid())
}

/// Whether conversation `id` is `username`'s about `patient`.
pub fn owns(conn: &Connection, username: &str, patient: i64, id: i64) -> rusqlite::Result<bool> {
    conn.query_row("SELECT 1 FROM conversations WHERE id = ?1 AND username = ?2 AND patient = ?3", params![id, username, patient], |_| Ok(()))
        .optional()
        .map(|r| r.is_some())
}

/// The turns of `username`'s conversation `id` about `patient`, oldest first; `None` when it is
/// not theirs (or gone).
pub fn turns(conn: &Connection, username: &str, patient: i64, id: i64) -> rusqlite::Result<Option<Vec<Turn>>> {
    if !owns(conn, username, patient, id)? {
        return Ok(None);
    }
    let mut q = conn.prepare("SELECT question, answer FROM conversation_turns WHERE conversation = ?1 ORDER BY turn")?;
    let rows = q.query_map([id], |r| Ok(Turn { question: r.get(0)?, answer: r.get(1)? }))?.collect::<Result<Vec<_>, _>>()?;
    Ok(Some(rows))
}

/// Append a turn; returns its number (1 for the first).
pub fn append(conn: &Connection, id: i64, turn: &Turn, now: i64) -> rusqlite::Result<i64> {
    let tx = conn.unchecked_transaction()?;
    let n: i64 = tx.query_row("SELECT COALESCE(MAX(turn), 0) + 1 FROM conversation_turns WHERE conversation = ?1", [id], |r| r.get(0))?;
    tx.execute("INSERT INTO conversation_turns (conversation, turn, at, question, answer) VALUES (?1, ?2, ?3, ?4, ?5)", params![id, n, now, turn.question, turn.answer])?;
    tx.execute("UPDATE conversations SET updated_at = ?2 WHERE id = ?1", params![id, now])?;
    tx.commit()?;
    Ok(n)
}

/// `username`'s conversations about `patient`, most recent first.
pub fn list(conn: &Connection, username: &str, patient: i64) -> rusqlite::Result<Vec<Listed>> {
    let mut q = conn.prepare(
        "SELECT c.id, c.started_at, c.updated_at,
                (SELECT COUNT(*) FROM conversation_turns t WHERE t.conversation = c.id),
                COALESCE((SELECT question FROM conversation_turns t WHERE t.conversation = c.id ORDER BY turn LIMIT 1), '')
         FROM conversations c WHERE c.username = ?1 AND c.patient = ?2 ORDER BY c.updated_at DESC, c.id DESC",
    )?;
    q.query_map(params![username, patient], |r| {
        Ok(Listed { id: r.get(0)?, started_at: r.get(1)?, updated_at: r.get(2)?, turns: r.get::<_, i64>(3)? as usize, first_question: r.get(4)? })
    })?
    .collect()
}

/// Delete the conversations nobody touched since `now - retention_secs`, with their turns;
/// returns how many.
pub fn purge_expired(conn: &Connection, now: i64, retention_secs: i64) -> rusqlite::Result<usize> {
    let cutoff = now - retention_secs;
    let tx = conn.unchecked_transaction()?;
    tx.execute("DELETE FROM conversation_turns WHERE conversation IN (SELECT id FROM conversations WHERE updated_at < ?1)", [cutoff])?;
    let n = tx.execute("DELETE FROM conversations WHERE updated_at < ?1", [cutoff])?;
    tx.commit()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let conn = Connection::open_in_memory().expect("memory db");
        conn.execute_batch(MIGRATION_SQL).expect("schema");
        conn
    }

    fn turn(q: &str) -> Turn {
        Turn { question: q.into(), answer: format!("answer to {q}") }
    }

    #[test]
    fn a_conversation_is_reached_only_by_its_owner_about_its_patient() {
        let conn = db();
        let id = start(&conn, "dr.a", 7, 1000).expect("start");
        assert_eq!(append(&conn, id, &turn("first"), 1001).expect("append"), 1);
        assert_eq!(append(&conn, id, &turn("second"), 1002).expect("append"), 2);
        let mine = turns(&conn, "dr.a", 7, id).expect("read").expect("mine");
        assert_eq!(mine.iter().map(|t| t.question.as_str()).collect::<Vec<_>>(), ["first", "second"]);
        assert_eq!(turns(&conn, "dr.b", 7, id).expect("read"), None, "another user");
        assert_eq!(turns(&conn, "dr.a", 8, id).expect("read"), None, "another patient's page");
        let listed = list(&conn, "dr.a", 7).expect("list");
        assert_eq!(listed, vec![Listed { id, started_at: 1000, updated_at: 1002, turns: 2, first_question: "first".into() }]);
        assert!(list(&conn, "dr.b", 7).expect("list").is_empty());
    }

    #[test]
    fn conversations_untouched_for_the_retention_period_are_deleted_with_their_turns() {
        let conn = db();
        let old = start(&conn, "dr.a", 7, 0).expect("start");
        append(&conn, old, &turn("old"), 10).expect("append");
        let recent = start(&conn, "dr.a", 7, 0).expect("start");
        append(&conn, recent, &turn("recent"), 90).expect("append");
        assert_eq!(purge_expired(&conn, 100, 50).expect("purge"), 1);
        assert_eq!(list(&conn, "dr.a", 7).expect("list").iter().map(|l| l.id).collect::<Vec<_>>(), vec![recent]);
        let left: i64 = conn.query_row("SELECT COUNT(*) FROM conversation_turns", [], |r| r.get(0)).expect("count");
        assert_eq!(left, 1, "the old conversation's turns went with it");
    }
}
