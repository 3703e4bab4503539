//! Metrics for `GET /metrics` (Prometheus text format): HTTP requests and
//! their latency by route and status, logins, registrations, token grants,
//! refresh-token reuse, gauges read at scrape time (live sessions, the
//! revocation set, the password-hashing queue), and the connections the
//! server holds.
//!
//! Each application owns its recorder, passed explicitly like the rest of
//! its state: no global recorder, so several servers in one process (the
//! tests) keep separate counts.

use std::time::Duration;

use axum::http::StatusCode;
use metrics::{
    Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder as _, SharedString, Unit,
};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

const META: Metadata<'static> = Metadata::new("gatehouse", Level::INFO, Some("gatehouse"));

pub const HTTP_REQUESTS: &str = "gatehouse_http_requests_total";
pub const HTTP_DURATION: &str = "gatehouse_http_request_duration_seconds";
const LOGINS: &str = "gatehouse_logins_total";
const REGISTRATIONS: &str = "gatehouse_registrations_total";
const TOKENS_ISSUED: &str = "gatehouse_tokens_issued_total";
const REFRESH_REUSE: &str = "gatehouse_refresh_token_reuse_detected_total";
const AUDIT_WRITE_FAILURES: &str = "gatehouse_audit_write_failures_total";
const LIVE_SESSIONS: &str = "gatehouse_live_sessions";
const REVOKED_SESSIONS: &str = "gatehouse_revoked_sessions";
const HASH_QUEUE: &str = "gatehouse_password_hash_queue_depth";
const MAILS: &str = "gatehouse_mails_total";
const PASSWORD_RESETS: &str = "gatehouse_password_resets_total";
const OUTBOX_PENDING: &str = "gatehouse_mail_outbox_pending";
const OUTBOX_FAILED: &str = "gatehouse_mail_outbox_failed";
const OUTBOX_OLDEST: &str = "gatehouse_mail_outbox_oldest_pending_seconds";
const CONNECTIONS_OPEN: &str = "gatehouse_connections_open";
const CONNECTIONS_MAX: &str = "gatehouse_connections_max";
const CONNECTIONS_LIMIT_REACHED: &str = "gatehouse_connections_limit_reached_total";
const CONNECTION_TIMEOUTS: &str = "gatehouse_connection_timeouts_total";

/// Latency buckets in seconds: from a cached token check (tens of µs) to a
/// login behind a busy hashing pool (seconds).
const LATENCY_BUCKETS: [f64; 14] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// One series of the request metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Series {
    method: &'static str,
    route: Box<str>,
    status: u16,
}

/// A [`Series`] looked up without allocating; hashes as the series does
/// (a `&str` and a `Box<str>` hash alike).
#[derive(Hash)]
struct SeriesRef<'a> {
    method: &'static str,
    route: &'a str,
    status: u16,
}

impl quick_cache::Equivalent<Series> for SeriesRef<'_> {
    fn equivalent(&self, s: &Series) -> bool {
        self.method == s.method && self.route == &*s.route && self.status == s.status
    }
}

/// Request series whose handles are kept at hand: routes × methods ×
/// statuses in use stay far below this; an evicted one is looked up in the
/// recorder again, losing nothing.
const SERIES_CACHED: usize = 4096;

/// The application's recorder and the handles the domain counts with.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// The request counter and histogram of each series seen, so a request
    /// costs two atomic updates, not a registry lookup with fresh labels.
    requests: quick_cache::sync::Cache<Series, (Counter, Histogram)>,
    pub logins_succeeded: Counter,
    pub logins_failed: Counter,
    pub logins_throttled: Counter,
    /// Public registrations (`POST /v1/users`, the hosted page) by result.
    pub registrations_created: Counter,
    pub registrations_taken: Counter,
    pub registrations_throttled: Counter,
    /// Access tokens by how they were obtained.
    pub tokens_password_grant: Counter,
    pub tokens_refresh_grant: Counter,
    pub tokens_session: Counter,
    pub refresh_reuse_detected: Counter,
    pub audit_write_failures: Counter,
    /// Mails by fate: written to the outbox, sent, an attempt failed and
    /// will be retried, given up on.
    pub mails_queued: Counter,
    pub mails_sent: Counter,
    pub mails_retried: Counter,
    pub mails_failed: Counter,
    /// `POST /v1/password-reset` and its confirmation, by result.
    pub password_resets_requested: Counter,
    pub password_resets_throttled: Counter,
    pub password_resets_completed: Counter,
    /// Kept by the serving loop as connections come and go.
    pub connections: ConnectionMetrics,
    live_sessions: Gauge,
    revoked_sessions: Gauge,
    hash_queue: Gauge,
    outbox_pending: Gauge,
    outbox_failed: Gauge,
    outbox_oldest: Gauge,
}

