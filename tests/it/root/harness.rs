//! Fixtures for the root tests: the root check, busybox roots, profiles, and a wrapper
//! that runs bldr inside a mount namespace of its own, made private first, so that
//! nothing bldr does can reach the mount table of the machine running the tests.
//!
//! That wrapper namespace plays "the host": its mount table is the one the assertions
//! compare. A `sleep` started in it (the holder) keeps it alive after bldr exits, so the
//! table can be read after the run too (`/proc/<holder>/mountinfo`), and its view of the
//! filesystem is reachable through `/proc/<holder>/root`.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a run may take before the test gives up on it.
const RUN_LIMIT: Duration = Duration::from_secs(30);

/// True when root tests can run here. When they cannot, prints why and returns false,
/// or panics under `BLDR_REQUIRE_ROOT_TESTS=1`, where a root test that cannot run is a
/// failure (SPEC §5).
pub fn root_tests_can_run() -> bool {
    let Some(why) = missing_prerequisite() else {
        return true;
    };
    if std::env::var("BLDR_REQUIRE_ROOT_TESTS").as_deref() == Ok("1") {
        panic!("root test cannot run: {why}");
    }
    eprintln!("note: skipping a root test: {why} (BLDR_REQUIRE_ROOT_TESTS=1 makes this a failure)");
    false
}

fn missing_prerequisite() -> Option<String> {
    static PROBE: OnceLock<Option<String>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            if !nix::unistd::geteuid().is_root() {
                return Some("not root".into());
            }
            let bb = busybox();
            if !bb.is_file() {
                return Some(format!(
                    "no static busybox at {} (apt-get install busybox-static)",
                    bb.display()
                ));
            }
            match Command::new("unshare")
                .args(["--mount", "--propagation", "private", "--", "true"])
                .status()
            {
                Ok(s) if s.success() => None,
                Ok(s) => Some(format!("`unshare --mount` fails here ({s})")),
                Err(e) => Some(format!("cannot run unshare: {e}")),
            }
        })
        .clone()
}

fn busybox() -> PathBuf {
    std::env::var_os("BUSYBOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/bin/busybox"))
}

pub fn bldr_bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("bldr")
}

/// A string as a YAML double-quoted scalar (JSON's string syntax is a subset of it).
pub fn q(s: impl AsRef<str>) -> String {
    serde_json::to_string(s.as_ref()).expect("strings serialize")
}

fn qp(p: &Path) -> String {
    q(p.to_str().expect("test paths are UTF-8"))
}

