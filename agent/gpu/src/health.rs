//! The per-GPU health state machine: healthy, degraded or failed, from a sequence of readings.
//!
//! Pure: it sees [`GpuReading`]s and returns [`Transition`]s, each with a reason written for
//! clinic IT. The rules, in order:
//!
//! * **Failed at once** on a sign that results computed on the GPU may be wrong or that the GPU
//!   is gone: NVML says the GPU is lost (Xid 79, fell off the bus), the GPU vanished from
//!   NVML's list, an uncorrectable ECC error since the driver loaded, a double-bit ECC event,
//!   a fatal Xid ([`classify_xid`]), the row remapper out of spare rows, or the temperature at
//!   the shutdown threshold. Failed is sticky for the life of the tracker: a GPU that once gave
//!   uncorrectable errors is not trusted with clinical work again until IT has reset or
//!   replaced it and restarted the agent.
//! * **Degraded** after [`HealthPolicy::degrade_after`] consecutive readings with a problem that
//!   slows the GPU or foretells failure (too hot, hardware/thermal clock slowdown, a pending
//!   row remap or page retirement, a PCIe link narrower than its maximum, a burst of corrected
//!   ECC errors, a non-fatal Xid, NVML failing to read the basics). The very first reading
//!   degrades at once: there is no history to smooth, and placing a model on a GPU that is
//!   already throttling is the worse mistake.
//! * **Healthy again** after [`HealthPolicy::recover_after`] consecutive clean readings.
//!
//! One bad reading in a healthy run, or one good reading in a degraded run, changes nothing:
//! that is the hysteresis, so a GPU near its thermal limit does not flap the engine.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::reading::{EventKind, Field, GpuReading, Snapshot};

/// Where a GPU stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    Healthy,
    Degraded,
    Failed,
}

impl HealthState {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Healthy => "healthy",
            HealthState::Degraded => "degraded",
            HealthState::Failed => "failed",
        }
    }
}

impl std::fmt::Display for HealthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A health policy that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HealthError {
    #[error("gpu health policy: {key} must be at least 1 (it counts readings)")]
    ZeroCount { key: &'static str },
    #[error("gpu health policy: temperature_fallback_limit_c {value} is outside 40..=110 C")]
    FallbackLimit { value: u32 },
}

/// The thresholds, each with the reason for its default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthPolicy {
    /// Consecutive problem readings before a healthy GPU is marked degraded. 3 readings at the
    /// agent's 10 s interval: a load spike passes, a fan failure does not.
    pub degrade_after: u32,
    /// Consecutive clean readings before a degraded GPU is healthy again. Longer than
    /// `degrade_after` so that a GPU hovering at a limit settles in the degraded state.
    pub recover_after: u32,
    /// A reading is a problem when the temperature is within this many degrees of the GPU's own
    /// slowdown threshold: act before the hardware halves the clocks.
    pub temperature_margin_c: u32,
    /// The limit used when the GPU does not report a slowdown threshold (consumer boards).
    pub temperature_fallback_limit_c: u32,
    /// New corrected (volatile) ECC errors between two readings that count as a problem:
    /// a handful is normal on HBM, a burst foretells uncorrectable errors (NVIDIA Xid 92).
    pub corrected_ecc_burst: u64,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            degrade_after: 3,
            recover_after: 5,
            temperature_margin_c: 5,
            temperature_fallback_limit_c: 85,
            corrected_ecc_burst: 100,
        }
    }
}

impl HealthPolicy {
    pub fn validate(&self) -> Result<(), HealthError> {
        if self.degrade_after == 0 {
            return Err(HealthError::ZeroCount {
                key: "degrade_after",
            });
        }
        if self.recover_after == 0 {
            return Err(HealthError::ZeroCount {
                key: "recover_after",
            });
        }
        if !(40..=110).contains(&self.temperature_fallback_limit_c) {
            return Err(HealthError::FallbackLimit {
                value: self.temperature_fallback_limit_c,
            });
        }
        Ok(())
    }
}

/// How bad one finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Fail the GPU now.
    Fatal,
    /// Counts toward degrading it.
    Problem,
}

/// One thing wrong in one reading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub severity: Severity,
    /// Stable code for alerts and metrics, e.g. `temperature_high`, `xid_79`.
    pub code: String,
    /// What IT reads: the numbers and what to do.
    pub message: String,
}

