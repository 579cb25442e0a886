//! Every route against every role, through `app(state)` with `oneshot`: anonymous requests are
//! refused everywhere but the sign-in pages and static assets, and each role reaches exactly
//! the routes the table gives it.

mod web_support;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use wardbox::web::{Access, ROUTES, Role, Verb};
use web_support::*;

/// A concrete path for a route pattern.
fn concrete(pattern: &str) -> String {
    pattern
        .replace("{id}", "p-1")
        .replace("{doc}", "d-1")
        .replace("{file}", "app.css")
        .replace("{username}", "nobody")
        .replace("{action}", "unlock")
}

fn request(verb: Verb, path: &str, token: Option<&str>, csrf: Option<&str>) -> Request<Body> {
    match verb {
        Verb::Get => {
            let mut b = Request::get(path);
            if let Some(t) = token {
                b = b.header(header::COOKIE, format!("wb_session={t}"));
            }
            b.body(Body::empty()).expect("request")
        }
        Verb::Post => {
            let mut fields = vec![("text", "What is the latest potassium?")];
            if let Some(c) = csrf {
                fields.push(("csrf", c));
            }
            post_form(path, token, &fields)
        }
    }
}

/// Where the guard sends a request without a valid session.
fn is_sign_in_redirect(loc: &str) -> bool {
    ["/login?m=signin", "/login?m=idle", "/login?m=absolute"].contains(&loc)
}

fn refused_as_anonymous(verb: Verb, status: StatusCode, location: &str) -> bool {
    match verb {
        Verb::Get => status == StatusCode::SEE_OTHER && is_sign_in_redirect(location),
        Verb::Post => status == StatusCode::UNAUTHORIZED,
    }
}

#[tokio::test]
async fn anonymous_requests_are_refused_everywhere_but_sign_in_and_static_assets() {
    let h = Harness::new();
    for spec in ROUTES {
        let path = concrete(spec.path);
        let resp = h.send(request(spec.verb, &path, None, None)).await;
        let (status, loc) = (resp.status(), location(&resp));
        match spec.access {
            Access::Public => {
                assert!(
                    !refused_as_anonymous(spec.verb, status, &loc),
                    "{} {path} is public but refused an anonymous request ({status})",
                    spec.verb.as_str()
                );
                if spec.verb == Verb::Get {
                    assert_eq!(status, StatusCode::OK, "{path}");
                }
            }
            _ => assert!(
                refused_as_anonymous(spec.verb, status, &loc),
                "{} {path} let an anonymous request through: {status} {loc}",
                spec.verb.as_str()
            ),
        }
        // A forged or stale cookie is as good as none.
        if !matches!(spec.access, Access::Public) {
            let resp = h.send(request(spec.verb, &path, Some(&"0".repeat(64)), Some("x"))).await;
            assert!(refused_as_anonymous(spec.verb, resp.status(), &location(&resp)), "{path} accepted a forged session");
        }
    }
}

#[tokio::test]
async fn public_routes_are_only_sign_in_and_static_assets() {
    for spec in ROUTES.iter().filter(|r| r.access == Access::Public) {
        assert!(
            spec.path.starts_with("/login") || spec.path.starts_with("/static/"),
            "{} is public; only sign-in and static assets may be",
            spec.path
        );
    }
}

