//! Shared set-up for the web tests: a real SQLCipher store and audit writer in a temporary
//! directory, accounts, a settable clock, and helpers to send requests through `app(state)`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, Response, header};
use http_body_util::BodyExt;
use tower::ServiceExt;
use wardbox::audit::{AuditLog, AuditRecord, WriterThread};
use wardbox::boot::BootLog;
use wardbox::config::Profile;
use wardbox::store::{Store, StoreKey};
use wardbox::web::accounts::{self, NewUser, Role, User};
use wardbox::web::{AppState, Clinical, Health, ManualClock, Ui, WebConfig, app};

pub const PASSWORD: &str = "correct horse battery";

/// Builds the clinical back end once the harness's store exists.
type MakeClinical = Box<dyn FnOnce(&Path, &StoreKey) -> Arc<dyn Clinical>>;
/// Builds the backup service over the harness's store (path, key) and audit log.
pub type MakeBackups = Box<dyn FnOnce(&Path, &StoreKey, AuditLog) -> Arc<dyn wardbox::web::backups::BackupService>>;
/// Builds the update service over the harness's store (path, key) and audit log.
pub type MakeUpdates = Box<dyn FnOnce(&Path, &StoreKey, AuditLog) -> Arc<dyn wardbox::web::updates::UpdateService>>;

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub key: StoreKey,
    pub store_path: PathBuf,
    pub state: AppState,
    pub ui: Arc<Ui>,
    pub clock: Arc<ManualClock>,
    /// Last field: dropped after `state` and `ui` release their audit handles.
    writer: WriterGuard,
}

/// Joins the audit writer when the harness goes, so that it does not close its SQLCipher
/// connection while the test process exits (seen as a SIGSEGV after every test passed). A
/// server task still holding a handle keeps it alive; then it is left detached after a while.
struct WriterGuard(Option<WriterThread>);

impl Drop for WriterGuard {
    fn drop(&mut self) {
        if let Some(writer) = self.0.take() {
            writer.join_within(std::time::Duration::from_secs(2));
        }
    }
}

impl Harness {
    pub fn new() -> Self {
        Self::with(WebConfig::default(), None)
    }

    pub fn with(web: WebConfig, clinical: Option<Arc<dyn Clinical>>) -> Self {
        Self::build(web, clinical.map(|c| Box::new(move |_: &Path, _: &StoreKey| c) as MakeClinical), false, None, None)
    }

    /// With the system clock: for tests over a real socket where time passes for real.
    pub fn with_real_clock(web: WebConfig, clinical: Option<Arc<dyn Clinical>>) -> Self {
        Self::build(web, clinical.map(|c| Box::new(move |_: &Path, _: &StoreKey| c) as MakeClinical), true, None, None)
    }

    /// With the system clock and a clinical back end over this harness's own store (the
    /// agent's retrieval index lives in the same database).
    pub fn with_store_clinical(web: WebConfig, make: impl FnOnce(&Path, &StoreKey) -> Arc<dyn Clinical> + 'static) -> Self {
        Self::build(web, Some(Box::new(make)), true, None, None)
    }

    /// With the system clock and the given alert rules (the clinic hours the activity review
    /// page judges off-hours work by).
    pub fn with_real_clock_and_rules(web: WebConfig, rules: wardbox_alerts::AlertsConfig) -> Self {
        Self::build_with_rules(web, None, true, None, None, Some(rules))
    }

    /// With the system clock and a backup service over this harness's store and audit log.
    pub fn with_backups(make: MakeBackups) -> Self {
        Self::build(WebConfig::default(), None, true, Some(make), None)
    }

    /// With the system clock and an update service over this harness's store and audit log.
    pub fn with_updates(make: MakeUpdates) -> Self {
        Self::build(WebConfig::default(), None, true, None, Some(make))
    }

    fn build(web: WebConfig, clinical: Option<MakeClinical>, real_clock: bool, backups: Option<MakeBackups>, updates: Option<MakeUpdates>) -> Self {
        Self::build_with_rules(web, clinical, real_clock, backups, updates, None)
    }

    fn build_with_rules(
        web: WebConfig,
        clinical: Option<MakeClinical>,
        real_clock: bool,
        backups: Option<MakeBackups>,
        updates: Option<MakeUpdates>,
        rules: Option<wardbox_alerts::AlertsConfig>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = StoreKey::random();
        let store_path = dir.path().join("wardbox.db");
        let (mut store, _) = Store::open_or_create(&store_path, &key).expect("store");
        store.migrate().expect("migrate");
        let (audit, writer) = AuditLog::start(&store_path, &key).expect("audit");
        let clock = Arc::new(ManualClock::new(1_800_000_000));
        let checkpoints = wardbox::daemon::checkpoint_log(dir.path());
        let backups = backups.map(|make| make(&store_path, &key, audit.clone()));
        let updates = updates.map(|make| make(&store_path, &key, audit.clone()));
        let mut ui = Ui::new(Arc::new(Mutex::new(store)), audit, &web)
            .with_clock(clock.clone())
            .with_checkpoints(checkpoints);
        if let Some(make) = clinical {
            ui = ui.with_clinical(make(&store_path, &key));
        }
        if real_clock {
            ui = ui.with_clock(Arc::new(wardbox::web::SystemClock));
        }
        if let Some(backups) = backups {
            ui = ui.with_backups(backups);
        }
        if let Some(updates) = updates {
            ui = ui.with_updates(updates);
        }
        if let Some(rules) = rules {
            ui = ui.with_alert_rules(rules);
        }
        let health = Health::from_boot(Profile::Dev, &BootLog::new(Profile::Dev), "2027-01-15T08:00:00Z".into());
        let state = AppState::with_ui(health, ui);
        let ui = state.ui.clone().expect("ui");
        Self { dir, key, store_path, state, ui, clock, writer: WriterGuard(Some(writer)) }
    }

