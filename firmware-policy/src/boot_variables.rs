//! The UEFI variables that say how this boot was verified: the Secure Boot mode (`SecureBoot`,
//! `SetupMode`, `AuditMode`, `DeployedMode`) and what systemd-boot and systemd-stub left for the
//! running system (`LoaderEntrySelected`, `LoaderBootCountPath`, `StubInfo`). Read only; the
//! compliance report judges them (a pure check in the report crate).

use std::path::Path;

use super::{EFI_GLOBAL_GUID, LOADER_GUID, decode_loader_string};

/// The firmware side of the measured boot, as efivarfs shows it. Each `None` is a variable that
/// is absent or not in the form the specification gives it; the reader of this struct decides
/// what an absent variable means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootVariables {
    /// `SecureBoot`: 1 when the firmware verifies what it starts (only with a platform key
    /// enrolled and not in setup mode).
    pub secure_boot: Option<bool>,
    /// `SetupMode`: 1 when no platform key is enrolled, so anyone may enrol keys and nothing is
    /// enforced.
    pub setup_mode: Option<bool>,
    /// `AuditMode` (UEFI 2.5 and later): 1 when images that fail verification still run and are
    /// only logged. Absent on older firmware, which has no audit mode.
    pub audit_mode: Option<bool>,
    /// `DeployedMode` (UEFI 2.5 and later): 1 when the platform cannot be put back into setup or
    /// audit mode from the OS.
    pub deployed_mode: Option<bool>,
    /// systemd-boot's `LoaderEntrySelected`: the entry it started (for a UKI, its file name under
    /// `EFI/Linux` before this boot's try was counted).
    pub loader_entry_selected: Option<String>,
    /// systemd-boot's `LoaderBootCountPath`: set only when the started entry carried a try
    /// counter (`+N`), i.e. it was not blessed when it booted; the path after the try was counted.
    pub loader_boot_count_path: Option<String>,
    /// systemd-stub's `StubInfo` (e.g. `systemd-stub 252.39-1~deb12u2`): set only when the
    /// kernel was started from a unified kernel image's stub.
    pub stub_info: Option<String>,
}

impl BootVariables {
    /// Read the variables from an efivars directory (normally [`super::DEFAULT_EFIVARS_DIR`]).
    /// An error when the directory does not exist: the box was not booted through UEFI (or the
    /// kernel does not show the variables), so there is nothing to judge.
    pub fn read(efivars_dir: &Path) -> Result<Self, String> {
        if !efivars_dir.is_dir() {
            return Err(format!("{} does not exist: not booted through UEFI", efivars_dir.display()));
        }
        let global = |name: &str| read_flag(&efivars_dir.join(format!("{name}-{EFI_GLOBAL_GUID}")));
        let loader = |name: &str| {
            std::fs::read(efivars_dir.join(format!("{name}-{LOADER_GUID}"))).ok().and_then(|b| decode_loader_string(&b))
        };
        Ok(BootVariables {
            secure_boot: global("SecureBoot"),
            setup_mode: global("SetupMode"),
            audit_mode: global("AuditMode"),
            deployed_mode: global("DeployedMode"),
            loader_entry_selected: loader("LoaderEntrySelected"),
            loader_boot_count_path: loader("LoaderBootCountPath"),
            stub_info: loader("StubInfo"),
        })
    }
}

/// A one-byte UEFI flag variable (4 bytes of attributes, then 0 or 1); `None` when absent or of
/// another form.
fn read_flag(path: &Path) -> Option<bool> {
    match std::fs::read(path).ok()?.as_slice() {
        [_, _, _, _, 1] => Some(true),
        [_, _, _, _, 0] => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn utf16(text: &str) -> Vec<u8> {
        let mut bytes = vec![6, 0, 0, 0];
        bytes.extend(text.encode_utf16().chain([0]).flat_map(u16::to_le_bytes));
        bytes
    }

    #[test]
    fn the_secure_boot_mode_and_the_loader_and_stub_variables_are_read_from_efivars() {
        let dir = tempfile::tempdir().unwrap();
        let put = |name: &str, guid: &str, bytes: &[u8]| std::fs::write(dir.path().join(format!("{name}-{guid}")), bytes).unwrap();
        put("SecureBoot", EFI_GLOBAL_GUID, &[6, 0, 0, 0, 1]);
        put("SetupMode", EFI_GLOBAL_GUID, &[6, 0, 0, 0, 0]);
        put("AuditMode", EFI_GLOBAL_GUID, &[6, 0, 0, 0, 0]);
        put("DeployedMode", EFI_GLOBAL_GUID, &[6, 0, 0]);
        put("LoaderEntrySelected", LOADER_GUID, &utf16("wardbox-0.4.0+3.efi"));
        put("LoaderBootCountPath", LOADER_GUID, &utf16("\\EFI\\Linux\\wardbox-0.4.0+2-1.efi"));
        put("StubInfo", LOADER_GUID, &utf16("systemd-stub 252.39-1~deb12u2"));
        let vars = BootVariables::read(dir.path()).unwrap();
        assert_eq!(
            vars,
            BootVariables {
                secure_boot: Some(true),
                setup_mode: Some(false),
                audit_mode: Some(false),
                deployed_mode: None,
                loader_entry_selected: Some("wardbox-0.4.0+3.efi".into()),
                loader_boot_count_path: Some("\\EFI\\Linux\\wardbox-0.4.0+2-1.efi".into()),
                stub_info: Some("systemd-stub 252.39-1~deb12u2".into()),
            }
        );
        // A box booted without systemd-boot and its stub: the loader variables are simply absent.
        let empty = tempfile::tempdir().unwrap();
        let vars = BootVariables::read(empty.path()).unwrap();
        assert_eq!((vars.secure_boot, vars.loader_entry_selected, vars.stub_info), (None, None, None));
        let err = BootVariables::read(&empty.path().join("efivars")).unwrap_err();
        assert!(err.contains("not booted through UEFI"), "{err}");
    }
}
