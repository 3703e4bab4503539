//! The packaging (docs/production.md): the Debian package that cargo-deb
//! builds from `[package.metadata.deb]`, its hardened systemd unit
//! (packaging/gatehouse.service) and its configuration
//! (packaging/gatehouse.toml).
//!
//! - The package is built from the test build's own binary
//!   (`cargo deb -p gatehouse --no-build --profile dev`), so CI builds no
//!   second profile; its control fields, files, conffile and maintainer
//!   scripts are read back with `dpkg-deb`.
//! - The packaged unit passes `systemd-analyze verify` and `systemd-analyze
//!   security` (offline, against the extracted package as its root, so the
//!   unit is checked with the packaged binary in place).
//! - The packaged binary, extracted, serves with the packaged configuration
//!   (only its port and database path rewritten), run under strace as an
//!   unprivileged user: every system call it makes is one the unit's
//!   `SystemCallFilter=` lets through (setpriority among them, for the
//!   password hashing threads), every socket is of a family
//!   `RestrictAddressFamilies=` allows, no mapping is writable and
//!   executable (`MemoryDenyWriteExecute=`), and nothing is written outside
//!   the state directory and /tmp (`ProtectSystem=strict`, `PrivateTmp=`).
//!   The machines the suite runs on have no systemd as PID 1, so the unit
//!   itself cannot be started; the trace checks what it would enforce.
//!
//! Needs systemd-analyze (Debian's `systemd`), strace, dpkg-deb,
//! dpkg-shlibdeps (`dpkg-dev`, for `Depends`) and cargo-deb at exactly
//! [`CARGO_DEB`]; `bash scripts/test.sh` installs them.
//! Without them these tests fail, saying how to install them; they never
//! skip.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::PASSWORD;

/// The cargo-deb release the package is built with (`scripts/test.sh`
/// installs it; keep the two in step).
const CARGO_DEB: &str = "3.8.0";

/// Longest the packaged server may take to start, answer or stop (strace
/// slows it down).
const DEADLINE: Duration = Duration::from_secs(30);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `cmd` to completion (it must exist) and returns what it left.
fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `cmd`, asserting it succeeds; its stdout.
fn checked(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The path of `tool`, looked up in `PATH` and the sbin directories, or a
/// failure saying how to install it.
fn require(tool: &str, install: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{tool} not found: {install} (bash scripts/test.sh installs it); \
                 the packaging tests never skip"
            )
        })
}

fn systemd_analyze() -> PathBuf {
    require(
        "systemd-analyze",
        "apt-get install systemd (it runs without systemd as PID 1)",
    )
}

fn dpkg_deb() -> PathBuf {
    require("dpkg-deb", "apt-get install dpkg")
}

/// cargo-deb at exactly [`CARGO_DEB`], or a failure saying how to get it.
fn require_cargo_deb() {
    let install = format!("cargo install cargo-deb --locked --version {CARGO_DEB}");
    let out = Command::new(env!("CARGO"))
        .args(["deb", "--version"])
        .stdin(Stdio::null())
        .output();
    let version = match out {
        Ok(out) if out.status.success() => text(&out.stdout),
        Ok(out) => panic!(
            "cargo-deb not found (`cargo deb --version`: {}): {install} \
             (bash scripts/test.sh installs it); the packaging tests never skip",
            text(&out.stderr).trim()
        ),
        Err(e) => panic!("running cargo: {e}"),
    };
    assert_eq!(
        version.trim(),
        format!("cargo-deb {CARGO_DEB}"),
        "the package is built with cargo-deb {CARGO_DEB}: {install} \
         (bash scripts/test.sh does so)"
    );
}

// ------------------------------------------------------------ the package

