//! What root in the build may and may not do (SPEC §4.7): no CAP_SYS_PTRACE, so PID 1's
//! descriptors (the way to the host's artifacts folder) stay out of reach; CAP_SYS_ADMIN
//! kept, so mounts and namespaces inside the build (portage's sandboxes) keep working.

use crate::util::*;

const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;

#[test]
fn the_build_cannot_reach_pid_1_s_descriptors_but_can_still_mount() {
    if !require_root("the_build_cannot_reach_pid_1_s_descriptors_but_can_still_mount") {
        return;
    }
    let w = World::new();
    let root = w.busybox_root("root");
    let profile = w.profile(
        "powers",
        &format!(
            "chroot: {}\ncommands:\n  - |\n    grep CapBnd /proc/self/status\n    if readlink /proc/1/fd/1 >/dev/null 2>&1; then echo FD-READABLE; else echo fd-denied; fi\n    mkdir -p /tmp/m && mount -t tmpfs x /tmp/m && echo mount-ok && umount /tmp/m\n",
            root.display()
        ),
    );
    let out = w.run(&profile, &[]);
    assert!(out.status.success(), "{}", show(&out));
    let log = String::from_utf8_lossy(&out.stderr);
    let bnd = log
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).expect("CapBnd is hex"))
        .unwrap_or_else(|| panic!("no CapBnd line:\n{log}"));
    assert_eq!(
        bnd & (1 << CAP_SYS_PTRACE),
        0,
        "CAP_SYS_PTRACE is in the build's bounding set"
    );
    assert_ne!(
        bnd & (1 << CAP_SYS_ADMIN),
        0,
        "CAP_SYS_ADMIN was dropped: {bnd:x}"
    );
    assert!(
        log.contains("fd-denied") && !log.contains("FD-READABLE"),
        "{log}"
    );
    assert!(log.contains("mount-ok"), "{log}");
}