impl Finding {
    fn fatal(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Fatal,
            code: code.into(),
            message: message.into(),
        }
    }
    fn problem(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Problem,
            code: code.into(),
            message: message.into(),
        }
    }
}

/// What an Xid means for health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum XidClass {
    /// The GPU cannot be trusted until reset or replaced.
    Fatal,
    /// A warning sign; counts toward degrading.
    Problem,
    /// Caused by a program's own fault (bad pointer, killed context): not the GPU's health.
    Application,
}

/// Our reading of NVIDIA's Xid catalogue
/// (<https://docs.nvidia.com/deploy/xid-errors/>). Xids not listed count as problems: an
/// unknown error is not evidence of health.
pub fn classify_xid(xid: u64) -> (XidClass, &'static str) {
    match xid {
        13 => (XidClass::Application, "graphics engine exception"),
        31 => (XidClass::Application, "GPU memory page fault"),
        43 => (
            XidClass::Application,
            "GPU stopped processing (a program's context was reset)",
        ),
        45 => (
            XidClass::Application,
            "preemptive cleanup after earlier errors",
        ),
        69 => (XidClass::Application, "graphics engine class error"),
        48 => (XidClass::Fatal, "double-bit ECC error"),
        62 => (XidClass::Fatal, "internal micro-controller halt"),
        64 => (
            XidClass::Fatal,
            "ECC page retirement or row remapping recording failure",
        ),
        79 => (XidClass::Fatal, "GPU has fallen off the bus"),
        95 => (XidClass::Fatal, "uncontained ECC error"),
        119 => (XidClass::Fatal, "GSP RPC timeout"),
        120 => (XidClass::Fatal, "GSP error"),
        140 => (XidClass::Fatal, "unrecovered ECC error"),
        38 => (XidClass::Problem, "driver firmware error"),
        61 => (XidClass::Problem, "internal micro-controller warning"),
        63 => (
            XidClass::Problem,
            "ECC page retirement or row remapping event (reset pending)",
        ),
        74 => (XidClass::Problem, "NVLink error"),
        92 => (XidClass::Problem, "high single-bit ECC error rate"),
        94 => (XidClass::Problem, "contained ECC error (reset the GPU)"),
        109 => (XidClass::Problem, "context switch timeout"),
        121 => (XidClass::Problem, "C2C link corrected error"),
        154 => (
            XidClass::Problem,
            "GPU recovery action changed (reset or reboot requested)",
        ),
        _ => (XidClass::Problem, "Xid not in Wardbox's table"),
    }
}

