//! Root tests of ephemeral roots, parallel builds, chroot locks and timeouts (SPEC §1
//! `ephemeral`/`timeout`, §3 scratch and locks): an overlay run leaves the chroot as it
//! was, parallel runs never see each other, the lock serialises writers and names its
//! holder, and timeouts end a build with 124 and say which command ran out of time.

use crate::util::*;
use serde_json::Value;
use std::fs::{self, File};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a run may take before the test calls it a hang.
const HANG: Duration = Duration::from_secs(60);

fn kill9(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// A bldr started in the background, its stderr going to a file.
struct Bg {
    child: Child,
    stderr: PathBuf,
}

impl Bg {
    /// `bldr run PROFILE EXTRA...` in the world's private mount namespace.
    fn run(world: &World, profile: &Path, extra: &[&str], tag: &str) -> Bg {
        let stderr = world.path(&format!("{tag}.stderr"));
        let mut args = vec!["run", profile.to_str().unwrap(), "--progress", "plain"];
        args.extend_from_slice(extra);
        let child = world
            .bldr(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .expect("spawn bldr");
        Bg { child, stderr }
    }

    /// bldr's pid: `unshare` execs it, so the child is bldr itself.
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for the end, or kills it (by pid) after `limit` and fails the test.
    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                kill9(self.pid());
                let _ = self.child.wait();
                panic!(
                    "bldr did not finish within {limit:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        // A failed assertion must not leave a build running behind the test.
        if self.child.try_wait().ok().flatten().is_none() {
            kill9(self.pid());
            let _ = self.child.wait();
        }
    }
}

/// Polls `cond` every 10 ms until it holds; false after `limit`.
fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// The ids of a profile's runs in progress (`<run-id>.incomplete`).
fn incomplete_runs(world: &World, profile: &str) -> Vec<String> {
    let dir = world.state().join("runs").join(profile);
    let mut v: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".incomplete"))
                .map(str::to_string)
        })
        .collect();
    v.sort();
    v
}

