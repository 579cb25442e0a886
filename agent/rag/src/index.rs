//! The index inside the SQLCipher store: documents, chunks, FTS5 (BM25) and sqlite-vec vectors,
//! the per-patient pseudonym map, and access grants. Search fuses the BM25 and vector rankings
//! with reciprocal rank fusion, limited to the owners (patients, the clinic library) the user
//! may see.
//!
//! Architecture invariant: `rag_pseudonyms` is the only table that holds identifiers. Chunk
//! text, FTS rows and vectors are made from de-identified text; patient keys and content
//! hashes are salted hashes.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Once;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use sha2::{Digest, Sha256};

use crate::deid::{Category, MapEntry, Pseudonyms};

/// The owner id of the clinic library (documents that belong to no patient).
pub const LIBRARY: i64 = 0;
/// Vector dimension of the index (all-MiniLM-L6-v2 and bge-small both give 384).
pub const DIMS: usize = 384;

/// The schema, as one migration for the agent's store to register under its next free
/// version number. Never edit it once released: add a new one.
pub const MIGRATION_NAME: &str = "rag index";
pub const MIGRATION_SQL: &str = "
    CREATE TABLE rag_meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) STRICT;
    CREATE TABLE rag_patients (
        id         INTEGER PRIMARY KEY,      -- owner id; 0 is the clinic library
        key_hash   TEXT NOT NULL UNIQUE,     -- salted sha256 of the record's own id: no MRN in clear
        shift_days INTEGER NOT NULL,         -- this patient's secret date shift
        label      TEXT,                     -- how the record names the patient, de-identified
        created_at TEXT NOT NULL
    ) STRICT;
    -- The only table with identifiers: pseudonym -> original, per owner.
    CREATE TABLE rag_pseudonyms (
        owner    INTEGER NOT NULL,
        category TEXT NOT NULL,
        idx      INTEGER NOT NULL,
        norm     TEXT NOT NULL,
        original TEXT NOT NULL,
        PRIMARY KEY (owner, category, idx),
        UNIQUE (owner, category, norm)
    ) STRICT;
    CREATE TABLE rag_documents (
        id           INTEGER PRIMARY KEY,
        owner        INTEGER NOT NULL,
        content_hash TEXT NOT NULL,          -- salted sha256 of the file's bytes
        kind         TEXT NOT NULL,          -- text, markdown, pdf, fhir
        title        TEXT NOT NULL,          -- de-identified
        chunks       INTEGER NOT NULL,
        ingested_at  TEXT NOT NULL,
        UNIQUE (owner, content_hash)
    ) STRICT;
    CREATE TABLE rag_chunks (
        id          INTEGER PRIMARY KEY,
        document_id INTEGER NOT NULL REFERENCES rag_documents(id) ON DELETE CASCADE,
        owner       INTEGER NOT NULL,
        ordinal     INTEGER NOT NULL,
        section     TEXT NOT NULL,           -- de-identified heading
        text        TEXT NOT NULL            -- de-identified
    ) STRICT;
    CREATE INDEX rag_chunks_owner ON rag_chunks(owner);
    CREATE INDEX rag_chunks_document ON rag_chunks(document_id);
    CREATE VIRTUAL TABLE rag_fts USING fts5(text, content='rag_chunks', content_rowid='id', tokenize='porter unicode61');
    CREATE VIRTUAL TABLE rag_vec USING vec0(chunk_id INTEGER PRIMARY KEY, owner INTEGER, embedding float[384] distance_metric=cosine);
    -- Which user may see which patient when the agent does not grant all patients.
    CREATE TABLE rag_grants (
        username TEXT NOT NULL,
        patient  INTEGER NOT NULL REFERENCES rag_patients(id),
        PRIMARY KEY (username, patient)
    ) STRICT;
";

/// The second migration: the vectors move to a `vec0` table with the owner as its partition
/// key, so that a search for one patient and the library reads only their vectors (a few
/// thousand at 100k chunks) instead of filtering every vector of the clinic inside one scan.
/// Vectors already stored are copied, then the old table is dropped. Never edit it once
/// released: add a new one.
pub const MIGRATION_PARTITIONED_NAME: &str = "rag index: vectors partitioned by owner";
pub const MIGRATION_PARTITIONED_SQL: &str = "
    CREATE VIRTUAL TABLE rag_vec_by_owner USING vec0(chunk_id INTEGER PRIMARY KEY, owner INTEGER PARTITION KEY, embedding float[384] distance_metric=cosine, chunk_size=64);
    INSERT INTO rag_vec_by_owner (chunk_id, owner, embedding) SELECT chunk_id, owner, embedding FROM rag_vec;
    DROP TABLE rag_vec;
";

