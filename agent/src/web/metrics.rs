//! `GET /metrics`: Prometheus text exposition (format 0.0.4), so a clinic that runs Prometheus
//! and Grafana can scrape the box.
//!
//! Each subsystem contributes through [`MetricsSource`]; GPU health is the first
//! ([`GpuMetrics`]), the engine (tokens/s, queue depth, time to first token) and request
//! metrics add theirs the same way, into one [`Exposition`] so every family is written once.
//! A scrape never waits on a device: sources write what their last periodic check found.
//!
//! Mount it inside `web::app`, behind the route guard, for admins or loopback only (a local
//! Prometheus agent): it carries no PHI, but it describes the box.

use std::sync::Arc;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use wardbox_gpu::metrics::{CONTENT_TYPE, Exposition, Kind, gpu_metrics};

use crate::stages::gpu::GpuProbe;

/// Something that adds metric families to a scrape.
pub trait MetricsSource: Send + Sync + std::fmt::Debug {
    fn write_metrics(&self, out: &mut Exposition);
}

/// GPU readings, health and placement from the GPU probe's latest report.
#[derive(Debug, Clone)]
pub struct GpuMetrics(pub Arc<dyn GpuProbe>);

impl MetricsSource for GpuMetrics {
    fn write_metrics(&self, out: &mut Exposition) {
        match self.0.report() {
            Some(report) => gpu_metrics(out, &report),
            // Say that nothing was read yet rather than leave the family out in silence.
            None => out.sample(
                "wardbox_gpu_nvml_up",
                "1 when NVML (the NVIDIA driver) answered, 0 when the box runs without it.",
                Kind::Gauge,
                &[],
                0.0,
            ),
        }
    }
}

/// The scrape response from every source. The handler that calls this must sit behind the
/// route guard (a `ROUTES` row such as `route(Get, "/metrics", LoopbackOr(ADMINS))`), like
/// every other route.
pub fn respond(sources: &[Arc<dyn MetricsSource>]) -> Response {
    let mut out = Exposition::new();
    for source in sources {
        source.write_metrics(&mut out);
    }
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], out.render()).into_response()
}

/// An unguarded router for the tests only: production mounts `respond` inside `app`, where
/// the guard applies.
#[cfg(test)]
fn routes(sources: Vec<Arc<dyn MetricsSource>>) -> axum::Router {
    use axum::extract::State;
    use axum::routing::get;
    let sources = Arc::new(sources);
    axum::Router::new()
        .route("/metrics", get(|State(s): State<Arc<Vec<Arc<dyn MetricsSource>>>>| async move { respond(&s) }))
        .with_state(sources)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    use wardbox_gpu::StatusReport;
    use wardbox_gpu::health::{HealthBook, HealthPolicy};
    use wardbox_gpu::reading::recorded_h100;

    use crate::stages::gpu::{GpuConfig, probe};

    /// A source holding one fixed report: the recorded H100 reading, replayed.
    #[derive(Debug)]
    struct Recorded(StatusReport);

    impl MetricsSource for Recorded {
        fn write_metrics(&self, out: &mut Exposition) {
            gpu_metrics(out, &self.0);
        }
    }

    async fn scrape(sources: Vec<Arc<dyn MetricsSource>>) -> (StatusCode, String, String) {
        let resp = routes(sources)
            .oneshot(Request::get("/metrics").body(Body::empty()).expect("request"))
            .await
            .expect("response");
        let status = resp.status();
        let ctype = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, ctype, String::from_utf8(body.to_vec()).expect("utf-8"))
    }

    #[tokio::test]
    async fn recorded_h100_is_scraped_with_prometheus_content_type() {
        let book = HealthBook::new(HealthPolicy::default()).expect("policy");
        let policy = GpuConfig::default().placement_policy();
        let report = StatusReport::from_snapshot(Ok(recorded_h100()), book, None, &policy);
        let (status, ctype, body) = scrape(vec![Arc::new(Recorded(report))]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ctype, "text/plain; version=0.0.4; charset=utf-8");
        assert!(body.contains("# TYPE wardbox_gpu_temperature_celsius gauge\n"), "{body}");
        assert!(
            body.contains(r#"wardbox_gpu_temperature_celsius{gpu="0",uuid="GPU-00000000-0000-0000-0000-000000000000"} 45"#),
            "{body}"
        );
        assert!(body.contains("wardbox_gpu_degraded 0\n"), "{body}");
    }

    /// The real probe on this machine (no driver here and on CI): the scrape says NVML is down
    /// and the box degraded; on a GPU machine, that NVML is up.
    #[tokio::test]
    async fn real_probe_scrape_on_this_machine() {
        let p: Arc<dyn GpuProbe> = Arc::from(probe(&GpuConfig::default()));
        let (_, _, before) = scrape(vec![Arc::new(GpuMetrics(p.clone()))]).await;
        assert_eq!(before, "# HELP wardbox_gpu_nvml_up 1 when NVML (the NVIDIA driver) answered, 0 when the box runs without it.\n# TYPE wardbox_gpu_nvml_up gauge\nwardbox_gpu_nvml_up 0\n");
        p.probe().expect("cpu fallback allowed by default");
        let (status, _, body) = scrape(vec![Arc::new(GpuMetrics(p))]).await;
        assert_eq!(status, StatusCode::OK);
        if std::path::Path::new("/proc/driver/nvidia/version").exists() {
            assert!(body.contains("wardbox_gpu_nvml_up 1\n"), "{body}");
        } else {
            assert!(body.contains("wardbox_gpu_nvml_up 0\n"), "{body}");
            assert!(body.contains("wardbox_gpu_count 0\n"), "{body}");
            assert!(body.contains("wardbox_gpu_degraded 1\n"), "{body}");
        }
    }
}