/// The package this test process built, once for every test.
static PACKAGE: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The .deb built by cargo-deb from the test build's own binary
/// (`target/debug/gatehouse`, the one `cargo test` just built), under
/// `CARGO_TARGET_TMPDIR`; built once per test process.
fn package() -> PathBuf {
    let mut built = PACKAGE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(deb) = built.as_ref() {
        return deb.clone();
    }
    require_cargo_deb();
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("packaging-deb");
    let _ = std::fs::remove_dir_all(&out_dir);
    std::fs::create_dir_all(&out_dir).expect("creating the package directory");
    // --no-build: the binary is the one this test build made, in the
    // profile's directory under the target directory (cargo-deb maps the
    // dev profile to target/debug; version 3.8.0 warns that it "is not
    // supported" for releases, and packages it). --strip drops the debug
    // info, which cargo-deb would otherwise keep for `debug = true`.
    let binary = Path::new(env!("CARGO_BIN_EXE_gatehouse"));
    let profile = match binary
        .parent()
        .and_then(Path::file_name)
        .and_then(|d| d.to_str())
    {
        Some("debug") => "dev",
        Some(other) => other,
        None => panic!("no profile directory in {}", binary.display()),
    };
    let started = Instant::now();
    checked(
        Command::new(env!("CARGO"))
            .current_dir(repo_root())
            .args(["deb", "-p", "gatehouse", "--no-build", "--profile", profile])
            .args(["--strip", "--fast", "--locked", "--output"])
            .arg(&out_dir),
    );
    eprintln!("cargo deb took {:?}", started.elapsed());
    let debs: Vec<PathBuf> = std::fs::read_dir(&out_dir)
        .expect("reading the package directory")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(
        debs.len(),
        1,
        "one .deb expected in {}: {debs:?}",
        out_dir.display()
    );
    let deb = debs[0].clone();
    *built = Some(deb.clone());
    deb
}

/// A directory that an unprivileged user can enter (tempfile makes them
/// 0700), removed when dropped.
fn open_temp_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod 755 the temp dir");
    dir
}

/// The package extracted (`dpkg-deb -x`) into a fresh directory.
fn extracted() -> tempfile::TempDir {
    let deb = package();
    let root = open_temp_dir();
    checked(
        Command::new(dpkg_deb())
            .arg("-x")
            .arg(&deb)
            .arg(root.path()),
    );
    root
}

fn field(deb: &Path, name: &str) -> String {
    checked(Command::new(dpkg_deb()).arg("-f").arg(deb).arg(name))
        .trim()
        .to_owned()
}

