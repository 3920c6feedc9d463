//! SPEC §4.1 and §4.4: the host's mount table never sees a mount of the build, also on
//! a systemd host whose `/` is shared, whatever the build does with its own mounts; and
//! read-only shares are read-only in their sub-mounts.

use super::harness::{assert_same_mounts, Fixture, Outer, READY_THEN_WAIT_FOR_GO};
use std::fs;

/// The outer `/` has a `shared:N` tag: the simulated systemd host is really shared.
fn root_is_shared(mountinfo: &str) -> bool {
    mountinfo.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        f.len() > 6
            && f[4] == "/"
            && f[6..]
                .iter()
                .take_while(|x| **x != "-")
                .any(|x| x.starts_with("shared:"))
    })
}

/// A run with every kind of mount a profile can ask for; the outer table is compared
/// before bldr starts, while the command runs, and after bldr exits.
fn table_is_identical_before_during_and_after(outer: Outer) {
    let fx = Fixture::new();
    let (src, share) = (fx.path("src"), fx.path("share"));
    fs::create_dir(&src).unwrap();
    fs::create_dir(&share).unwrap();
    fs::write(fx.path("host.conf"), "answer=42\n").unwrap();
    let profile = fx
        .profile("mounts")
        .share_ro(&src, "/opt/src")
        .share(&share, "/var/cache/share")
        .share(&fx.path("host.conf"), "/etc/host.conf")
        .tmpfs("/tmp")
        .tmpfs("/scratch/deep")
        .command(&format!(
            "set -e; grep -q answer=42 /etc/host.conf; echo x > /scratch/deep/f; {READY_THEN_WAIT_FOR_GO}"
        ))
        .write();
    let systemd = outer.systemd_host;
    let mut run = fx.spawn(&profile, &outer);
    run.wait_ready();
    let during = run.outer_mounts();
    run.go();
    let done = run.finish();
    if systemd {
        assert!(
            root_is_shared(&done.outer_before),
            "the simulated systemd host's / is not shared:\n{}",
            done.outer_before
        );
    }
    assert_same_mounts("before the run", &done.outer_before, "during it", &during);
    done.assert_outer_unchanged();
    done.assert_outcome(0, "success");
    assert_eq!(
        done.report()["host_clean"]["clean"],
        true,
        "{}",
        done.context()
    );
}

#[test]
fn host_mount_table_is_identical_before_during_and_after_a_run() {
    require_root!();
    table_is_identical_before_during_and_after(Outer::default());
}

#[test]
fn host_mount_table_is_identical_before_during_and_after_a_run_on_a_systemd_host() {
    require_root!();
    table_is_identical_before_during_and_after(Outer::systemd());
}

/// Inside the build: unmount /dev/pts and a shared tree, make `/` shared and mount new
/// tmpfs, also inside a shared tree. None of it may show outside.
fn unmounts_and_reshares_inside_change_nothing_outside(outer: Outer) {
    let fx = Fixture::new();
    let (share, share2) = (fx.path("share"), fx.path("share2"));
    fs::create_dir(&share).unwrap();
    fs::create_dir_all(share2.join("sub")).unwrap();
    let profile = fx
        .profile("meddle")
        .share(&share, "/mnt/share")
        .share(&share2, "/mnt/share2")
        .tmpfs("/scratch")
        .command(
            "set -e
             umount /dev/pts
             umount /mnt/share
             mount --make-rshared /
             mkdir /scratch/new
             mount -t tmpfs inner-tmpfs /scratch/new
             mount -t tmpfs inner-tmpfs /mnt/share2/sub
             mount --bind /scratch /mnt/share2/sub
             ! grep -q ' /dev/pts ' /proc/self/mountinfo
             echo \"INNER $(grep -c inner-tmpfs /proc/self/mountinfo)\"",
        )
        .command(READY_THEN_WAIT_FOR_GO)
        .write();
    let mut run = fx.spawn(&profile, &outer);
    run.wait_ready();
    let during = run.outer_mounts();
    let sub_outside = fs::read_dir(run.outer_view(&share2.join("sub"))).map(|d| d.count());
    run.go();
    let done = run.finish();
    assert_same_mounts("before the run", &done.outer_before, "during it", &during);
    done.assert_outer_unchanged();
    done.assert_outcome(0, "success");
    assert_eq!(
        done.marked("INNER "),
        ["2"],
        "the build's own mounts did not happen\n{}",
        done.context()
    );
    assert_eq!(
        sub_outside.ok(),
        Some(0),
        "the shared tree's sub folder is not empty outside"
    );
    let devpts = done
        .outer_after
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some("/dev/pts"))
        .count();
    assert!(
        devpts >= 1,
        "the outer /dev/pts is gone:\n{}",
        done.outer_after
    );
}

#[test]
fn unmounts_and_new_mounts_inside_the_build_change_nothing_outside() {
    require_root!();
    unmounts_and_reshares_inside_change_nothing_outside(Outer::default());
}