/// The busybox root every fixture copies, built once per test process with
/// `bldr root create busybox`. It is never used as a chroot itself, so it never holds a
/// mount; templates of processes that are gone are removed when a new one is made.
fn template_root() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        fs::create_dir_all(base).expect("create CARGO_TARGET_TMPDIR");
        for entry in fs::read_dir(base).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("busybox-root.") {
                if pid.parse::<u32>().is_ok() && !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = base.join(format!("busybox-root.{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let out = Command::new(assert_cmd::cargo::cargo_bin("bldr"))
            .args(["root", "create", "busybox"])
            .arg(&dir)
            .output()
            .expect("run bldr root create busybox");
        assert!(
            out.status.success(),
            "bldr root create busybox failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // This busybox has no nohup applet; the daemon tests need its behaviour only
        // (ignore SIGHUP, then exec).
        let nohup = dir.join("usr/bin/nohup");
        if !nohup.exists() {
            fs::write(&nohup, "#!/bin/sh\ntrap '' HUP\nexec \"$@\"\n").unwrap();
            fs::set_permissions(&nohup, fs::Permissions::from_mode(0o755)).unwrap();
        }
        dir
    })
}

/// One test's world: a temporary folder holding a busybox chroot (`root`), the state
/// directory and `sync`, a host folder every profile shares at /mnt/sync so that a
/// command can say "I am running" (`ready`) and wait to be told to go on (`go`).
pub struct Fixture {
    tmp: Option<tempfile::TempDir>,
    pub dir: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    pub sync: PathBuf,
    runs: AtomicU32,
}

/// A command snippet: say "ready", then wait (at most 20 s) for the test's "go".
pub const READY_THEN_WAIT_FOR_GO: &str = "touch /mnt/sync/ready; i=0; \
     while [ ! -e /mnt/sync/go ]; do sleep 0.02; i=$((i+1)); [ $i -lt 1000 ] || exit 99; done";

impl Fixture {
    pub fn new() -> Fixture {
        let template = template_root();
        let tmp = tempfile::Builder::new()
            .prefix("bldr-root-test.")
            .tempdir()
            .expect("create a temporary folder");
        let dir = tmp.path().canonicalize().unwrap();
        let root = dir.join("root");
        let st = Command::new("cp")
            .arg("-a")
            .arg(template)
            .arg(&root)
            .status()
            .expect("run cp");
        assert!(st.success(), "copying the busybox root failed");
        let (state, sync) = (dir.join("state"), dir.join("sync"));
        fs::create_dir(&state).unwrap();
        fs::create_dir(&sync).unwrap();
        Fixture {
            tmp: Some(tmp),
            dir,
            root,
            state,
            sync,
            runs: AtomicU32::new(0),
        }
    }

    /// A path in the test's folder.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// A new profile `NAME.yaml` in the test's folder, sharing `sync` at /mnt/sync.
    pub fn profile(&self, name: &str) -> ProfileBuilder {
        ProfileBuilder {
            path: self.dir.join(format!("{name}.yaml")),
            keys: vec![format!("chroot: {}", qp(&self.root))],
            shared: vec![],
            tmpfs: vec![],
            commands: vec![],
        }
        .share(&self.sync, "/mnt/sync")
    }

    /// Starts `bldr run PROFILE` in a fresh outer namespace.
    pub fn spawn(&self, profile: &Path, outer: &Outer) -> Running<'_> {
        let n = self.runs.fetch_add(1, Ordering::SeqCst);
        for f in ["ready", "go"] {
            let _ = fs::remove_file(self.sync.join(f));
        }
        let name = profile.file_stem().unwrap().to_string_lossy().into_owned();
        let runs_before = self.run_entries(&name);
        let mut script = String::from("set -e\n");
        if outer.systemd_host {
            // A systemd host: `/` and everything below it shared. The namespace was
            // made private first (unshare's default), so these peer groups are ours
            // alone and never reach the real host's mounts.
            script.push_str("mount --make-rshared /\n");
        }
        script.push_str(&outer.setup);
        script.push('\n');
        script.push_str(
            "cat /proc/self/mountinfo > \"$T/run$N.before\"\n\
             sleep 600 </dev/null >/dev/null 2>&1 &\n\
             echo $! > \"$T/run$N.holder.tmp\"\n\
             mv \"$T/run$N.holder.tmp\" \"$T/run$N.holder\"\n",
        );
        script.push_str(&outer.before_exec);
        if outer.on_a_terminal {
            // As from an interactive shell: a pty as stdin, stdout, stderr and
            // controlling terminal (setsid(1) --ctty; no fork, the wrapper is not a
            // process group leader).
            script.push_str(
                "\nexec setsid --ctty \"$BLDR\" run \"$PROFILE\" <\"$TTY\" >\"$TTY\" 2>&1\n",
            );
        } else {
            script.push_str("\nexec \"$BLDR\" run \"$PROFILE\"\n");
        }
        let out = File::create(self.dir.join(format!("run{n}.stdout"))).unwrap();
        let err = File::create(self.dir.join(format!("run{n}.stderr"))).unwrap();
        let terminal = outer
            .on_a_terminal
            .then(|| Terminal::open(err.try_clone().unwrap()));
        let mut cmd = Command::new("unshare");
        if let Some(t) = &terminal {
            cmd.env("TTY", &t.slave);
        }
        let child = cmd
            .args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
            .arg(&script)
            .env("T", &self.dir)
            .env("N", n.to_string())
            .env("BLDR", bldr_bin())
            .env("PROFILE", profile)
            .env("BLDR_STATE_DIR", &self.state)
            .env("NO_COLOR", "1")
            .envs(outer.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start unshare");
        Running {
            fx: self,
            pid: child.id() as i32,
            child,
            n,
            name,
            runs_before,
            holder: None,
            status: None,
            _terminal: terminal,
        }
    }

    /// Runs the profile to its end.
    pub fn run(&self, profile: &Path, outer: &Outer) -> Finished {
        self.spawn(profile, outer).finish()
    }

    fn run_entries(&self, name: &str) -> BTreeSet<OsString> {
        fs::read_dir(self.state.join("runs").join(name))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n != "latest" && !n.to_string_lossy().starts_with('.'))
            .collect()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // The mounts of a test live in namespaces of their own; if one is ever visible
        // here, the folder is left alone rather than deleted through it.
        let here = mounts_under("/proc/self/mountinfo", &self.dir);
        if !here.is_empty() {
            if let Some(t) = self.tmp.take() {
                let _ = t.keep();
            }
            if !std::thread::panicking() {
                panic!(
                    "mounts under {} in the test's own namespace, folder left in place: {here:?}",
                    self.dir.display()
                );
            }
        }
    }
}

