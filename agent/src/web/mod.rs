//! The HTTP surface. Architecture invariant: only this module knows about HTTP.
//!
//! `app(state)` builds the whole router so tests drive it with `oneshot`, without a socket.
//! Every route is listed once in [`ROUTES`] with who may reach it; one guard applies that table
//! to every request (sessions, roles, CSRF, audit), and a route missing from the table is refused
//! to everyone.

pub mod accounts;
mod admin;
pub mod access;
mod alerts;
mod review;
mod assets;
pub mod backups;
pub mod clinical;
pub mod connlimit;
mod config;
pub mod egress;
mod error;
mod guard;
mod health;
pub mod images;
pub mod ldap;
mod login;
pub mod metrics;
mod pages;
pub mod reports;
pub mod requests;
pub mod session;
pub mod throttle;
pub mod tls;
pub mod updates;
pub mod upload;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post};

pub use accounts::Role;
pub use clinical::{Clinical, EgressCounters, NoEgressCounters, Unavailable};
pub use config::{LdapConfig, TlsMode, WebConfig};
pub use error::{RefusedAccess, WebError, size_in_words};
pub use guard::{Authed, ClientAddr};
pub use health::{Alert, Health, HealthState, SharedHealth};
pub use session::{Clock, ManualClock, SessionPolicy, Sessions, SystemClock};

use crate::audit::{AuditEvent, AuditLog, CheckpointLog, EventKind};
use crate::store::Store;

/// The session cookie (HttpOnly, SameSite=Strict, Secure over TLS).
pub const SESSION_COOKIE: &str = "wb_session";
/// The pre-session cookie that carries the sign-in form's CSRF token (double submit).
pub const LOGIN_COOKIE: &str = "wb_login";
/// The header JavaScript uses for the CSRF token (fetch requests, uploads, streaming).
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Largest request body of the upload route: an uploaded document (multipart).
pub const MAX_UPLOAD_BYTES: usize = 25 * 1024 * 1024;
/// Largest request body of every other route: a form (a question of up to 20,000 characters,
/// URL-encoded, fits).
pub const MAX_FORM_BYTES: usize = 256 * 1024;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub health: SharedHealth,
    /// The UI's services. `None` (health-only state): every UI route answers 503.
    pub ui: Option<Arc<Ui>>,
    /// What `/metrics` exposes (GPU health first; engine and request metrics add theirs).
    pub metrics: Vec<Arc<dyn metrics::MetricsSource>>,
    /// Requests served and audited per route class (also on `/metrics`).
    pub requests: Arc<requests::RequestCounters>,
}

impl AppState {
    /// Health only, no UI (tests of the health endpoint, or a box whose store failed).
    pub fn new(health: Health) -> Self {
        let requests = Arc::new(requests::RequestCounters::new());
        Self { health: Arc::new(std::sync::RwLock::new(health)), ui: None, metrics: vec![requests.clone() as Arc<dyn metrics::MetricsSource>], requests }
    }

    pub fn with_ui(health: Health, ui: Ui) -> Self {
        Self { ui: Some(Arc::new(ui)), ..Self::new(health) }
    }

    /// Add a source to `/metrics`.
    pub fn with_metrics(mut self, source: Arc<dyn metrics::MetricsSource>) -> Self {
        self.metrics.push(source);
        self
    }
}

/// The UI's services: accounts and sessions, the audit log, the clinical back end.
#[derive(Debug)]
pub struct Ui {
    /// The store (accounts, break-glass events, audit trail for the admin page).
    pub store: Arc<Mutex<Store>>,
    pub audit: AuditLog,
    pub sessions: Sessions,
    pub clock: Arc<dyn Clock>,
    pub lockout: accounts::LockoutPolicy,
    /// Failed sign-ins per client address and per account (in memory; see `throttle`).
    pub throttle: Mutex<throttle::SignInThrottle>,
    /// False only for the dev profile's plain-HTTP loopback mode, where browsers would drop
    /// a `Secure` cookie.
    pub secure_cookies: bool,
    pub ldap: Option<LdapConfig>,
    pub clinical: Arc<dyn Clinical>,
    pub egress: Arc<dyn EgressCounters>,
    /// The checkpoint log, so the audit page can show the chain's verify status.
    pub checkpoints: Option<CheckpointLog>,
    /// Compliance report generation for the Reports page; `None`: the page says it is not set up.
    pub reports: Option<Arc<dyn reports::ReportService>>,
    /// Backups for the Backups page; `None`: the page says they are not set up.
    pub backups: Option<Arc<dyn backups::BackupService>>,
    /// Updates from a USB stick for the Updates page; `None`: the page says they are not set up.
    pub updates: Option<Arc<dyn updates::UpdateService>>,
    /// The `[alerts]` section: clinic hours and limits for the weekly activity review.
    pub alert_rules: wardbox_alerts::AlertsConfig,
}