/// The third migration: the contacts a patient's record gives (FHIR `Patient.contact`: next of
/// kin, emergency contact), each the contact's name de-identified with the patient's
/// pseudonyms like the label (`[NAME-4] [NAME-5]`), for the agent's `next_of_kin` alert rule.
/// No identifier is stored here: the names are in `rag_pseudonyms`. Never edit it once
/// released: add a new one.
pub const MIGRATION_CONTACTS_NAME: &str = "rag index: the contacts a patient's record gives";
pub const MIGRATION_CONTACTS_SQL: &str = "
    CREATE TABLE rag_contacts (
        owner INTEGER NOT NULL REFERENCES rag_patients(id),
        name  TEXT NOT NULL,                 -- de-identified: pseudonyms only
        PRIMARY KEY (owner, name)
    ) STRICT;
";

/// Every migration of the index, in order: (name, SQL). The agent's store registers each under
/// its own next free version numbers.
pub const MIGRATIONS: &[(&str, &str)] = &[
    (MIGRATION_NAME, MIGRATION_SQL),
    (MIGRATION_PARTITIONED_NAME, MIGRATION_PARTITIONED_SQL),
    (MIGRATION_CONTACTS_NAME, MIGRATION_CONTACTS_SQL),
];

/// An index problem, worded for the person at the console.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("the retrieval index is missing from the store (migration \"{MIGRATION_NAME}\" not applied)")]
    NotMigrated,
    #[error("this user may not see patient {0}; nothing was searched")]
    AccessDenied(i64),
    #[error("the index was built with the embedding model {stored}, this agent uses {configured}: re-index before searching")]
    ModelChanged { stored: String, configured: String },
    #[error("a vector has {got} dimensions, the index holds {DIMS}")]
    Dimensions { got: usize },
    #[error("store error in the retrieval index: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// SQLCipher decrypts every page it reads; with SQLite's default 2 MiB page cache a vector
/// search re-decrypts the whole vector table each time (263 ms p50 at 10k chunks against 23 ms
/// with this cache, measured by the bench). A limit, not an allocation: memory grows with use.
/// The agent's store connection should set the same.
pub const CACHE_PRAGMA: &str = "PRAGMA cache_size = -262144;";

static REGISTER: Once = Once::new();

/// Make sqlite-vec available to every connection opened afterwards in this process. Call once
/// before the store is opened.
#[allow(unsafe_code)] // FFI registration of a statically linked SQLite extension.
pub fn register_sqlite_vec() {
    REGISTER.call_once(|| {
        // SAFETY: sqlite3_vec_init is the extension's entry point with the signature SQLite
        // expects of an auto-extension (db, error message out, API routines); sqlite-vec is
        // compiled against the same bundled SQLite that rusqlite links, and registering an
        // auto-extension has no other precondition.
        unsafe {
            type Init = unsafe extern "C" fn(
                *mut rusqlite::ffi::sqlite3,
                *mut *mut std::os::raw::c_char,
                *const rusqlite::ffi::sqlite3_api_routines,
            ) -> std::os::raw::c_int;
            let init: Init = std::mem::transmute::<*const (), Init>(sqlite_vec::sqlite3_vec_init as *const ());
            rusqlite::ffi::sqlite3_auto_extension(Some(init));
        }
    });
}

/// Open (or create) an encrypted SQLCipher database with a raw 32-byte key and apply the
/// index schema: for the bench and tests of this crate. The agent opens its own `Store` and
/// registers [`MIGRATION_SQL`] as one of its migrations.
pub fn open_encrypted(path: &Path, key: &[u8; 32]) -> Result<Connection, IndexError> {
    register_sqlite_vec();
    let conn = Connection::open(path)?;
    let pragma = zeroize::Zeroizing::new(format!("PRAGMA key = \"x'{}'\";", hex::encode(key)));
    conn.execute_batch("PRAGMA cipher_log_level = NONE;")?;
    conn.execute_batch(&pragma)?;
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")?;
    conn.execute_batch(CACHE_PRAGMA)?;
    // Each migration leaves a table behind that says it ran.
    for ((_, sql), made) in MIGRATIONS.iter().zip(["rag_chunks", "rag_vec_by_owner", "rag_contacts"]) {
        if !has_table(&conn, made)? {
            conn.execute_batch(&format!("BEGIN; {sql} COMMIT;"))?;
        }
    }
    Ok(conn)
}

fn has_table(conn: &Connection, name: &str) -> Result<bool, IndexError> {
    Ok(conn.query_row("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1", [name], |_| Ok(())).optional()?.is_some())
}

/// The table that holds the vectors: partitioned by owner once [`MIGRATION_PARTITIONED_SQL`] has
/// run. A store whose owner has not applied that migration yet is still written and searched
/// correctly, through the first migration's table (slower: every scan reads every vector).
fn vector_table(conn: &Connection) -> Result<&'static str, IndexError> {
    Ok(if has_table(conn, "rag_vec_by_owner")? { "rag_vec_by_owner" } else { "rag_vec" })
}

