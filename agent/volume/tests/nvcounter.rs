//! The anti-rollback NV counter against a real software TPM (swtpm), started per test. These
//! are device tests: without swtpm they fail saying so, never pass in silence.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::str::FromStr;
use std::time::Instant;

use common::Swtpm;
use tss_esapi::attributes::NvIndexAttributesBuilder;
use tss_esapi::handles::{NvIndexTpmHandle, ObjectHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::resource_handles::Provision;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::NvPublicBuilder;
use tss_esapi::{Context, TctiNameConf};
use wardbox_volume::nvcounter::{CounterError, CounterValue, NvCounter, SYSTEM_VERSION_COUNTER};

fn raw_context(tpm: &Swtpm) -> Context {
    Context::new(TctiNameConf::from_str(&tpm.tcti()).unwrap()).unwrap()
}

/// Deletes the index with the owner's authorisation, as anyone holding it could.
fn undefine(tpm: &Swtpm) {
    let mut ctx = raw_context(tpm);
    let handle = NvIndexTpmHandle::new(SYSTEM_VERSION_COUNTER).unwrap();
    let object = ctx.execute_without_session(|c| c.tr_from_tpm_public(TpmHandle::NvIndex(handle))).unwrap();
    ctx.execute_with_session(Some(AuthSession::Password), |c| c.nv_undefine_space(Provision::Owner, object.into())).unwrap();
}

fn assert_no_handles_left(tpm: &Swtpm) {
    let mut t = wardbox_volume::Tpm::connect(&tpm.tcti()).unwrap();
    let counts = t.handle_counts().unwrap();
    assert_eq!((counts.transient_objects, counts.loaded_sessions), (0, 0), "the counter left handles in the TPM");
}

#[test]
fn swtpm_the_counter_is_defined_incremented_read_and_survives_a_reboot() {
    let mut tpm = Swtpm::start();
    let mut c = NvCounter::connect(&tpm.tcti(), SYSTEM_VERSION_COUNTER).unwrap();
    assert_eq!(c.read().unwrap(), CounterValue::Absent);
    c.define().unwrap();
    assert_eq!(c.read().unwrap(), CounterValue::Unwritten, "a counter has no value before its first increment");
    assert!(matches!(c.define(), Err(CounterError::AlreadyDefined { .. })));
    let first = c.increment().unwrap();
    assert_eq!(c.read().unwrap(), CounterValue::Value(first));
    let started = Instant::now();
    let n = 200;
    for i in 1..=n {
        assert_eq!(c.increment().unwrap(), first + i);
    }
    println!("{n} increments (each read back) on swtpm: {:.2} ms each", started.elapsed().as_secs_f64() * 1000.0 / n as f64);
    drop(c);
    assert_no_handles_left(&tpm);

    tpm.reboot();
    let mut c = NvCounter::connect(&tpm.tcti(), SYSTEM_VERSION_COUNTER).unwrap();
    assert_eq!(c.read().unwrap(), CounterValue::Value(first + n), "the counter did not survive a reboot");
}

/// The owner can delete the index, but a counter defined again at the same handle starts above
/// every value the old one had: deleting it cannot roll the box back.
#[test]
fn swtpm_a_deleted_and_redefined_counter_never_starts_lower() {
    let tpm = Swtpm::start();
    let mut c = NvCounter::connect(&tpm.tcti(), SYSTEM_VERSION_COUNTER).unwrap();
    c.define().unwrap();
    let mut high = 0;
    for _ in 0..50 {
        high = c.increment().unwrap();
    }
    drop(c);
    undefine(&tpm);
    let mut c = NvCounter::connect(&tpm.tcti(), SYSTEM_VERSION_COUNTER).unwrap();
    assert_eq!(c.read().unwrap(), CounterValue::Absent);
    c.define().unwrap();
    let again = c.increment().unwrap();
    assert!(again > high, "a redefined counter started at {again}, below the deleted one's {high}");
}

/// An index of another shape at the counter's handle (an ordinary index anyone with the owner's
/// authorisation could write any value into, or a counter with a password of its own) is refused.
#[test]
fn swtpm_an_index_of_another_shape_at_the_handle_is_refused() {
    let tpm = Swtpm::start();
    for (name, attributes) in [
        ("ordinary", NvIndexAttributesBuilder::new().with_owner_write(true).with_owner_read(true).build().unwrap()),
        (
            "counter with AUTHWRITE",
            NvIndexAttributesBuilder::new()
                .with_nv_index_type(tss_esapi::constants::NvIndexType::Counter)
                .with_owner_write(true)
                .with_auth_write(true)
                .with_owner_read(true)
                .build()
                .unwrap(),
        ),
    ] {
        let mut ctx = raw_context(&tpm);
        let public = NvPublicBuilder::new()
            .with_nv_index(NvIndexTpmHandle::new(SYSTEM_VERSION_COUNTER).unwrap())
            .with_index_name_algorithm(HashingAlgorithm::Sha256)
            .with_index_attributes(attributes)
            .with_data_area_size(8)
            .build()
            .unwrap();
        let handle = ctx.execute_with_session(Some(AuthSession::Password), |c| c.nv_define_space(Provision::Owner, None, public)).unwrap();
        let mut object = ObjectHandle::from(handle);
        ctx.tr_close(&mut object).unwrap();
        drop(ctx);

        let mut c = NvCounter::connect(&tpm.tcti(), SYSTEM_VERSION_COUNTER).unwrap();
        let err = c.read().expect_err(name);
        assert!(matches!(err, CounterError::NotOurs { .. }), "{name}: {err}");
        assert!(err.to_string().contains("is not this box's anti-rollback counter"), "{err}");
        assert!(matches!(c.increment(), Err(CounterError::NotOurs { .. })), "{name}: an increment went through");
        drop(c);
        undefine(&tpm);
        assert_no_handles_left(&tpm);
    }
}

#[test]
fn no_tpm_is_an_error_that_says_so() {
    let err = NvCounter::connect("device:/nonexistent/tpmrm0", SYSTEM_VERSION_COUNTER).expect_err("no tpm");
    assert!(err.to_string().contains("/nonexistent/tpmrm0 does not exist"), "{err}");
}