impl Ui {
    /// The UI with the settings from `[web]`, the system clock, and no clinical back end
    /// (every clinical page says the model is not available until one is set).
    pub fn new(store: Arc<Mutex<Store>>, audit: AuditLog, web: &WebConfig) -> Self {
        Self {
            store,
            audit,
            sessions: Sessions::new(SessionPolicy {
                idle_secs: web.idle_timeout_secs as i64,
                absolute_secs: web.absolute_timeout_secs as i64,
                break_glass_absolute_secs: web.break_glass_timeout_secs as i64,
            }),
            clock: Arc::new(SystemClock),
            lockout: accounts::LockoutPolicy { threshold: web.lockout_threshold, lock_secs: web.lockout_secs as i64 },
            throttle: Mutex::new(throttle::SignInThrottle::new(throttle::ThrottlePolicy {
                free_failures: web.signin_free_failures,
                block_after: web.signin_block_after,
                block_secs: web.signin_block_secs as i64,
                lock_threshold: web.lockout_threshold,
                lock_addresses: web.lockout_addresses,
                lock_window_secs: web.lockout_window_secs as i64,
                // The people who share an address (a terminal server) may all be signing in.
                max_pending: web.max_connections_per_address,
            })),
            secure_cookies: web.tls != TlsMode::PlainHttpDev,
            ldap: web.ldap.clone(),
            clinical: Arc::new(Unavailable::default()),
            egress: Arc::new(NoEgressCounters("the firewall's counters are not wired to the UI yet".into())),
            checkpoints: None,
            reports: None,
            backups: None,
            updates: None,
            alert_rules: wardbox_alerts::AlertsConfig::default(),
        }
    }

    pub fn with_alert_rules(mut self, rules: wardbox_alerts::AlertsConfig) -> Self {
        self.alert_rules = rules;
        self
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn with_clinical(mut self, clinical: Arc<dyn Clinical>) -> Self {
        self.clinical = clinical;
        self
    }

    pub fn with_egress(mut self, egress: Arc<dyn EgressCounters>) -> Self {
        self.egress = egress;
        self
    }

    pub fn with_checkpoints(mut self, checkpoints: CheckpointLog) -> Self {
        self.checkpoints = Some(checkpoints);
        self
    }

    pub fn with_reports(mut self, reports: Arc<dyn reports::ReportService>) -> Self {
        self.reports = Some(reports);
        self
    }

    pub fn with_backups(mut self, backups: Arc<dyn backups::BackupService>) -> Self {
        self.backups = Some(backups);
        self
    }

    pub fn with_updates(mut self, updates: Arc<dyn updates::UpdateService>) -> Self {
        self.updates = Some(updates);
        self
    }

    /// Run a store operation off the async threads.
    pub async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, WebError> + Send + 'static,
    ) -> Result<T, WebError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let guard = store.lock().map_err(|_| WebError::Internal("the store lock is poisoned".into()))?;
            f(&guard)
        })
        .await
        .map_err(|e| WebError::Internal(format!("store task failed: {e}")))?
    }

    /// Call the clinical back end off the async threads: it reads the store and may wait on
    /// the engine.
    pub async fn clinical<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Clinical) -> Result<T, clinical::ClinicalError> + Send + 'static,
    ) -> Result<T, clinical::ClinicalError> {
        let backend = self.clinical.clone();
        tokio::task::spawn_blocking(move || f(backend.as_ref()))
            .await
            .map_err(|e| clinical::ClinicalError::Failed(format!("the clinical task failed: {e}")))?
    }

    /// Append an audit record and wait until it is durable. A request whose record cannot be
    /// written is refused (fail closed): nothing happens on this box without a trace.
    pub async fn audit(&self, kind: EventKind, actor: &str, detail: serde_json::Value) -> Result<u64, WebError> {
        self.audit.append(AuditEvent::new(kind, actor, detail)).await.map_err(|e| match e {
            crate::audit::AuditError::VolumeFull => WebError::VolumeFull,
            e => WebError::AuditFailed(e.to_string()),
        })
    }
}

/// Who may reach a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Sign-in pages and static assets: no session needed.
    Public,
    /// Anyone on the box itself (monitoring, `curl` from the console), or these roles.
    LoopbackOr(&'static [Role]),
    /// Signed-in people with one of these roles.
    Roles(&'static [Role]),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    Post,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "GET",
            Verb::Post => "POST",
        }
    }
}