#[test]
fn the_package_holds_the_binary_the_unit_the_conffile_and_the_scripts() {
    let deb = package();
    assert_eq!(field(&deb, "Package"), "gatehouse");
    assert_eq!(
        field(&deb, "Version"),
        format!("{}-1", env!("CARGO_PKG_VERSION"))
    );
    let arch = checked(Command::new("dpkg").arg("--print-architecture"));
    assert_eq!(field(&deb, "Architecture"), arch.trim());
    assert_eq!(field(&deb, "Section"), "net");
    assert!(
        field(&deb, "Maintainer").contains('@'),
        "a Maintainer with an address"
    );
    // libc from the binary's own needs (dpkg-shlibdeps), and adduser for
    // the postinst's system user.
    let depends = field(&deb, "Depends");
    let names: Vec<&str> = depends
        .split(',')
        .map(|d| d.split_whitespace().next().unwrap_or_default())
        .collect();
    for needed in ["libc6", "adduser"] {
        assert!(names.contains(&needed), "Depends lacks {needed}: {depends}");
    }

    // The files, with their modes and owners.
    let listing = checked(Command::new(dpkg_deb()).arg("-c").arg(&deb));
    let entry = |path: &str| -> String {
        listing
            .lines()
            .find(|l| l.ends_with(&format!(" .{path}")))
            .unwrap_or_else(|| panic!("{path} is not in the package:\n{listing}"))
            .to_owned()
    };
    for (path, mode) in [
        ("/usr/bin/gatehouse", "-rwxr-xr-x"),
        ("/usr/lib/systemd/system/gatehouse.service", "-rw-r--r--"),
        ("/etc/gatehouse/gatehouse.toml", "-rw-r--r--"),
        ("/usr/share/doc/gatehouse/docs/production.md", "-rw-r--r--"),
        ("/usr/share/doc/gatehouse/copyright", "-rw-r--r--"),
    ] {
        let line = entry(path);
        assert!(line.starts_with(mode), "{path}: {line}");
        assert!(
            line.contains(" 0/0 ") || line.contains(" root/root "),
            "{path} not root's: {line}"
        );
    }

    // The control area: the conffile and the maintainer scripts.
    let control = tempfile::tempdir().expect("temp dir");
    checked(
        Command::new(dpkg_deb())
            .arg("-e")
            .arg(&deb)
            .arg(control.path()),
    );
    let read = |name: &str| {
        std::fs::read_to_string(control.path().join(name))
            .unwrap_or_else(|e| panic!("control file {name}: {e}"))
    };
    assert_eq!(read("conffiles").trim(), "/etc/gatehouse/gatehouse.toml");
    let postinst = read("postinst");
    for needed in [
        "adduser --system --group",
        "chmod 0700 /var/lib/gatehouse",
        "chown gatehouse:gatehouse /var/lib/gatehouse",
        "chown root:gatehouse /etc/gatehouse",
        "chmod 0750 /etc/gatehouse",
        // cargo-deb's systemd fragments: the unit is enabled again on an
        // upgrade only if it was enabled, and a running service restarts;
        // nothing is enabled or started on a first install.
        "deb-systemd-helper --quiet was-enabled gatehouse.service",
        "deb-systemd-invoke try-restart gatehouse.service",
    ] {
        assert!(
            postinst.contains(needed),
            "postinst lacks {needed:?}:\n{postinst}"
        );
    }
    assert!(
        !postinst.contains("#DEBHELPER#"),
        "cargo-deb left the #DEBHELPER# token in postinst"
    );
    for never in ["deb-systemd-invoke start", "_dh_action=start"] {
        assert!(
            !postinst.contains(never),
            "postinst must not start the service before issuer is set ({never:?}):\n{postinst}"
        );
    }
    // Stopped on removal (prerm), masked on removal and purged (postrm).
    assert!(read("prerm").contains("deb-systemd-invoke stop gatehouse.service"));
    assert!(read("postrm").contains("deb-systemd-helper purge gatehouse.service"));
    for script in ["postinst", "prerm", "postrm"] {
        let path = control.path().join(script);
        let mode = std::fs::metadata(&path)
            .expect("script")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755, "{script} mode {mode:o}");
        checked(Command::new("sh").arg("-n").arg(&path));
    }

    // The files are the repository's, byte for byte.
    let root = extracted();
    for (packaged, source) in [
        (
            "usr/lib/systemd/system/gatehouse.service",
            "packaging/gatehouse.service",
        ),
        ("etc/gatehouse/gatehouse.toml", "packaging/gatehouse.toml"),
    ] {
        let a = std::fs::read(root.path().join(packaged)).expect("packaged file");
        let b = std::fs::read(repo_root().join(source)).expect("source file");
        assert!(a == b, "{packaged} differs from {source}");
    }
    // The shipped docs keep the repository's layout: every relative
    // Markdown link in them names a file the package holds.
    let docs = root.path().join("usr/share/doc/gatehouse");
    let mut pages: Vec<PathBuf> = [
        "production.md",
        "reference/configuration.md",
        "reference/cli.md",
        "reference/http.md",
    ]
    .iter()
    .map(|page| docs.join("docs").join(page))
    .collect();
    let mut seen = BTreeSet::new();
    while let Some(page) = pages.pop() {
        if !seen.insert(page.clone()) {
            continue;
        }
        let text = std::fs::read_to_string(&page)
            .unwrap_or_else(|e| panic!("a shipped page: {} ({e})", page.display()));
        for target in text
            .split("](")
            .skip(1)
            .filter_map(|rest| rest.split(')').next())
        {
            let target = target.split('#').next().unwrap_or_default();
            if target.is_empty() || target.contains("://") {
                continue;
            }
            let linked = page.parent().expect("a folder").join(target);
            assert!(
                linked.exists(),
                "{} links {target}, which the package does not hold",
                page.display()
            );
            if target.ends_with(".md") {
                pages.push(linked.canonicalize().expect("a linked page"));
            }
        }
    }
    assert!(
        seen.len() >= 3,
        "the shipped pages link each other: {seen:?}"
    );
    // The packaged binary is this build's gatehouse (stripped).
    let version = checked(Command::new(root.path().join("usr/bin/gatehouse")).arg("--version"));
    assert_eq!(
        version.trim(),
        format!("gatehouse {}", env!("CARGO_PKG_VERSION"))
    );
}

// ------------------------------------------------------------- the unit

/// The extracted package with the host's own units beside the packaged one,
/// as a root for `systemd-analyze --root` (the unit's default dependencies,
/// sysinit.target and the like, must be found there).
fn analysis_root() -> tempfile::TempDir {
    let root = extracted();
    let units = root.path().join("usr/lib/systemd/system");
    let host = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .map(Path::new)
        .find(|d| d.join("sysinit.target").is_file())
        .unwrap_or_else(|| {
            panic!("no sysinit.target on this host: apt-get install systemd (bash scripts/test.sh installs it)")
        });
    for entry in std::fs::read_dir(host).expect("the host's unit directory") {
        let entry = entry.expect("a directory entry");
        let to = units.join(entry.file_name());
        let meta = std::fs::metadata(entry.path());
        if to.exists() || !meta.is_ok_and(|m| m.is_file()) {
            continue;
        }
        std::fs::copy(entry.path(), &to).expect("copying a unit");
    }
    root
}

