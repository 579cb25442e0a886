//! Which installed model serves which task, as the administrators chose it (a larger model for
//! drafting, a fast one for questions). A task without a choice uses `[clinical] chat_model`.

use rusqlite::{Connection, OptionalExtension, params};

pub const MIGRATION_NAME: &str = "clinical: the model per task";

pub const MIGRATION_SQL: &str = "
CREATE TABLE clinical_task_models (
    task TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    set_by TEXT NOT NULL,
    set_at INTEGER NOT NULL
);
";

/// The model chosen for `task` (`TaskKind::as_str`), if any.
pub fn get(conn: &Connection, task: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT model FROM clinical_task_models WHERE task = ?1", [task], |r| r.get(0)).optional()
}

/// Every choice: (task, model).
pub fn all(conn: &Connection) -> rusqlite::Result<Vec<(String, String)>> {
    let mut q = conn.prepare("SELECT task, model FROM clinical_task_models ORDER BY task")?;
    q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect()
}

/// Choose `model` for `task`, replacing an earlier choice.
pub fn set(conn: &Connection, task: &str, model: &str, by: &str, at: i64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO clinical_task_models (task, model, set_by, set_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(task) DO UPDATE SET model = excluded.model, set_by = excluded.set_by, set_at = excluded.set_at",
        params![task, model, by, at],
    )?;
    Ok(())
}

/// The context length a model's GGUF metadata states (`<architecture>.context_length`).
pub fn context_length(model_info: &serde_json::Map<String, serde_json::Value>) -> Option<u64> {
    model_info.iter().find(|(k, _)| k.ends_with(".context_length")).and_then(|(_, v)| v.as_u64())
}

/// A licence as one line for a table: its first non-empty line, shortened.
pub fn licence_summary(licence: &str) -> String {
    let first = licence.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("not stated");
    let mut s: String = first.chars().take(80).collect();
    if first.chars().count() > 80 {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_choice_replaces_the_earlier_one_per_task() {
        let conn = Connection::open_in_memory().expect("db");
        conn.execute_batch(MIGRATION_SQL).expect("schema");
        assert_eq!(get(&conn, "discharge").expect("get"), None);
        set(&conn, "discharge", "big:7b", "it.admin", 1).expect("set");
        set(&conn, "discharge", "bigger:8b", "it.admin", 2).expect("set");
        set(&conn, "ask", "small:135m", "it.admin", 3).expect("set");
        assert_eq!(get(&conn, "discharge").expect("get").as_deref(), Some("bigger:8b"));
        assert_eq!(all(&conn).expect("all"), vec![("ask".to_owned(), "small:135m".to_owned()), ("discharge".to_owned(), "bigger:8b".to_owned())]);
    }

    #[test]
    fn context_length_and_licence_read_from_the_models_metadata() {
        let info: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(r#"{"general.architecture":"llama","llama.context_length":8192,"llama.block_count":30}"#).expect("json");
        assert_eq!(context_length(&info), Some(8192));
        assert_eq!(context_length(&serde_json::Map::new()), None);
        assert_eq!(licence_summary("\n  Apache License\n Version 2.0"), "Apache License");
        assert_eq!(licence_summary(""), "not stated");
    }
}