/// Read what every search scans (the vectors and the full-text index) into the page cache, so
/// that the first searches after the store opens do not pay for decrypting it page by page.
/// Call on a connection that will search, after [`CACHE_PRAGMA`].
pub fn warm_cache(conn: &Connection) -> Result<(), IndexError> {
    // A scan with no owner filter reads every vector of every owner.
    let mut unit = [0.0; DIMS];
    unit[0] = 1.0;
    let table = vector_table(conn)?;
    let mut stmt = conn.prepare(&format!("SELECT chunk_id FROM {table} WHERE embedding MATCH ?1 AND k = 1"))?;
    stmt.query_map([vec_blob(&unit)], |r| r.get::<_, i64>(0))?.for_each(drop);
    let mut stmt = conn.prepare("SELECT block FROM rag_fts_data")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        std::hint::black_box(row.get_ref(0)?);
    }
    Ok(())
}

/// What a user may see. The clinic library is visible to every user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    AllPatients,
    Patients(BTreeSet<i64>),
}

impl Access {
    pub fn may_see(&self, owner: i64) -> bool {
        owner == LIBRARY
            || match self {
                Access::AllPatients => true,
                Access::Patients(set) => set.contains(&owner),
            }
    }

    /// The grants of `username` in `rag_grants`.
    pub fn from_grants(conn: &Connection, username: &str) -> Result<Access, IndexError> {
        let mut stmt = conn.prepare("SELECT patient FROM rag_grants WHERE username = ?1")?;
        let set = stmt.query_map([username], |r| r.get(0))?.collect::<Result<BTreeSet<i64>, _>>()?;
        Ok(Access::Patients(set))
    }
}

