//! `wardbox volume …`: the encrypted data volume, for IT at the console.
//!
//! provision: format the data disk, seal its key to this box's TPM, print the recovery key once.
//! unlock:    what the agent does at boot (TPM → open → mount), by hand.
//! status:    keyslots, tokens, and whether the TPM would release the key now.
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
use wardbox_volume::{RecoveryKey, Tpm};

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
        VolumeError::Tpm(TpmError::PcrMismatch { .. } | TpmError::NotThisTpm { .. } | TpmError::CorruptBlob { .. })
            | VolumeError::NoTpmToken { .. }
            | VolumeError::BadToken { .. }
            | VolumeError::TpmKeyRejected { .. }
    )
}

fn connect(u: &TpmLuksUnlocker) -> Result<Tpm, CliError> {
    u.connect().map_err(CliError::new)
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
    let mut tpm = connect(&u)?;
    let done = ops::provision(&mut tpm, device, &policy.binding, &u.config.argon2).map_err(volume_error)?;

    let mut out = std::io::stdout().lock();
    writeln!(out, "The data volume {} is encrypted (LUKS2) and its key is sealed to this box's TPM ({}).", device.display(), done.binding)?;
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
    make_filesystem(&u, &mut tpm).map_err(|e| {
        CliError::new(format!(
            "the volume is encrypted and the recovery key above is valid, but the filesystem could not be made: {e}"
        ))
    })?;
    writeln!(out, "An ext4 filesystem was made on the volume. The agent opens and mounts it at {} at boot.", u.config.mount_point.display())?;
    Ok(ExitCode::SUCCESS)
}

/// Open the new volume through dm-crypt, make the filesystem, close it again.
fn make_filesystem(u: &TpmLuksUnlocker, tpm: &mut Tpm) -> Result<(), String> {
    let unlocked = ops::unlock_with_tpm(tpm, &u.config.device).map_err(|e| e.to_string())?;
    let mut luks = LuksVolume::open(&u.config.device, None).map_err(|e| e.to_string())?;
    let mapped = luks.activate(&u.config.mapper_name, &unlocked.volume_key).map_err(|e| e.to_string())?;
    let made = wardbox_volume::mount::make_filesystem(&u.config.mkfs, &mapped).map_err(|e| e.to_string());
    let closed = luks.deactivate(&u.config.mapper_name).map_err(|e| e.to_string());
    made.and(closed)
}

fn unlock(config: &Config) -> CliResult {
    let u = appliance_volume(config)?;
    let (_, _) = u.check_firmware().map_err(CliError::check_failed)?;
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
    let u = appliance_volume(config)?;
    let firmware = u.check_firmware();
    let mut tpm = u.connect();
    let st = ops::status(&u.config.device, tpm.as_mut().ok()).map_err(volume_error)?;
    print!("{st}");
    println!("Firmware policy {}:", u.config.firmware_policy.display());
    match &firmware {
        Ok((policy, sb)) => {
            println!("  binds the key to {}; Secure Boot {}", policy.binding, if *sb { "on" } else { "off (allowed by the policy)" });
            for b in &st.tpm_bindings {
                if let Some(sealed) = &b.binding
                    && *sealed != policy.binding
                {
                    println!("  token {} is sealed to {sealed}, not to the policy's PCRs: run `wardbox volume reseal`", b.token);
                }
            }
        }
        Err(e) => println!("  PROBLEM: {e}"),
    }
    if let Err(e) = &tpm {
        println!("TPM: {e}");
    }
    let open = u.mapped_device().exists();
    println!(
        "Opened: {}; mounted at {}: {}",
        if open { "yes" } else { "no" },
        u.config.mount_point.display(),
        if u.is_mounted() { "yes" } else { "no" }
    );
    if st.tpm_would_unseal() && firmware.is_ok() {
        Ok(ExitCode::SUCCESS)
    } else {
        println!("The box would NOT unlock unattended at the next boot.");
        Ok(ExitCode::from(3))
    }
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
    let mut tpm = connect(&u)?;
    let device = &u.config.device;
    let rebound = match ops::rotate_tpm_key(&mut tpm, device, &policy.binding, &u.config.argon2) {
        Ok(r) => {
            println!("The TPM still released the old key, so no recovery key was needed.");
            r
        }
        Err(e) if refuses(&e) => {
            eprintln!("The TPM refuses the current key: {e}");
            eprintln!("Resealing needs the recovery key.");
            let key = console.recovery_key()?;
            ops::reseal_with_recovery(&mut tpm, device, &key, &policy.binding, &u.config.argon2).map_err(volume_error)?
        }
        Err(e) => return Err(volume_error(e)),
    };
    println!(
        "The volume key is now sealed to the boot chain as it is ({}): TPM keyslot {}; removed old TPM keyslot(s) {:?}.",
        rebound.binding, rebound.new_keyslot, rebound.removed_keyslots
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
    let mut tpm = connect(&u)?;
    let r = ops::reseal_with_recovery(&mut tpm, device, &key, &policy.binding, &u.config.argon2).map_err(volume_error)?;
    println!(
        "Resealed to {}: TPM keyslot {}; removed old TPM keyslot(s) {:?}. The next boot is unattended.",
        r.binding, r.new_keyslot, r.removed_keyslots
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
    use wardbox_volume::{PcrBank, RecoveryKey};

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
    fn plain_directory_configs_are_told_there_is_no_volume() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::dev_defaults(dir.path());
        let err = status(&config).unwrap_err();
        assert!(err.to_string().contains("no encrypted volume to manage"), "{err}");
    }
}