/// Everything wrong with one reading. `previous` is the last reading of the same GPU, for the
/// checks that look at change (corrected-ECC bursts).
pub fn assess(
    policy: &HealthPolicy,
    previous: Option<&GpuReading>,
    r: &GpuReading,
) -> Vec<Finding> {
    let mut out = Vec::new();
    if r.lost {
        out.push(Finding::fatal(
            "gpu_lost",
            "NVML reports the GPU is lost (fallen off the bus or inaccessible; Xid 79 in the \
             kernel log): check power and seating, then reboot",
        ));
        // Every other field of a lost GPU is an error; more findings would only bury this one.
        return out;
    }

    if let Field::Ok(n) = r.ecc.volatile_uncorrected
        && n > 0
    {
        out.push(Finding::fatal(
            "ecc_uncorrected",
            format!(
                "{n} uncorrectable ECC error(s) since the driver loaded: results from this GPU \
                 may be wrong; reset it (`nvidia-smi -r`) or reboot, and replace it if it recurs"
            ),
        ));
    }
    if let Field::Ok(rows) = &r.remapped_rows {
        if rows.failure {
            out.push(Finding::fatal(
                "row_remap_failure",
                "the GPU has no spare memory rows left to remap: NVIDIA says to replace the board",
            ));
        }
        if rows.pending {
            out.push(Finding::problem(
                "row_remap_pending",
                "a memory row remap waits for a GPU reset: reset it (`nvidia-smi -r`) or reboot",
            ));
        }
    }
    if let Field::Ok(pages) = &r.retired_pages
        && pages.pending
    {
        out.push(Finding::problem(
            "page_retirement_pending",
            "a memory page retirement waits for a driver reload: reboot at a quiet time",
        ));
    }

    for ev in &r.events {
        match (ev.kind, ev.xid) {
            (EventKind::DoubleBitEcc, _) => out.push(Finding::fatal(
                "ecc_double_bit_event",
                "NVML reported a double-bit (uncorrectable) ECC error: reset the GPU or reboot",
            )),
            (EventKind::SingleBitEcc, _) => {}
            (EventKind::CriticalXid, Some(xid)) => {
                let (class, what) = classify_xid(xid);
                let message = format!("Xid {xid}: {what}");
                match class {
                    XidClass::Fatal => out.push(Finding::fatal(format!("xid_{xid}"), message)),
                    XidClass::Problem => out.push(Finding::problem(format!("xid_{xid}"), message)),
                    XidClass::Application => {}
                }
            }
            (EventKind::CriticalXid, None) => out.push(Finding::problem(
                "xid_unknown",
                "NVML reported a critical Xid without a number: see the kernel log (`dmesg`)",
            )),
        }
    }

    if let Field::Ok(t) = r.temperature_c {
        match (r.temperature_shutdown_c.ok(), r.temperature_slowdown_c.ok()) {
            (Some(&shutdown), _) if t >= shutdown => out.push(Finding::fatal(
                "temperature_shutdown",
                format!(
                    "{t} C reached the shutdown threshold {shutdown} C: check fans and airflow"
                ),
            )),
            (_, Some(&slowdown)) if t + policy.temperature_margin_c >= slowdown => {
                out.push(Finding::problem(
                    "temperature_high",
                    format!(
                        "{t} C is within {} C of the slowdown threshold {slowdown} C: check fans, \
                         airflow and room temperature",
                        policy.temperature_margin_c
                    ),
                ))
            }
            (_, None) if t >= policy.temperature_fallback_limit_c => out.push(Finding::problem(
                "temperature_high",
                format!(
                    "{t} C is at or above {} C (this GPU reports no slowdown threshold): check \
                     fans and airflow",
                    policy.temperature_fallback_limit_c
                ),
            )),
            _ => {}
        }
    }

    if let Field::Ok(ev) = &r.clock_events {
        let slow = ev.slowdowns();
        if !slow.is_empty() {
            out.push(Finding::problem(
                "clock_slowdown",
                format!(
                    "clocks slowed by {}: the GPU is too hot or its power supply braked it",
                    slow.join(", ")
                ),
            ));
        }
    }

    if let (Field::Ok(cur), Field::Ok(max)) = (&r.pcie.current_width, &r.pcie.max_width)
        && cur < max
    {
        out.push(Finding::problem(
            "pcie_link_narrow",
            format!(
                "PCIe link runs at x{cur} of x{max}: reseat the card, check the slot and riser"
            ),
        ));
    }

    if let Some(prev) = previous
        && let (Field::Ok(before), Field::Ok(now)) =
            (&prev.ecc.volatile_corrected, &r.ecc.volatile_corrected)
        && now.saturating_sub(*before) >= policy.corrected_ecc_burst
    {
        out.push(Finding::problem(
            "ecc_corrected_burst",
            format!(
                "{} corrected ECC errors since the previous reading (limit {}): memory is \
                 wearing; plan a replacement",
                now - before,
                policy.corrected_ecc_burst
            ),
        ));
    }

    // NVML failing to read the basics of a GPU it lists is itself a warning sign; a value the
    // GPU does not support is not.
    for (what, failed) in [
        ("memory", r.memory.is_error()),
        ("temperature", r.temperature_c.is_error()),
        ("UUID", r.uuid.is_error()),
    ] {
        if failed {
            out.push(Finding::problem(
                "nvml_read_error",
                format!("NVML could not read this GPU's {what}: check `nvidia-smi -q`"),
            ));
        }
    }
    out
}

/// A change of state, for the journal, the audit log and the admin page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// The GPU's key (UUID, or `index-N` when NVML cannot read it).
    pub gpu: String,
    pub from: HealthState,
    pub to: HealthState,
    /// Why, in words IT can act on.
    pub reason: String,
}

impl std::fmt::Display for Transition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GPU {} {} -> {}: {}",
            self.gpu, self.from, self.to, self.reason
        )
    }
}