    pub fn add_user(&self, username: &str, role: Role, break_glass: bool) -> User {
        let store = self.ui.store.lock().expect("lock");
        let new = NewUser { username, display_name: &format!("Test {username}"), role, password: PASSWORD, break_glass };
        accounts::add_user(store.conn(), &new, "2027-01-15T08:00:00Z").expect("add user")
    }

    /// A session made directly (for tests about routes, not about signing in).
    pub fn session(&self, user: &User) -> (String, String) {
        let (token, s) = self.ui.sessions.create(user, self.clock.now_secs(), false);
        (token, s.csrf)
    }

    pub async fn send(&self, req: Request<Body>) -> Response<Body> {
        app(self.state.clone()).oneshot(req).await.expect("infallible")
    }

    /// Every audit record so far, oldest first (read through a second connection).
    pub fn audit_records(&self) -> Vec<AuditRecord> {
        let store = Store::open_existing(&self.store_path, &self.key).expect("open");
        let mut stmt = store
            .conn()
            .prepare("SELECT seq, ts, kind, actor, detail, prev_hash, hash FROM audit ORDER BY seq")
            .expect("prepare");
        stmt.query_map([], AuditRecord::from_row)
        .expect("query")
        .collect::<Result<Vec<_>, _>>()
        .expect("rows")
    }
}


pub trait ClockExt {
    fn now_secs(&self) -> i64;
}

impl ClockExt for ManualClock {
    fn now_secs(&self) -> i64 {
        wardbox::web::Clock::now(self)
    }
}

pub fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).expect("request")
}

pub fn get_with(path: &str, token: &str) -> Request<Body> {
    Request::get(path).header(header::COOKIE, format!("wb_session={token}")).body(Body::empty()).expect("request")
}

/// A URL-encoded form POST with the session cookie (if any) and the given fields.
pub fn post_form(path: &str, token: Option<&str>, fields: &[(&str, &str)]) -> Request<Body> {
    let body = serde_urlencoded::to_string(fields).expect("form");
    let mut b = Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(t) = token {
        b = b.header(header::COOKIE, format!("wb_session={t}"));
    }
    b.body(Body::from(body)).expect("request")
}

pub async fn body_text(resp: Response<Body>) -> String {
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

pub fn location(resp: &Response<Body>) -> String {
    resp.headers().get(header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

/// The value a Set-Cookie header gives the named cookie.
pub fn set_cookie(resp: &Response<Body>, name: &str) -> Option<String> {
    resp.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix(&format!("{name}=")).map(|rest| rest.split(';').next().unwrap_or_default().to_string()))
}

pub fn set_cookie_header(resp: &Response<Body>, name: &str) -> Option<String> {
    resp.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

/// The hidden `csrf` field of a rendered form.
pub fn form_csrf(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("csrf field") + marker.len();
    html[start..].split('"').next().expect("value").to_string()
}

/// Sign in through the real pages: GET the form, POST it with its token and cookie.
/// Returns the response of the POST.
pub async fn sign_in(h: &Harness, page: &str, username: &str, password: &str, reason: Option<&str>) -> Response<Body> {
    sign_in_from(h, None, page, username, password, reason).await
}

/// A client address as the server records it for a connection.
pub fn client(ip: &str) -> Option<std::net::SocketAddr> {
    Some(std::net::SocketAddr::new(ip.parse().expect("ip"), 50_000))
}

/// [`sign_in`] from a given client address (as a real connection would record it).
pub async fn sign_in_from(
    h: &Harness,
    from: Option<std::net::SocketAddr>,
    page: &str,
    username: &str,
    password: &str,
    reason: Option<&str>,
) -> Response<Body> {
    let at = |mut req: Request<Body>| {
        if let Some(addr) = from {
            req.extensions_mut().insert(axum::extract::ConnectInfo(addr));
        }
        req
    };
    let form = h.send(at(get(page))).await;
    let pre = set_cookie(&form, "wb_login").expect("login cookie");
    let csrf = form_csrf(&body_text(form).await);
    let mut fields = vec![("csrf", csrf.as_str()), ("username", username), ("password", password)];
    if let Some(r) = reason {
        fields.push(("reason", r));
    }
    let body = serde_urlencoded::to_string(&fields).expect("form");
    let req = Request::post(page)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::COOKIE, format!("wb_login={pre}"))
        .body(Body::from(body))
        .expect("request");
    h.send(at(req)).await
}
