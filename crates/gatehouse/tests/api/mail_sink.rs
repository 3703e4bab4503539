//! A real SMTP server as the tests' mailbox: aiosmtpd (Debian's
//! python3-aiosmtpd 1.4.3), run by `smtp_sink.py` on a free loopback port
//! with a temporary directory of its own. Every mail it accepts lands there
//! as JSON (headers, decoded text and HTML parts, whether TLS and AUTH were
//! used); a test reads them back with [`MailSink::wait_for_mail_to`] and
//! follows the links in them with [`Mail::link`].
//!
//! The sink may also be stopped and started again on the same port, to
//! play an SMTP server that is down. The self-tests at the end prove the
//! harness with python3's smtplib as the client, without gatehouse.

use std::fs::File;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::process::{ChildGuard, DEADLINE};

const HOW_TO_INSTALL: &str = "the mail tests run an SMTP server of their own \
     (tests/api/smtp_sink.py on aiosmtpd 1.4.3): install Debian's python3-aiosmtpd \
     (`apt-get install python3-aiosmtpd`), or run the suite with `bash scripts/test.sh`";

/// The SMTP server script, next to this file.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/smtp_sink.py");

/// How often the mail directory is read while waiting.
const POLL: Duration = Duration::from_millis(20);

/// How the sink speaks TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkTls {
    /// No TLS at all (STARTTLS is not offered): `smtp://127.0.0.1:PORT`.
    Plain,
    /// STARTTLS, required before MAIL (and before AUTH): a client that does
    /// not upgrade is refused. `smtp://localhost:PORT`.
    StartTls,
    /// TLS from the first byte (SMTPS, port-465 style):
    /// `smtps://localhost:PORT`.
    Implicit,
}

impl SinkTls {
    fn mode(self) -> &'static str {
        match self {
            SinkTls::Plain => "plain",
            SinkTls::StartTls => "starttls",
            SinkTls::Implicit => "smtps",
        }
    }
}

/// One mail the sink accepted, as `smtp_sink.py` recorded it.
#[derive(Debug, Clone, Deserialize)]
pub struct Mail {
    /// The envelope sender (MAIL FROM).
    pub mail_from: String,
    /// The envelope recipients (RCPT TO), without angle brackets.
    pub rcpt_tos: Vec<String>,
    /// The Subject header, RFC 2047 decoded ("" when missing).
    pub subject: String,
    /// The From header, decoded ("" when missing).
    pub from: String,
    /// The To header, decoded ("" when missing).
    pub to: String,
    /// The text/plain part, transfer encoding and charset undone, lines
    /// ending in `\n` ("" when there is none).
    pub text: String,
    /// The text/html part, decoded the same way.
    pub html: Option<String>,
    /// The top-level headers in order, values decoded.
    pub headers: Vec<(String, String)>,
    /// Whether the mail came over TLS (STARTTLS or implicit).
    pub tls: bool,
    /// The user that authenticated with AUTH, if any.
    pub auth_user: Option<String>,
    /// The message as received (after dot-unstuffing), lossily UTF-8.
    pub raw: String,
}

impl Mail {
    /// The first http(s) URL in the text part whose path is `path` (e.g.
    /// `"/reset-password"`).
    pub fn link(&self, path: &str) -> Option<url::Url> {
        urls_in(&self.text).find(|url| url.path() == path)
    }

    /// The `token` query parameter of [`Mail::link`].
    pub fn token(&self, path: &str) -> Option<String> {
        self.link(path)?
            .query_pairs()
            .find(|(name, _)| name == "token")
            .map(|(_, value)| value.into_owned())
    }

    /// The value of the first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The http(s) URLs in `text`, in order: each runs to the next space, quote
/// or angle bracket, less trailing sentence punctuation.
fn urls_in(text: &str) -> impl Iterator<Item = url::Url> + '_ {
    text.match_indices("http").filter_map(move |(start, _)| {
        let rest = &text[start..];
        if !(rest.starts_with("http://") || rest.starts_with("https://")) {
            return None;
        }
        let end = rest
            .find(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"' | '\''))
            .unwrap_or(rest.len());
        let candidate = rest[..end].trim_end_matches(['.', ',', ';', ':', '!', '?', ')', ']']);
        url::Url::parse(candidate).ok()
    })
}

/// A python3 that can import aiosmtpd: the one on `PATH`, else Debian's
/// `/usr/bin/python3` (python3-aiosmtpd installs for the system Python
/// only, and `PATH` may lead to another, such as pyenv's).
fn python() -> &'static Path {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match PYTHON.get_or_init(find_python) {
        Ok(python) => python,
        Err(e) => panic!("{e}"),
    }
}

