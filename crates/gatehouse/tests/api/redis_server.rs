//! A Redis server of a test's own, on a free loopback port, that the test
//! may kill and start again (the shared Redis on 6379 serves every other
//! test and must never go down).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{ChildGuard, wait_for_exit};

const HOW_TO_INSTALL: &str = "these tests run a redis-server of their own: install it with \
     `apt-get install redis-server`, or run the suite with `bash scripts/test.sh`";

/// Longest Redis may take to start or die.
const DEADLINE: Duration = Duration::from_secs(10);

/// Whether what Redis holds survives a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// An append-only file, fsynced on every write (so even SIGKILL loses
    /// nothing): what a production Redis for gatehouse should run with.
    AppendOnly,
    /// Memory only: a restart loses everything.
    None,
}

/// A `redis-server` child; killed when dropped (before its directory is
/// removed: fields drop in order).
pub struct RedisServer {
    child: Option<ChildGuard>,
    port: u16,
    dir: tempfile::TempDir,
    persistence: Persistence,
}

fn redis_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("redis-server"))
            .find(|p| p.is_file())
    });
    on_path
        .or_else(|| {
            let usual = Path::new("/usr/bin/redis-server");
            usual.is_file().then(|| usual.to_path_buf())
        })
        .unwrap_or_else(|| panic!("redis-server is not installed; {HOW_TO_INSTALL}"))
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding a free port")
        .port()
}

impl RedisServer {
    /// Starts a fresh server (empty, in a temporary directory).
    pub fn start(persistence: Persistence) -> Self {
        let mut server = Self {
            child: None,
            port: 0,
            dir: tempfile::tempdir().expect("temp dir"),
            persistence,
        };
        // The free port may be taken between the probe and Redis's bind;
        // try a few.
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn().is_ok() {
                return server;
            }
        }
        panic!(
            "redis-server did not start on a free port; its log:\n{}",
            server.log()
        );
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// SIGKILL: a crash, with no chance to save anything more.
    pub fn kill(&mut self) {
        let mut guard = self.child.take().expect("the server is running");
        guard.0.kill().expect("SIGKILL to redis-server");
        assert!(
            wait_for_exit(&mut guard.0, DEADLINE).is_some(),
            "redis-server survived SIGKILL"
        );
    }

    /// Starts the server again on the same port and directory (with
    /// [`Persistence::AppendOnly`], it loads what it had).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "kill the server first");
        if let Err(e) = self.spawn() {
            panic!("redis-server did not restart on port {}: {e}", self.port);
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Spawns the server and waits until it answers PING.
    fn spawn(&mut self) -> Result<(), String> {
        let mut cmd = Command::new(redis_binary());
        cmd.args(["--bind", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .args(["--save", "", "--daemonize", "no", "--dir"])
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_path());
        match self.persistence {
            Persistence::AppendOnly => cmd.args(["--appendonly", "yes", "--appendfsync", "always"]),
            Persistence::None => cmd.args(["--appendonly", "no"]),
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child: Child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning redis-server: {e}; {HOW_TO_INSTALL}"));
        let mut guard = ChildGuard(child);
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = guard.0.try_wait().expect("polling redis-server") {
                return Err(format!(
                    "redis-server exited with {status}; log:\n{}",
                    self.log()
                ));
            }
            if self.answers_ping() {
                self.child = Some(guard);
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "redis-server did not answer within {DEADLINE:?}; log:\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn answers_ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let Ok(mut con) = client.get_connection_with_timeout(Duration::from_millis(200)) else {
            return false;
        };
        redis::cmd("PING")
            .query::<String>(&mut con)
            .is_ok_and(|p| p == "PONG")
    }

    /// Runs one command against the server (for the test's own use, such as
    /// `CLIENT KILL TYPE pubsub`).
    pub fn command(&self, args: &[&str]) -> redis::Value {
        let client = redis::Client::open(self.url()).expect("a valid URL");
        let mut con = client
            .get_connection_with_timeout(Duration::from_secs(2))
            .expect("connecting to the test's redis-server");
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut con)
            .unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }
}
