//! Running the real `gatehouse` binary in tests: an empty environment but
//! `PATH`, a guard that kills the child, bounded waits, and what a finished
//! command left behind.

use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest any child process may take to start, answer or exit.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A command for the real binary in `dir`, with an empty environment but
/// `PATH`: nothing from the developer's shell (`GATEHOUSE_*`, `RUST_LOG`)
/// leaks in.
pub fn gatehouse(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    cmd.current_dir(dir).env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    cmd
}

/// Creates the SQLite database that `gatehouse serve` creates at `path`
/// (the file, its migrations), as the server's first start would: the
/// admin commands refuse to create one.
pub fn new_database(path: &Path) {
    let url = format!("sqlite://{}", path.display());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            gatehouse::store::open_sql(&gatehouse::config::DatabaseUrl::Sqlite(url))
                .await
                .expect("creating the database");
        });
    })
    .join()
    .expect("the thread creating the database");
}

/// A child that is killed when dropped, so a failing test leaves no process
/// behind.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls until `child` exits or `timeout` passes.
pub fn wait_for_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("polling the child") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads a pipe to its end on a thread of its own.
pub fn drain(pipe: Option<impl std::io::Read + Send + 'static>) -> JoinHandle<String> {
    let mut pipe = pipe.expect("piped stream");
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// What a finished command left behind.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to completion with `stdin` as its input, within [`DEADLINE`].
pub fn run(cmd: &mut Command, stdin: &str) -> Finished {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = ChildGuard(cmd.spawn().expect("spawning gatehouse"));
    let mut input = child.0.stdin.take().expect("piped stdin");
    // A child that exits before reading its input closes the pipe; that is
    // its business, not a test failure.
    let _ = input.write_all(stdin.as_bytes());
    drop(input);
    let stdout = drain(child.0.stdout.take());
    let stderr = drain(child.0.stderr.take());
    let Some(status) = wait_for_exit(&mut child.0, DEADLINE) else {
        let _ = child.0.kill();
        let _ = child.0.wait();
        let stdout = stdout.join().unwrap_or_default();
        let stderr = stderr.join().unwrap_or_default();
        panic!("{cmd:?} did not exit within {DEADLINE:?}; stdout: {stdout:?}; stderr: {stderr:?}");
    };
    Finished {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// Asserts exit code 1 with exactly one non-empty line on stderr, and
/// returns that line.
pub fn assert_fails_with_one_line(out: &Finished) -> &str {
    assert_eq!(out.status.code(), Some(1), "exit code: {out:?}");
    let line = out.stderr.strip_suffix('\n').unwrap_or(&out.stderr);
    let line = line.strip_suffix('\r').unwrap_or(line);
    assert!(
        !line.trim().is_empty() && !line.contains('\n'),
        "stderr must be exactly one line: {:?}",
        out.stderr
    );
    line
}