pub fn grant(conn: &Connection, username: &str, patient: i64) -> Result<(), IndexError> {
    conn.execute("INSERT OR IGNORE INTO rag_grants (username, patient) VALUES (?1, ?2)", params![username, patient])?;
    Ok(())
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

/// The salt for patient keys and content hashes, made on first use.
fn salt(conn: &Connection) -> Result<String, IndexError> {
    let found: Option<String> = conn.query_row("SELECT value FROM rag_meta WHERE key = 'salt'", [], |r| r.get(0)).optional()?;
    if let Some(s) = found {
        return Ok(s);
    }
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    let s = hex::encode(bytes);
    conn.execute("INSERT INTO rag_meta (key, value) VALUES ('salt', ?1)", [&s])?;
    Ok(s)
}

pub fn salted_hash(conn: &Connection, domain: &str, bytes: &[u8]) -> Result<String, IndexError> {
    let salt = salt(conn)?;
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(domain.as_bytes());
    h.update([0x1f]);
    h.update(bytes);
    Ok(hex::encode(h.finalize()))
}

/// Check (or record, on first use) the embedding model of the index.
pub fn check_model(conn: &Connection, model: &str) -> Result<(), IndexError> {
    let stored: Option<String> = conn.query_row("SELECT value FROM rag_meta WHERE key = 'embed_model'", [], |r| r.get(0)).optional()?;
    match stored {
        Some(s) if s != model => Err(IndexError::ModelChanged { stored: s, configured: model.to_owned() }),
        Some(_) => Ok(()),
        None => {
            conn.execute("INSERT INTO rag_meta (key, value) VALUES ('embed_model', ?1)", [model])?;
            Ok(())
        }
    }
}

/// The owner id of a patient, found by the record's own id (FHIR Patient.id, MRN), made if new.
pub fn patient_owner(conn: &Connection, external_id: &str) -> Result<(i64, bool), IndexError> {
    let key = salted_hash(conn, "patient", external_id.trim().as_bytes())?;
    if let Some(id) = conn.query_row("SELECT id FROM rag_patients WHERE key_hash = ?1", [&key], |r| r.get(0)).optional()? {
        return Ok((id, false));
    }
    let shift = Pseudonyms::new_random().shift_days;
    conn.execute("INSERT INTO rag_patients (key_hash, shift_days, created_at) VALUES (?1, ?2, ?3)", params![key, shift, now()])?;
    Ok((conn.last_insert_rowid(), true))
}

/// Look a patient up without creating one.
pub fn find_patient(conn: &Connection, external_id: &str) -> Result<Option<i64>, IndexError> {
    let key = salted_hash(conn, "patient", external_id.trim().as_bytes())?;
    Ok(conn.query_row("SELECT id FROM rag_patients WHERE key_hash = ?1", [&key], |r| r.get(0)).optional()?)
}

/// Keep how a record names its patient (de-identified), unless the patient has a label already.
pub fn set_label_if_missing(conn: &Connection, owner: i64, label: &str) -> Result<(), IndexError> {
    conn.execute("UPDATE rag_patients SET label = ?2 WHERE id = ?1 AND label IS NULL", params![owner, label])?;
    Ok(())
}

/// Add de-identified contact names to a patient's (those already there stay: a contact a
/// newer record no longer gives is still someone the patient named).
pub fn add_contacts(conn: &Connection, owner: i64, contacts: &[String]) -> Result<(), IndexError> {
    if contacts.is_empty() {
        return Ok(());
    }
    let mut stmt = conn.prepare("INSERT OR IGNORE INTO rag_contacts (owner, name) VALUES (?1, ?2)")?;
    for name in contacts {
        stmt.execute(params![owner, name])?;
    }
    Ok(())
}

/// Every patient's contacts, re-identified: (owner, the contact's name), in owner order. For
/// the agent's alert rules, which compare them in memory with the staff's names.
pub fn contacts(conn: &Connection) -> Result<Vec<(i64, String)>, IndexError> {
    let mut stmt = conn.prepare("SELECT owner, name FROM rag_contacts ORDER BY owner, name")?;
    let rows: Vec<(i64, String)> = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(rows.len());
    let mut scope: Option<(i64, Pseudonyms)> = None;
    for (owner, name) in rows {
        if scope.as_ref().is_none_or(|(o, _)| *o != owner) {
            scope = Some((owner, load_pseudonyms(conn, owner)?));
        }
        if let Some((_, p)) = &scope {
            out.push((owner, crate::deid::reidentify(&name, p)));
        }
    }
    Ok(out)
}

/// Whether a patient with this owner id is in the index.
pub fn patient_exists(conn: &Connection, owner: i64) -> Result<bool, IndexError> {
    Ok(conn.query_row("SELECT 1 FROM rag_patients WHERE id = ?1", [owner], |_| Ok(())).optional()?.is_some())
}

/// Withdraw a user's grant for a patient; true when there was one.
pub fn revoke(conn: &Connection, username: &str, patient: i64) -> Result<bool, IndexError> {
    Ok(conn.execute("DELETE FROM rag_grants WHERE username = ?1 AND patient = ?2", params![username, patient])? > 0)
}

/// An owner's pseudonym state. The library gets a fixed shift of its own, made on first use.
pub fn load_pseudonyms(conn: &Connection, owner: i64) -> Result<Pseudonyms, IndexError> {
    Ok(load_pseudonyms_counted(conn, owner)?.0)
}

/// [`load_pseudonyms`], and how many pseudonyms the owner had stored: what [`store_document`]
/// checks to notice that another writer added some in the meantime.
pub fn load_pseudonyms_counted(conn: &Connection, owner: i64) -> Result<(Pseudonyms, usize), IndexError> {
    let shift: i32 = if owner == LIBRARY {
        let read = || -> Result<Option<i32>, IndexError> {
            let found: Option<String> = conn.query_row("SELECT value FROM rag_meta WHERE key = 'library_shift'", [], |r| r.get(0)).optional()?;
            Ok(found.and_then(|s| s.parse().ok()))
        };
        match read()? {
            Some(s) => s,
            None => {
                // Two first uses at once: the first shift stored is the library's, for both.
                let s = Pseudonyms::new_random().shift_days;
                conn.execute("INSERT OR IGNORE INTO rag_meta (key, value) VALUES ('library_shift', ?1)", [s.to_string()])?;
                read()?.unwrap_or(s)
            }
        }
    } else {
        conn.query_row("SELECT shift_days FROM rag_patients WHERE id = ?1", [owner], |r| r.get(0))?
    };
    let mut stmt = conn.prepare("SELECT category, idx, norm, original FROM rag_pseudonyms WHERE owner = ?1")?;
    let rows = stmt
        .query_map([owner], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    let stored = rows.len();
    let entries = rows
        .into_iter()
        .filter_map(|(c, i, norm, original)| Some(MapEntry { category: Category::from_tag(&c)?, index: i as u32, norm, original }))
        .collect::<Vec<_>>();
    Ok((Pseudonyms::load(shift, entries), stored))
}

/// Persist the pseudonyms made since the last save.
pub fn save_pseudonyms(conn: &Connection, owner: i64, scope: &mut Pseudonyms) -> Result<(), IndexError> {
    let mut stmt = conn.prepare("INSERT OR IGNORE INTO rag_pseudonyms (owner, category, idx, norm, original) VALUES (?1, ?2, ?3, ?4, ?5)")?;
    for e in scope.take_new() {
        stmt.execute(params![owner, e.category.tag(), e.index, e.norm, e.original])?;
    }
    Ok(())
}

/// A document already in the index with this content, if any.
pub fn find_document(conn: &Connection, owner: i64, content_hash: &str) -> Result<Option<i64>, IndexError> {
    Ok(conn
        .query_row("SELECT id FROM rag_documents WHERE owner = ?1 AND content_hash = ?2", params![owner, content_hash], |r| r.get(0))
        .optional()?)
}

/// A chunk ready to store: de-identified text and its vector.
#[derive(Debug, Clone)]
pub struct NewChunk {
    pub section: String,
    pub text: String,
    pub embedding: Vec<f32>,
}

fn vec_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Write a document and its chunks (rows, FTS, vectors) in one transaction.
pub fn insert_document(
    conn: &mut Connection,
    owner: i64,
    content_hash: &str,
    kind: &str,
    title: &str,
    chunks: &[NewChunk],
) -> Result<i64, IndexError> {
    let tx = conn.transaction()?;
    let doc = insert_document_rows(&tx, owner, content_hash, kind, title, chunks)?;
    tx.commit()?;
    Ok(doc)
}

/// What [`store_document`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// The document is in, with its pseudonyms.
    Inserted(i64),
    /// The same content was already stored for this owner (another upload of it got in
    /// first): this document id; nothing was written.
    AlreadyThere(i64),
    /// Another writer stored pseudonyms for this owner since they were read: the document's
    /// numbers could stand for that one's identifiers. Nothing was written; de-identify again.
    PseudonymsChanged,
}

/// A de-identified document ready to store.
#[derive(Debug, Clone, Copy)]
pub struct NewDocument<'a> {
    pub owner: i64,
    /// [`salted_hash`] of the file's bytes.
    pub content_hash: &'a str,
    pub kind: &'a str,
    pub title: &'a str,
    pub chunks: &'a [NewChunk],
    /// How the record names its patient, kept if the patient has no label yet.
    pub label: Option<&'a str>,
    /// The contacts the record gives (names de-identified like the label), added to the
    /// patient's.
    pub contacts: &'a [String],
}

