//! SPEC §4.7 and §4.5: the build gets no descriptor and no environment variable of its
//! caller, and `network: none` leaves it only a loopback that is up.

use super::harness::{Fixture, Outer, READY_THEN_WAIT_FOR_GO};
use std::fs;

#[test]
fn caller_descriptors_and_environment_do_not_reach_the_build() {
    require_root!();
    let fx = Fixture::new();
    fs::write(fx.path("caller-secret-fd.txt"), "secret file\n").unwrap();
    let token = format!(
        "tok-{}-{}",
        std::process::id(),
        fx.dir.display().to_string().len()
    );
    let outer = Outer {
        // Opened without close-on-exec by bldr's caller, as a careless script would.
        before_exec: "exec 7<\"$T/caller-secret-fd.txt\" 8>>\"$T/caller-secret-fd.txt\"".into(),
        env: vec![("SECRET_TOKEN".into(), token.clone())],
        ..Outer::default()
    };
    // A mount point bldr must make in the chroot: init then opens the mount journal
    // (a host file) while it sets up, which must not reach the build either.
    let profile = fx
        .profile("leak")
        .tmpfs("/made-for-the-leak-test")
        .command(&format!(
            "(ls /proc/$$/fd) > /dev/shm/fds
             echo \"FDS $(sort -n /dev/shm/fds | tr '\\n' ' ')\"
             for f in /proc/[0-9]*/fd/*; do echo \"LINK $f $(readlink $f)\"; done
             env | sed 's/^/ENV /'
             for e in /proc/[0-9]*/environ; do tr '\\0' '\\n' < $e | sed \"s|^|ENVIRON $e |\"; done
             {READY_THEN_WAIT_FOR_GO}"
        ))
        .write();
    let mut run = fx.spawn(&profile, &outer);
    run.wait_ready();
    // The test can fail: bldr itself did get the descriptor and the variable.
    let fd7 = fs::read_link(format!("/proc/{}/fd/7", run.pid)).ok();
    assert!(
        fd7.is_some_and(|l| l.ends_with("caller-secret-fd.txt")),
        "bldr was not given fd 7"
    );
    let environ = fs::read(format!("/proc/{}/environ", run.pid)).unwrap();
    assert!(
        String::from_utf8_lossy(&environ).contains(&token),
        "bldr was not given SECRET_TOKEN"
    );
    run.go();
    let done = run.finish();
    done.assert_outcome(0, "success");
    // The shell's own descriptors, listed by a child that does not add its own.
    assert_eq!(
        done.marked("FDS "),
        ["0 1 2"],
        "the command has descriptors beyond 0, 1, 2\n{}",
        done.context()
    );
    let links = done.marked("LINK ");
    assert!(!links.is_empty(), "{}", done.context());
    let leaked: Vec<&String> = links
        .iter()
        .filter(|l| l.contains("caller-secret-fd"))
        .collect();
    assert!(
        leaked.is_empty(),
        "a process of the build holds the caller's file: {leaked:#?}"
    );
    let journal: Vec<&String> = links.iter().filter(|l| l.contains(".made")).collect();
    assert!(
        journal.is_empty(),
        "a process of the build, init included, holds the mount journal: {journal:#?}"
    );
    assert!(!done.marked("ENV ").is_empty(), "{}", done.context());
    assert!(
        !done.log.contains(&token),
        "the caller's SECRET_TOKEN reached the build\n{}",
        done.context()
    );
    assert!(
        !done.log.contains("SECRET_TOKEN"),
        "SECRET_TOKEN is in the build's environment\n{}",
        done.context()
    );
}