/// One row of the route table.
#[derive(Debug, Clone, Copy)]
pub struct RouteSpec {
    pub verb: Verb,
    /// The path as registered with the router (`{id}` for parameters).
    pub path: &'static str,
    pub access: Access,
    /// Largest request body; the guard answers a larger one with 413, naming this limit.
    pub max_body: usize,
}

const fn route(verb: Verb, path: &'static str, access: Access) -> RouteSpec {
    RouteSpec { verb, path, access, max_body: MAX_FORM_BYTES }
}

impl RouteSpec {
    const fn with_max_body(self, max_body: usize) -> RouteSpec {
        RouteSpec { max_body, ..self }
    }
}

const EVERYONE: &[Role] = &Role::ALL;
const CARE: &[Role] = &[Role::Clinician, Role::Nurse];
const CLINICIANS: &[Role] = &[Role::Clinician];
const ADMINS: &[Role] = &[Role::Admin];
const OVERSIGHT: &[Role] = &[Role::Admin, Role::Auditor];

use Access::{LoopbackOr, Public, Roles};
use Verb::{Get, Post};

/// Every route and who may reach it. The guard reads this table; the router below registers
/// the same paths. A path registered without a row here is refused to everyone.
pub const ROUTES: &[RouteSpec] = &[
    route(Get, "/login", Public),
    route(Post, "/login", Public),
    route(Get, "/login/emergency", Public),
    route(Post, "/login/emergency", Public),
    route(Get, "/static/{file}", Public),
    route(Get, "/health", LoopbackOr(OVERSIGHT)),
    // Scraped by a local Prometheus agent, or by an admin; no PHI, but it describes the box.
    route(Get, "/metrics", LoopbackOr(ADMINS)),
    route(Get, "/", Roles(EVERYONE)),
    route(Post, "/logout", Roles(EVERYONE)),
    route(Get, "/session/status", Roles(EVERYONE)),
    route(Get, "/patients", Roles(CARE)),
    route(Get, "/patients/{id}", Roles(CARE)),
    route(Get, "/patients/{id}/documents/{doc}", Roles(CARE)),
    route(Get, "/patients/{id}/conversations/{conversation}", Roles(CARE)),
    route(Post, "/patients/{id}/ask", Roles(CARE)),
    route(Post, "/patients/{id}/soap", Roles(CLINICIANS)),
    route(Post, "/patients/{id}/discharge", Roles(CARE)),
    route(Post, "/patients/{id}/medications", Roles(CARE)),
    route(Post, "/patients/{id}/upload", Roles(CARE)).with_max_body(MAX_UPLOAD_BYTES),
    route(Post, "/patients/{id}/images", Roles(CARE)).with_max_body(MAX_UPLOAD_BYTES),
    route(Get, "/patients/{id}/images/{image}", Roles(CARE)),
    route(Post, "/patients/{id}/drafts", Roles(CARE)),
    route(Get, "/admin", Roles(ADMINS)),
    route(Get, "/admin/users", Roles(ADMINS)),
    route(Post, "/admin/users", Roles(ADMINS)),
    route(Post, "/admin/users/{username}/{action}", Roles(ADMINS)),
    route(Get, "/admin/models", Roles(ADMINS)),
    route(Post, "/admin/models/tasks", Roles(ADMINS)),
    route(Get, "/admin/egress", Roles(ADMINS)),
    route(Get, "/admin/audit", Roles(OVERSIGHT)),
    route(Get, "/admin/break-glass", Roles(OVERSIGHT)),
    route(Get, "/admin/alerts", Roles(OVERSIGHT)),
    route(Get, "/admin/alerts/{id}", Roles(OVERSIGHT)),
    route(Post, "/admin/alerts/{id}/review", Roles(OVERSIGHT)),
    route(Post, "/admin/alerts/{id}/assign", Roles(OVERSIGHT)),
    route(Post, "/admin/alerts/{id}/disposition", Roles(OVERSIGHT)),
    route(Post, "/admin/alerts/{id}/close", Roles(OVERSIGHT)),
    route(Get, "/admin/review", Roles(OVERSIGHT)),
    route(Post, "/admin/review", Roles(OVERSIGHT)),
    route(Get, "/admin/access", Roles(OVERSIGHT)),
    route(Post, "/admin/access/grant", Roles(ADMINS)),
    route(Post, "/admin/access/revoke", Roles(ADMINS)),
    route(Post, "/admin/access/review", Roles(ADMINS)),
    route(Get, "/admin/reports", Roles(OVERSIGHT)),
    route(Post, "/admin/reports/generate", Roles(OVERSIGHT)),
    route(Post, "/admin/reports/attest", Roles(OVERSIGHT)),
    route(Post, "/admin/reports/waive", Roles(ADMINS)),
    route(Get, "/admin/reports/{file}", Roles(OVERSIGHT)),
    route(Get, "/admin/backups", Roles(OVERSIGHT)),
    route(Post, "/admin/backups/run", Roles(ADMINS)),
    route(Post, "/admin/backups/drill", Roles(ADMINS)),
    route(Post, "/admin/backups/key", Roles(ADMINS)),
    route(Post, "/admin/backups/rotate-key", Roles(ADMINS)),
    route(Get, "/admin/updates", Roles(ADMINS)),
    route(Get, "/admin/updates/progress", Roles(ADMINS)),
    route(Post, "/admin/updates/apply", Roles(ADMINS)),
    route(Post, "/admin/updates/receipt", Roles(ADMINS)),
    route(Post, "/admin/updates/usb-window", Roles(ADMINS)),
];