/// The mount points in a mountinfo file that lie at or below `dir`.
pub fn mounts_under(mountinfo: &str, dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy();
    fs::read_to_string(mountinfo)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| *m == dir || m.starts_with(&format!("{dir}/")))
        .map(String::from)
        .collect()
}

/// Builds a profile file.
pub struct ProfileBuilder {
    path: PathBuf,
    keys: Vec<String>,
    shared: Vec<String>,
    tmpfs: Vec<String>,
    commands: Vec<String>,
}

impl ProfileBuilder {
    /// A top-level line, e.g. `network: none`.
    pub fn key(mut self, line: &str) -> Self {
        self.keys.push(line.into());
        self
    }

    pub fn share(mut self, source: &Path, target: &str) -> Self {
        self.shared
            .push(format!("{{source: {}, target: {}}}", qp(source), q(target)));
        self
    }

    pub fn share_ro(mut self, source: &Path, target: &str) -> Self {
        self.shared.push(format!(
            "{{source: {}, target: {}, readonly: true}}",
            qp(source),
            q(target)
        ));
        self
    }

    pub fn tmpfs(mut self, target: &str) -> Self {
        self.tmpfs.push(q(target));
        self
    }

    pub fn command(mut self, run: &str) -> Self {
        self.commands.push(q(run));
        self
    }

    /// A command in the map form with extra keys, e.g. `network: none`.
    pub fn command_with(mut self, run: &str, keys: &str) -> Self {
        self.commands.push(format!("{{run: {}, {keys}}}", q(run)));
        self
    }

    pub fn write(self) -> PathBuf {
        let mut y = self.keys.join("\n");
        for (key, items) in [
            ("shared", &self.shared),
            ("tmpfs", &self.tmpfs),
            ("commands", &self.commands),
        ] {
            if !items.is_empty() {
                y.push_str(&format!("\n{key}:\n"));
                for i in items {
                    y.push_str(&format!("  - {i}\n"));
                }
            }
        }
        fs::write(&self.path, y).unwrap();
        self.path
    }
}

/// How the outer namespace is set up before bldr starts in it.
#[derive(Default)]
pub struct Outer {
    /// Make `/` recursively shared first, as on a systemd host.
    pub systemd_host: bool,
    /// Shell lines run in the outer namespace before its table is recorded.
    pub setup: String,
    /// Shell lines run right before bldr is exec'd (e.g. opening descriptors).
    pub before_exec: String,
    /// Extra environment for bldr.
    pub env: Vec<(String, String)>,
    /// Run bldr on a terminal (a pty of its own) instead of files.
    pub on_a_terminal: bool,
}

impl Outer {
    pub fn systemd() -> Outer {
        Outer {
            systemd_host: true,
            ..Outer::default()
        }
    }
}

/// A bldr run in progress. `pid` is bldr's own (the wrapper execs it).
pub struct Running<'f> {
    fx: &'f Fixture,
    child: Child,
    pub pid: i32,
    n: u32,
    name: String,
    runs_before: BTreeSet<OsString>,
    holder: Option<Holder>,
    status: Option<ExitStatus>,
    _terminal: Option<Terminal>,
}

/// A pty for bldr to run on; what bldr writes to it is copied to a file.
struct Terminal {
    slave: PathBuf,
    _master: std::sync::Arc<std::os::fd::OwnedFd>,
}

