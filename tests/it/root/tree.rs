//! SPEC §4.3: a non-ephemeral chroot keeps only what the commands wrote. The mount
//! points bldr had to create are removed again, whether the run succeeds or fails.

use super::harness::{tree, Fixture, Outer};
use std::fs;

#[test]
fn chroot_tree_is_unchanged_by_runs_that_write_only_to_shared_trees_and_tmpfs() {
    require_root!();
    let fx = Fixture::new();
    let (share, src) = (fx.path("share"), fx.path("src"));
    fs::create_dir(&share).unwrap();
    fs::create_dir(&src).unwrap();
    fs::write(src.join("main.c"), "int main(void) { return 0; }\n").unwrap();
    fs::write(fx.path("host.conf"), "answer=42\n").unwrap();
    let writes = "set -e
         echo out > /mnt/deep/share/out
         cp /opt/src/main.c /scratch/a/b/
         echo t > /tmp/t; mkdir /tmp/d
         echo p > /var/tmp/portage/p
         echo s > /dev/shm/s
         grep -q answer=42 /etc/bldr/host.conf";
    let profile = |name: &str, last: &str| {
        fx.profile(name)
            .share(&share, "/mnt/deep/share")
            .share_ro(&src, "/opt/src")
            .share(&fx.path("host.conf"), "/etc/bldr/host.conf")
            .tmpfs("/scratch/a/b")
            .tmpfs("/tmp")
            .tmpfs("/var/tmp/portage")
            .command(writes)
            .command(last)
            .write()
    };
    let before = tree(&fx.root);
    for (name, last, code, outcome) in [
        ("writes", "true", 0, "success"),
        ("writes-then-fails", "exit 5", 1, "command-failed"),
    ] {
        let done = fx.run(&profile(name, last), &Outer::default());
        done.assert_outcome(code, outcome);
        assert!(
            !done.log.contains("could not remove mount point"),
            "{}",
            done.context()
        );
        let after = tree(&fx.root);
        let appeared: Vec<&String> = after.iter().filter(|l| !before.contains(l)).collect();
        let vanished: Vec<&String> = before.iter().filter(|l| !after.contains(l)).collect();
        assert!(
            appeared.is_empty() && vanished.is_empty(),
            "{name}: the chroot changed\nappeared: {appeared:#?}\nvanished: {vanished:#?}\n{}",
            done.context()
        );
        assert_eq!(fs::read_to_string(share.join("out")).unwrap(), "out\n");
        done.assert_outer_unchanged();
    }
}

/// Regression: when a mount failed half-way through the setup, the mount points made
/// for the mounts before it stayed in the chroot.
#[test]
fn mount_points_made_before_a_failed_setup_are_removed_again() {
    require_root!();
    let fx = Fixture::new();
    let share = fx.path("share");
    fs::create_dir(&share).unwrap();
    // tmpfs cannot go on a regular file: the mount of /etc/passwd fails, after
    // /mnt/sync, /mnt/deep/share and /scratch/a were made.
    let profile = fx
        .profile("fails-in-setup")
        .share(&share, "/mnt/deep/share")
        .tmpfs("/scratch/a")
        .tmpfs("/etc/passwd")
        .command("touch /mnt/sync/ran")
        .write();
    let before = tree(&fx.root);
    let done = fx.run(&profile, &Outer::default());
    done.assert_outcome(4, "setup-failed");
    assert!(!fx.sync.join("ran").exists());
    let after = tree(&fx.root);
    let appeared: Vec<&String> = after.iter().filter(|l| !before.contains(l)).collect();
    assert!(
        appeared.is_empty() && after.len() == before.len(),
        "the failed setup left mount points in the chroot: {appeared:#?}\n{}",
        done.context()
    );
    assert!(fs::read_dir(&share).unwrap().next().is_none());
    done.assert_outer_unchanged();
}