/// One GPU's health over time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GpuHealth {
    pub gpu: String,
    pub state: HealthState,
    /// Why the GPU is in its state (empty when healthy): the latest findings.
    pub reasons: Vec<String>,
    pub consecutive_problems: u32,
    pub consecutive_clean: u32,
    pub readings: u64,
    /// Critical Xids seen since the agent started, by number (for metrics and the admin page).
    pub xid_counts: BTreeMap<u64, u64>,
    pub single_bit_ecc_events: u64,
    /// The last reading, for change-based checks.
    #[serde(skip)]
    previous: Option<GpuReading>,
}

impl GpuHealth {
    pub fn new(gpu: impl Into<String>) -> Self {
        Self {
            gpu: gpu.into(),
            state: HealthState::Healthy,
            reasons: Vec::new(),
            consecutive_problems: 0,
            consecutive_clean: 0,
            readings: 0,
            xid_counts: BTreeMap::new(),
            single_bit_ecc_events: 0,
            previous: None,
        }
    }

    /// Take one reading; return the transition it caused, if any.
    pub fn observe(&mut self, policy: &HealthPolicy, reading: &GpuReading) -> Option<Transition> {
        for ev in &reading.events {
            match ev.kind {
                EventKind::CriticalXid => {
                    *self.xid_counts.entry(ev.xid.unwrap_or(999)).or_default() += 1
                }
                EventKind::SingleBitEcc => self.single_bit_ecc_events += 1,
                EventKind::DoubleBitEcc => {}
            }
        }
        let findings = assess(policy, self.previous.as_ref(), reading);
        self.previous = Some(reading.clone());
        self.step(policy, &findings)
    }

    /// Count a reading that could not be taken at all (NVML failed for the whole box).
    pub fn observe_unreadable(&mut self, policy: &HealthPolicy, why: &str) -> Option<Transition> {
        let finding = Finding::problem(
            "nvml_read_error",
            format!("NVML could not read the GPUs: {why}"),
        );
        self.step(policy, &[finding])
    }

    /// Mark the GPU failed because NVML no longer lists it.
    pub fn vanished(&mut self) -> Option<Transition> {
        let f = Finding::fatal(
            "gpu_vanished",
            "NVML no longer lists this GPU (fallen off the bus or removed): check `dmesg` for \
             Xid 79, check power and seating, then reboot",
        );
        self.step(&HealthPolicy::default(), &[f])
    }

    fn step(&mut self, policy: &HealthPolicy, findings: &[Finding]) -> Option<Transition> {
        let first = self.readings == 0;
        self.readings += 1;
        if self.state == HealthState::Failed {
            return None;
        }
        let fatal: Vec<&Finding> = findings
            .iter()
            .filter(|f| f.severity == Severity::Fatal)
            .collect();
        if !fatal.is_empty() {
            self.reasons = fatal.iter().map(|f| f.message.clone()).collect();
            return self.go(HealthState::Failed, self.reasons.join("; "));
        }
        if findings.is_empty() {
            self.consecutive_problems = 0;
            self.consecutive_clean += 1;
            if self.state == HealthState::Degraded && self.consecutive_clean >= policy.recover_after
            {
                let was = self.reasons.join("; ");
                self.reasons.clear();
                return self.go(
                    HealthState::Healthy,
                    format!(
                        "no problem in {} consecutive readings (was: {was})",
                        self.consecutive_clean
                    ),
                );
            }
            return None;
        }
        self.consecutive_clean = 0;
        self.consecutive_problems += 1;
        let messages: Vec<String> = findings.iter().map(|f| f.message.clone()).collect();
        match self.state {
            HealthState::Healthy if first || self.consecutive_problems >= policy.degrade_after => {
                self.reasons = messages;
                let seen = if first {
                    "at the first reading".to_string()
                } else {
                    format!("in {} consecutive readings", self.consecutive_problems)
                };
                self.go(
                    HealthState::Degraded,
                    format!("{} ({seen})", self.reasons.join("; ")),
                )
            }
            HealthState::Degraded => {
                // Still degraded: keep the reasons current without a new transition.
                self.reasons = messages;
                None
            }
            _ => None,
        }
    }

    fn go(&mut self, to: HealthState, reason: String) -> Option<Transition> {
        let from = self.state;
        self.state = to;
        Some(Transition {
            gpu: self.gpu.clone(),
            from,
            to,
            reason,
        })
    }
}

