//! SPEC §4.5, §4.6 and §4.8: nothing of a build outlives it. When bldr dies, even by
//! SIGKILL and at any point of its start, the build's processes die and its mounts
//! vanish; orphans and daemons are killed when the run ends, however it ends; SIGTERM
//! stops the build cleanly and is recorded as `interrupted`.

use super::harness::{
    leftovers_after_a_moment, namespaces_in, Fixture, Outer, Pins, Running, READY_THEN_WAIT_FOR_GO,
};
use nix::sys::signal::Signal;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn sleeper_profile(fx: &Fixture) -> PathBuf {
    fx.profile("sleeper")
        .tmpfs("/scratch")
        .share(&fx.path("share"), "/mnt/share")
        .command(
            "setsid sleep 100 </dev/null >/dev/null 2>&1 &
             sleep 100 &
             touch /mnt/sync/ready
             sleep 100",
        )
        .write()
}

/// After bldr was killed: no process, sandbox process or namespace of the build is left,
/// and the outer mount table is the one from before the run.
fn assert_nothing_left(run: &mut Running<'_>, pins: &Pins, when: &str) {
    let left = leftovers_after_a_moment(pins, run.pid);
    assert!(
        left.is_empty(),
        "{when}: the build outlived bldr: {left:#?}\n{}",
        run.output()
    );
    let before = run.outer_before();
    let after = run.outer_mounts();
    super::harness::assert_same_mounts(
        "before the run",
        &before,
        &format!("after bldr was killed ({when})"),
        &after,
    );
}

#[test]
fn sigkill_of_bldr_mid_command_leaves_no_process_and_no_mount() {
    require_root!();
    let fx = Fixture::new();
    fs::create_dir(fx.path("share")).unwrap();
    let profile = sleeper_profile(&fx);
    let mut run = fx.spawn(&profile, &Outer::default());
    run.wait_ready();
    let mut pins = Pins::default();
    run.pin(&mut pins);
    let (pid_ns, mnt_ns) = run
        .namespaces_from_log()
        .unwrap_or_else(|| panic!("build.log names no namespaces\n{}", run.output()));
    let pinned = (
        pins.pid.as_ref().map(|p| p.ino),
        pins.mnt.as_ref().map(|p| p.ino),
    );
    assert_eq!(
        pinned,
        (Some(pid_ns), Some(mnt_ns)),
        "build.log's namespaces are not the monitor's"
    );
    run.signal(Signal::SIGKILL);
    let status = run.wait_exit();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    assert_nothing_left(&mut run, &pins, "mid-command");
}

#[test]
fn sigkill_of_bldr_at_early_points_leaves_no_process_and_no_mount() {
    require_root!();
    let mut reached_the_build = 0;
    for delay_ms in [0u64, 2, 5, 10, 20, 50] {
        let fx = Fixture::new();
        fs::create_dir(fx.path("share")).unwrap();
        let profile = sleeper_profile(&fx);
        let mut run = fx.spawn(&profile, &Outer::default());
        run.wait_for_exec();
        // Watch the namespaces appear until it is time to kill; once more right after
        // the kill, while the monitor is still dying.
        let mut pins = Pins::default();
        let start = Instant::now();
        let delay = Duration::from_millis(delay_ms);
        while start.elapsed() < delay {
            run.pin(&mut pins);
            std::thread::sleep(Duration::from_micros(200));
        }
        run.signal(Signal::SIGKILL);
        run.pin(&mut pins);
        run.wait_exit();
        if let Some((p, m)) = namespaces_in(&run.log()) {
            // The log may name namespaces the watch above missed; they can only be
            // looked for safely while pinned (an unpinned number may be reused), so
            // then at least the log and the pins must agree.
            if let Some(pin) = &pins.pid {
                assert_eq!(pin.ino, p, "delay {delay_ms} ms: pid namespace");
            }
            if let Some(pin) = &pins.mnt {
                assert_eq!(pin.ino, m, "delay {delay_ms} ms: mount namespace");
            }
        }
        if pins.pid.is_some() {
            reached_the_build += 1;
        }
        assert_nothing_left(&mut run, &pins, &format!("killed {delay_ms} ms after exec"));
    }
    assert!(
        reached_the_build > 0,
        "no kill point came after the namespaces were made; the sweep tests nothing"
    );
}

