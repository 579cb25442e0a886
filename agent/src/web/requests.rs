//! Request counters per route class: how many requests the web layer served and how many of
//! them it audited, so the compliance report can show that every patient-data request left an
//! audit record (`audit-every-interaction`, docs/report.md).
//!
//! The guard counts: a request is *served* when it reaches its handler, *audited* when its
//! `access` record was written before that, and an *audit failure* when that write failed (the
//! request is then refused, not served). The counters live for the agent's run and are exported
//! on `/metrics`; a restart starts them again from zero (the report shows since when).

use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use wardbox_gpu::metrics::{Exposition, Kind};

use super::AppState;
use super::metrics::MetricsSource;

/// Families on `/metrics`; `wardbox report generate` reads them back by these names.
pub const SERVED_METRIC: &str = "wardbox_http_requests_served_total";
pub const AUDITED_METRIC: &str = "wardbox_http_requests_audited_total";
pub const AUDIT_FAILURES_METRIC: &str = "wardbox_http_audit_failures_total";
pub const STARTED_METRIC: &str = "wardbox_http_counters_started_seconds";

/// What a route is about, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    /// Patient records, documents, questions to the model: each request is audited first.
    PatientData,
    /// Administrator and auditor pages: each request is audited first.
    Administration,
    /// The signed-in person's own pages (home, sign-out, the session timer's polling).
    Account,
    /// Sign-in pages: audited by their outcome (`login`, `login_failed`), not per request.
    SignIn,
    /// Static files: no data, not audited.
    Static,
    /// `/health` and `/metrics`, from the box itself or an administrator.
    Monitoring,
}

impl RouteClass {
    pub const ALL: [RouteClass; 6] = [
        RouteClass::PatientData,
        RouteClass::Administration,
        RouteClass::Account,
        RouteClass::SignIn,
        RouteClass::Static,
        RouteClass::Monitoring,
    ];

    /// The class of a path as registered in the route table.
    pub fn of(route: &str) -> RouteClass {
        let under = |prefix: &str| route == prefix || route.starts_with(&format!("{prefix}/"));
        if under("/patients") {
            RouteClass::PatientData
        } else if under("/admin") {
            RouteClass::Administration
        } else if under("/login") {
            RouteClass::SignIn
        } else if under("/static") {
            RouteClass::Static
        } else if route == "/health" || route == "/metrics" {
            RouteClass::Monitoring
        } else {
            RouteClass::Account
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RouteClass::PatientData => "patient_data",
            RouteClass::Administration => "administration",
            RouteClass::Account => "account",
            RouteClass::SignIn => "sign_in",
            RouteClass::Static => "static",
            RouteClass::Monitoring => "monitoring",
        }
    }

    /// Every request of this class must have its audit record before it is served.
    pub fn audit_required(self) -> bool {
        matches!(self, RouteClass::PatientData | RouteClass::Administration)
    }

    fn index(self) -> usize {
        self as usize
    }
}

const CLASSES: usize = RouteClass::ALL.len();

/// The counters, shared by the guard and `/metrics`.
#[derive(Debug)]
pub struct RequestCounters {
    started: jiff::Timestamp,
    served: [AtomicU64; CLASSES],
    audited: [AtomicU64; CLASSES],
    audit_failures: [AtomicU64; CLASSES],
}

impl Default for RequestCounters {
    fn default() -> Self {
        Self::new()
    }
}

/// One class's counts at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassCounts {
    pub class: RouteClass,
    pub served: u64,
    pub audited: u64,
    pub audit_failures: u64,
}

impl RequestCounters {
    pub fn new() -> Self {
        Self {
            started: jiff::Timestamp::now(),
            served: Default::default(),
            audited: Default::default(),
            audit_failures: Default::default(),
        }
    }

    pub fn started(&self) -> jiff::Timestamp {
        self.started
    }

