//! The key ceremony and a release through the `wardbox-bundle` binary itself, with its exit
//! codes, as docs/update.md describes them.

use std::path::Path;
use std::process::{Command, Output};

use wardbox_update::State;

fn bundle_tool(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wardbox-bundle")).args(args).current_dir(cwd).output().expect("run wardbox-bundle")
}

fn ok(args: &[&str], cwd: &Path) -> String {
    let out = bundle_tool(args, cwd);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "wardbox-bundle {args:?} failed: {text}");
    text
}

#[test]
fn key_ceremony_release_and_inspect() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    std::fs::create_dir_all(d.join("keys")).expect("keys");
    std::fs::create_dir_all(d.join("roots")).expect("roots");
    for k in ["root-1", "root-2", "root-3", "targets", "snapshot", "timestamp"] {
        let text = ok(&["keygen", &format!("keys/{k}.pk8")], d);
        assert!(text.contains("key id "), "{text}");
    }
    // A key is never overwritten.
    let again = bundle_tool(&["keygen", "keys/targets.pk8"], d);
    assert_eq!(again.status.code(), Some(1));

    ok(
        &[
            "root", "new", "--version", "1", "--expires", "2031-12-31",
            "--root-key", "keys/root-1.pk8.pub.json", "--root-key", "keys/root-2.pk8.pub.json",
            "--root-key", "keys/root-3.pk8.pub.json", "--root-threshold", "2",
            "--targets-key", "keys/targets.pk8.pub.json", "--snapshot-key", "keys/snapshot.pk8.pub.json",
            "--timestamp-key", "keys/timestamp.pk8.pub.json", "--out", "roots/1.root.json",
        ],
        d,
    );
    ok(&["root", "sign", "roots/1.root.json", "--key", "keys/root-1.pk8"], d);
    let text = ok(&["root", "sign", "roots/1.root.json", "--key", "keys/root-3.pk8"], d);
    assert!(text.contains("2 signatures"), "{text}");

    std::fs::write(d.join("policy.toml"), "[secure_boot]\nrequired = true\n").expect("policy");
    std::fs::write(d.join("notes.txt"), "Policy 1.0.1: Secure Boot required\n").expect("notes");
    ok(
        &[
            "build", "--roots", "roots", "--targets-key", "keys/targets.pk8", "--snapshot-key", "keys/snapshot.pk8",
            "--timestamp-key", "keys/timestamp.pk8", "--kind", "policy-only", "--version", "1.0.1",
            "--min-starting-version", "1.0.0", "--expires", "2030-01-01", "--firmware-policy", "policy.toml",
            "--release-notes", "notes.txt", "--out", "stick/policy-1.0.1",
        ],
        d,
    );

    let text = ok(&["inspect", "stick/policy-1.0.1", "--root", "roots/1.root.json"], d);
    for needle in ["wardbox policy-only 1.0.1", "firmware-policy", "Secure Boot required", "2 of 2 needed"] {
        assert!(text.contains(needle), "{needle:?} missing:\n{text}");
    }

    // On a box: provisioned state, and the verdict.
    State::provision(d.join("state"), &std::fs::read(d.join("roots/1.root.json")).expect("root")).expect("provision");
    let on_box = ["inspect", "stick/policy-1.0.1", "--state", "state", "--system-version", "1.0.0", "--build-time", "2026-01-01"];
    let text = ok(&on_box, d);
    assert!(text.contains("this box:  would apply it"), "{text}");
    let old_box = ["inspect", "stick/policy-1.0.1", "--state", "state", "--system-version", "0.9.0", "--build-time", "2026-01-01"];
    let text = ok(&old_box, d);
    assert!(text.contains("would refuse it: this bundle needs system version 1.0.0"), "{text}");

    // An extra file on the stick: exit 15, naming it.
    std::fs::write(d.join("stick/policy-1.0.1/targets/extra.sh"), "#!/bin/sh\n").expect("extra");
    let out = bundle_tool(&on_box, d);
    assert_eq!(out.status.code(), Some(15), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("extra.sh"));
    // Against a root from another ceremony: exit 10.
    std::fs::remove_file(d.join("stick/policy-1.0.1/targets/extra.sh")).expect("remove");
    std::fs::create_dir_all(d.join("other")).expect("other");
    for k in ["r1", "r2", "t", "s", "ts"] {
        ok(&["keygen", &format!("other/{k}.pk8")], d);
    }
    ok(
        &[
            "root", "new", "--version", "1", "--expires", "2031-12-31", "--root-key", "other/r1.pk8",
            "--root-key", "other/r2.pk8", "--targets-key", "other/t.pk8", "--snapshot-key", "other/s.pk8",
            "--timestamp-key", "other/ts.pk8", "--out", "other/1.root.json",
        ],
        d,
    );
    ok(&["root", "sign", "other/1.root.json", "--key", "other/r1.pk8"], d);
    ok(&["root", "sign", "other/1.root.json", "--key", "other/r2.pk8"], d);
    let out = bundle_tool(&["inspect", "stick/policy-1.0.1", "--root", "other/1.root.json"], d);
    assert_eq!(out.status.code(), Some(10), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad signature"));
}