/// Health of every GPU the box has seen.
#[derive(Debug, Clone)]
pub struct HealthBook {
    policy: HealthPolicy,
    gpus: BTreeMap<String, GpuHealth>,
}

impl HealthBook {
    pub fn new(policy: HealthPolicy) -> Result<Self, HealthError> {
        policy.validate()?;
        Ok(Self {
            policy,
            gpus: BTreeMap::new(),
        })
    }

    pub fn policy(&self) -> &HealthPolicy {
        &self.policy
    }

    /// Take a snapshot; GPUs seen before and missing now are failed.
    pub fn observe(&mut self, snapshot: &Snapshot) -> Vec<Transition> {
        let mut out = Vec::new();
        let present = snapshot.by_key();
        for (key, health) in self.gpus.iter_mut() {
            if !present.contains_key(key)
                && let Some(t) = health.vanished()
            {
                out.push(t);
            }
        }
        for reading in &snapshot.gpus {
            let key = reading.key();
            let health = self
                .gpus
                .entry(key.clone())
                .or_insert_with(|| GpuHealth::new(key));
            if let Some(t) = health.observe(&self.policy, reading) {
                out.push(t);
            }
        }
        out
    }

    /// NVML failed for the whole box: one problem reading for every known GPU.
    pub fn observe_unreadable(&mut self, why: &str) -> Vec<Transition> {
        let policy = self.policy.clone();
        self.gpus
            .values_mut()
            .filter_map(|h| h.observe_unreadable(&policy, why))
            .collect()
    }

    pub fn get(&self, gpu: &str) -> Option<&GpuHealth> {
        self.gpus.get(gpu)
    }

    pub fn iter(&self) -> impl Iterator<Item = &GpuHealth> {
        self.gpus.values()
    }

