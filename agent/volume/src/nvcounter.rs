//! A TPM NV counter: the box's anti-rollback counter for the system version (docs/update.md).
//!
//! A TPM 2.0 counter index (`TPM_NT_COUNTER`, 64 bits) can only go up: `TPM2_NV_Increment` adds
//! one, nothing writes a value, and an index that is deleted and defined again starts, at its
//! first increment, at the highest value any counter on this TPM ever had. So whoever restores
//! an old disk image or state partition, or deletes the index with the owner's authorisation,
//! cannot make the counter smaller.
//!
//! The index this module defines, and the only shape it accepts when it finds one:
//! counter type, 8 bytes, SHA-256 name, written and read with the owner hierarchy's
//! authorisation (`OWNERWRITE | OWNERREAD`), no index password writes (`AUTHWRITE`), no policy
//! writes (`POLICYWRITE`), no platform writes, no policy delete, not orderly (every increment
//! reaches NV at once). An index at the handle with any other shape was not made by this module
//! and is refused: an ordinary index there could be written with any value.
//!
//! There may be no resource manager (swtpm, `/dev/tpm0`): nothing here creates a transient
//! object or a session (the owner's authorisation is the empty password on the appliance,
//! docs/volume.md), and every ESYS handle is closed before a call returns.

use std::str::FromStr;

use tss_esapi::{
    Context, TctiNameConf,
    attributes::{NvIndexAttributes, NvIndexAttributesBuilder},
    constants::{CapabilityType, NvIndexType, response_code::Tss2ResponseCodeKind, tss::TPM2_TRANSIENT_FIRST},
    handles::{NvIndexHandle, NvIndexTpmHandle, ObjectHandle, TpmHandle},
    interface_types::{
        algorithm::HashingAlgorithm,
        resource_handles::{NvAuth, Provision},
        session_handles::AuthSession,
    },
    structures::{NvPublic, NvPublicBuilder},
    tss2_esys::TPMA_NV,
};

use crate::tpm::{TctiSpec, TpmError, parse_tcti};

/// The NV index of the system-version counter, in the owner's range of the TCG handle
/// registry (0x01000000–0x013FFFFF).
pub const SYSTEM_VERSION_COUNTER: u32 = 0x0130_5742;

/// Errors of the counter.
#[derive(Debug, thiserror::Error)]
pub enum CounterError {
    /// No TPM, or a TCTI string this agent does not accept.
    #[error(transparent)]
    Connect(#[from] TpmError),
    #[error("the TPM command {op} on NV index {index:#010x} failed: {source}")]
    Command { op: &'static str, index: u32, source: tss_esapi::Error },
    /// Something else sits at the counter's handle.
    #[error(
        "NV index {index:#010x} is not this box's anti-rollback counter ({why}); it was not made by \
         the agent, and a counter that could be written at will protects nothing"
    )]
    NotOurs { index: u32, why: String },
    /// Defining it failed because an index is already there.
    #[error("NV index {index:#010x} is already defined")]
    AlreadyDefined { index: u32 },
}

/// What the counter's handle holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterValue {
    /// No index at the handle.
    Absent,
    /// Defined, never incremented (a TPM counter has no value before its first increment).
    Unwritten,
    Value(u64),
}

/// A connection to one counter index.
pub struct NvCounter {
    ctx: Context,
    index: u32,
}

impl std::fmt::Debug for NvCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvCounter").field("index", &format_args!("{:#010x}", self.index)).finish_non_exhaustive()
    }
}

/// The attributes this module defines the counter with.
fn counter_attributes() -> Result<NvIndexAttributes, tss_esapi::Error> {
    NvIndexAttributesBuilder::new()
        .with_nv_index_type(NvIndexType::Counter)
        .with_owner_write(true)
        .with_owner_read(true)
        .with_no_da(true)
        .build()
}

/// The `TPMA_NV_WRITTEN` bit: set by the TPM at the first increment, not part of the shape.
const WRITTEN: TPMA_NV = 1 << 29;