/// Store a de-identified document: its rows, chunks and vectors, the pseudonyms its text was
/// de-identified with (`scope`, read when the owner had `loaded` of them) and the patient's
/// label, in one write transaction, and only if the owner's pseudonyms are still the ones it
/// was de-identified with (see [`Stored`]).
pub fn store_document(conn: &mut Connection, doc: &NewDocument<'_>, scope: &mut Pseudonyms, loaded: usize) -> Result<Stored, IndexError> {
    // Immediate: the checks and the writes see one state, no other writer in between.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Some(id) = find_document(&tx, doc.owner, doc.content_hash)? {
        return Ok(Stored::AlreadyThere(id));
    }
    let stored: i64 = tx.query_row("SELECT count(*) FROM rag_pseudonyms WHERE owner = ?1", [doc.owner], |r| r.get(0))?;
    if usize::try_from(stored).ok() != Some(loaded) {
        return Ok(Stored::PseudonymsChanged);
    }
    let id = insert_document_rows(&tx, doc.owner, doc.content_hash, doc.kind, doc.title, doc.chunks)?;
    save_pseudonyms(&tx, doc.owner, scope)?;
    if let Some(label) = doc.label {
        set_label_if_missing(&tx, doc.owner, label)?;
    }
    add_contacts(&tx, doc.owner, doc.contacts)?;
    tx.commit()?;
    Ok(Stored::Inserted(id))
}

fn insert_document_rows(tx: &Transaction<'_>, owner: i64, content_hash: &str, kind: &str, title: &str, chunks: &[NewChunk]) -> Result<i64, IndexError> {
    if let Some(c) = chunks.iter().find(|c| c.embedding.len() != DIMS) {
        return Err(IndexError::Dimensions { got: c.embedding.len() });
    }
    tx.execute(
        "INSERT INTO rag_documents (owner, content_hash, kind, title, chunks, ingested_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![owner, content_hash, kind, title, chunks.len() as i64, now()],
    )?;
    let doc = tx.last_insert_rowid();
    {
        let mut ins = tx.prepare("INSERT INTO rag_chunks (document_id, owner, ordinal, section, text) VALUES (?1, ?2, ?3, ?4, ?5)")?;
        let mut fts = tx.prepare("INSERT INTO rag_fts (rowid, text) VALUES (?1, ?2)")?;
        let mut vec = tx.prepare(&format!("INSERT INTO {} (chunk_id, owner, embedding) VALUES (?1, ?2, ?3)", vector_table(tx)?))?;
        for (i, c) in chunks.iter().enumerate() {
            ins.execute(params![doc, owner, i as i64, c.section, c.text])?;
            let id = tx.last_insert_rowid();
            fts.execute(params![id, c.text])?;
            vec.execute(params![id, owner, vec_blob(&c.embedding)])?;
        }
    }
    Ok(doc)
}

/// Where to search.
#[derive(Debug, Clone)]
pub struct Scope {
    /// One patient's record, or every patient the user may see when `None`.
    pub patient: Option<i64>,
    pub include_library: bool,
}

/// A retrieved chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub chunk_id: i64,
    pub document_id: i64,
    pub owner: i64,
    pub section: String,
    pub text: String,
    /// Reciprocal-rank-fusion score.
    pub score: f64,
    /// Cosine distance of the vector match (0 = same direction), when the vector search found it.
    pub distance: Option<f64>,
    /// Rank in the BM25 list, when the full-text search found it.
    pub bm25_rank: Option<usize>,
}

/// The owners a search may touch.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owners {
    /// Every patient and the library.
    Everyone,
    /// Every patient, not the library.
    AllPatients,
    /// These owners only (never empty).
    Only(Vec<i64>),
}