pub fn route_spec(verb: Verb, path: &str) -> Option<&'static RouteSpec> {
    ROUTES.iter().find(|r| r.verb == verb && r.path == path)
}

pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/login", get(login::login_page).post(login::login_submit))
        .route("/login/emergency", get(login::emergency_page).post(login::emergency_submit))
        .route("/static/{file}", get(assets::serve))
        .route("/health", get(health::get_health))
        .route("/metrics", get(|State(s): State<AppState>| async move { metrics::respond(&s.metrics) }))
        .route("/", get(pages::home))
        .route("/logout", post(login::logout))
        .route("/session/status", get(pages::session_status))
        .route("/patients", get(pages::patients))
        .route("/patients/{id}", get(pages::patient))
        .route("/patients/{id}/documents/{doc}", get(pages::document))
        .route("/patients/{id}/conversations/{conversation}", get(pages::conversation))
        .route("/patients/{id}/ask", post(pages::ask))
        .route("/patients/{id}/soap", post(pages::soap))
        .route("/patients/{id}/discharge", post(pages::discharge))
        .route("/patients/{id}/medications", post(pages::medications))
        .route("/patients/{id}/upload", post(pages::upload))
        .route("/patients/{id}/images", post(images::upload))
        .route("/patients/{id}/images/{image}", get(images::show))
        .route("/patients/{id}/drafts", post(pages::save_draft))
        .route("/admin", get(admin::dashboard))
        .route("/admin/users", get(admin::users).post(admin::create_user))
        .route("/admin/users/{username}/{action}", post(admin::user_action))
        .route("/admin/models", get(admin::models))
        .route("/admin/models/tasks", post(admin::set_task_model))
        .route("/admin/egress", get(admin::egress))
        .route("/admin/audit", get(admin::audit_trail))
        .route("/admin/break-glass", get(admin::break_glass))
        .route("/admin/alerts", get(alerts::list))
        .route("/admin/alerts/{id}", get(alerts::show))
        .route("/admin/alerts/{id}/review", post(alerts::review))
        .route("/admin/alerts/{id}/assign", post(alerts::assign))
        .route("/admin/alerts/{id}/disposition", post(alerts::dispose))
        .route("/admin/alerts/{id}/close", post(alerts::close))
        .route("/admin/review", get(review::page).post(review::mark))
        .route("/admin/access", get(access::page))
        .route("/admin/access/grant", post(access::grant))
        .route("/admin/access/revoke", post(access::revoke))
        .route("/admin/access/review", post(access::review))
        .route("/admin/reports", get(reports::reports))
        .route("/admin/reports/generate", post(reports::generate))
        .route("/admin/reports/attest", post(reports::attest))
        .route("/admin/reports/waive", post(reports::waive))
        .route("/admin/reports/{file}", get(reports::download))
        .route("/admin/backups", get(backups::show))
        .route("/admin/backups/run", post(backups::run_backup))
        .route("/admin/backups/drill", post(backups::run_drill))
        .route("/admin/backups/key", post(backups::key_sheet))
        .route("/admin/backups/rotate-key", post(backups::rotate_key))
        .route("/admin/updates", get(updates::show))
        .route("/admin/updates/progress", get(updates::progress))
        .route("/admin/updates/apply", post(updates::apply))
        .route("/admin/updates/receipt", post(updates::receipt))
        .route("/admin/updates/usb-window", post(updates::usb_window))
        // Inside the guard: counts only the requests the guard let through to their handler.
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), requests::count_served))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), guard::guard))
        // The guard applies each route's own limit first; this is the extractors' ceiling.
        .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES))
        .layer(axum::middleware::map_response_with_state(state.clone(), guard::security_headers))
        .with_state(state)
}
