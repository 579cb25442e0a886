//! Prometheus text exposition (format 0.0.4) of GPU readings and health.
//!
//! [`Exposition`] is a small writer any part of the agent can add families to (the engine and
//! request metrics go through the same one), so `/metrics` is one consistent document: each
//! family's `# HELP` and `# TYPE` once, its samples together, label values escaped.
//! Values a GPU does not support are left out, never written as zero.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::health::HealthState;
use crate::reading::{CLOCK_EVENT_REASONS, Field};
use crate::status::{PlacementOutcome, StatusReport};

/// The content type Prometheus expects for this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

#[derive(Debug)]
struct Family {
    name: String,
    help: String,
    kind: Kind,
    /// The family's sample lines, rendered as they are added (no per-label allocations).
    lines: String,
}

/// A document being built. Families are written in the order they were first declared.
#[derive(Debug, Default)]
pub struct Exposition {
    families: Vec<Family>,
    index: HashMap<String, usize>,
}

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    fn family(&mut self, name: &str, help: &str, kind: Kind) -> &mut Family {
        let pos = match self.index.get(name) {
            Some(&p) => p,
            None => {
                self.families.push(Family {
                    name: name.to_string(),
                    help: help.to_string(),
                    kind,
                    lines: String::new(),
                });
                self.index.insert(name.to_string(), self.families.len() - 1);
                self.families.len() - 1
            }
        };
        &mut self.families[pos]
    }

    /// Add one sample. `name` must be a valid metric name and label names valid label names
    /// (they are fixed in code; a bad one is a programming error and panics in debug builds).
    /// The first call for a family fixes its HELP text and type.
    pub fn sample(
        &mut self,
        name: &str,
        help: &str,
        kind: Kind,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        debug_assert!(valid_name(name, true), "bad metric name {name}");
        debug_assert!(
            labels.iter().all(|(k, _)| valid_name(k, false)),
            "bad label in {name}"
        );
        let out = &mut self.family(name, help, kind).lines;
        out.push_str(name);
        if !labels.is_empty() {
            out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(k);
                out.push_str("=\"");
                escape_label_into(out, v);
                out.push('"');
            }
            out.push('}');
        }
        out.push(' ');
        push_value(out, value);
        out.push('\n');
    }

    /// Declare a family with no samples yet (so HELP/TYPE appear even when, e.g., no GPU has
    /// had an Xid).
    pub fn declare(&mut self, name: &str, help: &str, kind: Kind) {
        self.family(name, help, kind);
    }

    pub fn render(&self) -> String {
        let mut out =
            String::with_capacity(self.families.iter().map(|f| f.lines.len() + 128).sum());
        for f in &self.families {
            let kind = match f.kind {
                Kind::Gauge => "gauge",
                Kind::Counter => "counter",
            };
            let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(&f.help));
            let _ = writeln!(out, "# TYPE {} {kind}", f.name);
            out.push_str(&f.lines);
        }
        out
    }
}

/// The GPU's own labels followed by more.
fn join<'a>(base: &[(&'a str, &'a str)], extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    base.iter().chain(extra).copied().collect()
}

fn valid_name(name: &str, colon_ok: bool) -> bool {
    let mut chars = name.chars();
    let ok_first = |c: char| c.is_ascii_alphabetic() || c == '_' || (colon_ok && c == ':');
    chars.next().is_some_and(ok_first)
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon_ok && c == ':'))
}

/// Label values: backslash, double quote and newline are escaped.
pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    escape_label_into(&mut s, v);
    s
}

fn escape_label_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// HELP text: backslash and newline are escaped.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

fn push_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

#[cfg(test)]
fn format_value(v: f64) -> String {
    let mut s = String::new();
    push_value(&mut s, v);
    s
}