#[test]
fn the_build_gets_no_terminal_even_when_bldr_runs_on_one() {
    require_root!();
    let fx = Fixture::new();
    let outer = Outer {
        on_a_terminal: true,
        ..Outer::default()
    };
    let profile = fx
        .profile("terminal")
        .command(&format!(
            "echo \"TTYNR $(cut -d' ' -f7 /proc/self/stat)\"
             if (exec 3<>/dev/tty) 2>/dev/null; then echo 'CTTY yes'; else echo 'CTTY no'; fi
             for f in /proc/[0-9]*/fd/*; do echo \"LINK $f $(readlink $f)\"; done
             {READY_THEN_WAIT_FOR_GO}"
        ))
        .write();
    let mut run = fx.spawn(&profile, &outer);
    run.wait_ready();
    let tty_nr = run.bldr_tty_nr();
    run.go();
    let done = run.finish();
    // The test can fail: bldr itself has a controlling terminal.
    assert_ne!(
        tty_nr,
        0,
        "bldr did not run on a terminal\n{}",
        done.context()
    );
    done.assert_outcome(0, "success");
    assert_eq!(
        done.marked("TTYNR "),
        ["0"],
        "the command has a controlling terminal\n{}",
        done.context()
    );
    assert_eq!(
        done.marked("CTTY "),
        ["no"],
        "/dev/tty opens inside the build\n{}",
        done.context()
    );
    let ttys: Vec<String> = done
        .marked("LINK ")
        .into_iter()
        .filter(|l| l.contains("pts/") || l.contains("/dev/tty"))
        .collect();
    assert!(
        ttys.is_empty(),
        "processes of the build hold a terminal: {ttys:#?}"
    );
}

/// The interface names in `/proc/net/dev` lines printed with the `IFACE ` marker.
const LIST_INTERFACES: &str =
    "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sed 's/^/IFACE /'
     ip link show lo | head -n 1 | sed 's/^/LO /'";

fn host_has_more_than_loopback() -> bool {
    fs::read_to_string("/proc/net/dev")
        .unwrap()
        .lines()
        .skip(2)
        .any(|l| l.split(':').next().is_some_and(|n| n.trim() != "lo"))
}

#[test]
fn network_none_leaves_only_loopback_and_it_is_up() {
    require_root!();
    assert!(
        host_has_more_than_loopback(),
        "this host has only lo, so the test could not fail"
    );
    let fx = Fixture::new();
    let profile = fx
        .profile("offline")
        .key("network: none")
        .command(&format!("{LIST_INTERFACES}\n echo \"LOFLAGS $(cat /sys/class/net/lo/flags)\"\n echo \"SYSNET $(ls /sys/class/net | tr '\\n' ' ')\""))
        .write();
    let done = fx.run(&profile, &Outer::default());
    done.assert_outcome(0, "success");
    assert_eq!(done.marked("IFACE "), ["lo"], "{}", done.context());
    assert_eq!(done.marked("SYSNET "), ["lo"], "{}", done.context());
    let lo = done.marked("LO ").join("");
    assert!(
        lo.contains(",UP") || lo.contains("<UP"),
        "lo is not up: {lo}\n{}",
        done.context()
    );
    let flags = done.marked("LOFLAGS ").join("");
    let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16).unwrap_or(0);
    assert_eq!(
        flags & 1,
        1,
        "lo's IFF_UP flag is not set\n{}",
        done.context()
    );
}

#[test]
fn network_none_on_one_command_leaves_it_only_loopback_and_it_is_up() {
    require_root!();
    assert!(
        host_has_more_than_loopback(),
        "this host has only lo, so the test could not fail"
    );
    let fx = Fixture::new();
    let profile = fx
        .profile("one-offline")
        .command("tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sed 's/^/HOSTNET /'")
        .command_with(LIST_INTERFACES, "network: none")
        .write();
    let done = fx.run(&profile, &Outer::default());
    done.assert_outcome(0, "success");
    assert!(
        done.marked("HOSTNET ").len() > 1,
        "the first command should see the host's network\n{}",
        done.context()
    );
    assert_eq!(done.marked("IFACE "), ["lo"], "{}", done.context());
    let lo = done.marked("LO ").join("");
    assert!(
        lo.contains(",UP") || lo.contains("<UP"),
        "lo is not up: {lo}\n{}",
        done.context()
    );
}

/// The `SigIgn:` mask of a process, from /proc/PID/status.
fn ignored_signals(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("SigIgn:"))?;
    u64::from_str_radix(line.split_whitespace().nth(1)?, 16).ok()
}

/// Regression: bldr starts its sandbox before it installs its own signal handlers. A
/// caller that ignores SIGINT and SIGQUIT (a script's background job) passed those on to
/// the sandbox, which then never saw a forwarded Ctrl-C (an ignored signal is discarded,
/// blocked or not), and glibc's posix_spawn (then used to start it) left signals 32 and
/// 33 ignored down to every command.
#[test]
fn no_signal_is_ignored_or_blocked_in_the_sandbox_whatever_the_caller_ignores() {
    require_root!();
    let fx = Fixture::new();
    let outer = Outer {
        before_exec: "trap '' INT QUIT".into(),
        ..Outer::default()
    };
    let profile = fx
        .profile("signals")
        .command(&format!(
            "grep -E '^Sig(Blk|Ign)' /proc/self/status | sed 's/^/STATUS /'
             {READY_THEN_WAIT_FOR_GO}"
        ))
        .write();
    let mut run = fx.spawn(&profile, &outer);
    run.wait_ready();
    // The test can fail: bldr itself was started with SIGINT and SIGQUIT ignored (and
    // keeps its handlers for them, so they show only until it installs those).
    let sandbox = crate::util::sandbox_of(run.pid as u32);
    assert_eq!(sandbox.len(), 1, "init: {sandbox:?}");
    for pid in &sandbox {
        // SIGPIPE (bit 12) is the sandbox's own choice, nothing else.
        assert_eq!(
            ignored_signals(*pid),
            Some(1 << (libc::SIGPIPE - 1)),
            "sandbox process {pid} ignores more than SIGPIPE"
        );
    }
    run.go();
    let done = run.finish();
    done.assert_outcome(0, "success");
    assert_eq!(
        done.marked("STATUS "),
        ["SigBlk:\t0000000000000000", "SigIgn:\t0000000000000000"],
        "{}",
        done.context()
    );
}