/// `systemd-analyze verify` of `unit` under `root`: its exit status and
/// everything it printed.
fn verify(root: &Path, unit: &str) -> (bool, String) {
    let out = output(
        Command::new(systemd_analyze())
            .arg("verify")
            .arg(format!("--root={}", root.display()))
            .arg(unit),
    );
    (
        out.status.success(),
        format!("{}{}", text(&out.stdout), text(&out.stderr)),
    )
}

#[test]
fn the_packaged_unit_passes_systemd_analyze_verify() {
    let root = analysis_root();
    let (ok, said) = verify(root.path(), "gatehouse.service");
    // verify exits 0 on warnings (an unknown key, a bad value): any word
    // from it is a failure.
    assert!(
        ok && said.trim().is_empty(),
        "systemd-analyze verify gatehouse.service (exit ok: {ok}):\n{said}"
    );

    // The check has teeth: the same unit with a misspelt key and a bad
    // value is reported.
    let units = root.path().join("usr/lib/systemd/system");
    let unit = std::fs::read_to_string(units.join("gatehouse.service")).expect("the unit");
    let broken = unit
        .replacen("ProtectHome=yes", "ProtectHom=yes", 1)
        .replacen("UMask=0077", "UMask=0999", 1);
    assert_ne!(
        broken, unit,
        "the unit no longer has the lines the control changes"
    );
    std::fs::write(units.join("gatehouse-broken.service"), broken).expect("writing");
    let (_, said) = verify(root.path(), "gatehouse-broken.service");
    assert!(
        said.contains("ProtectHom") && said.contains("0999"),
        "systemd-analyze verify did not report a broken copy of the unit:\n{said}"
    );
}

/// What `systemd-analyze security --offline` is expected to leave open, by
/// check name: everything else it knows must be closed.
const OPEN_BY_DESIGN: &[&str] = &[
    // It listens and connects to PostgreSQL and Redis, over TCP or Unix
    // sockets.
    "PrivateNetwork=",
    "RestrictAddressFamilies=~AF_(INET|INET6)",
    "RestrictAddressFamilies=~AF_UNIX",
    // Which addresses may reach it is the site's (a drop-in, or a firewall).
    "IPAddressDeny=",
    // PrivateUsers= would keep CAP_NET_BIND_SERVICE from binding port 443
    // when an operator grants it in a drop-in.
    "PrivateUsers=",
    // ProtectClock= itself adds read access to the RTC.
    "DeviceAllow=",
    // setpriority alone, for the hashing threads (asserted below).
    "SystemCallFilter=~@resources",
    // It runs from the host's /usr, as a distribution's package does.
    "RootDirectory=/RootImage=",
];

#[test]
fn the_packaged_unit_is_hardened_by_systemd_analyze_security() {
    let root = analysis_root();
    let out = output(
        Command::new(systemd_analyze())
            .args(["security", "--offline=true", "--json=short"])
            .arg(format!("--root={}", root.path().display()))
            .arg("gatehouse.service"),
    );
    assert!(
        out.status.success(),
        "systemd-analyze security failed: {}",
        text(&out.stderr)
    );
    let checks: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "systemd-analyze security --json: {e}: {}",
            text(&out.stdout)
        )
    });
    assert!(checks.len() > 50, "too few checks: {checks:?}");
    let mut open = BTreeSet::new();
    for check in &checks {
        let name = check["name"].as_str().expect("a check's name");
        if check["set"] == json!(false) && check["exposure"].is_string() {
            open.insert(name.to_owned());
        }
        if name == "SystemCallFilter=~@resources" {
            // The filter removes @resources but gives setpriority back: the
            // password hashing threads lower their own priority with it.
            let said = check["description"].as_str().unwrap_or_default();
            assert!(
                said.contains("setpriority is allowed"),
                "setpriority must stay allowed: {said}"
            );
        }
    }
    let expected: BTreeSet<String> = OPEN_BY_DESIGN.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(
        open, expected,
        "systemd-analyze security: open checks differ from the ones left open by design"
    );
    // The overall figure, as systemd computes it: 1.4 out of 10.
    let status = output(
        Command::new(systemd_analyze())
            .args(["security", "--offline=true", "--threshold=14"])
            .arg(format!("--root={}", root.path().display()))
            .arg("gatehouse.service"),
    );
    assert!(
        status.status.success(),
        "exposure above 1.4:\n{}",
        text(&status.stdout)
    );
}

