//! `wardbox volume …`: the encrypted data volume, for IT at the console.
//!
//! provision: format the data disk, seal its key to this box's TPM, print the recovery key once.
//! unlock:    what the agent does at boot (TPM → open → mount), by hand.
//! status:    keyslots, tokens, each TPM slot's policy mode, the PCR bank and the current values
//!            of the bound PCRs, and whether the TPM would release the key now.
//! reseal:    bind the TPM key to the boot chain as it is now (after a firmware update or a
//!            firmware-policy change); asks for the recovery key only when the TPM refuses.
//! recover:   open and mount the volume with the recovery key when the TPM refuses.
//!
//! Exit codes follow the CLI's: 1 an error, 3 the TPM refuses (the box would not boot
//! unattended).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use wardbox_volume::luks::LuksVolume;
use wardbox_volume::ops::{self, VolumeError};
use wardbox_volume::tpm::TpmError;
use wardbox_volume::{FirmwarePolicy, PcrBank, PcrBinding, PcrPolicy, RecoveryKey, Tpm};

use super::{CliError, CliResult, DEFAULT_CONFIG, load_config};
use crate::config::Config;
use crate::stages::unlock::{TpmLuksUnlocker, VolumeConfig};

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Encrypt a new data disk: format it as LUKS2, seal its key to this box's TPM, and print
    /// the recovery key (shown only once). Erases the disk.
    Provision {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Confirms that the disk may be erased: repeat the configured device path here.
        #[arg(long, value_name = "DEVICE")]
        yes_erase: Option<PathBuf>,
        /// Write the encryption header and keys only; make no filesystem (for a disk image that
        /// is finished elsewhere).
        #[arg(long)]
        no_filesystem: bool,
    },
    /// Unlock the data volume with the TPM, open it and mount it (what the agent does at boot).
    Unlock {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Show the volume's keyslots and tokens, and whether the TPM would release the key now.
    Status {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Seal the TPM key to the boot chain as it is now: after a firmware update, or after the
    /// firmware policy changed. Asks for the recovery key only if the TPM refuses the old key.
    Reseal {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Open and mount the volume with the recovery key (when the TPM refuses).
    Recover {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Also seal a new TPM key to the boot chain as it is now, so the next boot is
        /// unattended again. Only if the change that made the TPM refuse was expected.
        #[arg(long)]
        reseal: bool,
    },
}

pub fn run(cmd: VolumeCommand) -> CliResult {
    match cmd {
        VolumeCommand::Provision { config, yes_erase, no_filesystem } => {
            provision(&load_config(&config)?, yes_erase, no_filesystem)
        }
        VolumeCommand::Unlock { config } => unlock(&load_config(&config)?),
        VolumeCommand::Status { config } => status(&load_config(&config)?),
        VolumeCommand::Reseal { config } => reseal(&load_config(&config)?, &mut Console::stdin()),
        VolumeCommand::Recover { config, reseal } => recover(&load_config(&config)?, reseal, &mut Console::stdin()),
    }
}

/// The volume section as an unlocker, or a message saying there is no encrypted volume.
fn appliance_volume(config: &Config) -> Result<TpmLuksUnlocker, CliError> {
    match &config.volume {
        VolumeConfig::Luks2Tpm(c) => Ok(TpmLuksUnlocker::new(c.clone())),
        VolumeConfig::PlainDirectory { data_dir } => Err(CliError::new(format!(
            "this configuration keeps the data in the plain directory {} (dev mode): there is no \
             encrypted volume to manage. Set [volume] mode = \"luks2-tpm\" to use one",
            data_dir.display()
        ))),
    }
}

/// TPM refusals get exit code 3 and the recovery hint; other errors exit 1.
fn volume_error(e: VolumeError) -> CliError {
    if refuses(&e) { CliError::check_failed(e.to_string()) } else { CliError::new(e.to_string()) }
}

/// Errors that mean "the TPM will not give this volume's key": the recovery key is the way on.
fn refuses(e: &VolumeError) -> bool {
    matches!(
        e,
        VolumeError::Tpm(
            TpmError::PcrMismatch { .. }
                | TpmError::NotThisTpm { .. }
                | TpmError::CorruptBlob { .. }
                | TpmError::Pcr11NotSigned { .. }
                | TpmError::PcrSignatureInvalid { .. }
                // Inside the volume operations these are only the booted image's signature file
                // (unreadable or damaged): the TPM cannot be asked, the recovery key is the way.
                | TpmError::Signature(_)
        )
            | VolumeError::NoTpmToken { .. }
            | VolumeError::BadToken { .. }
            | VolumeError::TpmKeyRejected { .. }
    )
}

fn connect(u: &TpmLuksUnlocker) -> Result<Tpm, CliError> {
    u.connect().map_err(CliError::new)
}

/// What the firmware policy asks the key to be sealed to (reads the PCR-signing public key when
/// the policy has `[signed_pcr11]`).
fn pcr_policy(policy: &FirmwarePolicy) -> Result<PcrPolicy, CliError> {
    PcrPolicy::from_firmware(policy).map_err(|e| CliError::new(e.to_string()))
}

fn provision(config: &Config, yes_erase: Option<PathBuf>, no_filesystem: bool) -> CliResult {
    let u = appliance_volume(config)?;
    let device = &u.config.device;
    if yes_erase.as_ref() != Some(device) {
        return Err(CliError::new(format!(
            "provisioning ERASES {dev}. If that is the new data disk, run again with \
             `--yes-erase {dev}`",
            dev = device.display()
        )));
    }
    let (policy, _) = u.check_firmware().map_err(CliError::new)?;
    let sealed_to = pcr_policy(&policy)?;
    let mut tpm = connect(&u)?;
    let done = ops::provision(&mut tpm, device, &sealed_to, &u.config.argon2).map_err(volume_error)?;

    let mut out = std::io::stdout().lock();
    writeln!(out, "The data volume {} is encrypted (LUKS2) and its key is sealed to this box's TPM ({}).", device.display(), done.policy)?;
    writeln!(out)?;
    writeln!(out, "RECOVERY KEY: write it down now and keep it locked away. It is shown only this once.")?;
    writeln!(out, "It opens the data if the TPM ever refuses (firmware update, motherboard swap, tampering).")?;
    writeln!(out)?;
    writeln!(out, "    {}", done.recovery_key.display())?;
    writeln!(out)?;
    writeln!(
        out,
        "Keyslots: TPM key in slot {}, recovery key in slot {}. Volume UUID {}.",
        done.tpm_keyslot, done.recovery_keyslot, done.uuid
    )?;
    out.flush()?;
    drop(done);

    if no_filesystem {
        writeln!(out, "No filesystem was made (--no-filesystem).")?;
        return Ok(ExitCode::SUCCESS);
    }
    let backup_key = make_filesystem(&u, &mut tpm).map_err(|e| {
        CliError::new(format!(
            "the volume is encrypted and the recovery key above is valid, but the filesystem could not be made: {e}"
        ))
    })?;
    writeln!(out, "An ext4 filesystem was made on the volume. The agent opens and mounts it at {} at boot.", u.config.mount_point.display())?;
    writeln!(out)?;
    match backup_key {
        // Printed only here, on the console (as the recovery key): never logged or audited.
        Ok(key) => {
            writeln!(out, "BACKUP KEY: write it down beside the recovery key and keep both locked away. It is shown only this once here.")?;
            writeln!(out, "It opens this box's backups (USB disk or LAN server) to restore onto a replacement box after a disaster:")?;
            writeln!(out, "`wardbox backup restore-box --key-file FILE` with this key typed into FILE.")?;
            writeln!(out)?;
            writeln!(out, "    {}", crate::backup::escrow::grouped(&key).as_str())?;
            writeln!(out)?;
            writeln!(out, "Backup key fingerprint {} (backup records and the admin page name the key by it).", key.fingerprint())?;
        }
        Err(e) => {
            writeln!(out, "NO BACKUP KEY on this sheet: it could not be left on the volume ({e}).")?;
            writeln!(out, "The first backup makes one: print it from the admin page's escrow sheet (Backups) or with `wardbox backup key`, and keep it with the recovery key.")?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Open the new volume through dm-crypt, make the filesystem, leave the backup key escrowed at
/// provisioning on it (the inner result: the volume is usable without it), close it again.
fn make_filesystem(u: &TpmLuksUnlocker, tpm: &mut Tpm) -> Result<Result<wardbox_backup::RepositoryKey, String>, String> {
    let unlocked = ops::unlock_with_tpm(tpm, &u.config.device).map_err(|e| e.to_string())?;
    let mut luks = LuksVolume::open(&u.config.device, None).map_err(|e| e.to_string())?;
    let mapped = luks.activate(&u.config.mapper_name, &unlocked.volume_key).map_err(|e| e.to_string())?;
    let made = wardbox_volume::mount::make_filesystem(&u.config.mkfs, &mapped).map_err(|e| e.to_string());
    let backup_key = match &made {
        Ok(()) => escrow_backup_key(&mapped, &u.config.mount_point),
        Err(_) => Err("no filesystem".to_string()),
    };
    let closed = close_when_released(&mut luks, &u.config.mapper_name);
    made.and(closed).map(|()| backup_key)
}

/// Mount the new filesystem, make the backup repository key and leave it there for the store
/// to adopt at its first use (`backup::escrow`), unmount.
fn escrow_backup_key(mapped: &std::path::Path, mount_point: &std::path::Path) -> Result<wardbox_backup::RepositoryKey, String> {
    wardbox_volume::mount::mount_volume(mapped, mount_point).map_err(|e| e.to_string())?;
    let key = crate::backup::escrow::provision_key(mount_point).map_err(|e| e.to_string());
    let unmounted = wardbox_volume::mount::unmount_volume(mount_point).map_err(|e| e.to_string());
    match (key, unmounted) {
        (Ok(key), Ok(())) => Ok(key),
        // Still mounted: take the key off again, so the store never adopts a key that is on no sheet.
        (Ok(_), Err(e)) => {
            let removed = crate::backup::escrow::remove_waiting_key(mount_point).map_err(|r| r.to_string());
            Err(match removed {
                Ok(()) => e,
                Err(r) => format!("{e}; and the key left on the volume could not be removed ({r}): delete it before the first backup"),
            })
        }
        (Err(e), _) => Err(e),
    }
}

/// Remove the mapping, waiting for whoever still holds it. Right after mkfs, udev probes the new
/// filesystem and keeps the device open for a moment; libcryptsetup's own retries last about
/// five seconds, which a loaded machine can outlast, and a mapping left open would make the
/// unlock that follows provisioning fail. Gives up after a minute, naming the error.
fn close_when_released(luks: &mut LuksVolume, name: &str) -> Result<(), String> {
    const PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);
    let started = std::time::Instant::now();
    loop {
        match luks.deactivate(name) {
            Ok(()) => return Ok(()),
            Err(e) if started.elapsed() >= PATIENCE => {
                return Err(format!("{e} (still busy after {} s)", PATIENCE.as_secs()));
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_secs(1)),
        }
    }
}

fn unlock(config: &Config) -> CliResult {
    let u = appliance_volume(config)?;
    // Before the TPM is asked: a boot the firmware policy refuses is not for the recovery key
    // to wave through (exit 4; the console does not prompt for it, docs/image.md).
    let (_, _) = u.check_firmware().map_err(CliError::firmware_refused)?;
    let mut tpm = connect(&u)?;
    let unlocked = ops::unlock_with_tpm(&mut tpm, &u.config.device).map_err(|e| {
        let refused = refuses(&e);
        let text = format!("{e}");
        if refused { CliError::check_failed(text) } else { CliError::new(text) }
    })?;
    u.open_and_mount(&unlocked).map_err(CliError::new)?;
    println!("The TPM released the key; the volume is open and mounted at {}.", u.config.mount_point.display());
    Ok(ExitCode::SUCCESS)
}

fn status(config: &Config) -> CliResult {
    let (text, code) = status_report(config)?;
    print!("{text}");
    Ok(code)
}

/// `wardbox volume status` as text and exit code: the volume's keyslots and TPM slots (each
/// with its policy mode), the PCR bank and the current values of the PCRs the slots and the
/// firmware policy bind, the firmware policy, and whether the next boot unlocks unattended.
fn status_report(config: &Config) -> Result<(String, ExitCode), CliError> {
    use std::fmt::Write as _;
    let u = appliance_volume(config)?;
    let firmware = u.check_firmware();
    let mut tpm = u.connect();
    let st = ops::status(&u.config.device, tpm.as_mut().ok()).map_err(volume_error)?;
    let mut out = st.to_string();
    for b in &st.tpm_bindings {
        if let Some(policy) = &b.policy {
            let key = policy.signed_pcr11.as_ref().map_or_else(String::new, |k| format!(" (PCR-signing key {})", k.fingerprint_hex()));
            writeln!(out, "  token {} policy mode: {}{key}", b.token, policy.mode())?;
        }
    }
    let wanted = firmware.as_ref().ok().map(|(policy, _)| pcr_policy(policy));
    if let Ok(tpm) = tpm.as_mut() {
        let (bank, pcrs) = bound_pcrs(&st, firmware.as_ref().ok().map(|(p, _)| p));
        match PcrBinding::new(bank, &pcrs).map_err(|e| e.to_string()).and_then(|b| tpm.read_pcrs(&b).map_err(|e| e.to_string())) {
            Ok(values) => {
                writeln!(out, "PCR bank {bank}, current values:")?;
                for (pcr, value) in values {
                    writeln!(out, "  PCR {pcr:>2}: {}", hex::encode(value))?;
                }
            }
            Err(e) => writeln!(out, "PCR values: cannot be read ({e})")?,
        }
    }
    writeln!(out, "Firmware policy {}:", u.config.firmware_policy.display())?;
    match (&firmware, wanted) {
        (Err(e), _) => writeln!(out, "  PROBLEM: {e}")?,
        (Ok(_), None) => {}
        (Ok(_), Some(Err(e))) => writeln!(out, "  PROBLEM: {e}")?,
        (Ok((_, sb)), Some(Ok(wanted))) => {
            writeln!(out, "  binds the key to {wanted}; Secure Boot {}", if *sb { "on" } else { "off (allowed by the policy)" })?;
            for b in &st.tpm_bindings {
                if let Some(sealed) = &b.policy
                    && *sealed != wanted
                {
                    writeln!(out, "  token {} is sealed to {sealed}, not to the policy's {wanted}: run `wardbox volume reseal`", b.token)?;
                }
            }
        }
    }
    if let Err(e) = &tpm {
        writeln!(out, "TPM: {e}")?;
    }
    let efivars = &u.config.efivars_dir;
    writeln!(
        out,
        "Boot: {}; boot entry {}",
        wardbox_firmware_policy::read_secure_boot_state(efivars),
        wardbox_firmware_policy::read_loader_entry_selected(efivars)
            .unwrap_or_else(|| "unknown (not started by systemd-boot)".into())
    )?;
    let open = u.mapped_device().exists();
    writeln!(
        out,
        "Opened: {}; mounted at {}: {}",
        if open { "yes" } else { "no" },
        u.config.mount_point.display(),
        if u.is_mounted() { "yes" } else { "no" }
    )?;
    if st.tpm_would_unseal() && firmware.is_ok() {
        Ok((out, ExitCode::SUCCESS))
    } else {
        writeln!(out, "The box would NOT unlock unattended at the next boot.")?;
        Ok((out, ExitCode::from(3)))
    }
}

/// The bank and PCRs to show: those the TPM slots are sealed to (literal ones, and 11 when
/// signed), and the firmware policy's; sha256 PCR 7 when there is neither.
fn bound_pcrs(st: &ops::VolumeStatus, firmware: Option<&FirmwarePolicy>) -> (PcrBank, Vec<u8>) {
    let mut bank = None;
    let mut pcrs: Vec<u8> = Vec::new();
    let sealed = st.tpm_bindings.iter().filter_map(|b| b.policy.as_ref()).map(|p| (p.binding.clone(), p.signed_pcr11.is_some()));
    let wanted = firmware.map(|f| (f.binding.clone(), f.signed_pcr11.is_some()));
    for (binding, signed) in sealed.chain(wanted) {
        bank.get_or_insert(binding.bank());
        pcrs.extend_from_slice(binding.pcrs());
        if signed {
            pcrs.push(wardbox_volume::pcrsig::SIGNED_PCR);
        }
    }
    pcrs.sort_unstable();
    pcrs.dedup();
    if pcrs.is_empty() {
        pcrs.push(7);
    }
    (bank.unwrap_or(PcrBank::Sha256), pcrs)
}

/// Where the recovery key is typed: the terminal, or (tests, scripts) any reader.
struct Console<'a> {
    input: Box<dyn BufRead + 'a>,
    /// On a terminal a typo may be corrected (3 tries); from a pipe one line is taken as is.
    interactive: bool,
}

impl Console<'_> {
    fn stdin() -> Self {
        let stdin = std::io::stdin();
        let interactive = stdin.is_terminal();
        Console { input: Box::new(stdin.lock()), interactive }
    }

    /// Read the recovery key. The typed line is zeroed after parsing.
    fn recovery_key(&mut self) -> Result<RecoveryKey, CliError> {
        let tries = if self.interactive { 3 } else { 1 };
        let mut last = String::new();
        for _ in 0..tries {
            eprint!("Type the recovery key (8 groups of 5 characters; dashes and spaces optional) and press Enter: ");
            let mut line = zeroize::Zeroizing::new(String::new());
            if self.input.read_line(&mut line)? == 0 {
                return Err(CliError::new("no recovery key was given (end of input)"));
            }
            match RecoveryKey::parse(&line) {
                Ok(key) => return Ok(key),
                Err(e) => {
                    last = e.to_string();
                    if self.interactive {
                        eprintln!("{last}");
                    }
                }
            }
        }
        Err(CliError::new(last))
    }
}

fn reseal(config: &Config, console: &mut Console<'_>) -> CliResult {
    let u = appliance_volume(config)?;
    let (policy, _) = u.check_firmware().map_err(CliError::new)?;
    let sealed_to = pcr_policy(&policy)?;
    let mut tpm = connect(&u)?;
    let device = &u.config.device;
    let rebound = match ops::rotate_tpm_key(&mut tpm, device, &sealed_to, &u.config.argon2) {
        Ok(r) => {
            println!("The TPM still released the old key, so no recovery key was needed.");
            r
        }
        Err(e) if refuses(&e) => {
            eprintln!("The TPM refuses the current key: {e}");
            eprintln!("Resealing needs the recovery key.");
            let key = console.recovery_key()?;
            ops::reseal_with_recovery(&mut tpm, device, &key, &sealed_to, &u.config.argon2).map_err(volume_error)?
        }
        Err(e) => return Err(volume_error(e)),
    };
    println!(
        "The volume key is now sealed to the boot chain as it is ({}): TPM keyslot {}; removed old TPM keyslot(s) {:?}.",
        rebound.policy, rebound.new_keyslot, rebound.removed_keyslots
    );
    println!("The box will unlock unattended at the next boot.");
    Ok(ExitCode::SUCCESS)
}

fn recover(config: &Config, and_reseal: bool, console: &mut Console<'_>) -> CliResult {
    let u = appliance_volume(config)?;
    let device = &u.config.device;
    // Check the key against the header before asking anything else of the box.
    let key = console.recovery_key()?;
    let unlocked = ops::unlock_with_recovery(device, &key).map_err(volume_error)?;
    u.open_and_mount(&unlocked).map_err(CliError::new)?;
    println!("The recovery key opened the volume; it is mounted at {}.", u.config.mount_point.display());
    if !and_reseal {
        println!(
            "The TPM binding is unchanged: the agent will not start on its own until `wardbox volume reseal` \
             is run (do that only if the change that made the TPM refuse was expected, e.g. a firmware update)."
        );
        return Ok(ExitCode::SUCCESS);
    }
    let (policy, _) = u.check_firmware().map_err(CliError::new)?;
    let sealed_to = pcr_policy(&policy)?;
    let mut tpm = connect(&u)?;
    let r = ops::reseal_with_recovery(&mut tpm, device, &key, &sealed_to, &u.config.argon2).map_err(volume_error)?;
    println!(
        "Resealed to {}: TPM keyslot {}; removed old TPM keyslot(s) {:?}. The next boot is unattended.",
        r.policy, r.new_keyslot, r.removed_keyslots
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    //! The commands against a real software TPM and a LUKS2 file. Activation and mount need
    //! device-mapper, which the build host lacks: `unlock` and `recover` are exercised up to
    //! the TPM decision here, and fully in the qemu guest test of the image (issue 9).
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::stages::unlock::Luks2TpmConfig;
    use wardbox_volume::luks::KdfParams;
    use wardbox_volume::swtpm::SoftwareTpm;

    struct Fixture {
        _dir: tempfile::TempDir,
        tpm: SoftwareTpm,
        config: Config,
        device: PathBuf,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let tpm = SoftwareTpm::start(&dir.path().join("tpm-state").tap_mkdir())
            .unwrap_or_else(|e| panic!("swtpm_ CLI tests need a software TPM: {e}"));
        let policy = dir.path().join("firmware-policy.toml");
        std::fs::write(&policy, wardbox_firmware_policy::DEFAULT_POLICY_TOML).unwrap();
        let efivars = dir.path().join("efivars").tap_mkdir();
        std::fs::write(efivars.join("SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"), [6, 0, 0, 0, 1]).unwrap();
        let device = dir.path().join("data.img");
        std::fs::File::create(&device).unwrap().set_len(32 * 1024 * 1024).unwrap();
        let mut config = Config::dev_defaults(dir.path());
        config.volume = VolumeConfig::Luks2Tpm(Luks2TpmConfig {
            device: device.clone(),
            mapper_name: "wardbox-test".into(),
            mount_point: dir.path().join("mnt"),
            tcti: tpm.tcti(),
            firmware_policy: policy,
            efivars_dir: efivars,
            argon2: KdfParams::TEST_ONLY_MINIMAL,
            mkfs: PathBuf::from("/usr/sbin/mkfs.ext4"),
        });
        config.validate().unwrap();
        Fixture { _dir: dir, tpm, config, device }
    }

    trait TapMkdir {
        fn tap_mkdir(self) -> Self;
    }
    impl TapMkdir for PathBuf {
        fn tap_mkdir(self) -> Self {
            std::fs::create_dir_all(&self).unwrap();
            self
        }
    }

    fn piped(text: &str) -> Console<'static> {
        Console { input: Box::new(std::io::Cursor::new(text.as_bytes().to_vec())), interactive: false }
    }

    fn sha(path: &std::path::Path) -> Vec<u8> {
        use sha2::Digest;
        sha2::Sha256::digest(std::fs::read(path).unwrap()).to_vec()
    }

    #[test]
    fn swtpm_cli_provision_status_reseal_round_trip() {
        let f = fixture();
        // Without the confirmation nothing is written.
        let before = sha(&f.device);
        let err = provision(&f.config, None, true).unwrap_err();
        assert!(err.to_string().contains("--yes-erase"), "{err}");
        assert_eq!(sha(&f.device), before);

        assert_eq!(provision(&f.config, Some(f.device.clone()), true).unwrap(), ExitCode::SUCCESS);
        assert_eq!(status(&f.config).unwrap(), ExitCode::SUCCESS);
        // Provisioning twice is refused.
        assert!(provision(&f.config, Some(f.device.clone()), true).unwrap_err().to_string().contains("already holds a LUKS volume"));

        // Reseal while the TPM still releases the key: no recovery key needed (empty input).
        assert_eq!(reseal(&f.config, &mut piped("")).unwrap(), ExitCode::SUCCESS);

        // The boot chain changes: status says the next boot needs the recovery key (exit 3),
        // unlock refuses with exit 3 before any device-mapper work.
        let mut tpm = wardbox_volume::Tpm::connect(&f.tpm.tcti()).unwrap();
        tpm.extend_pcr(PcrBank::Sha256, 7, b"new firmware").unwrap();
        drop(tpm);
        assert_eq!(status(&f.config).unwrap(), ExitCode::from(3));
        let err = unlock(&f.config).unwrap_err();
        assert_eq!(err.exit_code(), ExitCode::from(3));
        assert!(err.to_string().contains("the boot chain changed since the key was sealed"), "{err}");

        // Secure Boot turned off: refused before the TPM is asked, with exit 4 (the console
        // does not ask for the recovery key: it would not help), nothing written.
        let VolumeConfig::Luks2Tpm(c) = &f.config.volume else { unreachable!() };
        let secure_boot = c.efivars_dir.join("SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c");
        std::fs::write(&secure_boot, [6, 0, 0, 0, 0]).unwrap();
        let before = sha(&f.device);
        let err = unlock(&f.config).unwrap_err();
        assert_eq!(err.exit_code(), ExitCode::from(4), "{err}");
        assert!(err.to_string().contains("requires Secure Boot, but the firmware reports Secure Boot off"), "{err}");
        assert_eq!(sha(&f.device), before);
        std::fs::write(&secure_boot, [6, 0, 0, 0, 1]).unwrap();

        // Reseal with a wrong key, then a typo: refused, volume unchanged.
        let before = sha(&f.device);
        let wrong = RecoveryKey::generate().unwrap();
        let err = reseal(&f.config, &mut piped(&format!("{}\n", wrong.display()))).unwrap_err();
        assert!(err.to_string().contains("does not open"), "{err}");
        let err = reseal(&f.config, &mut piped("AAAAA-AAAAA\n")).unwrap_err();
        assert!(err.to_string().contains("40 characters"), "{err}");
        assert_eq!(sha(&f.device), before);
        let err = recover(&f.config, false, &mut piped(&format!("{}\n", wrong.display()))).unwrap_err();
        assert!(err.to_string().contains("does not open"), "{err}");
        assert_eq!(sha(&f.device), before);
    }

    #[test]
    fn swtpm_cli_reseal_with_the_printed_recovery_key() {
        let f = fixture();
        let VolumeConfig::Luks2Tpm(c) = &f.config.volume else { unreachable!() };
        // Provision through the library to keep the recovery key (the CLI only prints it).
        let policy = wardbox_volume::FirmwarePolicy::load(&c.firmware_policy).unwrap();
        let mut tpm = wardbox_volume::Tpm::connect(&c.tcti).unwrap();
        let p = wardbox_volume::ops::provision(&mut tpm, &f.device, &policy.binding, &c.argon2).unwrap();
        tpm.extend_pcr(PcrBank::Sha256, 7, b"new firmware").unwrap();
        drop(tpm);
        assert_eq!(status(&f.config).unwrap(), ExitCode::from(3));
        let typed = p.recovery_key.display().to_lowercase().replace('-', " ");
        assert_eq!(reseal(&f.config, &mut piped(&format!("{typed}\n"))).unwrap(), ExitCode::SUCCESS);
        assert_eq!(status(&f.config).unwrap(), ExitCode::SUCCESS);
    }

    #[test]
    fn swtpm_cli_status_shows_the_bank_the_bound_pcr_values_and_the_policy_mode() {
        let f = fixture();
        assert_eq!(provision(&f.config, Some(f.device.clone()), true).unwrap(), ExitCode::SUCCESS);
        let mut tpm = wardbox_volume::Tpm::connect(&f.tpm.tcti()).unwrap();
        let pcr7 = tpm.read_pcrs(&PcrBinding::new(PcrBank::Sha256, &[7]).unwrap()).unwrap().remove(0).1;
        drop(tpm);
        let (text, code) = status_report(&f.config).unwrap();
        assert_eq!(code, ExitCode::SUCCESS, "{text}");
        assert!(text.contains("PCR bank sha256, current values:"), "{text}");
        assert!(text.contains(&format!("PCR  7: {}", hex::encode(&pcr7))), "{text}");
        assert!(!text.contains("PCR 11:"), "only the bound PCRs are shown: {text}");
        assert!(text.contains("policy mode: literal PCRs\n"), "{text}");
        // The measured boot: Secure Boot, and which entry systemd-boot started (none here).
        assert!(text.contains("Boot: Secure Boot is on; boot entry unknown (not started by systemd-boot)\n"), "{text}");
        let VolumeConfig::Luks2Tpm(c) = &f.config.volume else { unreachable!() };
        let mut entry = vec![6, 0, 0, 0];
        entry.extend("wardbox-0.1.0+3.efi\0".encode_utf16().flat_map(u16::to_le_bytes));
        std::fs::write(c.efivars_dir.join(format!("LoaderEntrySelected-{}", wardbox_firmware_policy::LOADER_GUID)), entry)
            .unwrap();
        let (text, _) = status_report(&f.config).unwrap();
        assert!(text.contains("Boot: Secure Boot is on; boot entry wardbox-0.1.0+3.efi\n"), "{text}");

        // The firmware policy now asks for the signed PCR 11 mode: status shows PCR 11 too and
        // says the slot is sealed the old way.
        let VolumeConfig::Luks2Tpm(c) = &f.config.volume else { unreachable!() };
        let key = f._dir.path().join("pcr-sign.pub.pem");
        std::fs::write(&key, TEST_PCR_SIGNING_KEY).unwrap();
        let mut policy = wardbox_firmware_policy::DEFAULT_POLICY_TOML.to_string();
        policy.push_str(&format!("\n[signed_pcr11]\npublic_key = \"{}\"\n", key.display()));
        std::fs::write(&c.firmware_policy, policy).unwrap();
        let (text, _) = status_report(&f.config).unwrap();
        assert!(text.contains("PCR 11: "), "{text}");
        assert!(text.contains("not to the policy's sha256 PCRs 7 + PCR 11 signed by key"), "{text}");
    }

    /// An RSA 2048 public key (PEM), standing in for the fleet's PCR-signing key.
    const TEST_PCR_SIGNING_KEY: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA0CzSpRMpGxH8L25HlDAR
8ygWdN21t5pJE+IHUDByIUEDzsxRmj24CmOLEdPtEZSqy4Bs6hMI04Pu/rU2gmK4
3FZHw3DmLjapzuw+KlMG8Oa1dgZ1MSlLiotbZip0+bG8EUq52OW4uE+EXSxyD93n
VSVCWDIHFV2y4syd24EDreMosRhrc+iHJz+0maC2leHwOZYnquSupjUqJCqVtmI3
P4qRYg2vPzuhraQFiGuUJsiC6ezrzHtT7gYDSEXumZIT/XSUhnHmi+BXEAwo8kcz
WeH+77u6Equ2TUruEMitajDHfw8r0xh9WCIfOHfIZT4xHhqrd7BvAgLQ/H8gKXH/
TwIDAQAB
-----END PUBLIC KEY-----
";

    #[test]
    fn plain_directory_configs_are_told_there_is_no_volume() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::dev_defaults(dir.path());
        let err = status(&config).unwrap_err();
        assert!(err.to_string().contains("no encrypted volume to manage"), "{err}");
    }
}
