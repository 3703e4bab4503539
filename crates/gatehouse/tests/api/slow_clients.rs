//! Slow clients (slowloris and kin), black-box: raw sockets that trickle a
//! request head, idle on a kept-alive connection, declare a huge body or
//! send a body too slowly, more of them than `max_connections`, and a
//! shutdown while some of them hold on. The deadlines are set to a second
//! or two so each test takes about that long.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse::Config;
use gatehouse::config::{DatabaseUrl, TlsFiles};
use reqwest::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, RootCertStore};

use crate::helpers::TestApp;

const SECOND: Duration = Duration::from_secs(1);

/// The first line of a request head, and a header: what a slowloris sends
/// before trickling the rest, never ending the head.
const HEAD_START: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: gatehouse\r\n";

/// Writes one byte of a never-ending header every 200 ms until the server
/// closes the connection (or the test ends).
async fn trickle(mut w: impl AsyncWrite + Unpin) {
    if w.write_all(HEAD_START).await.is_err() {
        return;
    }
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if w.write_all(b"x").await.is_err() || w.flush().await.is_err() {
            return;
        }
    }
}

/// How long until the server closes `r` (end of stream or an error), or
/// `None` if it is still open after `within`. Whatever arrives meanwhile
/// is returned too.
async fn closed_within(
    mut r: impl AsyncRead + Unpin,
    within: Duration,
) -> (Option<Duration>, String) {
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(within, async {
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&seen).into_owned();
    (closed.ok().map(|()| started.elapsed()), text)
}

/// Reads one response (its head, and a `Content-Length` body) within
/// `within`; panics with what arrived otherwise.
async fn read_response(r: &mut (impl AsyncRead + Unpin), within: Duration) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(within, async {
        loop {
            if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if seen.len() >= end + 4 + length {
                    return true;
                }
            }
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&seen).into_owned();
    assert!(
        matches!(read, Ok(true)),
        "no whole response within {within:?}; got {text:?}"
    );
    text
}

/// The value of the sample `series` (name and labels exactly as rendered).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

async fn metrics_text(app: &TestApp) -> String {
    app.auth.ops.render_metrics(SECOND).await
}

/// A self-signed certificate for 127.0.0.1 in files of its own, and a TLS
/// connector that trusts it alone.
struct TestCert {
    files: TlsFiles,
    connector: TlsConnector,
    _dir: tempfile::TempDir,
}

impl TestCert {
    fn new() -> Self {
        let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
            .expect("self-signed certificate");
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, made.cert.pem()).expect("cert file");
        std::fs::write(&key, made.signing_key.serialize_pem()).expect("key file");
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(made.cert.pem().as_bytes()).expect("PEM"))
            .expect("root");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Self {
            files: TlsFiles { cert, key },
            connector: TlsConnector::from(Arc::new(config)),
            _dir: dir,
        }
    }
}