/// Add every GPU family from a status report.
pub fn gpu_metrics(out: &mut Exposition, report: &StatusReport) {
    use Kind::{Counter, Gauge};
    out.sample(
        "wardbox_gpu_nvml_up",
        "1 when NVML (the NVIDIA driver) answered, 0 when the box runs without it.",
        Gauge,
        &[],
        if report.system.is_some() { 1.0 } else { 0.0 },
    );
    out.sample(
        "wardbox_gpu_count",
        "GPUs NVML lists.",
        Gauge,
        &[],
        report.gpus.len() as f64,
    );
    let driver = report
        .system
        .as_ref()
        .and_then(|s| s.driver_version.ok().cloned())
        .unwrap_or_default();
    let cuda = report
        .system
        .as_ref()
        .and_then(|s| s.cuda_driver_version.ok().cloned())
        .unwrap_or_default();
    out.declare(
        "wardbox_gpu_xid_events_total",
        "Critical Xid events seen since the agent started.",
        Counter,
    );

    for g in &report.gpus {
        let r = &g.reading;
        let index = r.index.to_string();
        let uuid = r.key();
        let base = [("gpu", index.as_str()), ("uuid", uuid.as_str())];
        let name = r.name.ok().cloned().unwrap_or_default();
        out.sample(
            "wardbox_gpu_info",
            "Static facts about each GPU; always 1.",
            Gauge,
            &[
                base[0],
                base[1],
                ("name", &name),
                ("driver", &driver),
                ("cuda", &cuda),
            ],
            1.0,
        );
        for s in [
            HealthState::Healthy,
            HealthState::Degraded,
            HealthState::Failed,
        ] {
            out.sample(
                "wardbox_gpu_health",
                "1 for the GPU's current health state (healthy, degraded, failed), 0 for the others.",
                Gauge,
                &join(&base, &[("state", s.as_str())]),
                if g.state == s { 1.0 } else { 0.0 },
            );
        }
        out.sample(
            "wardbox_gpu_lost",
            "1 when NVML reports the GPU lost (fallen off the bus).",
            Gauge,
            &base,
            if r.lost { 1.0 } else { 0.0 },
        );
        if let Field::Ok(m) = &r.memory {
            out.sample(
                "wardbox_gpu_memory_total_bytes",
                "Frame-buffer memory installed.",
                Gauge,
                &base,
                m.total_bytes as f64,
            );
            out.sample(
                "wardbox_gpu_memory_used_bytes",
                "Frame-buffer memory allocated.",
                Gauge,
                &base,
                m.used_bytes as f64,
            );
            out.sample(
                "wardbox_gpu_memory_free_bytes",
                "Frame-buffer memory free.",
                Gauge,
                &base,
                m.free_bytes as f64,
            );
        }
        if let Field::Ok(u) = &r.utilization {
            out.sample(
                "wardbox_gpu_utilization_ratio",
                "Share of the last sample period a kernel ran.",
                Gauge,
                &base,
                f64::from(u.gpu_percent) / 100.0,
            );
            out.sample(
                "wardbox_gpu_memory_utilization_ratio",
                "Share of the last sample period device memory was read or written.",
                Gauge,
                &base,
                f64::from(u.memory_percent) / 100.0,
            );
        }
        let temps = [
            (
                "wardbox_gpu_temperature_celsius",
                "GPU die temperature.",
                &r.temperature_c,
            ),
            (
                "wardbox_gpu_temperature_slowdown_celsius",
                "Temperature at which the hardware halves the clocks.",
                &r.temperature_slowdown_c,
            ),
            (
                "wardbox_gpu_temperature_shutdown_celsius",
                "Temperature at which the GPU powers off.",
                &r.temperature_shutdown_c,
            ),
        ];
        for (metric, help, v) in temps {
            if let Field::Ok(t) = v {
                out.sample(metric, help, Gauge, &base, f64::from(*t));
            }
        }
        if let Field::Ok(p) = r.power_mw {
            out.sample(
                "wardbox_gpu_power_watts",
                "Power draw.",
                Gauge,
                &base,
                f64::from(p) / 1000.0,
            );
        }
        if let Field::Ok(p) = r.power_limit_mw {
            out.sample(
                "wardbox_gpu_power_limit_watts",
                "Enforced power limit.",
                Gauge,
                &base,
                f64::from(p) / 1000.0,
            );
        }
        let clocks = [
            (
                "graphics",
                &r.clocks.graphics_mhz,
                &r.clocks.max_graphics_mhz,
            ),
            ("sm", &r.clocks.sm_mhz, &r.clocks.max_sm_mhz),
            ("memory", &r.clocks.memory_mhz, &r.clocks.max_memory_mhz),
        ];
        for (domain, cur, max) in clocks {
            if let Field::Ok(v) = cur {
                out.sample(
                    "wardbox_gpu_clock_hertz",
                    "Current clock by domain.",
                    Gauge,
                    &join(&base, &[("clock", domain)]),
                    f64::from(*v) * 1e6,
                );
            }
            if let Field::Ok(v) = max {
                out.sample(
                    "wardbox_gpu_clock_max_hertz",
                    "Maximum clock by domain.",
                    Gauge,
                    &join(&base, &[("clock", domain)]),
                    f64::from(*v) * 1e6,
                );
            }
        }
        if let Field::Ok(ev) = &r.clock_events {
            for (bit, reason, _) in CLOCK_EVENT_REASONS {
                out.sample(
                    "wardbox_gpu_clock_event_reason",
                    "1 when this clock event (throttle) reason is active.",
                    Gauge,
                    &join(&base, &[("reason", reason)]),
                    if ev.bits & bit != 0 { 1.0 } else { 0.0 },
                );
            }
        }
        let ecc = [
            ("volatile", "corrected", &r.ecc.volatile_corrected),
            ("volatile", "uncorrected", &r.ecc.volatile_uncorrected),
            ("aggregate", "corrected", &r.ecc.aggregate_corrected),
            ("aggregate", "uncorrected", &r.ecc.aggregate_uncorrected),
        ];
        for (counter, kind, v) in ecc {
            if let Field::Ok(n) = v {
                out.sample(
                    "wardbox_gpu_ecc_errors_total",
                    "ECC errors; volatile resets when the driver loads, aggregate is lifetime.",
                    Counter,
                    &join(&base, &[("counter", counter), ("type", kind)]),
                    *n as f64,
                );
            }
        }
        if let Field::Ok(p) = &r.retired_pages {
            out.sample(
                "wardbox_gpu_retired_pages",
                "Retired memory pages by cause.",
                Gauge,
                &join(&base, &[("cause", "multiple_single_bit")]),
                p.multiple_single_bit as f64,
            );
            out.sample(
                "wardbox_gpu_retired_pages",
                "Retired memory pages by cause.",
                Gauge,
                &join(&base, &[("cause", "double_bit")]),
                p.double_bit as f64,
            );
            out.sample(
                "wardbox_gpu_retired_pages_pending",
                "1 when a page retirement waits for a driver reload.",
                Gauge,
                &base,
                if p.pending { 1.0 } else { 0.0 },
            );
        }
        if let Field::Ok(rows) = &r.remapped_rows {
            out.sample(
                "wardbox_gpu_remapped_rows",
                "Memory rows remapped, by error type.",
                Gauge,
                &join(&base, &[("type", "correctable")]),
                rows.correctable as f64,
            );
            out.sample(
                "wardbox_gpu_remapped_rows",
                "Memory rows remapped, by error type.",
                Gauge,
                &join(&base, &[("type", "uncorrectable")]),
                rows.uncorrectable as f64,
            );
            out.sample(
                "wardbox_gpu_remapped_rows_pending",
                "1 when a row remap waits for a GPU reset.",
                Gauge,
                &base,
                if rows.pending { 1.0 } else { 0.0 },
            );
            out.sample(
                "wardbox_gpu_remapped_rows_failure",
                "1 when the GPU has no spare rows left.",
                Gauge,
                &base,
                if rows.failure { 1.0 } else { 0.0 },
            );
        }
        let links = [
            (
                "wardbox_gpu_pcie_link_generation",
                "PCIe link generation.",
                "current",
                &r.pcie.current_generation,
            ),
            (
                "wardbox_gpu_pcie_link_generation",
                "PCIe link generation.",
                "max",
                &r.pcie.max_generation,
            ),
            (
                "wardbox_gpu_pcie_link_width",
                "PCIe link width in lanes.",
                "current",
                &r.pcie.current_width,
            ),
            (
                "wardbox_gpu_pcie_link_width",
                "PCIe link width in lanes.",
                "max",
                &r.pcie.max_width,
            ),
        ];
        for (metric, help, which, v) in links {
            if let Field::Ok(n) = v {
                out.sample(
                    metric,
                    help,
                    Gauge,
                    &join(&base, &[("which", which)]),
                    f64::from(*n),
                );
            }
        }
        for (xid, n) in &g.xid_counts {
            let xid = xid.to_string();
            out.sample(
                "wardbox_gpu_xid_events_total",
                "Critical Xid events seen since the agent started.",
                Counter,
                &[base[0], base[1], ("xid", &xid)],
                *n as f64,
            );
        }
    }

    if let Some(placement) = &report.placement {
        let (gpu_layers, cpu_layers) = match placement {
            PlacementOutcome::Planned { plan } => (
                plan.gpus.iter().map(|g| g.layers).sum::<u32>(),
                plan.cpu_layers,
            ),
            PlacementOutcome::Refused { .. } => (0, 0),
        };
        let help = "Model layers placed, by where they run.";
        let layers = "wardbox_gpu_placement_layers";
        out.sample(layers, help, Gauge, &[("on", "gpu")], f64::from(gpu_layers));
        out.sample(layers, help, Gauge, &[("on", "cpu")], f64::from(cpu_layers));
    }
    out.sample(
        "wardbox_gpu_degraded",
        "1 when the box runs below full GPU strength: no driver, a GPU not healthy, layers on \
         CPU, or placement refused.",
        Gauge,
        &[],
        if report.is_degraded() { 1.0 } else { 0.0 },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{HealthBook, HealthPolicy};
    use crate::placement::{ModelSpec, PlacementPolicy};
    use crate::reading::recorded_h100;
    use crate::status::StatusReport;

    /// A strict checker of the text format: every line is a HELP, a TYPE or a sample; each
    /// family's HELP and TYPE come once, before its samples, and its samples are contiguous;
    /// label values unescape cleanly. Returns (family, labels, value) triples.
    /// (family, labels, value).
    type Sample = (String, Vec<(String, String)>, f64);

    fn parse(text: &str) -> Vec<Sample> {
        let mut samples = Vec::new();
        let mut seen_help = std::collections::HashSet::new();
        let mut seen_type = std::collections::HashSet::new();
        let mut current: Option<String> = None;
        let mut closed = std::collections::HashSet::new();
        assert!(text.ends_with('\n'), "exposition must end with a newline");
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().expect("name").to_string();
                assert!(seen_help.insert(name.clone()), "HELP twice for {name}");
                if let Some(prev) = current.replace(name.clone()) {
                    closed.insert(prev);
                }
                assert!(!closed.contains(&name), "family {name} split");
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split(' ');
                let name = it.next().expect("name").to_string();
                let kind = it.next().expect("kind");
                assert!(matches!(kind, "gauge" | "counter"), "type {kind}");
                assert_eq!(
                    current.as_deref(),
                    Some(name.as_str()),
                    "TYPE before HELP/other family"
                );
                assert!(seen_type.insert(name), "TYPE twice");
                continue;
            }
            assert!(!line.starts_with('#'), "stray comment {line}");
            let (name_labels, value) = line.rsplit_once(' ').expect("sample has a value");
            let value: f64 = value.parse().expect("numeric value");
            let (name, labels) = match name_labels.split_once('{') {
                None => (name_labels.to_string(), Vec::new()),
                Some((n, rest)) => {
                    let body = rest.strip_suffix('}').expect("closing brace");
                    (n.to_string(), parse_labels(body))
                }
            };
            assert!(valid_name(&name, true), "name {name}");
            assert_eq!(
                current.as_deref(),
                Some(name.as_str()),
                "sample {name} outside its family"
            );
            assert!(seen_type.contains(&name), "sample before TYPE for {name}");
            samples.push((name, labels, value));
        }
        samples
    }

    fn parse_labels(body: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut chars = body.chars().peekable();
        while chars.peek().is_some() {
            let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
            assert!(valid_name(&key, false), "label name {key}");
            assert_eq!(chars.next(), Some('"'), "label value must be quoted");
            let mut val = String::new();
            loop {
                match chars.next().expect("unterminated label value") {
                    '\\' => match chars.next().expect("dangling escape") {
                        '\\' => val.push('\\'),
                        '"' => val.push('"'),
                        'n' => val.push('\n'),
                        c => panic!("bad escape \\{c}"),
                    },
                    '"' => break,
                    '\n' => panic!("raw newline in label"),
                    c => val.push(c),
                }
            }
            out.push((key, val));
            match chars.next() {
                Some(',') | None => {}
                Some(c) => panic!("unexpected {c} after label"),
            }
        }
        out
    }

    fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        samples
            .iter()
            .find(|(n, ls, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| ls.iter().any(|(a, b)| a == k && b == v))
            })
            .map(|(_, _, v)| *v)
    }

    fn h100_report() -> StatusReport {
        StatusReport::from_snapshot(
            Ok(recorded_h100()),
            HealthBook::new(HealthPolicy::default()).expect("policy"),
            Some(&ModelSpec::gemma3_270m()),
            &PlacementPolicy::default(),
        )
    }

    #[test]
    fn recorded_h100_exposition_is_valid_and_carries_the_values() {
        let mut e = Exposition::new();
        gpu_metrics(&mut e, &h100_report());
        let text = e.render();
        let s = parse(&text);
        let g = [("gpu", "0")];
        assert_eq!(value(&s, "wardbox_gpu_nvml_up", &[]), Some(1.0));
        assert_eq!(value(&s, "wardbox_gpu_temperature_celsius", &g), Some(45.0));
        assert_eq!(
            value(&s, "wardbox_gpu_temperature_slowdown_celsius", &g),
            Some(89.0)
        );
        assert_eq!(value(&s, "wardbox_gpu_power_watts", &g), Some(130.0));
        assert_eq!(value(&s, "wardbox_gpu_power_limit_watts", &g), Some(700.0));
        assert_eq!(
            value(
                &s,
                "wardbox_gpu_health",
                &[("gpu", "0"), ("state", "healthy")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &s,
                "wardbox_gpu_health",
                &[("gpu", "0"), ("state", "failed")]
            ),
            Some(0.0)
        );
        assert_eq!(
            value(
                &s,
                "wardbox_gpu_clock_event_reason",
                &[("reason", "gpu_idle")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(&s, "wardbox_gpu_pcie_link_width", &[("which", "current")]),
            Some(16.0)
        );
        assert_eq!(
            value(&s, "wardbox_gpu_placement_layers", &[("on", "gpu")]),
            Some(18.0)
        );
        assert_eq!(value(&s, "wardbox_gpu_degraded", &[]), Some(0.0));
        assert_eq!(
            value(
                &s,
                "wardbox_gpu_info",
                &[("cuda", "13.0"), ("driver", "580.159.04")]
            ),
            Some(1.0)
        );
        // Retired pages are not supported on H100: absent, not zero.
        assert!(!text.contains("wardbox_gpu_retired_pages{"), "{text}");
        assert!(text.contains("# TYPE wardbox_gpu_xid_events_total counter\n"));
    }

    #[test]
    fn no_driver_exposition_says_so() {
        let report = StatusReport::from_snapshot(
            Err(crate::GpuError::NoDriver {
                detail: "libnvidia-ml.so.1: cannot open".into(),
            }),
            HealthBook::new(HealthPolicy::default()).expect("policy"),
            Some(&ModelSpec::gemma3_270m()),
            &PlacementPolicy::default(),
        );
        let mut e = Exposition::new();
        gpu_metrics(&mut e, &report);
        let s = parse(&e.render());
        assert_eq!(value(&s, "wardbox_gpu_nvml_up", &[]), Some(0.0));
        assert_eq!(value(&s, "wardbox_gpu_count", &[]), Some(0.0));
        assert_eq!(
            value(&s, "wardbox_gpu_placement_layers", &[("on", "cpu")]),
            Some(18.0)
        );
        assert_eq!(value(&s, "wardbox_gpu_degraded", &[]), Some(1.0));
    }

    #[test]
    fn label_values_are_escaped_and_round_trip() {
        let mut e = Exposition::new();
        let nasty = "a \"quoted\" \\ back\nslash";
        e.sample(
            "x_total",
            "help with \\ and\nnewline",
            Kind::Counter,
            &[("name", nasty)],
            3.0,
        );
        e.sample(
            "x_total",
            "ignored second help",
            Kind::Counter,
            &[("name", "plain")],
            0.5,
        );
        let text = e.render();
        assert_eq!(
            text,
            "# HELP x_total help with \\\\ and\\nnewline\n# TYPE x_total counter\n\
             x_total{name=\"a \\\"quoted\\\" \\\\ back\\nslash\"} 3\nx_total{name=\"plain\"} 0.5\n"
        );
        let s = parse(&text);
        assert_eq!(s[0].1, vec![("name".to_string(), nasty.to_string())]);
    }

    #[test]
    fn xid_counts_are_exported_per_gpu() {
        let mut report = h100_report();
        report.gpus[0].xid_counts.insert(79, 1);
        let mut e = Exposition::new();
        gpu_metrics(&mut e, &report);
        let s = parse(&e.render());
        assert_eq!(
            value(
                &s,
                "wardbox_gpu_xid_events_total",
                &[("gpu", "0"), ("xid", "79")]
            ),
            Some(1.0)
        );
    }

    #[test]
    fn special_values_format() {
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(80.0 * 1024.0 * 1024.0 * 1024.0), "85899345920");
        assert_eq!(format_value(0.25), "0.25");
    }
}