impl Terminal {
    fn open(mut copy_to: File) -> Terminal {
        use std::io::{Read, Write};
        let pty = nix::pty::openpty(None, None).expect("openpty");
        let slave = fs::read_link(format!("/proc/self/fd/{}", pty.slave.as_raw_fd())).unwrap();
        drop(pty.slave);
        let master = std::sync::Arc::new(pty.master);
        let reader = master.clone();
        // Drained until every holder of the slave is gone (EIO), so bldr never blocks
        // on a full terminal.
        std::thread::spawn(move || {
            let mut f = File::from(reader.try_clone().unwrap());
            let mut buf = [0u8; 4096];
            while let Ok(n) = f.read(&mut buf) {
                if n == 0 || copy_to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
        Terminal {
            slave,
            _master: master,
        }
    }
}

impl Running<'_> {
    fn file(&self, ext: &str) -> PathBuf {
        self.fx.dir.join(format!("run{}.{ext}", self.n))
    }

    fn exited(&mut self) -> bool {
        if self.status.is_some() {
            return true;
        }
        if let Ok(Some(s)) = self.child.try_wait() {
            self.status = Some(s);
        }
        self.status.is_some()
    }

    /// What bldr printed so far, for failure messages.
    pub fn output(&self) -> String {
        format!(
            "--- stderr\n{}\n--- build.log\n{}",
            fs::read_to_string(self.file("stderr")).unwrap_or_default(),
            self.log()
        )
    }

    /// The holder of the outer namespace, once the wrapper has started it.
    fn holder(&mut self) -> &Holder {
        if self.holder.is_none() {
            let path = self.file("holder");
            let ok = wait_until(Duration::from_secs(10), || path.exists());
            assert!(ok, "the outer namespace never started\n{}", self.output());
            let pid: i32 = fs::read_to_string(&path).unwrap().trim().parse().unwrap();
            self.holder = Some(Holder(pid));
        }
        self.holder.as_ref().unwrap()
    }

    /// The outer namespace's mount table right now.
    pub fn outer_mounts(&mut self) -> String {
        self.holder().mountinfo()
    }

    /// `path` as the outer namespace sees it.
    pub fn outer_view(&mut self, path: &Path) -> PathBuf {
        self.holder().view(path)
    }

    /// Runs a shell command in the outer namespace (nsenter(1) into the holder's).
    pub fn in_outer(&mut self, script: &str) {
        let ns = format!("--mount=/proc/{}/ns/mnt", self.holder().0);
        let out = Command::new("nsenter")
            .arg(ns)
            .args(["--", "/bin/sh", "-c", script])
            .output()
            .expect("run nsenter");
        assert!(
            out.status.success(),
            "in the outer namespace, `{script}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Waits until bldr itself runs (the wrapper has exec'd it).
    pub fn wait_for_exec(&mut self) {
        let bin = bldr_bin().canonicalize().unwrap();
        let exe = format!("/proc/{}/exe", self.pid);
        let ok = wait_until(Duration::from_secs(10), || {
            fs::read_link(&exe).is_ok_and(|e| e == bin)
        });
        assert!(ok, "bldr never started\n{}", self.output());
    }

    /// Waits for the command to touch /mnt/sync/ready.
    pub fn wait_ready(&mut self) {
        let ready = self.fx.sync.join("ready");
        let start = Instant::now();
        while !ready.exists() {
            assert!(
                !self.exited(),
                "bldr ended before the command was ready\n{}",
                self.output()
            );
            assert!(
                start.elapsed() < RUN_LIMIT,
                "the command never got ready\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Lets a command waiting in [`READY_THEN_WAIT_FOR_GO`] go on.
    pub fn go(&self) {
        fs::write(self.fx.sync.join("go"), "").unwrap();
    }

    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid), sig).unwrap();
    }

    /// This run's directory, while it runs (`<id>.incomplete`) or after.
    pub fn run_dir(&self) -> Option<PathBuf> {
        let new: Vec<OsString> = self
            .fx
            .run_entries(&self.name)
            .difference(&self.runs_before)
            .cloned()
            .collect();
        let pick = new
            .iter()
            .find(|n| !n.to_string_lossy().ends_with(".incomplete"))
            .or(new.first())?;
        Some(self.fx.state.join("runs").join(&self.name).join(pick))
    }

    pub fn log(&self) -> String {
        self.run_dir()
            .and_then(|d| fs::read_to_string(d.join("build.log")).ok())
            .unwrap_or_default()
    }

    /// The build's namespaces as build.log names them.
    pub fn namespaces_from_log(&self) -> Option<(u64, u64)> {
        namespaces_in(&self.log())
    }

    /// bldr's controlling terminal (field 7 of /proc/PID/stat), 0 for none.
    pub fn bldr_tty_nr(&self) -> i64 {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(") ")
            .map(|(_, r)| r.split(' ').collect())
            .unwrap_or_default();
        fields.get(4).and_then(|f| f.parse().ok()).unwrap_or(0)
    }

    /// bldr's child, the sandbox: the build's init (a fresh exec of bldr).
    pub fn sandbox(&self) -> Option<i32> {
        children(self.pid)
            .into_iter()
            .find(|c| comm(*c).as_deref() == Some("bldr"))
    }

    /// Opens the build's PID and mount namespaces through the sandbox, once it has
    /// created them, so that their inode numbers stay taken (and cannot be reused by
    /// another test's build) while the test looks for what is left in them.
    pub fn pin(&mut self, pins: &mut Pins) {
        let outer_mnt = ns_inode(&format!("/proc/{}/ns/mnt", self.holder().0));
        let Some(mon) = self.sandbox() else { return };
        let host_pid = ns_inode("/proc/self/ns/pid");
        if pins.pid.is_none() {
            if let Some(p) = NsPin::open(&format!("/proc/{mon}/ns/pid_for_children")) {
                if Some(p.ino) != host_pid {
                    pins.pid = Some(p);
                }
            }
        }
        if pins.mnt.is_none() && outer_mnt.is_some() {
            if let Some(p) = NsPin::open(&format!("/proc/{mon}/ns/mnt")) {
                if Some(p.ino) != outer_mnt {
                    pins.mnt = Some(p);
                }
            }
        }
    }

    /// Waits at most `limit` for bldr to exit; reaps it if it did.
    pub fn wait_exit_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while !self.exited() {
            if start.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        self.status
    }

    /// Waits (at most [`RUN_LIMIT`]) for bldr to exit and reaps it.
    pub fn wait_exit(&mut self) -> ExitStatus {
        if let Some(s) = self.status {
            return s;
        }
        match self.wait_exit_within(RUN_LIMIT) {
            Some(status) => status,
            None => {
                let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
                // Reaped and recorded, so that nothing signals this pid again.
                self.status = self.child.wait().ok();
                panic!("bldr did not finish in {RUN_LIMIT:?}\n{}", self.output());
            }
        }
    }

    /// The outer namespace's mount table from before bldr started.
    pub fn outer_before(&self) -> String {
        fs::read_to_string(self.file("before")).unwrap()
    }

    /// Waits for bldr to exit, then records what the run left behind.
    pub fn finish(mut self) -> Finished {
        let status = self.wait_exit();
        let outer_after = self.outer_mounts();
        let outer_before = self.outer_before();
        let run_dir = self.run_dir();
        let report = run_dir
            .as_ref()
            .and_then(|d| fs::read_to_string(d.join("report.json")).ok())
            .and_then(|t| serde_json::from_str(&t).ok());
        Finished {
            status,
            stdout: fs::read_to_string(self.file("stdout")).unwrap_or_default(),
            stderr: fs::read_to_string(self.file("stderr")).unwrap_or_default(),
            log: self.log(),
            report,
            outer_before,
            outer_after,
            holder: self.holder.take().unwrap(),
        }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        // A test that failed half-way: stop bldr (by its pid), and the build with it.
        if !self.exited() {
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
            self.status = self.child.wait().ok();
        }
    }
}

/// The `sleep` that keeps the outer namespace alive; killed (by its pid) on drop.
pub struct Holder(i32);

impl Holder {
    pub fn mountinfo(&self) -> String {
        fs::read_to_string(format!("/proc/{}/mountinfo", self.0))
            .expect("the outer namespace's holder is gone")
    }

    /// `path` as the outer namespace sees it.
    pub fn view(&self, path: &Path) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.0)).join(path.strip_prefix("/").unwrap())
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        // Only our sleep: the pid could in theory have been reused.
        let cmdline = fs::read(format!("/proc/{}/cmdline", self.0)).unwrap_or_default();
        if cmdline == b"sleep\x00600\x00" {
            let _ = kill(Pid::from_raw(self.0), Signal::SIGKILL);
        }
    }
}

/// A finished run.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub log: String,
    pub report: Option<Value>,
    pub outer_before: String,
    pub outer_after: String,
    pub holder: Holder,
}

