//! What this host supports, for `bldr check`: each kernel feature the sandbox uses,
//! whether it works here, and how to fix it when it does not. Namespaces are tried in a
//! throwaway process (`bldr __sandbox --probe`), never in bldr's main process.

use nix::errno::Errno;
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Clone, Serialize)]
pub struct Support {
    pub feature: &'static str,
    pub ok: bool,
    pub detail: String,
    pub fix: Option<String>,
}

/// Tries each namespace kind in the current (throwaway) process; prints `name ok|errno`
/// lines. Run by `bldr __sandbox --probe`.
pub fn probe_namespaces_main() -> i32 {
    use nix::sched::CloneFlags as F;
    for (name, flag) in [
        ("mount", F::CLONE_NEWNS),
        ("pid", F::CLONE_NEWPID),
        ("uts", F::CLONE_NEWUTS),
        ("ipc", F::CLONE_NEWIPC),
        ("net", F::CLONE_NEWNET),
    ] {
        match nix::sched::unshare(flag) {
            Ok(()) => crate::outln!("{name} ok"),
            Err(e) => crate::outln!("{name} {}", e.desc()),
        }
    }
    0
}

fn syscall_exists(nr: libc::c_long) -> bool {
    // SAFETY: every probed call gets fd -1 and null pointers, which the kernel rejects
    // with EBADF/EFAULT/EINVAL before touching memory; only ENOSYS means "missing".
    let ret =
        unsafe { libc::syscall(nr, -1, std::ptr::null::<u8>(), 0, std::ptr::null::<u8>(), 0) };
    !(ret < 0 && Errno::last() == Errno::ENOSYS)
}

/// Everything `bldr check` reports about the host.
pub fn host_support() -> Vec<Support> {
    let mut out = Vec::new();
    let root = super::is_root();
    out.push(Support {
        feature: "privileges",
        ok: root,
        detail: if root {
            "running as root".into()
        } else {
            format!("running as uid {}", nix::unistd::geteuid())
        },
        fix: (!root)
            .then(|| "run bldr as root (sudo bldr ...): it mounts and creates namespaces".into()),
    });
    let probe = std::env::current_exe()
        .ok()
        .and_then(|exe| {
            duct::cmd!(exe, "__sandbox", "--probe")
                .stderr_null()
                .unchecked()
                .read()
                .ok()
        })
        .unwrap_or_default();
    let mut failed = Vec::new();
    let mut working = Vec::new();
    for line in probe.lines() {
        if let Some((name, res)) = line.split_once(' ') {
            if res == "ok" {
                working.push(name.to_string());
            } else {
                failed.push(format!("{name} ({res})"));
            }
        }
    }
    out.push(Support {
        feature: "namespaces",
        ok: failed.is_empty() && !working.is_empty(),
        detail: if failed.is_empty() {
            format!("{} namespaces can be created", working.join(", "))
        } else {
            format!("cannot create: {}", failed.join(", "))
        },
        fix: (!failed.is_empty()).then(|| {
            "run as root; the kernel needs CONFIG_NAMESPACES, CONFIG_PID_NS, CONFIG_UTS_NS, CONFIG_IPC_NS, CONFIG_NET_NS; inside a container, allow CAP_SYS_ADMIN or nest with --privileged".into()
        }),
    });
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    let overlay = filesystems
        .lines()
        .any(|l| l.trim_end().ends_with("\toverlay") || l.trim() == "overlay")
        || Path::new("/sys/module/overlay").exists();
    out.push(Support {
        feature: "overlayfs",
        ok: overlay,
        detail: if overlay {
            "available (ephemeral runs)".into()
        } else {
            "not loaded (needed by ephemeral runs)".into()
        },
        fix: (!overlay).then(|| "modprobe overlay (kernel option CONFIG_OVERLAY_FS)".into()),
    });
    for (feature, nr, why) in [
        (
            "openat2",
            libc::SYS_openat2,
            "resolves every path inside the chroot (Linux 5.6)",
        ),
        (
            "mount_setattr",
            libc::SYS_mount_setattr,
            "makes read-only shares read-only recursively (Linux 5.12)",
        ),
        (
            "open_tree",
            libc::SYS_open_tree,
            "clones bind mounts detached (Linux 5.2)",
        ),
    ] {
        let ok = syscall_exists(nr);
        out.push(Support {
            feature,
            ok,
            detail: if ok {
                format!("available: {why}")
            } else {
                format!("missing: {why}")
            },
            fix: (!ok).then(|| "use Linux 5.12 or later".into()),
        });
    }
    out.push(cgroup_support());
    out
}

/// cgroup v2: the unified hierarchy at /sys/fs/cgroup, or a hybrid host (systemd's
/// default before v247 in many distributions: v1 controllers at /sys/fs/cgroup/*, a
/// cgroup2 without controllers at /sys/fs/cgroup/unified), or none. Mounting a cgroup2
/// over /sys/fs/cgroup would hide the v1 hierarchies the host runs on, so that is
/// offered only where there is nothing to hide.
fn cgroup_support() -> Support {
    let unified = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let fstype_at = |fstype: &str| -> Option<String> {
        mounts.lines().find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split(' ').next()? == fstype)
                .then(|| left.split(' ').nth(4).map(str::to_string))?
        })
    };
    let (ok, detail, fix) = if unified {
        (
            true,
            "unified hierarchy mounted at /sys/fs/cgroup".to_string(),
            None,
        )
    } else if let Some(at) = fstype_at("cgroup2") {
        (
            false,
            format!("hybrid: a cgroup2 is mounted at {at}, but the controllers are on cgroup v1 (not needed yet; resource limits will use v2's)"),
            Some("boot with systemd.unified_cgroup_hierarchy=1".to_string()),
        )
    } else if fstype_at("cgroup").is_some() {
        (
            false,
            "only cgroup v1 is mounted (not needed yet; resource limits will use v2)".to_string(),
            Some("boot with systemd.unified_cgroup_hierarchy=1".to_string()),
        )
    } else {
        (
            false,
            "not mounted (not needed yet; resource limits will use it)".to_string(),
            Some("boot with systemd.unified_cgroup_hierarchy=1, or mount -t cgroup2 none /sys/fs/cgroup".to_string()),
        )
    };
    Support {
        feature: "cgroup v2",
        ok,
        detail,
        fix,
    }
}