    pub fn served(&self, class: RouteClass) {
        self.served[class.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn audited(&self, class: RouteClass) {
        self.audited[class.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn audit_failed(&self, class: RouteClass) {
        self.audit_failures[class.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Vec<ClassCounts> {
        RouteClass::ALL
            .iter()
            .map(|&class| ClassCounts {
                class,
                served: self.served[class.index()].load(Ordering::Relaxed),
                audited: self.audited[class.index()].load(Ordering::Relaxed),
                audit_failures: self.audit_failures[class.index()].load(Ordering::Relaxed),
            })
            .collect()
    }
}

impl MetricsSource for RequestCounters {
    fn write_metrics(&self, out: &mut Exposition) {
        out.sample(
            STARTED_METRIC,
            "When the request counters started (the agent's start), in Unix seconds.",
            Kind::Gauge,
            &[],
            self.started.as_second() as f64,
        );
        for c in self.snapshot() {
            let required = if c.class.audit_required() { "true" } else { "false" };
            let labels = [("class", c.class.as_str()), ("audit_required", required)];
            out.sample(SERVED_METRIC, "Requests that reached their handler, per route class.", Kind::Counter, &labels, c.served as f64);
            out.sample(
                AUDITED_METRIC,
                "Requests whose audit record was written before their handler ran, per route class.",
                Kind::Counter,
                &labels,
                c.audited as f64,
            );
            out.sample(
                AUDIT_FAILURES_METRIC,
                "Requests refused because their audit record could not be written, per route class.",
                Kind::Counter,
                &labels,
                c.audit_failures as f64,
            );
        }
    }
}

/// Counts a request as served. Layered inside the guard, so it sees exactly the requests the
/// guard let through to their handler.
pub(super) async fn count_served(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(route) = req.extensions().get::<MatchedPath>() {
        state.requests.served(RouteClass::of(route.as_str()));
    }
    next.run(req).await
}

/// One class as read back from a `/metrics` scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapedClass {
    pub class: String,
    pub audit_required: bool,
    pub served: u64,
    pub audited: u64,
    pub audit_failures: u64,
}

/// The counters read back from a `/metrics` text: when they started, and each class. An
/// exposition without the started gauge or without any class is an error naming what is
/// missing (an agent too old to count, or another program on the port).
pub fn parse_scrape(text: &str) -> Result<(jiff::Timestamp, Vec<ScrapedClass>), String> {
    let mut started = None;
    let mut classes: Vec<ScrapedClass> = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((head, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        let (name, labels) = match head.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (head, ""),
        };
        if name == STARTED_METRIC {
            started = jiff::Timestamp::from_second(value as i64).ok();
            continue;
        }
        if ![SERVED_METRIC, AUDITED_METRIC, AUDIT_FAILURES_METRIC].contains(&name) {
            continue;
        }
        let label = |key: &str| {
            labels.split(',').find_map(|kv| kv.strip_prefix(&format!("{key}=\"")).map(|v| v.trim_end_matches('"').to_string()))
        };
        let Some(class) = label("class") else { return Err(format!("`{line}` has no class label")) };
        let entry = match classes.iter_mut().position(|c| c.class == class) {
            Some(i) => &mut classes[i],
            None => {
                let audit_required = label("audit_required").as_deref() == Some("true");
                classes.push(ScrapedClass { class, audit_required, served: 0, audited: 0, audit_failures: 0 });
                classes.last_mut().expect("just pushed")
            }
        };
        let count = value as u64;
        match name {
            SERVED_METRIC => entry.served = count,
            AUDITED_METRIC => entry.audited = count,
            _ => entry.audit_failures = count,
        }
    }
    let started = started.ok_or_else(|| format!("the scrape has no {STARTED_METRIC} (an agent that does not count requests)"))?;
    if classes.is_empty() {
        return Err(format!("the scrape has no {SERVED_METRIC} samples"));
    }
    Ok((started, classes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_fall_into_their_classes() {
        for (route, class) in [
            ("/patients", RouteClass::PatientData),
            ("/patients/{id}/documents/{doc}", RouteClass::PatientData),
            ("/admin", RouteClass::Administration),
            ("/admin/reports/{file}", RouteClass::Administration),
            ("/login/emergency", RouteClass::SignIn),
            ("/static/{file}", RouteClass::Static),
            ("/metrics", RouteClass::Monitoring),
            ("/", RouteClass::Account),
            ("/session/status", RouteClass::Account),
            ("/patientsearch", RouteClass::Account),
        ] {
            assert_eq!(RouteClass::of(route), class, "{route}");
        }
    }

    #[test]
    fn every_patient_data_route_in_the_table_is_audited_first() {
        // Patient-data routes are for signed-in roles only: the guard audits them before they
        // reach the handler (public and loopback routes skip the audit).
        for spec in super::super::ROUTES.iter().filter(|r| RouteClass::of(r.path).audit_required()) {
            assert!(matches!(spec.access, super::super::Access::Roles(_)), "{} is reachable without a session", spec.path);
        }
    }

    #[test]
    fn counters_round_trip_through_the_exposition() {
        let counters = RequestCounters::new();
        for _ in 0..3 {
            counters.served(RouteClass::PatientData);
            counters.audited(RouteClass::PatientData);
        }
        counters.served(RouteClass::PatientData);
        counters.audit_failed(RouteClass::Administration);
        counters.served(RouteClass::Static);
        let mut out = Exposition::new();
        counters.write_metrics(&mut out);
        let (started, classes) = parse_scrape(&out.render()).expect("parse");
        assert_eq!(started, jiff::Timestamp::from_second(counters.started().as_second()).expect("time"));
        let patient = classes.iter().find(|c| c.class == "patient_data").expect("patient_data");
        assert_eq!((patient.served, patient.audited, patient.audit_failures, patient.audit_required), (4, 3, 0, true));
        let admin = classes.iter().find(|c| c.class == "administration").expect("administration");
        assert_eq!(admin.audit_failures, 1);
        let statics = classes.iter().find(|c| c.class == "static").expect("static");
        assert_eq!((statics.served, statics.audit_required), (1, false));
        assert_eq!(classes.len(), RouteClass::ALL.len());
    }

    #[test]
    fn a_scrape_without_the_counters_is_refused() {
        let err = parse_scrape("# HELP wardbox_gpu_nvml_up x\nwardbox_gpu_nvml_up 0\n").expect_err("no counters");
        assert!(err.contains(STARTED_METRIC), "{err}");
    }
}