/// The published run directories of a profile.
fn published_runs(world: &World, profile: &str) -> Vec<PathBuf> {
    let dir = world.state().join("runs").join(profile);
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            e.file_type().is_ok_and(|t| t.is_dir()) && !n.ends_with(".incomplete")
        })
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// The run folders under `<state>/scratch` (the tag file aside).
fn scratch_runs(world: &World) -> Vec<String> {
    fs::read_dir(world.state().join("scratch"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "CACHEDIR.TAG")
        .collect()
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn log_of(run: &Path) -> String {
    fs::read_to_string(run.join("build.log")).unwrap_or_default()
}

fn read_report(run: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(run.join("report.json")).unwrap()).unwrap()
}

fn assert_tagged(dir: &Path) {
    let tag = fs::read_to_string(dir.join("CACHEDIR.TAG"))
        .unwrap_or_else(|e| panic!("{}/CACHEDIR.TAG: {e}", dir.display()));
    assert!(
        tag.starts_with("Signature: 8a477f597d28d172789f06886806bc55"),
        "{tag}"
    );
}

#[test]
fn an_ephemeral_run_leaves_the_chroot_unchanged_but_sees_its_writes() {
    if !require_root("an_ephemeral_run_leaves_the_chroot_unchanged_but_sees_its_writes") {
        return;
    }
    let world = World::new();
    let root = world.busybox_root("root");
    let profile = world.profile(
        "eph",
        r#"chroot: root
ephemeral: true
commands:
  - echo build-was-here >> /etc/passwd; echo mine > /etc/marker; rm /bin/vi; mkdir -p /usr/new/deep; touch /tmp/t
  - grep -c build-was-here /etc/passwd; cat /etc/marker; [ -e /bin/vi ] || echo vi-is-gone; ls -d /usr/new/deep
"#,
    );
    let before = tree_listing(&root);
    let passwd = sha256(&root.join("etc/passwd"));
    let out = world.run(&profile, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let log = log_of(&world.latest("eph"));
    for seen in ["\n1\n", "mine", "vi-is-gone", "/usr/new/deep"] {
        assert!(
            log.contains(seen),
            "the run saw its own write {seen:?}: {log}"
        );
    }
    assert_eq!(world.report("eph")["ephemeral"], true);
    assert_eq!(
        sha256(&root.join("etc/passwd")),
        passwd,
        "etc/passwd changed"
    );
    assert!(root.join("bin/vi").exists());
    assert!(!root.join("etc/marker").exists());
    assert_eq!(tree_listing(&root), before, "the chroot changed");
}

#[test]
fn five_parallel_ephemeral_runs_see_only_their_own_writes() {
    if !require_root("five_parallel_ephemeral_runs_see_only_their_own_writes") {
        return;
    }
    let world = World::new();
    let root = world.busybox_root("root");
    let profile = world.profile(
        "par",
        r#"chroot: root
ephemeral: true
commands:
  - |
    echo "$N" > /etc/marker-$N
    rm /bin/$BIN
    sleep 1
    ls /etc/marker-*
    for b in vi ed mt rev cpio; do [ -e /bin/$b ] || echo "gone: $b"; done
"#,
    );
    let before = tree_listing(&root);
    let bins = ["vi", "ed", "mt", "rev", "cpio"];
    let mut runs: Vec<Bg> = bins
        .iter()
        .enumerate()
        .map(|(i, bin)| {
            let n = format!("N={}", i + 1);
            let b = format!("BIN={bin}");
            Bg::run(
                &world,
                &profile,
                &["--setenv", &n, "--setenv", &b],
                &format!("par{i}"),
            )
        })
        .collect();
    for r in &mut runs {
        let status = r.wait(HANG);
        assert_eq!(status.code(), Some(0), "{}", r.stderr());
    }
    let published = published_runs(&world, "par");
    assert_eq!(published.len(), 5, "{published:?}");
    let mut ids: Vec<String> = Vec::new();
    let mut seen_n: Vec<usize> = Vec::new();
    for run in &published {
        let report = read_report(run);
        assert_eq!(report["outcome"], "success", "{report:#}");
        ids.push(report["run_id"].as_str().unwrap().to_string());
        let log = log_of(run);
        let markers: Vec<&str> = log
            .lines()
            .filter(|l| l.starts_with("/etc/marker-"))
            .collect();
        assert_eq!(markers.len(), 1, "a run saw another's marker: {log}");
        let n: usize = markers[0]["/etc/marker-".len()..].parse().unwrap();
        let gone: Vec<&str> = log.lines().filter(|l| l.starts_with("gone: ")).collect();
        assert_eq!(gone, [format!("gone: {}", bins[n - 1])], "{log}");
        seen_n.push(n);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5, "run ids are distinct");
    seen_n.sort();
    assert_eq!(seen_n, [1, 2, 3, 4, 5]);
    assert!(
        scratch_runs(&world).is_empty(),
        "{:?}",
        scratch_runs(&world)
    );
    assert_eq!(tree_listing(&root), before, "the chroot changed");
}

#[test]
fn scratch_is_tagged_during_the_run_and_removed_after_it() {
    if !require_root("scratch_is_tagged_during_the_run_and_removed_after_it") {
        return;
    }
    let world = World::new();
    world.busybox_root("root");
    let ctl = world.path("ctl");
    fs::create_dir_all(&ctl).unwrap();
    let profile = world.profile(
        "scratch",
        &format!(
            "chroot: root\nephemeral: true\nshared: [{{source: {}, target: /ctl}}]\ncommands: ['echo x > /etc/x; touch /ctl/started; while [ ! -e /ctl/go ]; do sleep 0.05; done']\n",
            ctl.display()
        ),
    );
    let mut bg = Bg::run(&world, &profile, &[], "scratch");
    let scratch = world.state().join("scratch");
    assert!(
        eventually(HANG, || ctl.join("started").exists() || !bg.running()),
        "the build never started: {}",
        bg.stderr()
    );
    let mut during = scratch_runs(&world);
    during.sort();
    // A throwaway layer is two folders side by side: `<run-id>`, where the build's
    // writes land, and overlayfs's `<run-id>.work`.
    assert_eq!(during.len(), 2, "{during:?}; {}", bg.stderr());
    assert_eq!(during[1], format!("{}.work", during[0]), "{during:?}");
    assert_eq!(
        fs::read_to_string(scratch.join(&during[0]).join("etc/x"))
            .ok()
            .as_deref(),
        Some("x\n"),
        "the build's write is not in the layer: {during:?}"
    );
    // The scratch folder's tag covers the throwaway layer below it; only a layer that
    // may be kept gets one of its own (keep_keeps_the_overlay_layer_of_an_ephemeral_run).
    assert_tagged(&scratch);
    fs::write(ctl.join("go"), "").unwrap();
    assert_eq!(bg.wait(HANG).code(), Some(0), "{}", bg.stderr());
    assert!(
        scratch_runs(&world).is_empty(),
        "scratch left behind: {:?}",
        scratch_runs(&world)
    );
    assert!(world
        .report("scratch")
        .get("scratch")
        .is_none_or(Value::is_null));
}

#[test]
fn keep_keeps_the_overlay_layer_of_an_ephemeral_run() {
    if !require_root("keep_keeps_the_overlay_layer_of_an_ephemeral_run") {
        return;
    }
    let world = World::new();
    let root = world.busybox_root("root");
    // Not ephemeral in the profile: --ephemeral makes it so.
    let profile = world.profile(
        "kept",
        "chroot: root\ncommands: ['echo kept-marker > /etc/marker']\n",
    );
    let before = tree_listing(&root);
    let out = world.run(&profile, &["--ephemeral", "--keep"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let report = world.report("kept");
    assert_eq!(report["ephemeral"], true);
    let layer = PathBuf::from(
        report["scratch"]
            .as_str()
            .expect("report names the kept layer"),
    );
    assert!(
        layer.starts_with(world.state().join("scratch")),
        "{}",
        layer.display()
    );
    assert_tagged(&layer);
    assert_eq!(
        fs::read_to_string(layer.join("upper/etc/marker")).unwrap(),
        "kept-marker\n"
    );
    assert_eq!(tree_listing(&root), before, "the chroot changed");
}

#[test]
fn keep_failure_keeps_the_layer_of_failed_runs_only() {
    if !require_root("keep_failure_keeps_the_layer_of_failed_runs_only") {
        return;
    }
    let world = World::new();
    world.busybox_root("root");
    let profile = world.profile(
        "kf",
        "chroot: root\nephemeral: true\ncommands: ['echo $CODE > /etc/code; exit $CODE']\n",
    );
    let out = world.run(&profile, &["--keep=failure", "--setenv", "CODE=0"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(world.report("kf").get("scratch").is_none_or(Value::is_null));
    assert!(
        scratch_runs(&world).is_empty(),
        "{:?}",
        scratch_runs(&world)
    );

    let out = world.run(&profile, &["--keep=failure", "--setenv", "CODE=5"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let report = world.report("kf");
    let layer = PathBuf::from(
        report["scratch"]
            .as_str()
            .expect("a failed run keeps its layer"),
    );
    assert_eq!(scratch_runs(&world).len(), 1);
    assert_eq!(
        fs::read_to_string(layer.join("upper/etc/code")).unwrap(),
        "5\n"
    );
}

#[test]
fn shell_run_reenters_a_kept_layer() {
    if !require_root("shell_run_reenters_a_kept_layer") {
        return;
    }
    let world = World::new();
    let root = world.busybox_root("root");
    let profile = world.profile(
        "post",
        "chroot: root\nephemeral: true\ncommands: ['echo kept-marker > /etc/marker']\n",
    );
    let out = world.run(&profile, &["--keep"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let id = world.report("post")["run_id"].as_str().unwrap().to_string();
    let mut bg = {
        let stderr = world.path("shell.stderr");
        let stdout = world.path("shell.stdout");
        let child = world
            .bldr(&["shell", "--run", &id, "--", "cat", "/etc/marker"])
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Bg { child, stderr }
    };
    let status = bg.wait(HANG);
    let stdout = fs::read_to_string(world.path("shell.stdout")).unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "stdout {stdout:?}; stderr {}",
        bg.stderr()
    );
    assert!(stdout.contains("kept-marker"), "{stdout:?}");
    assert!(!root.join("etc/marker").exists(), "the chroot changed");
}

/// A profile whose single command holds the chroot until the test creates `ctl/go`.
fn held_profile(world: &World, name: &str, ephemeral: bool, script: &str) -> PathBuf {
    let ctl = world.path("ctl");
    fs::create_dir_all(&ctl).unwrap();
    world.profile(
        name,
        &format!(
            "chroot: root\nephemeral: {ephemeral}\nshared: [{{source: {}, target: /ctl}}]\ncommands: [{}]\n",
            ctl.display(),
            serde_json::to_string(script).unwrap()
        ),
    )
}

const HOLD: &str = "echo holder-start >> /ctl/order; while [ ! -e /ctl/go ]; do sleep 0.05; done; echo holder-end >> /ctl/order";

/// Starts the holder and waits until it holds the lock, that is until its run
/// directory exists (created right after the lock is taken); returns its run id.
fn start_holder(world: &World, profile: &Path, name: &str) -> (Bg, String) {
    let mut bg = Bg::run(world, profile, &[], "holder");
    assert!(
        eventually(HANG, || {
            fs::read_to_string(world.path("ctl/order")).is_ok_and(|s| s.contains("holder-start"))
                || !bg.running()
        }),
        "the holder never started"
    );
    let ids = incomplete_runs(world, name);
    assert_eq!(ids.len(), 1, "{ids:?}; {}", bg.stderr());
    (bg, ids[0].clone())
}

#[test]
fn a_no_wait_run_on_a_locked_chroot_exits_75_naming_the_holder() {
    if !require_root("a_no_wait_run_on_a_locked_chroot_exits_75_naming_the_holder") {
        return;
    }
    let world = World::new();
    world.busybox_root("root");
    let holder = held_profile(&world, "locked", false, HOLD);
    let (mut bg, holder_id) = start_holder(&world, &holder, "locked");
    let second = world.profile("second", "chroot: root\ncommands: [true]\n");
    let out = world.run(&second, &["--no-wait"]);
    assert_eq!(out.status.code(), Some(75), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&bg.pid().to_string()) && stderr.contains(&holder_id),
        "the message names the holder's pid {} and run {holder_id}: {stderr}",
        bg.pid()
    );
    assert!(
        published_runs(&world, "second").is_empty() && incomplete_runs(&world, "second").is_empty(),
        "a refused run leaves no record"
    );
    fs::write(world.path("ctl/go"), "").unwrap();
    assert_eq!(bg.wait(HANG).code(), Some(0), "{}", bg.stderr());
}

/// bldr starts its sandbox (init, which makes the namespaces) before it has the lock. Regression guard for that early start: a bldr killed while it waits for
/// the lock, or one that gives up on it, leaves no sandbox process behind.
#[test]
fn a_run_that_never_gets_the_lock_leaves_no_sandbox_process() {
    if !require_root("a_run_that_never_gets_the_lock_leaves_no_sandbox_process") {
        return;
    }
    let world = World::new();
    world.busybox_root("root");
    let holder = held_profile(&world, "locked", false, HOLD);
    let (mut bg, _) = start_holder(&world, &holder, "locked");
    let second = world.profile("second", "chroot: root\ncommands: [true]\n");
    let mut waiter = Bg::run(&world, &second, &[], "second");
    assert!(
        eventually(HANG, || waiter.stderr().contains("waiting for the lock")),
        "{}",
        waiter.stderr()
    );
    let pid = waiter.pid();
    assert!(
        eventually(HANG, || sandbox_of(pid).len() == 1),
        "the waiting run's init is there: {:?}",
        sandbox_of(pid)
    );
    kill9(pid);
    let _ = waiter.wait(HANG);
    assert!(
        eventually(HANG, || sandbox_of(pid).is_empty()),
        "left running: {:?}",
        sandbox_of(pid)
    );
    let mut gives_up = Bg::run(&world, &second, &["--no-wait"], "gives-up");
    assert_eq!(
        gives_up.wait(HANG).code(),
        Some(75),
        "{}",
        gives_up.stderr()
    );
    let pid = gives_up.pid();
    assert!(
        eventually(HANG, || sandbox_of(pid).is_empty()),
        "left running: {:?}",
        sandbox_of(pid)
    );
    fs::write(world.path("ctl/go"), "").unwrap();
    assert_eq!(bg.wait(HANG).code(), Some(0), "{}", bg.stderr());
}

#[test]
fn a_waiting_run_starts_after_the_holder_ends() {
    if !require_root("a_waiting_run_starts_after_the_holder_ends") {
        return;
    }
    let world = World::new();
    world.busybox_root("root");
    let holder = held_profile(&world, "first", false, HOLD);
    let (mut first, _) = start_holder(&world, &holder, "first");
    let waiter = held_profile(&world, "waiter", false, "echo waiter >> /ctl/order");
    let mut second = Bg::run(&world, &waiter, &[], "waiter");
    assert!(
        eventually(HANG, || second.stderr().contains("waiting for the lock")
            || !second.running()),
        "the second run does not say it waits: {}",
        second.stderr()
    );
    assert!(
        second.stderr().contains(&first.pid().to_string()),
        "{}",
        second.stderr()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(second.running(), "{}", second.stderr());
    fs::write(world.path("ctl/go"), "").unwrap();
    assert_eq!(first.wait(HANG).code(), Some(0), "{}", first.stderr());
    assert_eq!(second.wait(HANG).code(), Some(0), "{}", second.stderr());
    assert_eq!(
        fs::read_to_string(world.path("ctl/order")).unwrap(),
        "holder-start\nholder-end\nwaiter\n"
    );
}

#[test]
fn an_ephemeral_run_starts_while_another_ephemeral_run_holds_the_lock() {
    if !require_root("an_ephemeral_run_starts_while_another_ephemeral_run_holds_the_lock") {
        return;
    }
    let world = World::new();
    world.busybox_root("root");
    let holder = held_profile(&world, "eph-holder", true, HOLD);
    let (mut first, _) = start_holder(&world, &holder, "eph-holder");
    let other = held_profile(&world, "eph-other", true, "echo other >> /ctl/order");
    let out = world.run(&other, &["--no-wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        first.running(),
        "the holder ended early: {}",
        first.stderr()
    );
    fs::write(world.path("ctl/go"), "").unwrap();
    assert_eq!(first.wait(HANG).code(), Some(0), "{}", first.stderr());
    assert_eq!(
        fs::read_to_string(world.path("ctl/order")).unwrap(),
        "holder-start\nother\nholder-end\n"
    );
}

#[test]
fn sigkill_of_the_holder_releases_the_lock() {
    if !require_root("sigkill_of_the_holder_releases_the_lock") {
        return;
    }
    let world = World::new();
    world.busybox_root("root");
    let holder = held_profile(&world, "victim", false, HOLD);
    let (mut bg, _) = start_holder(&world, &holder, "victim");
    kill9(bg.pid());
    let status = bg.wait(HANG);
    assert_eq!(status.signal(), Some(9), "{status:?}");
    // The build dies with bldr; the kernel drops the lock when its last holder is gone.
    let next = world.profile("next", "chroot: root\ncommands: [true]\n");
    let mut last = None;
    let freed = eventually(Duration::from_secs(5), || {
        let out = world.run(&next, &["--no-wait"]);
        let ok = out.status.code() == Some(0);
        last = Some(out);
        ok
    });
    assert!(
        freed,
        "the lock is still held after its holder was killed: {}",
        last.as_ref().map(show).unwrap_or_default()
    );
}

#[test]
fn a_command_timeout_exits_124_and_names_the_command() {
    if !require_root("a_command_timeout_exits_124_and_names_the_command") {
        return;
    }
    let world = World::new();
    world.busybox_root("root");
    let profile = world.profile(
        "slow",
        "chroot: root\ncommands:\n  - {name: slow step, run: sleep 30, timeout: 1s}\n  - echo never\n",
    );
    let started = Instant::now();
    let out = world.run(&profile, &[]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(124), "{}", show(&out));
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let report = world.report("slow");
    assert_eq!(report["outcome"], "timeout", "{report:#}");
    assert_eq!(report["exit_code"], 124);
    assert_eq!(report["commands"][0]["status"], "timeout");
    assert_eq!(report["commands"][1]["status"], "not-run");
    let log = log_of(&world.latest("slow"));
    let line = log
        .lines()
        .find(|l| l.contains("ran out of time"))
        .unwrap_or_else(|| panic!("no timeout line in the log: {log}"));
    assert!(line.contains("slow step") && line.contains("1s"), "{line}");
}

#[test]
fn a_command_ignoring_sigterm_is_killed_after_the_grace_period() {
    if !require_root("a_command_ignoring_sigterm_is_killed_after_the_grace_period") {
        return;
    }
    let world = World::new();
    world.busybox_root("root");
    let profile = world.profile(
        "stubborn",
        "chroot: root\ncommands:\n  - {name: stubborn, run: \"trap '' TERM; sleep 60; echo survived\", timeout: 1s}\n",
    );
    let started = Instant::now();
    let out = world.run(&profile, &[]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(124), "{}", show(&out));
    // 1 s, then SIGTERM (ignored), then SIGKILL after the 10 s grace period.
    assert!(
        took >= Duration::from_secs(10) && took < Duration::from_secs(30),
        "took {took:?}"
    );
    let report = world.report("stubborn");
    assert_eq!(report["outcome"], "timeout");
    assert_eq!(report["commands"][0]["signal"], 9, "{report:#}");
    let log = log_of(&world.latest("stubborn"));
    assert!(!log.contains("\nsurvived"), "{log}");
    assert!(
        log.lines().any(|l| l.contains("stubborn ran out of time")),
        "{log}"
    );
}

#[test]
fn a_whole_run_timeout_exits_124_and_names_the_command() {
    if !require_root("a_whole_run_timeout_exits_124_and_names_the_command") {
        return;
    }
    let world = World::new();
    world.busybox_root("root");
    let profile = world.profile(
        "bounded",
        "chroot: root\ntimeout: 2s\ncommands:\n  - {name: quick step, run: sleep 0.2}\n  - {name: endless step, run: sleep 30}\n  - echo never\n",
    );
    let started = Instant::now();
    let out = world.run(&profile, &[]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(124), "{}", show(&out));
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let report = world.report("bounded");
    assert_eq!(report["outcome"], "timeout", "{report:#}");
    let status: Vec<&str> = report["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect();
    assert_eq!(status, ["success", "timeout", "not-run"]);
    let log = log_of(&world.latest("bounded"));
    let line = log
        .lines()
        .find(|l| l.contains("ran out of time"))
        .unwrap_or_else(|| panic!("no timeout line in the log: {log}"));
    assert!(line.contains("endless step"), "{line}");
    assert!(line.contains("2s"), "the line says the limit: {line}");
}

#[test]
fn keep_on_a_run_that_is_not_ephemeral_warns_instead_of_being_ignored() {
    if !require_root("keep_on_a_run_that_is_not_ephemeral_warns_instead_of_being_ignored") {
        return;
    }
    let world = World::new();
    world.busybox_root("root");
    let profile = world.profile("plain", "chroot: root\ncommands: [true]\n");
    let out = world.run(&profile, &["--keep=failure"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("warning: --keep keeps an ephemeral run's overlay layer"),
        "{}",
        show(&out)
    );
    let out = world.run(&profile, &["--ephemeral", "--keep=failure"]);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("warning: --keep"),
        "{}",
        show(&out)
    );
}

/// Runs `cmd` with stdin from /dev/null to its end, or kills it after HANG and fails.
fn finish_within_hang(mut cmd: Command) -> std::process::Output {
    cmd.stdin(Stdio::null());
    finish_within_hang_with_stdin(cmd)
}

/// [`finish_within_hang`] with the stdin `cmd` was given.
fn finish_within_hang_with_stdin(mut cmd: Command) -> std::process::Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + HANG;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            kill9(child.id());
            panic!("bldr shell still ran after {HANG:?}: it waits for input that never comes");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Regression: `bldr shell PROFILE </dev/null` hung for ever. The end-of-file character
/// went to the pty before the shell read it, and the line editor, switching the terminal
/// to raw mode, got a stray byte instead. And a session that ran out of the profile's
/// time ended with 143 and not a word.
#[test]
fn a_shell_ends_when_its_input_does_and_says_when_it_ran_out_of_time() {
    if !require_root("a_shell_ends_when_its_input_does_and_says_when_it_ran_out_of_time") {
        return;
    }
    let world = World::new();
    let root = world.busybox_root("root");
    let out = finish_within_hang(world.bldr(&["shell", "-D", root.to_str().unwrap()]));
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    // Input that ends while the shell runs a quiet job: the end waits for the prompt.
    let mut piped = world.bldr(&["shell", "-D", root.to_str().unwrap()]);
    let script = world.path("script");
    fs::write(&script, "sleep 0.3\necho after-the-sleep\n").unwrap();
    piped.stdin(File::open(&script).unwrap());
    let out = finish_within_hang_with_stdin(piped);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("after-the-sleep"),
        "{}",
        show(&out)
    );
    let profile = world.profile("slow", "chroot: root\ntimeout: 1s\ncommands: [true]\n");
    let out =
        finish_within_hang(world.bldr(&["shell", profile.to_str().unwrap(), "--", "sleep", "30"]));
    assert_eq!(out.status.code(), Some(124), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the session ran out of time (1s)"),
        "{}",
        show(&out)
    );
}