impl Owners {
    /// The condition on a chunk's `owner` column, as SQL. Owner ids are integers from the
    /// database, formatted, never user text.
    fn sql_filter(&self, column: &str) -> String {
        match self {
            Owners::Everyone => String::new(),
            Owners::AllPatients => format!("AND {column} != {LIBRARY}"),
            Owners::Only(list) => format!("AND {column} IN ({})", list.iter().map(i64::to_string).collect::<Vec<_>>().join(",")),
        }
    }
}

/// The owners a search may touch (`None`: none at all); refuses a patient the user may not see.
fn owners(scope: &Scope, access: &Access) -> Result<Option<Owners>, IndexError> {
    if let Some(p) = scope.patient {
        if !access.may_see(p) || p == LIBRARY {
            return Err(IndexError::AccessDenied(p));
        }
        let mut v = vec![p];
        if scope.include_library {
            v.push(LIBRARY);
        }
        return Ok(Some(Owners::Only(v)));
    }
    Ok(match access {
        Access::AllPatients if scope.include_library => Some(Owners::Everyone),
        Access::AllPatients => Some(Owners::AllPatients),
        Access::Patients(set) => {
            let mut v: Vec<i64> = set.iter().copied().collect();
            if scope.include_library {
                v.push(LIBRARY);
            }
            if v.is_empty() { None } else { Some(Owners::Only(v)) }
        }
    })
}

/// The question's words for the full-text search, each at most once (lowercase), stop words and
/// FTS syntax gone.
fn query_words(text: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    for w in text.split(|c: char| !c.is_alphanumeric()).map(str::to_lowercase) {
        if w.len() >= 2 && !FTS_STOP.contains(&w.as_str()) && !words.contains(&w) {
            words.push(w);
        }
    }
    words
}

/// A word in more than this share of all chunks tells BM25 almost nothing (its weight is near
/// zero) but makes the full-text search score most of the corpus (86 % of all rows at 100k
/// chunks before this rule): it is left out of the query.
const COMMON_SHARE: f64 = 0.10;
/// ... but only above this many chunks: a small index has no time to win, and there every
/// word may be the one that finds the passage.
const COMMON_FLOOR: i64 = 1_000;

/// Choose the query's words by how many chunks hold them: the common ones (see
/// [`COMMON_SHARE`]) are dropped, each found by a search capped just above the limit, so the
/// check costs at most that many row ids per word. When every word is common, all of them must
/// match (AND), which matches few chunks; `None` when the question has no word to search.
fn selective_fts_query(conn: &Connection, text: &str) -> Result<Option<String>, IndexError> {
    let words = query_words(text);
    if words.is_empty() {
        return Ok(None);
    }
    // Chunks are never deleted, so the largest id is the number of chunks (an upper bound).
    let chunks: i64 = conn.query_row("SELECT coalesce(max(id), 0) FROM rag_chunks", [], |r| r.get(0))?;
    let cap = ((chunks as f64 * COMMON_SHARE) as i64).max(COMMON_FLOOR);
    let quoted = |w: &String| format!("\"{w}\"");
    if chunks <= cap {
        return Ok(Some(words.iter().map(quoted).collect::<Vec<_>>().join(" OR ")));
    }
    let mut probe = conn.prepare("SELECT count(*) FROM (SELECT 1 FROM rag_fts WHERE rag_fts MATCH ?1 LIMIT ?2)")?;
    let mut rare = Vec::new();
    for w in &words {
        let n: i64 = probe.query_row(params![quoted(w), cap + 1], |r| r.get(0))?;
        if n <= cap {
            rare.push(w);
        }
    }
    Ok(Some(if rare.is_empty() {
        words.iter().map(quoted).collect::<Vec<_>>().join(" AND ")
    } else {
        rare.into_iter().map(quoted).collect::<Vec<_>>().join(" OR ")
    }))
}

const FTS_STOP: &[&str] = &[
    "the", "and", "or", "of", "to", "in", "on", "for", "is", "was", "what", "which", "who", "when", "does", "did", "do", "has",
    "have", "had", "with", "a", "an", "her", "his", "their", "patient", "pt", "are", "be", "at", "by", "from", "as", "any", "how",
];

/// RRF constant: the usual 60 keeps one list's top hit from drowning the other list.
const RRF_K: f64 = 60.0;

/// Where one search spent its time, for the bench.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SearchTimings {
    /// Full-text (BM25) candidates, seconds.
    pub fts_s: f64,
    /// Vector (KNN) candidates, seconds.
    pub knn_s: f64,
    /// Reciprocal rank fusion, seconds.
    pub fuse_s: f64,
    /// Reading the winning chunks' rows, seconds.
    pub fetch_s: f64,
}

/// Hybrid search: BM25 over FTS5 and cosine KNN over sqlite-vec, each limited to the owners in
/// scope, fused with reciprocal rank fusion; the best `k` hits.
pub fn search(conn: &Connection, query_text: &str, query_vec: &[f32], scope: &Scope, access: &Access, k: usize) -> Result<Vec<Hit>, IndexError> {
    search_timed(conn, query_text, query_vec, scope, access, k).map(|(hits, _)| hits)
}