/// Daemons that would each leave a file in the shared `sync` folder half a second
/// after they start, if they were still alive then.
const DAEMONS: &str = "setsid sh -c 'sleep 0.5; touch /mnt/sync/setsid-survived' </dev/null >/dev/null 2>&1 &
    nohup sh -c 'sleep 0.5; touch /mnt/sync/nohup-survived' </dev/null >/dev/null 2>&1 &
    sh -c 'sleep 0.5; touch /mnt/sync/background-survived' &
    ( sh -c 'sleep 0.5; touch /mnt/sync/double-fork-survived' & )
    setsid sh -c 'trap \"\" TERM HUP INT; sleep 0.5; touch /mnt/sync/stubborn-survived' </dev/null >/dev/null 2>&1 &";

fn daemons_are_gone_after(ending: &str) {
    let fx = Fixture::new();
    let last = match ending {
        "success" => format!("{READY_THEN_WAIT_FOR_GO}; exit 0"),
        "failure" => format!("{READY_THEN_WAIT_FOR_GO}; exit 3"),
        _ => "touch /mnt/sync/ready; sleep 100".to_string(),
    };
    let profile = fx
        .profile("daemons")
        .command(&format!("{DAEMONS}\n{last}"))
        .write();
    let mut run = fx.spawn(&profile, &Outer::default());
    run.wait_ready();
    let ready_at = Instant::now();
    let mut pins = Pins::default();
    run.pin(&mut pins);
    assert!(
        pins.pid.is_some(),
        "{ending}: the build's pid namespace was not found"
    );
    if ending == "sigterm" {
        run.signal(Signal::SIGTERM);
    } else {
        run.go();
    }
    let pid = run.pid;
    let done = run.finish();
    let left = leftovers_after_a_moment(&pins, pid);
    assert!(
        left.is_empty(),
        "{ending}: processes outlived the run: {left:#?}\n{}",
        done.context()
    );
    let expected = match ending {
        "success" => (0, "success"),
        "failure" => (1, "command-failed"),
        _ => (143, "interrupted"),
    };
    done.assert_outcome(expected.0, expected.1);
    // Past the moment a surviving daemon would have written its file.
    std::thread::sleep(Duration::from_millis(800).saturating_sub(ready_at.elapsed()));
    let survived: Vec<String> = fs::read_dir(&fx.sync)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with("-survived"))
        .collect();
    assert!(
        survived.is_empty(),
        "{ending}: daemons survived the run: {survived:?}\n{}",
        done.context()
    );
}

#[test]
fn orphans_and_daemons_are_gone_after_success_failure_and_sigterm() {
    require_root!();
    let endings = ["success", "failure", "sigterm"];
    let handles: Vec<_> = endings
        .into_iter()
        .map(|e| std::thread::spawn(move || daemons_are_gone_after(e)))
        .collect();
    let failed: Vec<String> = handles
        .into_iter()
        .zip(endings)
        .filter_map(|(h, e)| h.join().err().map(|p| format!("{e}: {}", panic_text(&p))))
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn sigterm_runs_the_build_s_trap_and_the_run_is_recorded_as_interrupted() {
    require_root!();
    let fx = Fixture::new();
    let profile = fx
        .profile("trap")
        .command("trap 'echo trapped; exit 143' TERM; touch /mnt/sync/ready; sleep 100")
        .command("touch /mnt/sync/second-command-ran")
        .write();
    let mut run = fx.spawn(&profile, &Outer::default());
    run.wait_ready();
    let sent = Instant::now();
    run.signal(Signal::SIGTERM);
    let done = run.finish();
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "the build took {:?} to stop; the trap should end it at once",
        sent.elapsed()
    );
    done.assert_outcome(143, "interrupted");
    assert!(
        done.log.lines().any(|l| l == "trapped"),
        "the trap's output is not in build.log\n{}",
        done.context()
    );
    assert_eq!(done.report()["signal"], 15, "{}", done.context());
    assert_eq!(
        done.command_statuses(),
        ["interrupted", "not-run"],
        "{}",
        done.context()
    );
    assert!(!fx.sync.join("second-command-ran").exists());
    done.assert_outer_unchanged();
}