fn find_python() -> Result<PathBuf, String> {
    let mut tried = Vec::new();
    for candidate in ["python3", "/usr/bin/python3"] {
        let out = Command::new(candidate)
            .args(["-c", "import aiosmtpd"])
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(out) if out.status.success() => return Ok(PathBuf::from(candidate)),
            Ok(out) => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let last = stderr.trim().lines().last().unwrap_or("").to_owned();
                tried.push(format!("{candidate}: {last}"));
            }
            Err(e) => tried.push(format!("{candidate}: {e}")),
        }
    }
    Err(format!(
        "no python3 here can import aiosmtpd ({}); {HOW_TO_INSTALL}",
        tried.join("; ")
    ))
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding a free port")
        .port()
}

/// The files of a sink that uses TLS: a test CA, and a certificate for
/// `localhost` and 127.0.0.1 that it signed.
struct SinkCerts {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl SinkCerts {
    fn write(dir: &Path) -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };

        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "gatehouse test mail CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);

        let mut leaf_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("leaf parameters");
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf_params.use_authority_key_identifier_extension = true;
        leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate().expect("leaf key");
        let leaf_cert = leaf_params
            .signed_by(&leaf_key, &issuer)
            .expect("leaf certificate");

        let write = |name: &str, contents: String| {
            let path = dir.join(name);
            std::fs::write(&path, contents).unwrap_or_else(|e| panic!("writing {name}: {e}"));
            path
        };
        Self {
            ca: write("ca.pem", ca_cert.pem()),
            cert: write("cert.pem", leaf_cert.pem()),
            key: write("key.pem", leaf_key.serialize_pem()),
        }
    }
}

/// What the sink runs with; the same on every (re)start.
#[derive(Clone)]
struct SinkArgs {
    tls: SinkTls,
    auth: Option<(String, String)>,
    mail_dir: PathBuf,
    log: PathBuf,
    cert_key: Option<(PathBuf, PathBuf)>,
}

/// An aiosmtpd child on a loopback port of its own, with its own temporary
/// directory; the child is killed when this is dropped (before the
/// directory is removed: fields drop in order).
pub struct MailSink {
    child: Option<ChildGuard>,
    port: u16,
    args: SinkArgs,
    ca: Option<PathBuf>,
    dir: tempfile::TempDir,
}

impl MailSink {
    /// A sink that accepts mail from anyone, speaking TLS as `tls` says.
    pub async fn start(tls: SinkTls) -> MailSink {
        Self::start_inner(tls, None).await
    }

    /// A sink that refuses MAIL until AUTH PLAIN or LOGIN with `user` and
    /// `pass` succeeded (with [`SinkTls::StartTls`], AUTH only after the
    /// upgrade).
    pub async fn start_with_auth(tls: SinkTls, user: &str, pass: &str) -> MailSink {
        Self::start_inner(tls, Some((user.to_owned(), pass.to_owned()))).await
    }

    async fn start_inner(tls: SinkTls, auth: Option<(String, String)>) -> MailSink {
        let dir = tempfile::tempdir().expect("temp dir");
        let certs = (tls != SinkTls::Plain).then(|| SinkCerts::write(dir.path()));
        let args = SinkArgs {
            tls,
            auth,
            mail_dir: dir.path().join("mail"),
            log: dir.path().join("sink.log"),
            cert_key: certs.as_ref().map(|c| (c.cert.clone(), c.key.clone())),
        };
        std::fs::create_dir(&args.mail_dir).expect("creating the mail directory");
        let mut sink = MailSink {
            child: None,
            port: 0,
            args,
            ca: certs.map(|c| c.ca),
            dir,
        };
        // The free port may be taken between the probe and the sink's bind;
        // try a few.
        let mut errors = Vec::new();
        for _ in 0..5 {
            let port = free_port();
            match spawn(sink.args.clone(), port).await {
                Ok(child) => {
                    sink.port = port;
                    sink.child = Some(child);
                    return sink;
                }
                Err(e) => errors.push(format!("port {port}: {e}")),
            }
        }
        panic!(
            "the mail sink did not start on a free port:\n{}",
            errors.join("\n")
        );
    }

