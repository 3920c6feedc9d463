//! The Gentoo recipe without a stage3 (none can be downloaded here): profiles/emerge-world.yaml
//! runs in a busybox root whose `emerge` and `emaint` are stand-ins. They check what the
//! real ones would need — the shared trees in place, MAKEOPTS/FEATURES in the environment,
//! a tmpfs on /var/tmp/portage, namespaces available inside the build (portage's
//! network-sandbox and friends) — and write binary packages into the shared binpkg dir,
//! whose new files the run must record in place.

use crate::util::*;
use std::path::Path;

const EMERGE: &str = r#"#!/bin/sh
# Stand-in for portage's emerge: checks the environment a real one needs.
set -e
case "$*" in
  *--sync*) echo "synced" > /var/db/repos/gentoo/metadata-timestamp; exit 0 ;;
esac
grep -q ' /var/db/repos/gentoo ' /proc/self/mountinfo || { echo "no repo mount"; exit 10; }
grep -q ' /var/cache/distfiles ' /proc/self/mountinfo || { echo "no distfiles mount"; exit 11; }
grep ' /var/tmp/portage ' /proc/self/mountinfo | grep -q tmpfs || { echo "no tmpfs on /var/tmp/portage"; exit 12; }
[ "$MAKEOPTS" = "-j8" ] || { echo "MAKEOPTS=$MAKEOPTS"; exit 13; }
case "$FEATURES" in *buildpkg*) ;; *) echo "FEATURES=$FEATURES"; exit 14 ;; esac
# network-sandbox, ipc-sandbox, pid-sandbox: portage unshares these for each phase.
unshare --net --ipc --uts --mount --pid --fork sh -c 'echo sandboxed phase ok' || { echo "cannot unshare inside the build"; exit 15; }
echo "building in /var/tmp/portage" > /var/tmp/portage/build.log
mkdir -p /var/cache/binpkgs/app-misc/hello
echo "binary package" > /var/cache/binpkgs/app-misc/hello/hello-2.12-1.gpkg.tar
echo "partial" > /var/cache/binpkgs/app-misc/hello/hello-2.12-2.gpkg.tar.partial
echo "emerge stand-in: @world updated"
"#;

const EMAINT: &str = r#"#!/bin/sh
# Stand-in for emaint binhost --fix: writes the Packages index, offline.
if ip link 2>/dev/null | grep -q eth; then echo "network visible"; exit 20; fi
echo "PACKAGES: 1" > /var/cache/binpkgs/Packages
"#;

#[test]
fn emerge_world_profile_mounts_env_and_binpkg_artifacts_behave() {
    if !require_root("emerge_world_profile_mounts_env_and_binpkg_artifacts_behave") {
        return;
    }
    let w = World::new();
    let root = w.busybox_root("gentoo");
    for (path, body) in [("usr/bin/emerge", EMERGE), ("usr/sbin/emaint", EMAINT)] {
        let p = root.join(path);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let host = |p: &str| {
        let d = w.path(p);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let (repo, distfiles, binpkgs) = (
        host("host/repo"),
        host("host/distfiles"),
        host("host/binpkgs"),
    );
    // A binary package from an earlier run: not this run's artifact.
    std::fs::create_dir_all(binpkgs.join("sys-apps/old")).unwrap();
    std::fs::write(binpkgs.join("sys-apps/old/old-1.gpkg.tar"), "old").unwrap();

    // The shipped profile, with its host paths pointed at this test's folders.
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/emerge-world.yaml"),
    )
    .unwrap();
    let adapted = shipped
        .replace(
            "chroot: /var/lib/bldr/roots/gentoo-amd64",
            &format!("chroot: {}", root.display()),
        )
        .replace(
            "  - /var/db/repos/gentoo ",
            &format!(
                "  - {{source: {}, target: /var/db/repos/gentoo}} ",
                repo.display()
            ),
        )
        .replace(
            "  - /var/cache/distfiles ",
            &format!(
                "  - {{source: {}, target: /var/cache/distfiles}} ",
                distfiles.display()
            ),
        )
        .replace(
            "  - source: /var/cache/binpkgs ",
            &format!("  - source: {} ", binpkgs.display()),
        )
        .replace("size: 16G", "size: 64M");
    assert_ne!(adapted, shipped);
    let profile = w.profile("emerge-world", &adapted);
    let out = w.run(&profile, &[]);
    assert!(out.status.success(), "{}", show(&out));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("sandboxed phase ok"), "{log}");
    assert!(log.contains("@world updated"), "{log}");

    // The sync wrote through the shared repo; the binpkgs are on the host already.
    assert_eq!(
        std::fs::read_to_string(repo.join("metadata-timestamp")).unwrap(),
        "synced\n"
    );
    assert!(binpkgs
        .join("app-misc/hello/hello-2.12-1.gpkg.tar")
        .is_file());
    let report = w.report("emerge-world");
    let arts = report["artifacts"].as_array().unwrap();
    let paths: Vec<&str> = arts.iter().map(|a| a["path"].as_str().unwrap()).collect();
    assert!(
        paths.contains(&"app-misc/hello/hello-2.12-1.gpkg.tar"),
        "{paths:?}"
    );
    assert!(paths.contains(&"Packages"), "{paths:?}");
    assert!(
        !paths.iter().any(|p| p.ends_with(".partial")),
        "excluded by the rule: {paths:?}"
    );
    assert!(
        !paths.iter().any(|p| p.contains("old-1")),
        "an earlier package is not this run's: {paths:?}"
    );
    for a in arts {
        assert_eq!(a["stored"], "in-place", "{a}");
        assert!(a["host_path"]
            .as_str()
            .unwrap()
            .starts_with(binpkgs.to_str().unwrap()));
    }
    // Nothing was copied: the binpkgs stay where the host keeps them.
    let copied = w.latest("emerge-world").join("artifacts");
    assert!(std::fs::read_dir(&copied)
        .map(|d| d
            .filter_map(Result::ok)
            .all(|e| e.file_name() == "SHA256SUMS"))
        .unwrap_or(true));
    // The tmpfs was the build's own: nothing of it reached the chroot.
    assert!(!root.join("var/tmp/portage/build.log").exists());
}
