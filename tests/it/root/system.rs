//! SPEC §4.2 and §4.5: the build sees its own mounts only, a fresh /dev, a procfs of
//! its own PID namespace under bldr's init, a read-only /sys, and its own hostname.

use super::harness::{Fixture, Outer};
use std::fs;

#[test]
fn the_build_sees_only_its_own_mounts_a_fresh_dev_and_proc_and_a_readonly_sys() {
    require_root!();
    let fx = Fixture::new();
    let profile = fx
        .profile("system")
        .tmpfs("/scratch")
        .command(
            "echo \"MOUNTS $(awk '{print $5}' /proc/self/mountinfo | sort | tr '\\n' ' ')\"
             awk '$5 == \"/sys\" || $5 == \"/dev/pts\" {print \"OPTS\", $5, $6}' /proc/self/mountinfo
             echo \"DEV $(ls -A /dev | sort | tr '\\n' ' ')\"
             echo \"PTS $(ls -A /dev/pts | tr '\\n' ' ')\"
             echo \"NODES $(stat -c '%n=%t:%T' /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty | tr '\\n' ' ')\"
             echo \"FD $(readlink /dev/fd)\"
             echo \"PID1 $(cat /proc/1/comm)\"
             echo \"PIDS $(ls -d /proc/[0-9]* | wc -l)\"
             echo \"HOSTNAME $(hostname)\"
             if touch /sys/bldr-test 2>/dev/null; then echo 'SYSWRITE yes'; else echo 'SYSWRITE no'; fi",
        )
        .write();
    let done = fx.run(&profile, &Outer::default());
    done.assert_outcome(0, "success");
    let mut expected = [
        "/",
        "/proc",
        "/sys",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/mnt/sync",
        "/scratch",
        "/etc/resolv.conf",
    ];
    expected.sort();
    assert_eq!(
        done.marked("MOUNTS "),
        [expected.join(" ")],
        "{}",
        done.context()
    );
    let opts = done.marked("OPTS ");
    let sys = opts.iter().find(|l| l.starts_with("/sys ")).unwrap();
    assert!(
        sys.split(' ').nth(1).unwrap().split(',').any(|o| o == "ro"),
        "{sys}"
    );
    assert_eq!(done.marked("SYSWRITE "), ["no"]);
    assert_eq!(
        done.marked("DEV "),
        ["fd full null ptmx pts random shm stderr stdin stdout tty urandom zero"],
        "{}",
        done.context()
    );
    // A devpts instance of its own: none of the host's terminals, only ptmx.
    assert_eq!(done.marked("PTS "), ["ptmx"], "{}", done.context());
    assert_eq!(
        done.marked("NODES "),
        ["/dev/null=1:3 /dev/zero=1:5 /dev/full=1:7 /dev/random=1:8 /dev/urandom=1:9 /dev/tty=5:0"],
        "{}",
        done.context()
    );
    assert_eq!(done.marked("FD "), ["/proc/self/fd"]);
    assert_eq!(
        done.marked("PID1 "),
        ["bldr"],
        "PID 1 is not bldr's init\n{}",
        done.context()
    );
    let pids: usize = done.marked("PIDS ")[0].parse().unwrap();
    assert!(
        pids < 10,
        "the build's /proc shows {pids} processes: not its own PID namespace"
    );
    assert_eq!(done.marked("HOSTNAME "), ["system"]);
    done.assert_outer_unchanged();
}

#[test]
fn orphans_are_reaped_by_bldr_s_init() {
    require_root!();
    let fx = Fixture::new();
    let profile = fx
        .profile("orphans")
        .command(
            "for i in 1 2 3 4 5; do (sleep 0.05 &) ; done
             sleep 0.5
             echo \"ZOMBIES $(grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null | wc -l)\"",
        )
        .write();
    let done = fx.run(&profile, &Outer::default());
    done.assert_outcome(0, "success");
    assert_eq!(
        done.marked("ZOMBIES "),
        ["0"],
        "exited orphans were not reaped\n{}",
        done.context()
    );
}

/// Regression: the chroot is bound onto itself recursively, so mounts left on its
/// /proc, /dev and /run on the host (a hand-run chroot session that forgot to unmount)
/// came into the build: the host's /run right away, and the host's procfs and /dev
/// under the build's own, one `umount` away (SPEC §4.2). Worse, the cleanup after the
/// run then removed /dev/pts and /dev/shm from what was under the build's /dev: on a
/// real host /dev that deletes the host's own /dev/pts and /dev/shm (and detaches
/// their mounts everywhere). So the host's trees are played by tmpfs instances here;
/// the real /dev, /proc and /run are never bound.
#[test]
fn host_mounts_left_on_the_chroot_s_proc_dev_and_run_do_not_reach_the_build() {
    require_root!();
    let fx = Fixture::new();
    fs::create_dir(fx.root.join("run")).unwrap();
    for d in ["host-run", "host-proc", "host-dev"] {
        fs::create_dir(fx.path(d)).unwrap();
    }
    let outer = Outer {
        setup: "for d in run proc dev; do
                    mount -t tmpfs \"host-$d\" \"$T/host-$d\"
                    touch \"$T/host-$d/host-$d-marker\"
                done
                mkdir \"$T/host-dev/pts\" \"$T/host-dev/shm\"
                mount -t tmpfs host-dev-pts \"$T/host-dev/pts\"
                mount --bind \"$T/host-run\" \"$T/root/run\"
                mount --bind \"$T/host-proc\" \"$T/root/proc\"
                mount --rbind \"$T/host-dev\" \"$T/root/dev\""
            .into(),
        ..Outer::default()
    };
    let profile = fx
        .profile("stale")
        .command(
            "echo \"MOUNTS $(awk '{print $5}' /proc/self/mountinfo | sort | tr '\\n' ' ')\"
             echo \"RUN $(ls -A /run | tr '\\n' ' ')\"
             umount -l /dev
             echo \"DEV $(ls -A /dev | wc -l)\"
             umount /proc
             echo \"PROC $(ls -A /proc | wc -l)\"",
        )
        .write();
    let done = fx.run(&profile, &outer);
    done.assert_outcome(0, "success");
    let mut expected = [
        "/",
        "/proc",
        "/sys",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/mnt/sync",
        "/etc/resolv.conf",
    ];
    expected.sort();
    assert_eq!(
        done.marked("MOUNTS "),
        [expected.join(" ")],
        "{}",
        done.context()
    );
    assert_eq!(
        done.marked("RUN "),
        [""],
        "the host's /run is in the build\n{}",
        done.context()
    );
    assert_eq!(
        done.marked("DEV "),
        ["0"],
        "the host's /dev is under the build's\n{}",
        done.context()
    );
    assert_eq!(
        done.marked("PROC "),
        ["0"],
        "the host's procfs is under the build's\n{}",
        done.context()
    );
    // The host keeps its mounts and their folders: they were only left out of the
    // build's namespace.
    done.assert_outer_unchanged();
    for d in ["pts", "shm"] {
        let host = done.holder.view(&fx.path("host-dev").join(d));
        assert!(host.is_dir(), "the host's /dev/{d} was removed");
    }
}