    /// The state of a GPU; one never observed counts as failed (it cannot be vouched for).
    pub fn state(&self, gpu: &str) -> HealthState {
        self.gpus.get(gpu).map_or(HealthState::Failed, |h| h.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::{ClockEvents, GpuEvent, recorded_h100};

    fn h100() -> GpuReading {
        recorded_h100().gpus.remove(0)
    }

    fn hot(t: u32) -> GpuReading {
        GpuReading {
            temperature_c: Field::Ok(t),
            ..h100()
        }
    }

    fn xid(n: u64) -> GpuReading {
        GpuReading {
            events: vec![GpuEvent {
                kind: EventKind::CriticalXid,
                xid: Some(n),
            }],
            ..h100()
        }
    }

    /// Feed a sequence; return the state after each reading and the transitions.
    fn run(seq: &[GpuReading]) -> (Vec<HealthState>, Vec<Transition>) {
        let policy = HealthPolicy::default();
        let mut h = GpuHealth::new("gpu0");
        let mut states = Vec::new();
        let mut ts = Vec::new();
        for r in seq {
            ts.extend(h.observe(&policy, r));
            states.push(h.state);
        }
        (states, ts)
    }

    use HealthState::{Degraded as D, Failed as F, Healthy as H};

    #[test]
    fn recorded_h100_reading_is_healthy_with_no_findings() {
        let r = h100();
        assert_eq!(assess(&HealthPolicy::default(), None, &r), vec![]);
        let (states, ts) = run(&[r.clone(), r.clone(), r]);
        assert_eq!(states, vec![H, H, H]);
        assert!(ts.is_empty());
    }

    #[test]
    fn one_hot_reading_does_not_flap_three_do_degrade() {
        // 84 C is within 5 C of the H100's 89 C slowdown threshold.
        let (states, ts) = run(&[h100(), hot(84), h100(), hot(84), hot(85), hot(86)]);
        assert_eq!(states, vec![H, H, H, H, H, D]);
        assert_eq!(ts.len(), 1);
        assert_eq!((ts[0].from, ts[0].to), (H, D));
        assert!(
            ts[0]
                .reason
                .contains("86 C is within 5 C of the slowdown threshold 89 C"),
            "{}",
            ts[0].reason
        );
        assert!(
            ts[0].reason.contains("3 consecutive readings"),
            "{}",
            ts[0].reason
        );
    }

    #[test]
    fn recovery_needs_five_clean_readings_and_one_bad_resets_the_count() {
        let mut seq = vec![h100(), hot(86), hot(86), hot(86)];
        seq.extend([h100(), h100(), h100(), h100(), hot(87)]); // 4 clean then bad: still degraded
        seq.extend([h100(), h100(), h100(), h100(), h100()]); // 5 clean: healthy
        let (states, ts) = run(&seq);
        assert_eq!(states, vec![H, H, H, D, D, D, D, D, D, D, D, D, D, H]);
        assert_eq!(ts.len(), 2);
        assert_eq!((ts[1].from, ts[1].to), (D, H));
        assert!(
            ts[1]
                .reason
                .starts_with("no problem in 5 consecutive readings (was: 87 C"),
            "{}",
            ts[1].reason
        );
    }

    #[test]
    fn first_reading_with_a_problem_degrades_at_once() {
        let (states, ts) = run(&[hot(88)]);
        assert_eq!(states, vec![D]);
        assert!(
            ts[0].reason.contains("at the first reading"),
            "{}",
            ts[0].reason
        );
    }

    #[test]
    fn xid_79_fails_immediately_and_failed_is_sticky() {
        let (states, ts) = run(&[
            h100(),
            xid(79),
            h100(),
            h100(),
            h100(),
            h100(),
            h100(),
            h100(),
        ]);
        assert_eq!(states, vec![H, F, F, F, F, F, F, F]);
        assert_eq!(ts.len(), 1);
        assert!(
            ts[0].reason.contains("Xid 79: GPU has fallen off the bus"),
            "{}",
            ts[0].reason
        );
    }

    #[test]
    fn uncorrectable_ecc_fails_immediately() {
        let mut r = h100();
        r.ecc.volatile_uncorrected = Field::Ok(2);
        let (states, ts) = run(&[h100(), r]);
        assert_eq!(states, vec![H, F]);
        assert!(
            ts[0].reason.contains("2 uncorrectable ECC error(s)"),
            "{}",
            ts[0].reason
        );
    }

    #[test]
    fn lost_gpu_fails_from_degraded_too() {
        let lost = GpuReading::unreachable(0, "GPU is lost", true);
        let (states, ts) = run(&[hot(88), lost]);
        assert_eq!(states, vec![D, F]);
        assert_eq!((ts[1].from, ts[1].to), (D, F));
        assert!(ts[1].reason.contains("lost"), "{}", ts[1].reason);
    }

    #[test]
    fn shutdown_temperature_is_fatal() {
        let (states, _) = run(&[hot(95)]);
        assert_eq!(states, vec![F]);
    }

    #[test]
    fn application_xids_are_not_gpu_health() {
        let (states, ts) = run(&[xid(13), xid(31), xid(43), xid(45)]);
        assert_eq!(states, vec![H, H, H, H]);
        assert!(ts.is_empty());
    }

    #[test]
    fn unknown_xid_counts_as_a_problem() {
        let (states, _) = run(&[h100(), xid(9999), xid(9999), xid(9999)]);
        assert_eq!(states, vec![H, H, H, D]);
    }

    #[test]
    fn thermal_clock_events_count_but_idle_and_power_cap_do_not() {
        let with = |bits| GpuReading {
            clock_events: Field::Ok(ClockEvents::from_bits(bits)),
            ..h100()
        };
        // 0x1 idle, 0x4 SW power cap (normal under full load).
        assert_eq!(
            run(&[h100(), with(0x1), with(0x4), with(0x5)]).0,
            vec![H, H, H, H]
        );
        let (states, ts) = run(&[h100(), with(0x40), with(0x40), with(0x40)]);
        assert_eq!(states, vec![H, H, H, D]);
        assert!(
            ts[0].reason.contains("hw_thermal_slowdown"),
            "{}",
            ts[0].reason
        );
    }

    #[test]
    fn narrow_pcie_link_is_a_problem_but_low_generation_is_not() {
        let mut gen1 = h100();
        gen1.pcie.current_generation = Field::Ok(1); // idle power saving
        assert!(assess(&HealthPolicy::default(), None, &gen1).is_empty());
        let mut x8 = h100();
        x8.pcie.current_width = Field::Ok(8);
        let f = assess(&HealthPolicy::default(), None, &x8);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].code, "pcie_link_narrow");
        assert!(f[0].message.contains("x8 of x16"));
    }