#[tokio::test]
async fn each_role_reaches_exactly_its_routes() {
    let h = Harness::new();
    let users: Vec<_> = Role::ALL.iter().map(|r| (r, h.add_user(&format!("user.{}", r.as_str()), *r, false))).collect();
    let mut checked = 0;
    for spec in ROUTES {
        let path = concrete(spec.path);
        for (role, user) in &users {
            // The sign-in forms check their own pre-session token; the sign-in tests drive
            // them through the real form.
            if spec.access == Access::Public && spec.verb == Verb::Post {
                checked += 1;
                continue;
            }
            // A fresh session per request: some routes (logout) end it.
            let (token, csrf) = h.session(user);
            let resp = h.send(request(spec.verb, &path, Some(&token), Some(&csrf))).await;
            let status = resp.status();
            let loc = location(&resp);
            let allowed = match spec.access {
                Access::Public => true,
                Access::LoopbackOr(roles) | Access::Roles(roles) => roles.contains(role),
            };
            if allowed {
                assert!(
                    status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED && !is_sign_in_redirect(&loc),
                    "{role} should reach {} {path} but got {status} {loc}",
                    spec.verb.as_str()
                );
            } else {
                assert_eq!(status, StatusCode::FORBIDDEN, "{role} must not reach {} {path}", spec.verb.as_str());
                let body = body_text(resp).await;
                assert!(body.contains("Your role does not give access"), "{body}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, ROUTES.len() * 4);
}

/// Roles see only what their work needs: administrators and auditors never reach patient
/// content, and only clinicians draft SOAP summaries.
#[test]
fn the_table_keeps_patient_content_to_care_roles() {
    for spec in ROUTES {
        let roles: &[Role] = match spec.access {
            Access::Public => &[],
            Access::LoopbackOr(r) | Access::Roles(r) => r,
        };
        if spec.path.starts_with("/patients") {
            assert!(!roles.contains(&Role::Admin) && !roles.contains(&Role::Auditor), "{} open to admin/auditor", spec.path);
        }
        if spec.path.starts_with("/admin") {
            assert!(!roles.contains(&Role::Clinician) && !roles.contains(&Role::Nurse), "{} open to care roles", spec.path);
        }
    }
    let soap = ROUTES.iter().find(|r| r.path.ends_with("/soap")).expect("soap route");
    assert_eq!(soap.access, Access::Roles(&[Role::Clinician]));
}

#[tokio::test]
async fn health_is_open_to_the_box_itself_but_not_to_the_network() {
    let h = Harness::new();
    let mut local = get("/health");
    local.extensions_mut().insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 50000))));
    assert_eq!(h.send(local).await.status(), StatusCode::OK);
    let mut remote = get("/health");
    remote.extensions_mut().insert(ConnectInfo(SocketAddr::from(([10, 0, 0, 7], 50000))));
    let resp = h.send(remote).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER, "a workstation reached /health without signing in");
}