/// [`search`], also saying where the time went.
pub fn search_timed(
    conn: &Connection,
    query_text: &str,
    query_vec: &[f32],
    scope: &Scope,
    access: &Access,
    k: usize,
) -> Result<(Vec<Hit>, SearchTimings), IndexError> {
    let mut timings = SearchTimings::default();
    if query_vec.len() != DIMS {
        return Err(IndexError::Dimensions { got: query_vec.len() });
    }
    let Some(owners) = owners(scope, access)? else { return Ok((Vec::new(), timings)) };
    let depth = (k * 8).max(40);
    let clock = std::time::Instant::now();
    let mut bm25: Vec<i64> = Vec::new();
    if let Some(q) = selective_fts_query(conn, query_text)? {
        let sql = format!(
            "SELECT c.id FROM rag_fts JOIN rag_chunks c ON c.id = rag_fts.rowid WHERE rag_fts MATCH ?1 {} ORDER BY bm25(rag_fts) LIMIT ?2",
            owners.sql_filter("c.owner")
        );
        let mut stmt = conn.prepare(&sql)?;
        bm25 = stmt.query_map(params![q, depth as i64], |r| r.get(0))?.collect::<Result<_, _>>()?;
    }
    timings.fts_s = clock.elapsed().as_secs_f64();
    let clock = std::time::Instant::now();
    let knn = nearest(conn, query_vec, &owners, depth)?;
    timings.knn_s = clock.elapsed().as_secs_f64();
    let clock = std::time::Instant::now();
    let ranked = fuse(&bm25, &knn, k);
    timings.fuse_s = clock.elapsed().as_secs_f64();
    let clock = std::time::Instant::now();
    let mut stmt = conn.prepare("SELECT document_id, owner, section, text FROM rag_chunks WHERE id = ?1")?;
    let mut hits = Vec::with_capacity(ranked.len());
    for (id, (score, distance, bm25_rank)) in ranked {
        let (document_id, owner, section, text): (i64, i64, String, String) =
            stmt.query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        // Belt and braces: the filters above already excluded these; a bug there must not leak.
        if !access.may_see(owner) {
            continue;
        }
        hits.push(Hit { chunk_id: id, document_id, owner, section, text, score, distance, bm25_rank });
    }
    timings.fetch_s = clock.elapsed().as_secs_f64();
    Ok((hits, timings))
}