#[test]
fn unmounts_and_new_mounts_inside_the_build_change_nothing_outside_on_a_systemd_host() {
    require_root!();
    unmounts_and_reshares_inside_change_nothing_outside(Outer::systemd());
}

#[test]
fn readonly_share_is_readonly_in_a_submount_it_has_on_the_host() {
    require_root!();
    readonly_share_with_a_host_submount(Outer::default());
}

#[test]
fn readonly_share_is_readonly_in_a_shared_submount_on_a_systemd_host() {
    require_root!();
    readonly_share_with_a_host_submount(Outer::systemd());
}

/// The share's source has a tmpfs mounted below it on the host (shared, on a systemd
/// host); inside, both are read-only, and the host's own copy stays writable.
fn readonly_share_with_a_host_submount(outer: Outer) {
    let fx = Fixture::new();
    let src = fx.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    let outer = Outer {
        setup: "mount -t tmpfs host-sub \"$T/src/sub\"\necho host > \"$T/src/sub/f\"".into(),
        ..outer
    };
    let profile = fx
        .profile("ro")
        .share_ro(&src, "/ro")
        .command(
            "grep -E ' /ro(/sub)? ' /proc/self/mountinfo | sed 's/^/MOUNT /'
             grep -q host /ro/sub/f || exit 10
             if touch /ro/x 2>/dev/null; then echo 'WRITABLE /ro'; exit 11; fi
             if touch /ro/sub/x 2>/dev/null; then echo 'WRITABLE /ro/sub'; exit 12; fi
             if mkdir /ro/sub/d 2>/dev/null; then echo 'WRITABLE /ro/sub'; exit 13; fi
             echo RESULT read-only",
        )
        .write();
    let done = fx.run(&profile, &outer);
    done.assert_outcome(0, "success");
    assert_eq!(done.marked("RESULT "), ["read-only"], "{}", done.context());
    let mounts = done.marked("MOUNT ");
    for target in ["/ro", "/ro/sub"] {
        let line = mounts
            .iter()
            .find(|l| l.split(' ').nth(4) == Some(target))
            .unwrap_or_else(|| panic!("{target} is not mounted inside\n{}", done.context()));
        let opts = line.split(' ').nth(5).unwrap();
        assert!(
            opts.split(',').any(|o| o == "ro"),
            "{target} is mounted {opts} inside"
        );
    }
    done.assert_outer_unchanged();
    // The host's own sub-mount keeps its read-write flag: the attributes went on the
    // build's copy only.
    let outside = done.holder.view(&src.join("sub/written-after-the-run"));
    fs::write(&outside, "ok")
        .unwrap_or_else(|e| panic!("the host's sub-mount is no longer writable: {e}"));
    assert!(!src.join("x").exists() && !src.join("sub/x").exists());
}

/// Regression: on a systemd host, a mount the host made below a read-only share's source
/// while the build ran propagated into the build read-write (and without nosuid/nodev),
/// so the build could write into it.
#[test]
fn a_mount_the_host_adds_below_a_readonly_share_during_the_run_is_not_writable_inside() {
    require_root!();
    let fx = Fixture::new();
    let src = fx.path("src");
    fs::create_dir_all(src.join("late")).unwrap();
    let profile = fx
        .profile("late")
        .share_ro(&src, "/ro")
        .command(&format!(
            "{READY_THEN_WAIT_FOR_GO}
             grep -E ' /ro(/late)? ' /proc/self/mountinfo | sed 's/^/MOUNT /'
             if touch /ro/late/x 2>/dev/null; then echo 'RESULT writable'; else echo 'RESULT read-only'; fi"
        ))
        .write();
    let mut run = fx.spawn(&profile, &Outer::systemd());
    run.wait_ready();
    let late = src.join("late");
    run.in_outer(&format!("mount -t tmpfs host-late {}", late.display()));
    run.go();
    let done = run.finish();
    done.assert_outcome(0, "success");
    assert_eq!(done.marked("RESULT "), ["read-only"], "{}", done.context());
    for line in done.marked("MOUNT ") {
        let opts = line.split(' ').nth(5).unwrap_or("");
        assert!(
            opts.split(',').any(|o| o == "ro"),
            "a writable mount below /ro inside: {line}"
        );
    }
    assert!(
        !done.holder.view(&late.join("x")).exists(),
        "the build wrote into the host's mount"
    );
    // bldr's own after-the-fact check sees the host's change too: the report's
    // host_clean must not take an unchanged poll of mountinfo for granted.
    let hc = &done.report()["host_clean"];
    assert_eq!(hc["clean"], false, "{hc}");
    assert!(
        hc["appeared"].as_array().is_some_and(|a| a
            .iter()
            .any(|l| l.as_str().is_some_and(|l| l.contains("host-late")))),
        "{hc}"
    );
}