/// The serving loop's handles: connections open, the cap, how often it was
/// reached, and connections closed for being too slow, by stage.
#[derive(Clone)]
pub struct ConnectionMetrics {
    pub open: Gauge,
    pub max: Gauge,
    pub limit_reached: Counter,
    pub handshake_timeouts: Counter,
    pub header_timeouts: Counter,
    pub idle_timeouts: Counter,
}

impl std::fmt::Debug for ConnectionMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionMetrics").finish_non_exhaustive()
    }
}

/// What the gauges show, read when `/metrics` is scraped.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    /// `None` when the store did not answer: the gauge keeps its last value.
    pub live_sessions: Option<u64>,
    pub revoked_sessions: usize,
    pub hash_queue_depth: usize,
    /// With mail on, the outbox: mails waiting, mails given up on, and the
    /// age in seconds of the oldest waiting one (0 when none waits).
    /// `None`: no mail, or the store did not answer (the gauges keep their
    /// last values).
    pub outbox: Option<(u64, u64, f64)>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A fresh recorder with every metric described.
    ///
    /// # Errors
    /// When the histogram buckets are refused (they are constant, so never).
    pub fn new() -> anyhow::Result<Self> {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.into()), &LATENCY_BUCKETS)?
            .build_recorder();
        let handle = recorder.handle();
        let describe = |name: &'static str, unit: Option<Unit>, help: &'static str| {
            recorder.describe_counter(name.into(), unit, SharedString::const_str(help));
        };
        describe(
            HTTP_REQUESTS,
            None,
            "HTTP requests answered, by method, route and status.",
        );
        recorder.describe_histogram(
            HTTP_DURATION.into(),
            Some(Unit::Seconds),
            SharedString::const_str("Time to answer an HTTP request, by method, route and status."),
        );
        describe(
            LOGINS,
            None,
            "Password logins (cookie and password grant), by result: succeeded, failed, throttled.",
        );
        describe(
            REGISTRATIONS,
            None,
            "Public registrations (POST /v1/users and the hosted page), by result: created, taken, throttled.",
        );
        describe(
            TOKENS_ISSUED,
            None,
            "Access tokens issued, by grant: password, refresh_token, session.",
        );
        describe(
            REFRESH_REUSE,
            None,
            "Spent refresh tokens presented again (their sessions were ended).",
        );
        describe(
            AUDIT_WRITE_FAILURES,
            None,
            "Audit events that could not be stored (they are still logged).",
        );
        describe(
            MAILS,
            None,
            "Mails by result: queued (written to the outbox), sent, retried (an attempt failed; it will be tried again), failed (given up on after its last attempt, or refused for good by the SMTP server).",
        );
        describe(
            PASSWORD_RESETS,
            None,
            "Password resets, by result: requested (POST /v1/password-reset answered 202, known address or not), throttled, completed.",
        );
        describe(
            CONNECTIONS_LIMIT_REACHED,
            None,
            "Times a new connection found max_connections open and waited for a slot (later ones wait in the listen backlog).",
        );
        describe(
            CONNECTION_TIMEOUTS,
            None,
            "Connections closed for being too slow, by stage: handshake (TLS), header (a request head not sent in header_read_timeout), idle (no request for keep_alive_timeout).",
        );
        for (name, help) in [
            (
                LIVE_SESSIONS,
                "Sessions not past their absolute expiry (idle ones count until swept).",
            ),
            (
                REVOKED_SESSIONS,
                "Ended sessions this node refuses tokens of (the revocation set).",
            ),
            (
                HASH_QUEUE,
                "Password hashes waiting for a slot on the hashing pool (not those running).",
            ),
            (
                CONNECTIONS_OPEN,
                "Client connections open: in their TLS handshake, sending a request, being answered or kept alive.",
            ),
            (
                CONNECTIONS_MAX,
                "The most connections held open at once (max_connections).",
            ),
            (
                OUTBOX_PENDING,
                "Mails in the outbox waiting to be sent (or being sent), every node's.",
            ),
            (
                OUTBOX_FAILED,
                "Mails given up on, kept (without their bodies) for 7 days.",
            ),
            (
                OUTBOX_OLDEST,
                "Age of the oldest mail waiting in the outbox (0 when none waits): grows while SMTP is down.",
            ),
        ] {
            recorder.describe_gauge(name.into(), None, SharedString::const_str(help));
        }
        let counter = |name: &'static str, labels: &[(&'static str, &'static str)]| {
            let labels: Vec<Label> = labels
                .iter()
                .map(|(k, v)| Label::from_static_parts(k, v))
                .collect();
            recorder.register_counter(&Key::from_parts(name, labels), &META)
        };
        let gauge =
            |name: &'static str| recorder.register_gauge(&Key::from_static_name(name), &META);
        Ok(Self {
            logins_succeeded: counter(LOGINS, &[("result", "succeeded")]),
            logins_failed: counter(LOGINS, &[("result", "failed")]),
            logins_throttled: counter(LOGINS, &[("result", "throttled")]),
            registrations_created: counter(REGISTRATIONS, &[("result", "created")]),
            registrations_taken: counter(REGISTRATIONS, &[("result", "taken")]),
            registrations_throttled: counter(REGISTRATIONS, &[("result", "throttled")]),
            tokens_password_grant: counter(TOKENS_ISSUED, &[("grant", "password")]),
            tokens_refresh_grant: counter(TOKENS_ISSUED, &[("grant", "refresh_token")]),
            tokens_session: counter(TOKENS_ISSUED, &[("grant", "session")]),
            refresh_reuse_detected: counter(REFRESH_REUSE, &[]),
            audit_write_failures: counter(AUDIT_WRITE_FAILURES, &[]),
            mails_queued: counter(MAILS, &[("result", "queued")]),
            mails_sent: counter(MAILS, &[("result", "sent")]),
            mails_retried: counter(MAILS, &[("result", "retried")]),
            mails_failed: counter(MAILS, &[("result", "failed")]),
            password_resets_requested: counter(PASSWORD_RESETS, &[("result", "requested")]),
            password_resets_throttled: counter(PASSWORD_RESETS, &[("result", "throttled")]),
            password_resets_completed: counter(PASSWORD_RESETS, &[("result", "completed")]),
            connections: ConnectionMetrics {
                open: gauge(CONNECTIONS_OPEN),
                max: gauge(CONNECTIONS_MAX),
                limit_reached: counter(CONNECTIONS_LIMIT_REACHED, &[]),
                handshake_timeouts: counter(CONNECTION_TIMEOUTS, &[("stage", "handshake")]),
                header_timeouts: counter(CONNECTION_TIMEOUTS, &[("stage", "header")]),
                idle_timeouts: counter(CONNECTION_TIMEOUTS, &[("stage", "idle")]),
            },
            live_sessions: gauge(LIVE_SESSIONS),
            revoked_sessions: gauge(REVOKED_SESSIONS),
            hash_queue: gauge(HASH_QUEUE),
            outbox_pending: gauge(OUTBOX_PENDING),
            outbox_failed: gauge(OUTBOX_FAILED),
            outbox_oldest: gauge(OUTBOX_OLDEST),
            recorder,
            handle,
            requests: quick_cache::sync::Cache::new(SERIES_CACHED),
        })
    }

    /// Counts one answered request. `route` is the route's pattern (such as
    /// `/v1/sessions/{id}`), never the raw path, so an attacker cannot grow
    /// the number of series; `method` is one of the standard methods or
    /// `other`.
    pub fn http_request(
        &self,
        method: &'static str,
        route: &str,
        status: StatusCode,
        elapsed: Duration,
    ) {
        let status = status.as_u16();
        let found = self.requests.get(&SeriesRef {
            method,
            route,
            status,
        });
        let (counter, histogram) = found.unwrap_or_else(|| {
            let labels = vec![
                Label::from_static_parts("method", method),
                Label::new("route", SharedString::from(route.to_owned())),
                Label::new("status", status.to_string()),
            ];
            let counter = self
                .recorder
                .register_counter(&Key::from_parts(HTTP_REQUESTS, labels.clone()), &META);
            let histogram = self
                .recorder
                .register_histogram(&Key::from_parts(HTTP_DURATION, labels), &META);
            let handles = (counter, histogram);
            let series = Series {
                method,
                route: route.into(),
                status,
            };
            self.requests.insert(series, handles.clone());
            handles
        });
        counter.increment(1);
        histogram.record(elapsed.as_secs_f64());
    }

    /// Drains the histograms' pending samples into their buckets. Samples
    /// wait in per-histogram blocks until a render or this upkeep; without
    /// a scraper they would pile up, about 18 bytes a request.
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// The text exposition, with the gauges set to `gauges` first.
    pub fn render(&self, gauges: Gauges) -> String {
        if let Some(n) = gauges.live_sessions {
            #[allow(clippy::cast_precision_loss)] // exact below 2^53 sessions
            self.live_sessions.set(n as f64);
        }
        #[allow(clippy::cast_precision_loss)]
        {
            self.revoked_sessions.set(gauges.revoked_sessions as f64);
            self.hash_queue.set(gauges.hash_queue_depth as f64);
            if let Some((pending, failed, oldest)) = gauges.outbox {
                self.outbox_pending.set(pending as f64);
                self.outbox_failed.set(failed as f64);
                self.outbox_oldest.set(oldest);
            }
        }
        self.handle.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_render_with_their_labels_and_buckets() {
        let m = Metrics::new().expect("metrics");
        for _ in 0..2 {
            m.http_request(
                "GET",
                "/v1/sessions/{id}",
                StatusCode::NOT_FOUND,
                Duration::from_millis(3),
            );
        }
        m.logins_failed.increment(2);
        let text = m.render(Gauges {
            live_sessions: Some(7),
            revoked_sessions: 3,
            hash_queue_depth: 1,
            outbox: Some((2, 1, 30.0)),
        });
        assert!(
            text.contains(
                r#"gatehouse_http_requests_total{method="GET",route="/v1/sessions/{id}",status="404"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"gatehouse_http_request_duration_seconds_bucket{method="GET",route="/v1/sessions/{id}",status="404",le="0.005"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"gatehouse_logins_total{result="failed"} 2"#),
            "{text}"
        );
        assert!(text.contains("gatehouse_live_sessions 7"), "{text}");
        assert!(text.contains("gatehouse_revoked_sessions 3"), "{text}");
        assert!(
            text.contains("gatehouse_password_hash_queue_depth 1"),
            "{text}"
        );
        assert!(text.contains("gatehouse_mail_outbox_pending 2"), "{text}");
        assert!(text.contains("gatehouse_mail_outbox_failed 1"), "{text}");
        assert!(
            text.contains("gatehouse_mail_outbox_oldest_pending_seconds 30"),
            "{text}"
        );
    }

    #[test]
    fn each_application_counts_on_its_own() {
        let (a, b) = (Metrics::new().expect("a"), Metrics::new().expect("b"));
        a.logins_succeeded.increment(1);
        let text = b.render(Gauges::default());
        assert!(
            text.contains(r#"gatehouse_logins_total{result="succeeded"} 0"#),
            "{text}"
        );
    }
}