/// Why a found index is not ours, or none. Pure: the checks are unit-tested.
fn shape_problem(public: &NvPublic) -> Option<String> {
    let expected = match counter_attributes().and_then(TPMA_NV::try_from) {
        Ok(a) => a,
        Err(e) => return Some(format!("cannot build the expected attributes: {e}")),
    };
    let attrs = public.attributes();
    if attrs.index_type().ok() != Some(NvIndexType::Counter) {
        return Some(format!("its type is {:?}, not a counter", attrs.index_type().ok()));
    }
    if attrs.auth_write() || attrs.policy_write() || attrs.pp_write() {
        return Some("it can be written without the owner's authorisation (AUTHWRITE, POLICYWRITE or PPWRITE)".into());
    }
    let found = match TPMA_NV::try_from(attrs) {
        Ok(a) => a & !WRITTEN,
        Err(e) => return Some(format!("its attributes do not convert: {e}")),
    };
    if found != expected {
        return Some(format!("its attributes are {found:#010x}, expected {expected:#010x}"));
    }
    if public.data_size() != 8 {
        return Some(format!("it holds {} bytes, not 8", public.data_size()));
    }
    if public.name_algorithm() != HashingAlgorithm::Sha256 {
        return Some(format!("its name algorithm is {:?}, not SHA-256", public.name_algorithm()));
    }
    None
}

fn tss_kind(e: &tss_esapi::Error) -> Option<Tss2ResponseCodeKind> {
    match e {
        tss_esapi::Error::Tss2Error(rc) => rc.kind(),
        tss_esapi::Error::WrapperError(_) => None,
    }
}

impl NvCounter {
    /// Connects to the TPM named by a TCTI string (`device:/dev/tpmrm0`, `swtpm:…`) for the
    /// counter at `index`, and checks that the TPM answers.
    pub fn connect(tcti: &str, index: u32) -> Result<Self, CounterError> {
        let spec = parse_tcti(tcti)?;
        let conf_text = match &spec {
            TctiSpec::Device(path) => {
                if !std::path::Path::new(path).exists() {
                    return Err(TpmError::NoTpm { tcti: tcti.into(), detail: format!("{path} does not exist") }.into());
                }
                format!("device:{path}")
            }
            TctiSpec::Swtpm { host, port } => format!("swtpm:host={host},port={port}"),
        };
        let conf = TctiNameConf::from_str(&conf_text).map_err(|e| TpmError::WrongTcti { tcti: tcti.into(), reason: e.to_string() })?;
        let mut ctx = Context::new(conf).map_err(|e| TpmError::NoTpm { tcti: tcti.into(), detail: e.to_string() })?;
        ctx.get_capability(CapabilityType::Handles, TPM2_TRANSIENT_FIRST, 1)
            .map_err(|e| TpmError::NoTpm { tcti: tcti.into(), detail: e.to_string() })?;
        Ok(NvCounter { ctx, index })
    }

    pub fn index(&self) -> u32 {
        self.index
    }

    fn cmd(&self, op: &'static str) -> impl FnOnce(tss_esapi::Error) -> CounterError + use<> {
        let index = self.index;
        move |source| CounterError::Command { op, index, source }
    }

    fn tpm_handle(&self) -> Result<NvIndexTpmHandle, CounterError> {
        NvIndexTpmHandle::new(self.index).map_err(self.cmd("NV index handle"))
    }

    /// Runs `f` with an ESYS handle for the index and its public area (checked to be ours), and
    /// closes the handle. None: no index at the handle.
    fn with_index<T>(&mut self, f: impl FnOnce(&mut Context, NvIndexHandle) -> Result<T, CounterError>) -> Result<Option<T>, CounterError> {
        let tpm_handle = self.tpm_handle()?;
        let object = match self.ctx.execute_without_session(|ctx| ctx.tr_from_tpm_public(TpmHandle::NvIndex(tpm_handle))) {
            Ok(o) => o,
            Err(e) if tss_kind(&e) == Some(Tss2ResponseCodeKind::Handle) => return Ok(None),
            Err(e) => return Err(self.cmd("TR_FromTPMPublic (NV_ReadPublic)")(e)),
        };
        let handle = NvIndexHandle::from(object);
        let index = self.index;
        let result = self
            .ctx
            .execute_without_session(|ctx| ctx.nv_read_public(handle))
            .map_err(self.cmd("NV_ReadPublic"))
            .and_then(|(public, _)| match shape_problem(&public) {
                Some(why) => Err(CounterError::NotOurs { index, why }),
                None => Ok(()),
            })
            .and_then(|()| f(&mut self.ctx, handle));
        let mut object = ObjectHandle::from(handle);
        let closed = self.ctx.tr_close(&mut object).map_err(self.cmd("TR_Close"));
        let value = result?;
        closed?;
        Ok(Some(value))
    }