#[tokio::test]
async fn a_trickled_request_head_is_cut_off_after_the_header_read_timeout() {
    let app = TestApp::spawn_with(|c| c.connections.header_read_timeout = SECOND).await;
    let (r, w) = TcpStream::connect(app.addr)
        .await
        .expect("connect")
        .into_split();

    let writer = tokio::spawn(trickle(w));
    let (closed, answer) = closed_within(r, 5 * SECOND).await;

    writer.abort();
    let closed = closed.expect("the server closes a trickling connection");
    assert!(
        closed >= Duration::from_millis(900) && closed < Duration::from_millis(2500),
        "closed after {closed:?}; header_read_timeout is 1 s"
    );
    assert_eq!(answer, "", "no answer is owed to a request never sent");
    let text = metrics_text(&app).await;
    assert_eq!(
        sample(
            &text,
            r#"gatehouse_connection_timeouts_total{stage="header"}"#
        ),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test]
async fn a_connection_that_never_sends_a_byte_is_closed_after_the_header_read_timeout() {
    let app = TestApp::spawn_with(|c| c.connections.header_read_timeout = SECOND).await;
    let silent = TcpStream::connect(app.addr).await.expect("connect");

    let (closed, _) = closed_within(silent, 5 * SECOND).await;

    let closed = closed.expect("the server closes a silent connection");
    assert!(
        closed >= Duration::from_millis(900) && closed < Duration::from_millis(2500),
        "closed after {closed:?}; header_read_timeout is 1 s"
    );
}

#[tokio::test]
async fn a_trickled_request_head_over_tls_is_cut_off_after_the_header_read_timeout() {
    let cert = TestCert::new();
    let files = cert.files.clone();
    let app = TestApp::spawn_with(move |c| {
        c.tls = Some(files);
        c.connections.header_read_timeout = SECOND;
    })
    .await;
    let tcp = TcpStream::connect(app.addr).await.expect("connect");
    let name = ServerName::try_from("127.0.0.1").expect("server name");
    let tls = cert.connector.connect(name, tcp).await.expect("handshake");
    let (r, w) = tokio::io::split(tls);

    let writer = tokio::spawn(trickle(w));
    let (closed, answer) = closed_within(r, 5 * SECOND).await;

    writer.abort();
    let closed = closed.expect("the server closes a trickling TLS connection");
    assert!(
        closed >= Duration::from_millis(900) && closed < Duration::from_millis(2500),
        "closed after {closed:?}; header_read_timeout is 1 s"
    );
    assert_eq!(answer, "");
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_keep_alive_timeout() {
    // Longer than the header timeout: an idle connection is not a slow one.
    let app = TestApp::spawn_with(|c| {
        c.connections.header_read_timeout = SECOND;
        c.connections.keep_alive_timeout = 2 * SECOND;
    })
    .await;
    let mut conn = TcpStream::connect(app.addr).await.expect("connect");
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: gatehouse\r\n\r\n")
        .await
        .expect("write");
    let answer = read_response(&mut conn, 2 * SECOND).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let (closed, more) = closed_within(conn, 6 * SECOND).await;

    let closed = closed.expect("the server closes an idle connection");
    assert!(
        closed >= Duration::from_millis(1800) && closed < Duration::from_millis(3500),
        "closed after {closed:?}; keep_alive_timeout is 2 s, header_read_timeout 1 s"
    );
    assert_eq!(more, "");
    let text = metrics_text(&app).await;
    assert_eq!(
        sample(
            &text,
            r#"gatehouse_connection_timeouts_total{stage="idle"}"#
        ),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test]
async fn a_kept_alive_connection_serves_requests_that_follow_within_the_timeouts() {
    let app = TestApp::spawn_with(|c| {
        c.connections.header_read_timeout = SECOND;
        c.connections.keep_alive_timeout = 2 * SECOND;
    })
    .await;
    let mut conn = TcpStream::connect(app.addr).await.expect("connect");

    // Three requests 700 ms apart: 2.1 s in all, longer than either
    // timeout, yet the connection serves each one.
    for _ in 0..3 {
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: gatehouse\r\n\r\n")
            .await
            .expect("write");
        let answer = read_response(&mut conn, 2 * SECOND).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
}

#[tokio::test]
async fn a_declared_body_over_the_limit_is_413_before_any_of_it_is_sent() {
    let app = TestApp::spawn().await;
    let mut conn = TcpStream::connect(app.addr).await.expect("connect");
    let started = Instant::now();

    conn.write_all(
        b"POST /v1/login HTTP/1.1\r\nHost: gatehouse\r\nContent-Type: application/json\r\n\
          Content-Length: 99999999999\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .expect("write");
    let answer = read_response(&mut conn, 2 * SECOND).await;

    assert!(
        started.elapsed() < SECOND,
        "answered after {:?}",
        started.elapsed()
    );
    // Refused outright: no `100 Continue` invites the body first.
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(
        lower.contains("content-type: application/problem+json"),
        "{answer}"
    );
    assert!(lower.contains("connection: close"), "{answer}");
    assert!(
        answer.contains("urn:gatehouse:problem:payload-too-large"),
        "{answer}"
    );
    let (closed, _) = closed_within(conn, 2 * SECOND).await;
    assert!(closed.is_some(), "the connection is closed after the 413");
}

#[tokio::test]
async fn a_declared_form_over_the_limit_is_a_413_page() {
    let app = TestApp::spawn().await;
    let mut conn = TcpStream::connect(app.addr).await.expect("connect");

    // A same-origin form post, as a browser sends it.
    let head = format!(
        "POST /login HTTP/1.1\r\nHost: gatehouse\r\nOrigin: {}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 70000\r\n\r\n",
        app.origin()
    );
    conn.write_all(head.as_bytes()).await.expect("write");
    let answer = read_response(&mut conn, 2 * SECOND).await;

    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(lower.contains("content-type: text/html"), "{answer}");
    assert!(lower.contains("content-security-policy:"), "{answer}");
}

#[tokio::test]
async fn a_body_trickled_past_the_request_body_timeout_is_408_and_the_connection_closed() {
    let app = TestApp::spawn_with(|c| c.connections.request_body_timeout = SECOND).await;
    let (mut r, mut w) = TcpStream::connect(app.addr)
        .await
        .expect("connect")
        .into_split();
    w.write_all(
        b"POST /v1/login HTTP/1.1\r\nHost: gatehouse\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{",
    )
    .await
    .expect("write");
    let started = Instant::now();
    // A byte every 100 ms: well within any per-read timeout, but the whole
    // body would take 10 s.
    let writer = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if w.write_all(b" ").await.is_err() {
                return;
            }
        }
    });

    let answer = read_response(&mut r, 3 * SECOND).await;

    let answered = started.elapsed();
    assert!(
        answered >= Duration::from_millis(900) && answered < Duration::from_millis(2500),
        "answered after {answered:?}; request_body_timeout is 1 s"
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(
        answer.contains("urn:gatehouse:problem:request-timeout"),
        "{answer}"
    );
    let (closed, _) = closed_within(r, 2 * SECOND).await;
    writer.abort();
    assert!(closed.is_some(), "the connection is closed after the 408");
    let text = metrics_text(&app).await;
    assert_eq!(
        sample(
            &text,
            r#"gatehouse_http_requests_total{method="POST",route="/v1/login",status="408"}"#
        ),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test]
async fn past_max_connections_slow_clients_wait_and_a_real_client_is_served_within_the_header_timeout()
 {
    const MAX: usize = 8;
    let app = TestApp::spawn_with(|c| {
        c.connections.max_connections = MAX;
        c.connections.header_read_timeout = SECOND;
    })
    .await;
    // Twelve slowloris connections: eight take every slot, four wait in the
    // listen backlog.
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..MAX + 4 {
        let (r, w) = TcpStream::connect(app.addr)
            .await
            .expect("connect")
            .into_split();
        writers.push(tokio::spawn(trickle(w)));
        readers.push(r);
    }
    let saturated = Instant::now() + 2 * SECOND;
    let text = loop {
        let text = metrics_text(&app).await;
        let full = sample(&text, "gatehouse_connections_open") == Some(8.0)
            && sample(&text, "gatehouse_connections_limit_reached_total").is_some_and(|n| n >= 1.0);
        if full || Instant::now() > saturated {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        sample(&text, "gatehouse_connections_open"),
        Some(8.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "gatehouse_connections_max"),
        Some(8.0),
        "{text}"
    );
    assert!(
        sample(&text, "gatehouse_connections_limit_reached_total").is_some_and(|n| n >= 1.0),
        "{text}"
    );

    let started = Instant::now();
    let res = app
        .bare_client()
        .get(app.url("/healthz"))
        .timeout(5 * SECOND)
        .send()
        .await;

    let waited = started.elapsed();
    assert_eq!(res.expect("served").status(), StatusCode::OK);
    // The slots free when the first eight reach their header deadline; the
    // four that queued before the real client are accepted with it.
    assert!(
        waited < SECOND + Duration::from_millis(1500),
        "answered after {waited:?}; header_read_timeout is 1 s"
    );
    for r in readers {
        let (closed, _) = closed_within(r, 3 * SECOND).await;
        assert!(
            closed.is_some(),
            "every slow connection is closed in the end"
        );
    }
    for w in writers {
        w.abort();
    }
    let text = metrics_text(&app).await;
    assert_eq!(
        sample(
            &text,
            r#"gatehouse_connection_timeouts_total{stage="header"}"#
        ),
        Some(12.0),
        "{text}"
    );
}

#[tokio::test]
async fn with_every_slot_taken_idle_connections_are_closed_for_a_waiting_client() {
    const MAX: usize = 2;
    // keep_alive_timeout stays at its default, 60 s.
    let app = TestApp::spawn_with(|c| c.connections.max_connections = MAX).await;
    let mut idle = Vec::new();
    for _ in 0..MAX {
        let mut conn = TcpStream::connect(app.addr).await.expect("connect");
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: gatehouse\r\n\r\n")
            .await
            .expect("write");
        let answer = read_response(&mut conn, 2 * SECOND).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        idle.push(conn);
    }

    let started = Instant::now();
    let res = app
        .bare_client()
        .get(app.url("/healthz"))
        .timeout(5 * SECOND)
        .send()
        .await;

    let waited = started.elapsed();
    assert_eq!(res.expect("served").status(), StatusCode::OK);
    assert!(waited < SECOND, "answered after {waited:?}");
    for conn in idle {
        let (closed, more) = closed_within(conn, SECOND).await;
        assert!(closed.is_some(), "an idle connection gave up its slot");
        assert_eq!(more, "");
    }
}

#[tokio::test]
async fn a_connection_that_goes_idle_while_a_client_waits_for_its_slot_is_closed() {
    let app = TestApp::spawn_with(|c| c.connections.max_connections = 1).await;
    let key = app
        .auth
        .feed
        .create_resource_server("poller", gatehouse::auth::audit::Actor::Cli)
        .await
        .expect("created")
        .key
        .key();
    // The one slot, busy for a second with a long poll.
    let mut busy = TcpStream::connect(app.addr).await.expect("connect");
    let poll = format!(
        "GET /v1/revocations?wait=1 HTTP/1.1\r\nHost: gatehouse\r\nAuthorization: Bearer {key}\r\n\r\n"
    );
    busy.write_all(poll.as_bytes()).await.expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    let res = app
        .bare_client()
        .get(app.url("/healthz"))
        .timeout(5 * SECOND)
        .send()
        .await;

    let waited = started.elapsed();
    assert_eq!(res.expect("served").status(), StatusCode::OK);
    // When the long poll is answered, its connection would idle for
    // keep_alive_timeout (60 s); a client is waiting, so it closes.
    assert!(waited < 2 * SECOND, "answered after {waited:?}");
    let answer = read_response(&mut busy, SECOND).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let (closed, _) = closed_within(busy, SECOND).await;
    assert!(
        closed.is_some(),
        "the long poll's connection gave up its slot"
    );
}

#[tokio::test]
async fn shutdown_returns_within_shutdown_timeout_despite_a_half_sent_request_and_idle_connections()
{
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        database_url: DatabaseUrl::Sqlite(format!(
            "sqlite://{}",
            dir.path().join("gatehouse.db").display()
        )),
        cookie_secure: false,
        ..Config::default()
    };
    // Every other deadline stays at its default (10 s and more): only the
    // shutdown's may end this.
    config.connections.shutdown_timeout = SECOND;
    let app = gatehouse::Application::build(config)
        .await
        .expect("the app builds");
    let addr = app.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    // Kept alive and idle after one request.
    let mut idle = TcpStream::connect(addr).await.expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: gatehouse\r\n\r\n")
        .await
        .expect("write");
    let answer = read_response(&mut idle, 2 * SECOND).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Half a request head.
    let mut half_head = TcpStream::connect(addr).await.expect("connect");
    half_head.write_all(HEAD_START).await.expect("write");
    // A whole head, and 1 byte of a 100-byte body: a request in flight.
    let mut half_body = TcpStream::connect(addr).await.expect("connect");
    half_body
        .write_all(
            b"POST /v1/login HTTP/1.1\r\nHost: gatehouse\r\n\
              Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
        )
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let signalled = Instant::now();
    let _ = stop.send(());
    let idle_closed = tokio::spawn(closed_within(idle, 3 * SECOND));
    let half_head_closed = tokio::spawn(closed_within(half_head, 3 * SECOND));
    let served = tokio::time::timeout(5 * SECOND, server).await;

    let returned = signalled.elapsed();
    let served = served
        .expect("run_until returns within 5 s")
        .expect("the task");
    assert!(served.is_ok(), "{served:?}");
    assert!(
        returned >= Duration::from_millis(900) && returned < Duration::from_millis(2500),
        "returned after {returned:?}; shutdown_timeout is 1 s and a request is in flight"
    );
    for (what, closed) in [("idle", idle_closed), ("half-head", half_head_closed)] {
        let (closed, _) = closed.await.expect("the task");
        let closed = closed.unwrap_or_else(|| panic!("the {what} connection is closed"));
        assert!(
            closed < Duration::from_millis(500),
            "the {what} connection was closed {closed:?} after the shutdown, not at once"
        );
    }
    let (closed, _) = closed_within(half_body, SECOND).await;
    assert!(
        closed.is_some(),
        "the half-sent request's connection is closed"
    );
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no new connection is accepted after run_until returns"
    );
}
