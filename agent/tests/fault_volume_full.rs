//! Fault: the data volume fills up under a running agent (`wardbox dev`, the real binary).
//!
//! The whole box (configuration, state, store with its audit chain) lives on a small tmpfs this
//! test mounts, so the test needs root (it fails, naming that, where it cannot mount). With the
//! volume full, a sign-in and an account change are refused with 503 and a page that names the
//! full data volume; the agent keeps running, nothing it acknowledged is lost, and once space is
//! freed the same agent (no restart) signs in and writes again. A `wardbox records import` on
//! the full volume is refused the same way and stores nothing; after it succeeds. Afterwards
//! the chain verifies.
//!
//! A tmpfs is not the appliance's encrypted ext4 volume: SQLite's out-of-space path is the same
//! (`SQLITE_FULL` on a failed write), the filesystem's reserved blocks and journal are not.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;

mod fault_support;

use fault_support::{SmallVolume, cookie, fill, http, open_store, serve_embeddings, start_dev_agent, text, wardbox};
use wardbox::config::Config;

const PASSWORD: &str = "correct horse battery";

fn csrf(body: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    body[body.find(marker).expect("csrf field") + marker.len()..].split('"').next().expect("token").to_string()
}

fn post(addr: SocketAddr, path: &str, cookie: &str, form: &str) -> (String, String) {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
        form.len()
    );
    http(addr, &req).expect("POST")
}

fn get(addr: SocketAddr, path: &str, cookie: &str) -> (String, String) {
    http(addr, &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n")).expect("GET")
}

/// Sign in through the login page; returns the POST's (head, body).
fn sign_in(addr: SocketAddr, username: &str) -> (String, String) {
    let (head, body) = get(addr, "/login", "");
    let pre = cookie(&head, "wb_login");
    let form = format!("csrf={}&username={username}&password=correct+horse+battery", csrf(&body));
    post(addr, "/login", &format!("wb_login={pre}"), &form)
}

/// Audit records (kind, actor, detail) through a second connection to the store.
fn audit_rows(config: &Path) -> Vec<(String, String, String)> {
    let store = open_store(config);
    let mut stmt = store.conn().prepare("SELECT kind, actor, detail FROM audit ORDER BY seq").expect("prepare");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).expect("query").collect::<Result<_, _>>().expect("rows")
}

fn is_full_refusal(head: &str, body: &str) -> bool {
    head.starts_with("HTTP/1.1 503") && body.contains("data volume is full")
}

#[test]
fn a_full_data_volume_refuses_writes_keeps_the_chain_and_recovers_without_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = dir.path().join("volume");
    let _volume = SmallVolume::mount(&mnt, 48);
    let base = mnt.join("box");
    let addr = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let mut agent = start_dev_agent(&base, addr, &dir.path().join("no-engine-here"), "the dev agent");
    let config = base.join("wardbox.toml");
    let add = ["users", "add", "--username", "it.admin", "--display-name", "IT Admin", "--role", "admin"];
    let made = wardbox(&add, &config, &format!("{PASSWORD}\n"));
    assert!(made.status.success(), "{}", text(&made));

    // With space: a sign-in is acknowledged (303 and a session).
    let (head, _) = sign_in(addr, "it.admin");
    assert!(head.starts_with("HTTP/1.1 303"), "{head}");
    let session = format!("wb_session={}", cookie(&head, "wb_session"));
    // The session's form token, taken while reading a page can still be audited.
    let (_, page) = get(addr, "/admin/users", &session);
    let form = format!("csrf={}&username=dr.full&display_name=Dr+Full&role=clinician&password=correct+horse+battery", csrf(&page));
    let acknowledged_before = audit_rows(&config);
    assert!(acknowledged_before.iter().any(|(kind, actor, _)| kind == "login" && actor == "it.admin"), "{acknowledged_before:?}");

    // An import's configuration: the same box, with an engine endpoint for the embeddings
    // (the dev profile's hashing embedder; the agent itself runs without an engine).
    let mut import_config = Config::load(&config).expect("config");
    import_config.engine.endpoint = Some(format!("http://{}/", serve_embeddings()));
    let import_config_path = dir.path().join("import.toml");
    std::fs::write(&import_config_path, toml::to_string_pretty(&import_config).expect("toml")).expect("write");
    let note = dir.path().join("call.txt");
    std::fs::write(&note, b"S: Daughter called; patient dizzy since Monday.\nP: Review on Friday.\n").expect("note");
    let import = ["records", "import", "--patient", "FULL-1", "--new-patient", note.to_str().expect("utf8")];

    let filled = fill(&mnt.join("filler"));
    assert!(filled > 0, "nothing could be written to fill the volume");

    // Full: a sign-in (its audit record cannot be written) is refused, naming the full volume.
    let (head, body) = sign_in(addr, "it.admin");
    assert!(is_full_refusal(&head, &body), "a sign-in on a full volume was not refused naming it:\n{head}\n{body}");
    assert!(cookie(&head, "wb_session").is_empty(), "a session was handed out although its sign-in was not recorded");
    // An account change by a signed-in administrator: refused the same way, nothing stored.
    let (head, body) = post(addr, "/admin/users", &session, &form);
    assert!(is_full_refusal(&head, &body), "an account change on a full volume was not refused naming it:\n{head}\n{body}");
    assert!(agent.0.try_wait().expect("wait").is_none(), "the agent died on a full volume");
    // The chain can be checked while the volume is full, and it is intact.
    let verify = wardbox(&["audit", "verify", "--json"], &config, "");
    assert!(verify.status.success(), "the chain cannot be verified on a full volume: {}", text(&verify));
    let refused = wardbox(&import, &import_config_path, "");
    assert!(!refused.status.success() && text(&refused).contains("data volume is full"), "an import on a full volume: {}", text(&refused));
    let status = wardbox(&["records", "status"], &config, "");
    assert!(text(&status).contains("0 documents"), "a refused import stored something: {}", text(&status));

    // Space returns: the same process signs in and writes again.
    std::fs::remove_file(mnt.join("filler")).expect("free the space");
    let (head, body) = sign_in(addr, "it.admin");
    assert!(head.starts_with("HTTP/1.1 303"), "no recovery after space returned:\n{head}\n{body}");
    let (head, body) = post(addr, "/admin/users", &session, &form);
    assert!(head.starts_with("HTTP/1.1 303") || head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
    let imported = wardbox(&import, &import_config_path, "");
    assert!(imported.status.success() && text(&imported).contains("1 imported"), "no import after space returned: {}", text(&imported));
    let list = wardbox(&["users", "list"], &config, "");
    assert!(text(&list).contains("dr.full"), "the account made after recovery is missing: {}", text(&list));
    assert!(agent.0.try_wait().expect("wait").is_none(), "the agent was restarted or died");

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent.0.id() as i32), nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    assert!(agent.0.wait().expect("wait").success(), "unclean shutdown after the full volume");

    // The chain verifies, every record acknowledged before the fault is still there, in order.
    let verify = wardbox(&["audit", "verify", "--json"], &config, "");
    assert!(verify.status.success(), "the chain does not verify after the full volume: {}", text(&verify));
    let after = audit_rows(&config);
    assert_eq!(after[..acknowledged_before.len()], acknowledged_before[..], "an acknowledged record changed or went missing");
    let logins = after.iter().filter(|(kind, actor, _)| kind == "login" && actor == "it.admin").count();
    assert_eq!(logins, 2, "expected the two acknowledged sign-ins and not the refused one: {after:?}");
    assert!(after.iter().any(|(_, _, detail)| detail.contains("dr.full")), "the account change after recovery is not audited");
}