    /// The counter's value (checking that the index at the handle is a counter of our shape).
    pub fn read(&mut self) -> Result<CounterValue, CounterError> {
        let index = self.index;
        let read = self.with_index(|ctx, handle| {
            match ctx.execute_with_session(Some(AuthSession::Password), |ctx| ctx.nv_read(NvAuth::Owner, handle, 8, 0)) {
                Ok(buffer) => {
                    let bytes: [u8; 8] = buffer.as_slice().try_into().map_err(|_| CounterError::NotOurs {
                        index,
                        why: format!("it read back {} bytes, not 8", buffer.len()),
                    })?;
                    Ok(CounterValue::Value(u64::from_be_bytes(bytes)))
                }
                Err(e) if tss_kind(&e) == Some(Tss2ResponseCodeKind::NvUninitialized) => Ok(CounterValue::Unwritten),
                Err(source) => Err(CounterError::Command { op: "NV_Read", index, source }),
            }
        })?;
        Ok(read.unwrap_or(CounterValue::Absent))
    }

    /// Defines the counter (owner hierarchy). It has no value until its first increment.
    pub fn define(&mut self) -> Result<(), CounterError> {
        let public = NvPublicBuilder::new()
            .with_nv_index(self.tpm_handle()?)
            .with_index_name_algorithm(HashingAlgorithm::Sha256)
            .with_index_attributes(counter_attributes().map_err(self.cmd("counter attributes"))?)
            .with_data_area_size(8)
            .build()
            .map_err(self.cmd("counter public area"))?;
        let defined = self.ctx.execute_with_session(Some(AuthSession::Password), |ctx| ctx.nv_define_space(Provision::Owner, None, public));
        match defined {
            Ok(handle) => {
                let mut object = ObjectHandle::from(handle);
                self.ctx.tr_close(&mut object).map_err(self.cmd("TR_Close"))
            }
            Err(e) if tss_kind(&e) == Some(Tss2ResponseCodeKind::NvDefined) => Err(CounterError::AlreadyDefined { index: self.index }),
            Err(e) => Err(self.cmd("NV_DefineSpace")(e)),
        }
    }

    /// Adds one (owner authorisation) and returns the new value.
    pub fn increment(&mut self) -> Result<u64, CounterError> {
        let index = self.index;
        let done = self.with_index(|ctx, handle| {
            ctx.execute_with_session(Some(AuthSession::Password), |ctx| ctx.nv_increment(NvAuth::Owner, handle))
                .map_err(|source| CounterError::Command { op: "NV_Increment", index, source })
        })?;
        if done.is_none() {
            return Err(CounterError::Command {
                op: "NV_Increment",
                index,
                source: tss_esapi::Error::WrapperError(tss_esapi::WrapperErrorKind::InvalidParam),
            });
        }
        match self.read()? {
            CounterValue::Value(v) => Ok(v),
            other => Err(CounterError::NotOurs { index, why: format!("after an increment it reads {other:?}") }),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn public(attrs: NvIndexAttributes, size: usize) -> NvPublic {
        NvPublicBuilder::new()
            .with_nv_index(NvIndexTpmHandle::new(SYSTEM_VERSION_COUNTER).unwrap())
            .with_index_name_algorithm(HashingAlgorithm::Sha256)
            .with_index_attributes(attrs)
            .with_data_area_size(size)
            .build()
            .unwrap()
    }

    #[test]
    fn only_an_owner_written_counter_is_ours() {
        assert_eq!(shape_problem(&public(counter_attributes().unwrap(), 8)), None);
        let written = NvIndexAttributesBuilder::new()
            .with_nv_index_type(NvIndexType::Counter)
            .with_owner_write(true)
            .with_owner_read(true)
            .with_no_da(true)
            .with_written(true)
            .build()
            .unwrap();
        assert_eq!(shape_problem(&public(written, 8)), None, "the WRITTEN bit is the TPM's, not the shape");
        let ordinary = NvIndexAttributesBuilder::new().with_owner_write(true).with_owner_read(true).with_no_da(true).build().unwrap();
        assert!(shape_problem(&public(ordinary, 8)).unwrap().contains("not a counter"));
        let auth_write = NvIndexAttributesBuilder::new()
            .with_nv_index_type(NvIndexType::Counter)
            .with_owner_write(true)
            .with_auth_write(true)
            .with_owner_read(true)
            .build()
            .unwrap();
        assert!(shape_problem(&public(auth_write, 8)).unwrap().contains("without the owner's authorisation"));
        let orderly = NvIndexAttributesBuilder::new()
            .with_nv_index_type(NvIndexType::Counter)
            .with_owner_write(true)
            .with_owner_read(true)
            .with_no_da(true)
            .with_orderly(true)
            .build()
            .unwrap();
        assert!(shape_problem(&public(orderly, 8)).unwrap().contains("attributes"));
    }
}