// ------------------------------------------- the binary within the sandbox

/// The unit's values of `key`, in order (each line's words).
fn unit_values(unit: &str, key: &str) -> Vec<Vec<String>> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(|v| v.split_whitespace().map(str::to_owned).collect())
        .collect()
}

/// The system calls of `group` (`@system-service`, ...), nested groups
/// expanded, as `systemd-analyze syscall-filter` lists them.
fn syscall_group(group: &str, seen: &mut BTreeSet<String>) -> BTreeSet<String> {
    let mut calls = BTreeSet::new();
    if !seen.insert(group.to_owned()) {
        return calls;
    }
    let listed = checked(
        Command::new(systemd_analyze())
            .args(["syscall-filter", "--no-pager"])
            .arg(group),
    );
    for line in listed.lines().skip(1) {
        let word = line.trim();
        if word.is_empty() || word.starts_with('#') {
            continue;
        }
        if word.starts_with('@') {
            calls.extend(syscall_group(word, seen));
        } else {
            calls.insert(word.to_owned());
        }
    }
    assert!(!calls.is_empty() || seen.len() > 1, "{group} lists no call");
    calls
}

/// The calls the unit's `SystemCallFilter=` lines let through, applied in
/// order as systemd does: the first (an allow list) sets the list, `~`
/// lines take calls out, later plain lines put them back.
fn allowed_syscalls(unit: &str) -> BTreeSet<String> {
    let lines = unit_values(unit, "SystemCallFilter");
    assert!(
        lines
            .first()
            .is_some_and(|l| !l.is_empty() && !l[0].starts_with('~')),
        "the unit's first SystemCallFilter= must be an allow list: {lines:?}"
    );
    let mut allowed = BTreeSet::new();
    for line in lines {
        let (deny, words) = match line.split_first() {
            Some((first, rest)) if first.starts_with('~') => {
                let mut words = vec![first.trim_start_matches('~').to_owned()];
                words.extend(rest.iter().cloned());
                (true, words)
            }
            _ => (false, line),
        };
        for word in words {
            let calls = if word.starts_with('@') {
                syscall_group(&word, &mut BTreeSet::new())
            } else {
                BTreeSet::from([word])
            };
            for call in calls {
                if deny {
                    allowed.remove(&call);
                } else {
                    allowed.insert(call);
                }
            }
        }
    }
    allowed
}

/// One traced call: its name and the rest of the line.
struct Call<'a> {
    name: &'a str,
    line: &'a str,
}

/// The calls of an `strace -ff` log of one thread (`name(args) = result`),
/// leaving out signals and exits.
fn calls(trace: &str) -> Vec<Call<'_>> {
    trace
        .lines()
        .filter_map(|line| {
            if line.starts_with("+++") || line.starts_with("---") {
                return None;
            }
            let name = &line[..line.find('(')?];
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
                .then_some(Call { name, line })
        })
        .collect()
}

/// The logs of `strace -ff -o PREFIX`, one per thread (`PREFIX.TID`), by
/// thread id.
fn thread_logs(prefix: &Path) -> Vec<(String, String)> {
    let dir = prefix.parent().expect("the trace's directory");
    let stem = format!(
        "{}.",
        prefix.file_name().expect("a file name").to_string_lossy()
    );
    let mut logs = Vec::new();
    for entry in std::fs::read_dir(dir).expect("reading the trace's directory") {
        let entry = entry.expect("a directory entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(tid) = name.strip_prefix(&stem) {
            let log = std::fs::read_to_string(entry.path()).expect("a thread's trace");
            logs.push((tid.to_owned(), log));
        }
    }
    logs
}

/// The quoted path of an `open`-like call.
fn quoted_path(line: &str) -> Option<&str> {
    let start = line.find('"')? + 1;
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}