impl Finished {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Everything a failure message needs.
    pub fn context(&self) -> String {
        format!(
            "status {:?}\n--- stdout\n{}\n--- stderr\n{}\n--- build.log\n{}",
            self.status, self.stdout, self.stderr, self.log
        )
    }

    pub fn report(&self) -> &Value {
        self.report
            .as_ref()
            .unwrap_or_else(|| panic!("the run wrote no report.json\n{}", self.context()))
    }

    /// bldr's exit code, and the report's exit code and outcome, are these.
    pub fn assert_outcome(&self, code: i32, outcome: &str) {
        assert_eq!(self.code(), Some(code), "exit code\n{}", self.context());
        let r = self.report();
        assert_eq!(
            r["exit_code"],
            code,
            "report.json exit_code\n{}",
            self.context()
        );
        assert_eq!(
            r["outcome"],
            outcome,
            "report.json outcome\n{}",
            self.context()
        );
    }

    /// The status of each command in report.json.
    pub fn command_statuses(&self) -> Vec<String> {
        self.report()["commands"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["status"].as_str().unwrap_or("?").to_string())
            .collect()
    }

    /// The outer namespace's mount table after the run is the one before it.
    pub fn assert_outer_unchanged(&self) {
        assert_same_mounts(
            "before the run",
            &self.outer_before,
            "after it",
            &self.outer_after,
        );
    }