/// The health page shows the data volume's free space the disk watch last read, and its alert
/// (`agent/tests/fault_low_space.rs` drives the real watch; this checks the page).
#[tokio::test]
async fn the_health_page_shows_the_data_volume_and_its_low_space_alert() {
    let h = Harness::new();
    let admin = h.add_user("it.admin", Role::Admin, false);
    let (token, _) = h.session(&admin);
    let before = body_text(h.send(get_with("/admin", &token)).await).await;
    assert!(!before.contains("data-volume"), "a figure before the first reading: {before}");
    {
        let mut health = h.state.health.write().expect("health");
        health.set_data_volume("/var/lib/wardbox/data", 64 << 20, 8 << 20, 12.5, "8.0 MiB free of 64.0 MiB (12.5 %)".into(), "low");
        health.raise("disk", "data volume /var/lib/wardbox/data: 8.0 MiB free of 64.0 MiB (12.5 %), below the warning threshold of 20 % free");
    }
    let html = body_text(h.send(get_with("/admin", &token)).await).await;
    assert!(html.contains(r#"id="data-volume">Data volume /var/lib/wardbox/data: 8.0 MiB free of 64.0 MiB (12.5 %) · low · checked "#), "{html}");
    assert!(html.contains("<b>disk</b>") && html.contains("below the warning threshold of 20 % free"), "{html}");
}

#[tokio::test]
async fn unknown_paths_are_not_found_and_every_response_carries_the_security_headers() {
    let h = Harness::new();
    assert_eq!(h.send(get("/nothing-here")).await.status(), StatusCode::NOT_FOUND);
    let resp = h.send(get("/login")).await;
    let csp = resp.headers()[header::CONTENT_SECURITY_POLICY].to_str().expect("csp").to_string();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(resp.headers()[header::STRICT_TRANSPORT_SECURITY], "max-age=31536000");
    assert_eq!(resp.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    let html = body_text(resp).await;
    assert!(!html.contains("<script>") && !html.contains("onclick=") && !html.contains("style="), "inline script or style in the page");
    assert!(!html.contains("http://") && !html.contains("https://"), "the page refers to an outside address");
}

/// A body of `len` bytes for a POST route: a multipart file for the upload route, a
/// URL-encoded form for the others. `declared`: with Content-Length; otherwise streamed in
/// chunks without one (chunked transfer), which must be refused just the same.
fn body_of(path: &str, len: usize, token: Option<&str>, csrf: Option<&str>, declared: bool) -> Request<Body> {
    let (content_type, bytes) = if path.ends_with("/upload") {
        let boundary = "XBOUNDARYX";
        let head = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.txt\"\r\nContent-Type: text/plain\r\n\r\n");
        let tail = format!("\r\n--{boundary}--\r\n");
        let mut b = head.into_bytes();
        b.resize(len - tail.len(), b'x');
        b.extend_from_slice(tail.as_bytes());
        (format!("multipart/form-data; boundary={boundary}"), b)
    } else {
        let mut b = b"text=".to_vec();
        b.resize(len, b'x');
        ("application/x-www-form-urlencoded".to_string(), b)
    };
    assert_eq!(bytes.len(), len);
    let mut r = Request::post(path).header(header::CONTENT_TYPE, content_type);
    if let Some(t) = token {
        r = r.header(header::COOKIE, format!("wb_session={t}"));
    }
    if let Some(c) = csrf {
        r = r.header("x-csrf-token", c);
    }
    if declared {
        r = r.header(header::CONTENT_LENGTH, len);
        r.body(Body::from(bytes)).expect("request")
    } else {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = bytes.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
        r.body(Body::from_stream(futures_util::stream::iter(chunks))).expect("request")
    }
}

#[tokio::test]
async fn every_body_over_its_routes_limit_gets_413_naming_the_limit() {
    let h = Harness::new();
    let mut checked = 0;
    for spec in ROUTES.iter().filter(|s| s.verb == Verb::Post) {
        let path = concrete(spec.path);
        // As someone the route admits (anonymous for the sign-in forms), with a valid token.
        let role = match spec.access {
            Access::Public => None,
            Access::LoopbackOr(roles) | Access::Roles(roles) => Some(roles[0]),
        };
        let user = role.map(|r| h.add_user(&format!("u{checked}.{}", r.as_str()), r, false));
        let limit = spec.max_body;
        let words = wardbox::web::size_in_words(limit);
        for declared in [true, false] {
            let (token, csrf) = match &user {
                Some(u) => {
                    let (t, c) = h.session(u);
                    (Some(t), Some(c))
                }
                None => (None, None),
            };
            let resp = h.send(body_of(&path, limit + 1, token.as_deref(), csrf.as_deref(), declared)).await;
            assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE, "POST {path} with {} bytes (declared: {declared})", limit + 1);
            let body = body_text(resp).await;
            assert!(body.contains(&format!("limit of {words}")), "POST {path}: the answer does not name the limit {words}: {body}");
            // At the limit the body passes the guard (then the route answers as it does).
            let (token, csrf) = match &user {
                Some(u) => {
                    let (t, c) = h.session(u);
                    (Some(t), Some(c))
                }
                None => (None, None),
            };
            let resp = h.send(body_of(&path, limit, token.as_deref(), csrf.as_deref(), declared)).await;
            assert_ne!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE, "POST {path} at its limit of {words} was refused");
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * ROUTES.iter().filter(|s| s.verb == Verb::Post).count());
    let upload = ROUTES.iter().find(|s| s.path.ends_with("/upload")).expect("upload route");
    assert_eq!(wardbox::web::size_in_words(upload.max_body), "25 MiB");
}