/// The packaged configuration with only its port and database path
/// changed, for a run outside the package's directories.
fn test_configuration(root: &Path, database: &Path) -> String {
    let packaged =
        std::fs::read_to_string(root.join("etc/gatehouse/gatehouse.toml")).expect("the config");
    let listen = "listen = \"127.0.0.1:8080\"";
    let db = "database_url = \"sqlite:///var/lib/gatehouse/gatehouse.db\"";
    for line in [listen, db] {
        assert_eq!(
            packaged.lines().filter(|l| *l == line).count(),
            1,
            "the packaged configuration must hold `{line}` once"
        );
    }
    packaged
        .replace(listen, "listen = \"127.0.0.1:0\"")
        .replace(
            db,
            &format!("database_url = \"sqlite://{}\"", database.display()),
        )
}

/// Kills a process by pid when dropped: strace killed by [`ChildGuard`]
/// would leave the traced server running.
/// `None` once strace has exited (it waits for every process it traces).
struct KillOnDrop(Option<String>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = &self.0 {
            let _ = Command::new("kill")
                .args(["-KILL", pid])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// `id -u nobody` / `id -g nobody`.
fn nobody(flag: &str) -> u32 {
    checked(Command::new("id").arg(flag).arg("nobody"))
        .trim()
        .parse()
        .expect("a numeric id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_packaged_binary_serves_with_the_packaged_configuration_within_the_units_sandbox() {
    let strace = require("strace", "apt-get install strace");
    let root = extracted();
    let unit =
        std::fs::read_to_string(root.path().join("usr/lib/systemd/system/gatehouse.service"))
            .expect("the packaged unit");
    let allowed = allowed_syscalls(&unit);
    assert!(allowed.contains("read"), "{allowed:?}");

    // The state directory (StateDirectory=, mode 0700) and the
    // configuration, for the user the service runs as: `nobody` stands in
    // for `gatehouse` when the test runs as root.
    let work = open_temp_dir();
    let state = work.path().join("state");
    std::fs::create_dir(&state).expect("state dir");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let as_root = rustix::process::geteuid().is_root();
    if as_root {
        std::os::unix::fs::chown(&state, Some(nobody("-u")), Some(nobody("-g")))
            .expect("chown the state dir");
    }
    let database = state.join("gatehouse.db");
    let config = work.path().join("gatehouse.toml");
    std::fs::write(&config, test_configuration(root.path(), &database)).expect("config");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let trace = work.path().join("trace");

    // As the unit runs it: UMask=0077 (the umask is inherited, so sh sets
    // it and execs strace), WorkingDirectory=, a bare environment.
    // systemd starts services at niceness 0; the hashing threads only ever
    // lower their priority, so under a niced test run (nice -n 10 cargo
    // test) they would call no setpriority at all. As root, start at 0.
    let niceness = rustix::process::getpriority_process(None).expect("own niceness");
    let mut sh = Command::new("sh");
    sh.args(["-c", "umask 077 && exec \"$@\"", "sh"]);
    if niceness > 0 {
        assert!(
            as_root,
            "this test runs the server at niceness {niceness}, where the hashing threads \
             need not lower their priority (and setpriority is not seen): run it as root, \
             or not under nice"
        );
        sh.args(["nice", "-n", &format!("-{niceness}")]);
    }
    // One log per thread (-ff), so that no call is split by another's.
    sh.arg(strace).args(["-ff", "-qq", "-o"]).arg(&trace);
    if as_root {
        sh.args(["-u", "nobody"]);
    }
    sh.arg(root.path().join("usr/bin/gatehouse"))
        .args(["serve", "--config"])
        .arg(&config)
        .current_dir(&state)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Spawned, its first stdout line read for the address, killed on drop.
    let server = crate::cli::Server::start(&mut sh);
    let addr = server.addr;

    let client = reqwest::Client::builder()
        .timeout(DEADLINE)
        .build()
        .expect("client");
    for path in ["/healthz", "/readyz"] {
        let res = client
            .get(format!("http://{addr}{path}"))
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), StatusCode::OK, "GET {path}");
    }
    // A registration and a login: the password hashing threads at work, and
    // writes to the database.
    let body = json!({ "email": "ops@example.com", "password": PASSWORD });
    let res = client
        .post(format!("http://{addr}/v1/users"))
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::CREATED, "POST /v1/users");
    let res = client
        .post(format!("http://{addr}/v1/login"))
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK, "POST /v1/login");

    // SIGTERM, as systemd stops it (KillSignal=SIGTERM): it drains and exits
    // 0. The traced process is the first pid of the trace.
    // The server is the thread whose log begins with its execve.
    let pid = thread_logs(&trace)
        .into_iter()
        .find(|(_, log)| log.starts_with("execve("))
        .map(|(tid, _)| tid)
        .expect("the traced server's execve");
    let mut guard = KillOnDrop(Some(pid.clone()));
    checked(Command::new("kill").args(["-TERM", &pid]));
    let (status, stderr) = server.wait(DEADLINE);
    if status.is_some() {
        guard.0 = None;
    }
    assert!(
        status.is_some_and(|s| s.success()),
        "the packaged binary did not stop cleanly on SIGTERM ({status:?}); stderr:\n{stderr}"
    );
    assert!(stderr.contains("SIGTERM received"), "stderr:\n{stderr}");
    let logs = thread_logs(&trace);
    let traced: Vec<Call<'_>> = logs.iter().flat_map(|(_, log)| calls(log)).collect();
    assert!(traced.len() > 100, "a short trace: {} calls", traced.len());

    // Every call is one the unit's SystemCallFilter= lets through.
    let used: BTreeSet<&str> = traced.iter().map(|c| c.name).collect();
    let refused: Vec<&&str> = used.iter().filter(|c| !allowed.contains(**c)).collect();
    assert!(
        refused.is_empty(),
        "calls the unit's SystemCallFilter= refuses: {refused:?} (used: {used:?})"
    );
    // The hashing threads lowered their own priority, unprivileged.
    let lowered: Vec<&str> = traced
        .iter()
        .filter(|c| c.name == "setpriority")
        .map(|c| c.line)
        .collect();
    assert!(
        !lowered.is_empty()
            && lowered
                .iter()
                .all(|l| l.contains(", 10)") && l.trim_end().ends_with("= 0")),
        "the hashing threads must lower their priority to 10: {lowered:?}"
    );

    // Sockets only of the families RestrictAddressFamilies= allows.
    let families: BTreeSet<String> = unit_values(&unit, "RestrictAddressFamilies")
        .into_iter()
        .flatten()
        .collect();
    for call in traced
        .iter()
        .filter(|c| matches!(c.name, "socket" | "socketpair"))
    {
        let family = call.line[call.name.len() + 1..]
            .split(',')
            .next()
            .unwrap_or_default();
        assert!(
            families.contains(family),
            "a socket of family {family} ({}): RestrictAddressFamilies= is {families:?}",
            call.line
        );
    }

    // No writable and executable memory (MemoryDenyWriteExecute=).
    for call in traced
        .iter()
        .filter(|c| matches!(c.name, "mmap" | "mprotect" | "pkey_mprotect"))
    {
        assert!(
            !(call.line.contains("PROT_WRITE") && call.line.contains("PROT_EXEC")),
            "writable and executable memory: {}",
            call.line
        );
    }

    // Files: written only in the state directory and /tmp (ProtectSystem=
    // strict, PrivateTmp=); of /proc, only a process's own entries
    // (ProcSubset=pid).
    let state_dir = format!("{}/", state.display());
    for call in traced.iter().filter(|c| {
        matches!(
            c.name,
            "open"
                | "openat"
                | "openat2"
                | "creat"
                | "mkdir"
                | "mkdirat"
                | "unlink"
                | "unlinkat"
                | "rename"
                | "renameat"
                | "renameat2"
        )
    }) {
        let Some(path) = quoted_path(call.line) else {
            continue;
        };
        let writes = !call.name.starts_with("open")
            || call.line.contains("O_WRONLY")
            || call.line.contains("O_RDWR")
            || call.line.contains("O_CREAT");
        let ok = path.starts_with(&state_dir) || path.starts_with("/tmp/");
        assert!(
            !writes || ok || path == "/dev/null",
            "a write outside the state directory: {}",
            call.line
        );
        if let Some(proc) = path.strip_prefix("/proc/") {
            let own = proc.starts_with("self/")
                || proc.starts_with("thread-self/")
                || proc
                    .split('/')
                    .next()
                    .is_some_and(|p| p.chars().all(|c| c.is_ascii_digit()));
            assert!(
                own,
                "/proc beyond the process's own (ProcSubset=pid): {}",
                call.line
            );
        }
    }

    // The database was created in the state directory, owner-only.
    let mode = std::fs::metadata(&database)
        .expect("the database file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "database mode {mode:o}");
}