    /// The lines of the build's output that start with `marker`, marker removed.
    pub fn marked(&self, marker: &str) -> Vec<String> {
        self.log
            .lines()
            .filter_map(|l| l.strip_prefix(marker))
            .map(|l| l.trim().to_string())
            .collect()
    }
}

/// Fails with the lines that differ when two mount tables are not identical.
pub fn assert_same_mounts(a_name: &str, a: &str, b_name: &str, b: &str) {
    if a == b {
        return;
    }
    let only = |x: &str, y: &str| -> Vec<String> {
        x.lines()
            .filter(|l| !y.lines().any(|m| m == *l))
            .map(String::from)
            .collect()
    };
    panic!(
        "the outer mount table changed between {a_name} and {b_name}\nonly {a_name}: {:#?}\nonly {b_name}: {:#?}",
        only(a, b),
        only(b, a)
    );
}

/// `pid:[N]` and `mnt:[M]` from build.log's sandbox line.
pub fn namespaces_in(log: &str) -> Option<(u64, u64)> {
    let line = log.lines().find(|l| l.contains("sandbox pid namespace"))?;
    let num = |tag: &str| -> Option<u64> {
        let rest = &line[line.find(tag)? + tag.len()..];
        rest[..rest.find(']')?].parse().ok()
    };
    Some((num("pid:[")?, num("mnt:[")?))
}

/// Polls `cond` every 2 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn ns_inode(path: &str) -> Option<u64> {
    fs::metadata(path).ok().map(|m| m.ino())
}

/// An open namespace: while it is open, its inode number cannot be given to another.
pub struct NsPin {
    _file: File,
    pub ino: u64,
}

impl NsPin {
    fn open(path: &str) -> Option<NsPin> {
        let file = File::open(path).ok()?;
        let ino = file.metadata().ok()?.ino();
        Some(NsPin { _file: file, ino })
    }
}

/// The build's namespaces, once seen.
#[derive(Default)]
pub struct Pins {
    pub pid: Option<NsPin>,
    pub mnt: Option<NsPin>,
}

fn pids() -> Vec<i32> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for t in fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(s) = fs::read_to_string(t.path().join("children")) {
            out.extend(s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
        }
    }
    out
}

fn is_zombie(pid: i32) -> bool {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    matches!(state, Some('Z' | 'X'))
}