    #[test]
    fn corrected_ecc_burst_is_measured_between_readings() {
        let with = |n| {
            let mut r = h100();
            r.ecc.volatile_corrected = Field::Ok(n);
            r
        };
        let p = HealthPolicy::default();
        // A high but steady count is not a burst.
        assert!(assess(&p, Some(&with(5000)), &with(5050)).is_empty());
        let f = assess(&p, Some(&with(5000)), &with(5100));
        assert_eq!(f[0].code, "ecc_corrected_burst");
        assert!(
            f[0].message.starts_with("100 corrected ECC errors"),
            "{}",
            f[0].message
        );
    }

    #[test]
    fn not_supported_values_are_not_problems() {
        // Retired pages are unsupported on H100 (it remaps rows); a GPU with no thresholds or
        // ECC at all (a consumer card) is still healthy when cool.
        let mut r = h100();
        r.retired_pages = Field::NotSupported;
        r.remapped_rows = Field::NotSupported;
        r.temperature_slowdown_c = Field::NotSupported;
        r.temperature_shutdown_c = Field::NotSupported;
        r.ecc.volatile_uncorrected = Field::NotSupported;
        r.events_registered = Field::NotSupported;
        assert!(assess(&HealthPolicy::default(), None, &r).is_empty());
        r.temperature_c = Field::Ok(86);
        assert_eq!(
            assess(&HealthPolicy::default(), None, &r)[0].code,
            "temperature_high"
        );
    }

    #[test]
    fn remap_pending_degrades_remap_failure_fails() {
        let mut pending = h100();
        if let Field::Ok(rows) = &mut pending.remapped_rows {
            rows.pending = true;
        }
        assert_eq!(run(&[pending.clone(), pending.clone()]).0, vec![D, D]);
        let mut failure = h100();
        if let Field::Ok(rows) = &mut failure.remapped_rows {
            rows.failure = true;
        }
        assert_eq!(run(&[failure]).0, vec![F]);
    }

    #[test]
    fn book_fails_a_gpu_that_vanishes_and_counts_xids() {
        let mut book = HealthBook::new(HealthPolicy::default()).expect("default policy");
        let snap = recorded_h100();
        let key = snap.gpus[0].key();
        assert!(book.observe(&snap).is_empty());
        let mut with_xid = snap.clone();
        with_xid.gpus[0].events = vec![GpuEvent {
            kind: EventKind::CriticalXid,
            xid: Some(13),
        }];
        assert!(book.observe(&with_xid).is_empty());
        assert_eq!(
            book.get(&key).map(|h| h.xid_counts.clone()),
            Some(BTreeMap::from([(13, 1)]))
        );
        let empty = Snapshot {
            gpus: vec![],
            ..snap
        };
        let ts = book.observe(&empty);
        assert_eq!(ts.len(), 1);
        assert_eq!(ts[0].to, F);
        assert!(ts[0].reason.contains("no longer lists"), "{}", ts[0].reason);
        assert_eq!(book.state(&key), F);
        assert_eq!(book.state("GPU-never-seen"), F);
    }

    #[test]
    fn nvml_failing_for_the_whole_box_degrades_after_the_same_count() {
        let mut book = HealthBook::new(HealthPolicy::default()).expect("default policy");
        book.observe(&recorded_h100());
        assert!(book.observe_unreadable("Unknown error").is_empty());
        assert!(book.observe_unreadable("Unknown error").is_empty());
        let ts = book.observe_unreadable("Unknown error");
        assert_eq!(ts.len(), 1);
        assert_eq!(ts[0].to, D);
    }

    #[test]
    fn policy_validation_names_the_key() {
        let p = HealthPolicy {
            recover_after: 0,
            ..HealthPolicy::default()
        };
        assert_eq!(
            p.validate(),
            Err(HealthError::ZeroCount {
                key: "recover_after"
            })
        );
        assert!(HealthBook::new(p).is_err());
        let p = HealthPolicy {
            temperature_fallback_limit_c: 200,
            ..HealthPolicy::default()
        };
        assert!(
            p.validate()
                .expect_err("invalid")
                .to_string()
                .contains("temperature_fallback_limit_c 200")
        );
    }
}
