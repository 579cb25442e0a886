//! Shared by the repository tests: a source directory with files, and the stock `restic` tool.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use wardbox_backup::RepositoryKey;

/// Deterministic pseudo-random bytes (xorshift), so sources neither compress nor dedupe away.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A small tree like the one the agent stages: a store file, a config, a state directory.
pub fn make_source(dir: &Path, store_bytes: usize) {
    std::fs::create_dir_all(dir.join("store")).unwrap();
    std::fs::create_dir_all(dir.join("state/tls")).unwrap();
    std::fs::write(dir.join("store/wardbox.db"), noise(store_bytes, 1)).unwrap();
    std::fs::write(dir.join("config.toml"), "profile = \"dev\"\n").unwrap();
    std::fs::write(dir.join("state/tls/ca.pem"), "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").unwrap();
    std::fs::write(dir.join("state/audit-checkpoints.jsonl"), "{\"seq\":1}\n").unwrap();
}

/// The stock restic binary; a test that needs it fails loudly when it is missing.
pub fn restic() -> PathBuf {
    let path = std::env::var_os("RESTIC_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/restic"));
    assert!(
        path.is_file(),
        "stock restic not found at {} (Debian package `restic`; tests/install-deps.sh installs it, or set RESTIC_BIN)",
        path.display()
    );
    path
}

/// Run restic against `repo` with the key as its password, passed in the environment (never
/// on the command line, where `ps` would show it).
pub fn run_restic(repo: &Path, key: &RepositoryKey, args: &[&str]) -> Output {
    Command::new(restic())
        .arg("-r")
        .arg(repo)
        .args(["--no-cache"])
        .args(args)
        .env("RESTIC_PASSWORD", key.to_hex().as_str())
        .env_remove("RESTIC_PASSWORD_FILE")
        .env_remove("RESTIC_REPOSITORY")
        .output()
        .expect("run restic")
}

pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Every file under `dir`, relative path and contents, sorted.
pub fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                out.push((path.strip_prefix(base).unwrap().to_owned(), std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}