fn comm(pid: i32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

fn describe(pid: i32) -> String {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    format!(
        "{pid} ({}) {}",
        comm(pid).unwrap_or_default(),
        cmdline.trim()
    )
}

/// What is still alive of a build: processes in its PID or mount namespace, processes
/// of its sandbox (`bldr __sandbox --parent BLDR_PID`), and descriptors of other
/// processes that hold one of its namespaces open. Each with the pid to kill when it is
/// a process of the build.
fn leftovers(
    pid_ns: Option<u64>,
    mnt_ns: Option<u64>,
    bldr_pid: i32,
) -> Vec<(Option<i32>, String)> {
    let me = std::process::id() as i32;
    let marker = format!("__sandbox\0--parent\0{bldr_pid}\0");
    let tags: Vec<String> = [
        pid_ns.map(|n| format!("pid:[{n}]")),
        mnt_ns.map(|n| format!("mnt:[{n}]")),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut found = Vec::new();
    for p in pids() {
        // A zombie is dead already; it only waits for whoever inherited it to reap it,
        // which on some hosts takes a while.
        if p == me || is_zombie(p) {
            continue;
        }
        for kind in ["pid", "mnt"] {
            if let Ok(l) = fs::read_link(format!("/proc/{p}/ns/{kind}")) {
                if tags.iter().any(|t| l.as_os_str() == t.as_str()) {
                    found.push((
                        Some(p),
                        format!("process {} in {}", describe(p), l.display()),
                    ));
                }
            }
        }
        let cmdline = fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&marker) {
            found.push((Some(p), format!("sandbox process {}", describe(p))));
        }
        for fd in fs::read_dir(format!("/proc/{p}/fd"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(l) = fs::read_link(fd.path()) {
                if tags.iter().any(|t| l.as_os_str() == t.as_str()) {
                    found.push((
                        None,
                        format!(
                            "descriptor {} of {} holds {}",
                            fd.file_name().to_string_lossy(),
                            describe(p),
                            l.display()
                        ),
                    ));
                }
            }
        }
    }
    found
}

/// The command lines of the live processes in the pinned PID namespace.
pub fn processes_in(pins: &Pins) -> Vec<String> {
    let Some(ns) = pins.pid.as_ref().map(|p| format!("pid:[{}]", p.ino)) else {
        return vec![];
    };
    pids()
        .into_iter()
        .filter(|p| !is_zombie(*p))
        .filter(|p| {
            fs::read_link(format!("/proc/{p}/ns/pid")).is_ok_and(|l| l.as_os_str() == ns.as_str())
        })
        .map(|p| {
            let c = fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&c)
                .replace('\0', " ")
                .trim()
                .to_string()
        })
        .collect()
}

/// Fails unless nothing of the build is left, giving killed processes up to 3 s to die.
/// On failure the survivors (processes of this build only, by pid) are killed first,
/// so that a failing test leaves nothing running.
pub fn assert_build_is_gone(pins: &Pins, bldr_pid: i32, when: &str, context: &str) {
    let (p, m) = (
        pins.pid.as_ref().map(|p| p.ino),
        pins.mnt.as_ref().map(|p| p.ino),
    );
    let start = Instant::now();
    let left = loop {
        let left = leftovers(p, m, bldr_pid);
        if left.is_empty() || start.elapsed() > Duration::from_secs(3) {
            break left;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if left.is_empty() {
        return;
    }
    for pid in left.iter().filter_map(|(pid, _)| *pid) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let what: Vec<&String> = left.iter().map(|(_, w)| w).collect();
    panic!("{when}: the build outlived its end: {what:#?}\n{context}");
}

/// The chroot's file tree: path, type, mode, owner, and size (files) or target (links).
pub fn tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<_> = fs::read_dir(&dir).unwrap().flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let m = fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let ft = m.file_type();
            let what = if ft.is_symlink() {
                format!("link -> {}", fs::read_link(&path).unwrap().display())
            } else if ft.is_dir() {
                stack.push(path.clone());
                "dir".to_string()
            } else if ft.is_file() {
                format!("file {} bytes", m.len())
            } else {
                format!("special {:o}", m.mode() & 0o170000)
            };
            out.push(format!(
                "/{rel} {what} mode {:o} owner {}:{}",
                m.mode() & 0o7777,
                m.uid(),
                m.gid()
            ));
        }
    }
    out.sort();
    out
}