    /// The loopback port it listens on (the same after a restart).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL a mailer should be configured with: `smtp://127.0.0.1:PORT`
    /// ([`SinkTls::Plain`]), `smtp://localhost:PORT` ([`SinkTls::StartTls`])
    /// or `smtps://localhost:PORT` ([`SinkTls::Implicit`]), with
    /// `user:pass@` (percent-encoded) when it requires AUTH.
    pub fn smtp_url(&self) -> String {
        let base = match self.args.tls {
            SinkTls::Plain => format!("smtp://127.0.0.1:{}", self.port),
            SinkTls::StartTls => format!("smtp://localhost:{}", self.port),
            SinkTls::Implicit => format!("smtps://localhost:{}", self.port),
        };
        let mut url = url::Url::parse(&base).expect("a valid SMTP URL");
        if let Some((user, pass)) = &self.args.auth {
            url.set_username(user).expect("an SMTP URL takes a user");
            url.set_password(Some(pass))
                .expect("an SMTP URL takes a password");
        }
        url.to_string()
    }

    /// The PEM of the test CA that signed the sink's certificate (for
    /// `SSL_CERT_FILE`); `None` for [`SinkTls::Plain`].
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca.as_deref()
    }

    /// Stops the SMTP server (SIGTERM; it must exit cleanly): from now on
    /// its port refuses connections.
    pub async fn stop(&mut self) {
        let mut guard = self.child.take().expect("the mail sink is running");
        let pid = rustix::process::Pid::from_child(&guard.0);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)
            .expect("SIGTERM to the mail sink");
        let deadline = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(status) = guard.0.try_wait().expect("polling the mail sink") {
                break status;
            }
            if Instant::now() >= deadline {
                drop(guard);
                panic!(
                    "the mail sink ignored SIGTERM for {DEADLINE:?}; its log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(POLL).await;
        };
        assert!(
            status.success(),
            "the mail sink exited with {status} on SIGTERM; its log:\n{}",
            self.log()
        );
    }

    /// Starts the SMTP server again on the same port and directory (the
    /// mails so far stay; new ones are numbered after them).
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the mail sink first");
        // The port was just released; nobody else should take it, but give
        // the bind a few tries.
        let deadline = Instant::now() + DEADLINE;
        loop {
            match spawn(self.args.clone(), self.port).await {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(e) if Instant::now() >= deadline => {
                    panic!("the mail sink did not restart on port {}: {e}", self.port)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Every mail received so far, in the order they were accepted.
    pub fn mails(&self) -> Vec<Mail> {
        let mut names: Vec<String> = std::fs::read_dir(&self.args.mail_dir)
            .expect("reading the mail directory")
            .map(|entry| entry.expect("a mail directory entry").file_name())
            .filter_map(|name| name.into_string().ok())
            .filter(|name| {
                name.strip_suffix(".json")
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
            .collect();
        names.sort();
        names
            .iter()
            .map(|name| {
                let path = self.args.mail_dir.join(name);
                let json = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
                serde_json::from_str(&json)
                    .unwrap_or_else(|e| panic!("parsing {}: {e}\n{json}", path.display()))
            })
            .collect()
    }

    /// Waits until at least `n` mails arrived and returns all of them;
    /// panics with what did arrive after `timeout`.
    pub async fn wait_for_mails(&self, n: usize, timeout: Duration) -> Vec<Mail> {
        let deadline = Instant::now() + timeout;
        loop {
            let mails = self.mails();
            if mails.len() >= n {
                return mails;
            }
            if Instant::now() >= deadline {
                panic!(
                    "waited {timeout:?} for {n} mail(s), the sink has {}:\n{}\nits log:\n{}",
                    mails.len(),
                    summary(&mails),
                    self.log()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits for the first mail with `rcpt` among its envelope recipients
    /// (compared exactly); panics with what did arrive after `timeout`.
    pub async fn wait_for_mail_to(&self, rcpt: &str, timeout: Duration) -> Mail {
        let deadline = Instant::now() + timeout;
        loop {
            let mails = self.mails();
            if let Some(mail) = mails.iter().find(|m| m.rcpt_tos.iter().any(|r| r == rcpt)) {
                return mail.clone();
            }
            if Instant::now() >= deadline {
                panic!(
                    "waited {timeout:?} for a mail to {rcpt}, the sink has {}:\n{}\nits log:\n{}",
                    mails.len(),
                    summary(&mails),
                    self.log()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// What the SMTP server logged (aiosmtpd's log of every session).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.args.log).unwrap_or_default()
    }

    /// The sink's temporary directory (mail/, sink.log, the PEM files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// One line per mail, for panic messages.
fn summary(mails: &[Mail]) -> String {
    mails
        .iter()
        .map(|m| {
            format!(
                "  to {:?} from {:?}: {:?}",
                m.rcpt_tos, m.mail_from, m.subject
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs `smtp_sink.py` on `port` and waits for its `ready`; on failure the
/// child is gone and the error says why.
async fn spawn(args: SinkArgs, port: u16) -> Result<ChildGuard, String> {
    let python = python();
    tokio::task::spawn_blocking(move || spawn_and_wait(python, &args, port))
        .await
        .expect("the thread starting the mail sink")
}

fn spawn_and_wait(python: &Path, args: &SinkArgs, port: u16) -> Result<ChildGuard, String> {
    let log = File::options()
        .create(true)
        .append(true)
        .open(&args.log)
        .expect("opening the mail sink's log");
    let mut cmd = Command::new(python);
    cmd.arg(SCRIPT)
        .arg("--port")
        .arg(port.to_string())
        .arg("--dir")
        .arg(&args.mail_dir)
        .args(["--tls-mode", args.tls.mode()]);
    if let Some((cert, key)) = &args.cert_key {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    if let Some((user, pass)) = &args.auth {
        cmd.arg("--auth").arg(format!("{user}:{pass}"));
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    let mut guard = ChildGuard(
        cmd.spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}; {HOW_TO_INSTALL}", python.display())),
    );

    // A thread reads stdout for `ready`, then drains it until the child
    // exits (so a late print never meets a closed pipe).
    let stdout = guard.0.stdout.take().expect("the sink's stdout");
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.trim() == "ready" {
                let _ = ready_tx.send(());
            }
        }
    });

    let read_log = || std::fs::read_to_string(&args.log).unwrap_or_default();
    let deadline = Instant::now() + DEADLINE;
    loop {
        match ready_rx.recv_timeout(POLL) {
            Ok(()) => return Ok(guard),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // stdout closed without `ready`: the child is exiting.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(POLL);
            }
        }
        if let Some(status) = guard.0.try_wait().expect("polling the mail sink") {
            return Err(format!(
                "the mail sink exited with {status} before it was ready; its log:\n{}",
                read_log()
            ));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the mail sink was not ready within {DEADLINE:?}; its log:\n{}",
                read_log()
            ));
        }
    }
}

// The harness itself, with python3's smtplib as the mailer.

/// A mail for [`send`]: where and how to send it, and what it says.
#[derive(Debug, Clone, serde::Serialize)]
struct Outgoing {
    /// "plain", "starttls" or "smtps".
    mode: &'static str,
    host: &'static str,
    port: u16,
    /// The CA to verify the sink with; without one, the system's.
    cafile: Option<PathBuf>,
    login: Option<(String, String)>,
    /// Sends AUTH PLAIN right after EHLO, before any STARTTLS.
    auth_before_tls: bool,
    from: String,
    to: String,
    subject: String,
    text: String,
    html: Option<String>,
    /// The text part's Content-Transfer-Encoding (smtplib picks otherwise).
    cte: Option<&'static str>,
}

impl Outgoing {
    /// A short text mail to `to` for `sink`, the way its URL says (TLS
    /// verified against its CA).
    fn to(sink: &MailSink, to: &str) -> Self {
        let (mode, host) = match sink.args.tls {
            SinkTls::Plain => ("plain", "127.0.0.1"),
            SinkTls::StartTls => ("starttls", "localhost"),
            SinkTls::Implicit => ("smtps", "localhost"),
        };
        Self {
            mode,
            host,
            port: sink.port(),
            cafile: sink.ca_file().map(Path::to_path_buf),
            login: None,
            auth_before_tls: false,
            from: "gatehouse@example.test".to_owned(),
            to: to.to_owned(),
            subject: "Hello".to_owned(),
            text: "Hello there.\n".to_owned(),
            html: None,
            cte: None,
        }
    }
}

const SEND_PY: &str = r#"
import base64, json, smtplib, ssl, sys
from email.message import EmailMessage

a = json.loads(sys.argv[1])
m = EmailMessage()
m["Subject"] = a["subject"]
m["From"] = a["from"]
m["To"] = a["to"]
m.set_content(a["text"], **({"cte": a["cte"]} if a["cte"] else {}))
if a["html"] is not None:
    m.add_alternative(a["html"], subtype="html")
ctx = ssl.create_default_context(cafile=a["cafile"])
try:
    if a["mode"] == "smtps":
        s = smtplib.SMTP_SSL(a["host"], a["port"], context=ctx, timeout=10)
    else:
        s = smtplib.SMTP(a["host"], a["port"], timeout=10)
        if a["auth_before_tls"]:
            s.ehlo()
            user, password = a["login"]
            blob = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
            code, reply = s.docmd("AUTH", "PLAIN " + blob)
            if code != 235:
                raise smtplib.SMTPAuthenticationError(code, reply)
        if a["mode"] == "starttls":
            s.starttls(context=ctx)
    if a["login"] and not a["auth_before_tls"]:
        s.login(*a["login"])
    s.send_message(m)
    s.quit()
except Exception as e:
    print(f"{type(e).__name__}: {e}", file=sys.stderr)
    sys.exit(1)
"#;

/// Sends `mail` with python3's smtplib: `Err` with the Python exception
/// when the sink (or TLS verification) refused it.
async fn send(mail: &Outgoing) -> Result<(), String> {
    let python = python();
    let json = serde_json::to_string(mail).expect("the mail as JSON");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .args(["-c", SEND_PY, &json])
            .stdin(Stdio::null())
            .output()
    })
    .await
    .expect("the thread running smtplib")
    .expect("running python3");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_plain_mail_arrives_with_its_envelope_and_headers() {
    let sink = MailSink::start(SinkTls::Plain).await;
    assert_eq!(sink.smtp_url(), format!("smtp://127.0.0.1:{}", sink.port()));
    assert!(sink.ca_file().is_none());
    assert!(sink.mails().is_empty());

    let mut mail = Outgoing::to(&sink, "alice@example.test");
    mail.subject = "Grüße".to_owned();
    send(&mail).await.expect("sending over plain SMTP");

    let mails = sink.wait_for_mails(1, WAIT).await;
    assert_eq!(mails.len(), 1);
    let got = &mails[0];
    assert_eq!(got.mail_from, "gatehouse@example.test");
    assert_eq!(got.rcpt_tos, ["alice@example.test"]);
    assert_eq!(got.subject, "Grüße");
    assert_eq!(got.from, "gatehouse@example.test");
    assert_eq!(got.to, "alice@example.test");
    assert_eq!(got.text, "Hello there.\n");
    assert_eq!(got.html, None);
    assert!(!got.tls, "plain SMTP recorded as TLS");
    assert_eq!(got.auth_user, None);
    assert_eq!(got.header("subject"), Some("Grüße"));
    assert_eq!(got.header("To"), Some("alice@example.test"));
    // The raw message keeps the header encoded as it went over the wire.
    assert!(
        got.raw.contains("Subject: =?utf-8?"),
        "raw message:\n{}",
        got.raw
    );
}

#[tokio::test]
async fn starttls_is_verified_against_the_sinks_ca_and_required() {
    let sink = MailSink::start(SinkTls::StartTls).await;
    assert_eq!(sink.smtp_url(), format!("smtp://localhost:{}", sink.port()));
    let ca = sink.ca_file().expect("a CA file").to_path_buf();
    assert!(
        ca.starts_with(sink.dir()),
        "{} is not the sink's",
        ca.display()
    );
    assert!(
        std::fs::read_to_string(&ca)
            .expect("the CA file")
            .starts_with("-----BEGIN CERTIFICATE-----")
    );

    send(&Outgoing::to(&sink, "bob@example.test"))
        .await
        .expect("sending with STARTTLS, verified against the CA");
    let got = sink.wait_for_mail_to("bob@example.test", WAIT).await;
    assert!(got.tls, "a STARTTLS mail recorded without TLS");

    // The system's trust store does not know the test CA.
    let mut untrusted = Outgoing::to(&sink, "eve@example.test");
    untrusted.cafile = None;
    let err = send(&untrusted).await.expect_err("an unknown CA accepted");
    assert!(err.contains("CERTIFICATE_VERIFY_FAILED"), "{err}");

    // Without the upgrade, MAIL is refused.
    let mut clear = Outgoing::to(&sink, "eve@example.test");
    clear.mode = "plain";
    let err = send(&clear)
        .await
        .expect_err("mail without STARTTLS accepted");
    assert!(err.contains("530"), "{err}");

    assert_eq!(sink.mails().len(), 1);
}

#[tokio::test]
async fn implicit_tls_is_verified_against_the_sinks_ca() {
    let sink = MailSink::start(SinkTls::Implicit).await;
    assert_eq!(
        sink.smtp_url(),
        format!("smtps://localhost:{}", sink.port())
    );

    send(&Outgoing::to(&sink, "carol@example.test"))
        .await
        .expect("sending over SMTPS, verified against the CA");
    let got = sink.wait_for_mail_to("carol@example.test", WAIT).await;
    assert!(got.tls, "an SMTPS mail recorded without TLS");

    let mut untrusted = Outgoing::to(&sink, "eve@example.test");
    untrusted.cafile = None;
    let err = send(&untrusted).await.expect_err("an unknown CA accepted");
    assert!(err.contains("CERTIFICATE_VERIFY_FAILED"), "{err}");
}

#[tokio::test]
async fn a_sink_with_auth_refuses_mail_until_the_client_logs_in() {
    let sink = MailSink::start_with_auth(SinkTls::Plain, "mailer", "s3cret").await;
    assert_eq!(
        sink.smtp_url(),
        format!("smtp://mailer:s3cret@127.0.0.1:{}", sink.port())
    );

    let err = send(&Outgoing::to(&sink, "dave@example.test"))
        .await
        .expect_err("mail without AUTH accepted");
    assert!(err.contains("530"), "{err}");

    let mut wrong = Outgoing::to(&sink, "dave@example.test");
    wrong.login = Some(("mailer".to_owned(), "wrong".to_owned()));
    let err = send(&wrong).await.expect_err("a wrong password accepted");
    assert!(err.contains("535"), "{err}");

    let mut right = Outgoing::to(&sink, "dave@example.test");
    right.login = Some(("mailer".to_owned(), "s3cret".to_owned()));
    send(&right).await.expect("sending after AUTH");

    let mails = sink.wait_for_mails(1, WAIT).await;
    assert_eq!(mails.len(), 1, "refused mails were recorded");
    assert_eq!(mails[0].auth_user.as_deref(), Some("mailer"));
}

#[tokio::test]
async fn with_starttls_auth_works_only_after_the_upgrade() {
    let sink = MailSink::start_with_auth(SinkTls::StartTls, "mailer", "p@ss word").await;
    // The password is percent-encoded in the URL.
    assert_eq!(
        sink.smtp_url(),
        format!("smtp://mailer:p%40ss%20word@localhost:{}", sink.port())
    );
    let login = Some(("mailer".to_owned(), "p@ss word".to_owned()));

    let mut early = Outgoing::to(&sink, "erin@example.test");
    early.login = login.clone();
    early.auth_before_tls = true;
    let err = send(&early)
        .await
        .expect_err("AUTH before STARTTLS accepted");
    assert!(err.contains("530"), "{err}");

    let mut right = Outgoing::to(&sink, "erin@example.test");
    right.login = login;
    send(&right).await.expect("AUTH after STARTTLS");

    let got = sink.wait_for_mail_to("erin@example.test", WAIT).await;
    assert!(got.tls);
    assert_eq!(got.auth_user.as_deref(), Some("mailer"));
    assert_eq!(sink.mails().len(), 1);
}

#[tokio::test]
async fn a_stopped_sink_refuses_connections_and_restarts_on_the_same_port() {
    let mut sink = MailSink::start(SinkTls::Plain).await;
    let port = sink.port();
    let mut before = Outgoing::to(&sink, "frank@example.test");
    before.subject = "before".to_owned();
    send(&before).await.expect("sending before the stop");
    sink.wait_for_mails(1, WAIT).await;

    sink.stop().await;
    let mut during = Outgoing::to(&sink, "frank@example.test");
    during.subject = "during".to_owned();
    let err = send(&during).await.expect_err("a stopped sink took mail");
    assert!(err.contains("ConnectionRefusedError"), "{err}");

    sink.restart().await;
    assert_eq!(sink.port(), port);
    let mut after = Outgoing::to(&sink, "frank@example.test");
    after.subject = "after".to_owned();
    send(&after).await.expect("sending after the restart");

    let mails = sink.wait_for_mails(2, WAIT).await;
    let subjects: Vec<&str> = mails.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(subjects, ["before", "after"]);
}

#[tokio::test]
async fn a_quoted_printable_multipart_mail_decodes_and_yields_its_link() {
    let sink = MailSink::start(SinkTls::Plain).await;
    let link = "https://example.test/reset-password?token=abc";
    let mut mail = Outgoing::to(&sink, "grace@example.test");
    mail.subject = "Reset your password".to_owned();
    mail.text = format!(
        "Grüße! Someone asked to reset your password; if it was you, open \
         {link}.\nOtherwise ignore this mail: see https://example.test/help for more.\n"
    );
    mail.html = Some(format!("<p><a href=\"{link}\">Reset your password</a></p>"));
    mail.cte = Some("quoted-printable");
    send(&mail).await.expect("sending a multipart mail");

    let got = sink.wait_for_mail_to("grace@example.test", WAIT).await;
    // It really went as quoted-printable: `=` is `=3D` on the wire, and
    // the long line is soft-broken.
    assert!(
        got.raw
            .contains("Content-Transfer-Encoding: quoted-printable"),
        "raw message:\n{}",
        got.raw
    );
    assert!(got.raw.contains("token=3Dabc"), "raw message:\n{}", got.raw);
    assert!(
        got.raw.contains("Gr=C3=BC=C3=9Fe"),
        "raw message:\n{}",
        got.raw
    );
    assert_eq!(got.text, mail.text);
    let html = got.html.as_deref().expect("the HTML part");
    assert!(html.contains(&format!("href=\"{link}\"")), "{html}");
    assert!(
        got.header("Content-Type")
            .is_some_and(|ct| ct.starts_with("multipart/alternative")),
        "{:?}",
        got.headers
    );

    assert_eq!(
        got.link("/reset-password").map(String::from),
        Some(link.to_owned())
    );
    assert_eq!(got.token("/reset-password").as_deref(), Some("abc"));
    assert_eq!(
        got.link("/help").map(String::from),
        Some("https://example.test/help".to_owned())
    );
    assert_eq!(got.link("/verify-email"), None);
    assert_eq!(got.token("/help"), None);
}

#[tokio::test]
async fn wait_for_mail_to_picks_the_first_mail_to_that_address() {
    let sink = MailSink::start(SinkTls::Plain).await;
    for (to, subject) in [
        ("henry@example.test", "one"),
        ("ivy@example.test", "two"),
        ("ivy@example.test", "three"),
    ] {
        let mut mail = Outgoing::to(&sink, to);
        mail.subject = subject.to_owned();
        send(&mail).await.expect("sending");
    }
    assert_eq!(
        sink.wait_for_mail_to("ivy@example.test", WAIT)
            .await
            .subject,
        "two"
    );
    assert_eq!(sink.wait_for_mails(3, WAIT).await.len(), 3);
}

#[tokio::test]
#[should_panic(expected = "for a mail to nobody@example.test, the sink has 1")]
async fn waiting_for_a_mail_that_never_comes_fails() {
    let sink = MailSink::start(SinkTls::Plain).await;
    send(&Outgoing::to(&sink, "judy@example.test"))
        .await
        .expect("sending");
    sink.wait_for_mails(1, WAIT).await;
    sink.wait_for_mail_to("nobody@example.test", Duration::from_millis(300))
        .await;
}

#[test]
fn link_finds_the_first_url_with_that_path_without_trailing_punctuation() {
    let mail = Mail {
        mail_from: String::new(),
        rcpt_tos: Vec::new(),
        subject: String::new(),
        from: String::new(),
        to: String::new(),
        text: "Not http:/broken nor ftp://example.test/reset-password, but \
               (https://example.test/reset-password?token=first&x=1), then \
               <http://example.test/reset-password?token=second>."
            .to_owned(),
        html: None,
        headers: Vec::new(),
        tls: false,
        auth_user: None,
        raw: String::new(),
    };
    assert_eq!(
        mail.link("/reset-password").map(String::from).as_deref(),
        Some("https://example.test/reset-password?token=first&x=1")
    );
    assert_eq!(mail.token("/reset-password").as_deref(), Some("first"));
    assert_eq!(mail.link("/other"), None);
}