/// The `n` chunks nearest to `query_vec` by cosine distance among the owners', best first, as
/// (chunk id, distance): one scan per owner (with the partitioned table, each reads only that
/// owner's vectors), or one over every vector when the scope is everyone.
fn nearest(conn: &Connection, query_vec: &[f32], owners: &Owners, n: usize) -> Result<Vec<(i64, f64)>, IndexError> {
    let blob = vec_blob(query_vec);
    let scan = format!("SELECT chunk_id, distance FROM {} WHERE embedding MATCH ?1 AND k = ?2", vector_table(conn)?);
    let mut knn: Vec<(i64, f64)> = match owners {
        Owners::Everyone => {
            let mut stmt = conn.prepare(&scan)?;
            stmt.query_map(params![blob, n as i64], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?
        }
        Owners::AllPatients => {
            let mut stmt = conn.prepare(&format!("{scan} AND owner != ?3"))?;
            stmt.query_map(params![blob, n as i64, LIBRARY], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?
        }
        Owners::Only(list) => {
            let mut stmt = conn.prepare(&format!("{scan} AND owner = ?3"))?;
            let mut all = Vec::new();
            for o in list {
                let rows: Vec<(i64, f64)> = stmt.query_map(params![blob, n as i64, o], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
                all.extend(rows);
            }
            all
        }
    };
    knn.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    knn.truncate(n);
    Ok(knn)
}

/// chunk id -> (RRF score, vector distance, BM25 rank)
type Fused = (f64, Option<f64>, Option<usize>);

/// Reciprocal rank fusion of the BM25 list (chunk ids, best first) and the vector list (chunk
/// id, distance; best first): the best `k`, ties broken by chunk id.
fn fuse(bm25: &[i64], knn: &[(i64, f64)], k: usize) -> Vec<(i64, Fused)> {
    let mut fused: HashMap<i64, Fused> = HashMap::new();
    for (rank, id) in bm25.iter().enumerate() {
        let e = fused.entry(*id).or_insert((0.0, None, None));
        e.0 += 1.0 / (RRF_K + rank as f64 + 1.0);
        e.2 = Some(rank + 1);
    }
    for (rank, (id, d)) in knn.iter().enumerate() {
        let e = fused.entry(*id).or_insert((0.0, None, None));
        e.0 += 1.0 / (RRF_K + rank as f64 + 1.0);
        e.1 = Some(*d);
    }
    let mut ranked: Vec<(i64, Fused)> = fused.into_iter().collect();
    ranked.sort_by(|a, b| b.1.0.total_cmp(&a.1.0).then(a.0.cmp(&b.0)));
    ranked.truncate(k);
    ranked
}

/// A chunk by id, for resolving a citation; refuses what the user may not see.
pub fn chunk(conn: &Connection, chunk_id: i64, access: &Access) -> Result<Option<Hit>, IndexError> {
    let row: Option<(i64, i64, String, String)> = conn
        .query_row("SELECT document_id, owner, section, text FROM rag_chunks WHERE id = ?1", [chunk_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?;
    match row {
        None => Ok(None),
        Some((_, owner, _, _)) if !access.may_see(owner) => Err(IndexError::AccessDenied(owner)),
        Some((document_id, owner, section, text)) => {
            Ok(Some(Hit { chunk_id, document_id, owner, section, text, score: 0.0, distance: None, bm25_rank: None }))
        }
    }
}

/// A patient as the clinician picks them: the record ids and names the documents gave. Read
/// from the pseudonym map, so only for users allowed to see the patient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryEntry {
    pub owner: i64,
    /// How the record names the patient ("Dolores Castellanos, born 1948-07-19"), re-identified;
    /// `None` when no record said (notes only).
    pub label: Option<String>,
    pub record_ids: Vec<String>,
    pub names: Vec<String>,
}

/// The patients `access` allows, with their record ids and name parts, in owner order.
pub fn directory(conn: &Connection, access: &Access) -> Result<Vec<DirectoryEntry>, IndexError> {
    let mut stmt = conn.prepare("SELECT id, label FROM rag_patients ORDER BY id")?;
    let owners: Vec<(i64, Option<String>)> = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
    let mut q = conn.prepare("SELECT category, original FROM rag_pseudonyms WHERE owner = ?1 AND category IN ('MRN', 'NAME') ORDER BY category, idx")?;
    let mut out = Vec::new();
    for (owner, label) in owners.into_iter().filter(|(o, _)| access.may_see(*o)) {
        let label = match label {
            Some(l) => Some(crate::deid::reidentify(&l, &load_pseudonyms(conn, owner)?)),
            None => None,
        };
        let mut e = DirectoryEntry { owner, label, record_ids: Vec::new(), names: Vec::new() };
        for row in q.query_map([owner], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
            let (c, o) = row?;
            if c == "MRN" { e.record_ids.push(o) } else { e.names.push(o) }
        }
        out.push(e);
    }
    Ok(out)
}

/// A stored document for the citation link: its de-identified title and chunks in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentView {
    pub id: i64,
    pub owner: i64,
    pub kind: String,
    pub title: String,
    /// (chunk id, section, de-identified text)
    pub chunks: Vec<(i64, String, String)>,
}

/// A document's owner and de-identified title, for listing it as a source.
pub fn document_meta(conn: &Connection, document_id: i64) -> Result<Option<(i64, String)>, IndexError> {
    Ok(conn.query_row("SELECT owner, title FROM rag_documents WHERE id = ?1", [document_id], |r| Ok((r.get(0)?, r.get(1)?))).optional()?)
}

/// A document by id; refuses one the user may not see.
pub fn document(conn: &Connection, document_id: i64, access: &Access) -> Result<Option<DocumentView>, IndexError> {
    let row: Option<(i64, String, String)> = conn
        .query_row("SELECT owner, kind, title FROM rag_documents WHERE id = ?1", [document_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((owner, kind, title)) = row else { return Ok(None) };
    if !access.may_see(owner) {
        return Err(IndexError::AccessDenied(owner));
    }
    let mut stmt = conn.prepare("SELECT id, section, text FROM rag_chunks WHERE document_id = ?1 ORDER BY ordinal")?;
    let chunks = stmt.query_map([document_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<Result<_, _>>()?;
    Ok(Some(DocumentView { id: document_id, owner, kind, title, chunks }))
}

/// Counts for the status page and the bench.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub patients: i64,
    pub documents: i64,
    pub chunks: i64,
}

pub fn stats(conn: &Connection) -> Result<Stats, IndexError> {
    let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0));
    Ok(Stats {
        patients: count("SELECT count(*) FROM rag_patients")?,
        documents: count("SELECT count(*) FROM rag_documents")?,
        chunks: count("SELECT count(*) FROM rag_chunks")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_words_drop_syntax_stop_words_and_repeats() {
        assert_eq!(query_words("What is her A1c? NEAR(x) OR \"y\" a1c"), vec!["a1c", "near"]);
        assert!(query_words("?? the").is_empty());
    }

    #[test]
    fn access_always_allows_the_library_only() {
        let a = Access::Patients(BTreeSet::from([3]));
        assert!(a.may_see(LIBRARY) && a.may_see(3) && !a.may_see(4));
        assert!(Access::AllPatients.may_see(99));
    }
}
