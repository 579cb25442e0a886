# Shared by the qemu scenarios' self-test probes (update-probe, restore-probe), which source it
# after setting CONFIG and TAG. Test and lab use only: each probe runs only when the signed
# kernel command line switches it on.

say() { echo "$TAG $*"; }

# Installs the bundle on the one stick plugged in, as IT does at the console: opens the USB
# window, waits for the stick's bundle directory under /run/wardbox/usb (mounted read-only),
# `wardbox update apply --yes`, closes the window. Prints `apply exit <code>`.
install_from_stick() {
    local meta bundle rc
    /usr/bin/wardbox usb open --minutes 30 --by "${TAG%:}" 2>&1 | sed -u "s/^/$TAG window: /"
    bundle=
    for _ in $(seq 90); do
        meta=$(find /run/wardbox/usb -mindepth 3 -maxdepth 3 -name metadata -type d ! -path '*/refuse-*' 2>/dev/null | head -n 1)
        [ -n "$meta" ] && { bundle=${meta%/metadata}; break; }
        sleep 1
    done
    if [ -z "$bundle" ]; then
        say "FAILED: no bundle directory appeared under /run/wardbox/usb in the window"
        /usr/bin/wardbox usb close --reason "${TAG%:}: no bundle" 2>&1 | sed -u "s/^/$TAG window: /"
        return 1
    fi
    say "applying $bundle"
    /usr/bin/wardbox update apply --yes -c "$CONFIG" "$bundle" 2>&1 | sed -u "s/^/$TAG apply: /"
    rc=${PIPESTATUS[0]}
    say "apply exit $rc"
    /usr/bin/wardbox usb close --reason "the bundle is applied" 2>&1 | sed -u "s/^/$TAG window: /"
    return 0
}

# After a models-only bundle: a synthetic patient's note imported under record id $1 (embedded
# by the engine with the new embedding model) and a clinician, qa.clinician, who may see that
# patient; her random password is printed for the test to sign in over HTTPS.
use_new_models() {
    local patient=$1 dir password rc
    dir=$(mktemp -d)
    cat > "$dir/visit-note.txt" <<'NOTE'
Clinic visit note for a synthetic test patient.
Allergies: penicillin, which caused hives in 2019. No other known drug allergies.
Medications: lisinopril 10 mg once daily for high blood pressure.
Plan: check the blood pressure again in three months.
NOTE
    /usr/bin/wardbox records import -c "$CONFIG" --patient "$patient" --new-patient "$dir/visit-note.txt" 2>&1 | sed -u "s/^/$TAG import: /"
    rc=${PIPESTATUS[0]}
    say "import exit $rc"
    rm -rf "$dir"
    [ "$rc" = 0 ] || { say "FAILED: the note was not imported (exit $rc)"; return 1; }
    password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
    if ! printf '%s\n' "$password" | /usr/bin/wardbox users add -c "$CONFIG" --username qa.clinician \
        --display-name "Models test clinician" --role clinician >/dev/null 2>&1; then
        say "FAILED: cannot make the clinician's account"; return 1
    fi
    if ! /usr/bin/wardbox records grant -c "$CONFIG" --username qa.clinician --patient "$patient" >/dev/null 2>&1; then
        say "FAILED: cannot grant the clinician the patient"; return 1
    fi
    say "web clinician qa.clinician password $password"
}
