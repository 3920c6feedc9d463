//! End to end on a real distro root: Debian's `hello` built from source in a bookworm
//! root made with `bldr root create debian`, the apt cache shared, the build step without
//! network, the `.deb`s checked with dpkg-deb. The root is cached outside the checkout
//! (`$BLDR_TEST_ROOTS`, default /var/cache/bldr-test/roots) and made when missing.

use crate::util::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn roots_cache() -> PathBuf {
    std::env::var_os("BLDR_TEST_ROOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/bldr-test/roots"))
}

/// The cached bookworm root, made (into a temporary name, then renamed, so that an
/// interrupted bootstrap is never mistaken for a root) when it is missing.
fn bookworm_root() -> PathBuf {
    // Both Debian tests want the root; the first makes it while the other waits.
    static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ROOT.get_or_init(make_bookworm_root).clone()
}

fn make_bookworm_root() -> PathBuf {
    let cache = roots_cache();
    let root = cache.join("debian-bookworm");
    if root.join("usr/bin/dpkg-buildpackage").exists() {
        return root;
    }
    std::fs::create_dir_all(&cache).expect("create the roots cache");
    let tmp = cache.join(format!("debian-bookworm.tmp-{}", std::process::id()));
    let out = Command::new(bldr_bin())
        .args(["root", "create", "debian", "--suite", "bookworm"])
        .arg(&tmp)
        .output()
        .expect("run bldr root create");
    assert!(
        out.status.success(),
        "bldr root create debian failed:\n{}",
        show(&out)
    );
    match std::fs::rename(&tmp, &root) {
        Ok(()) => {}
        // Another test process won the race; its root is as good as ours. Ours holds no
        // mount (root create mounts nothing), so removing it is safe.
        Err(_) if root.join("usr/bin/dpkg-buildpackage").exists() => {
            let _ = Command::new("rm")
                .args(["-rf", "--one-file-system"])
                .arg(&tmp)
                .status();
        }
        Err(e) => panic!("cannot move the new root into place: {e}"),
    }
    root
}

/// A test profile that extends the shipped `profiles/NAME.yaml`, pointed at `root`, with
/// `commands` (YAML text) in place of the shipped ones.
fn shipped_on(world: &World, name: &str, shipped: &str, root: &Path, commands: &str) -> PathBuf {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("profiles/{shipped}.yaml"));
    world.profile(
        name,
        &format!(
            "extends: {}\nchroot: {}\n{commands}",
            base.display(),
            root.display()
        ),
    )
}

/// The `.deb` files among a report's artifacts.
fn debs_of(report: &serde_json::Value) -> Vec<String> {
    report["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["path"].as_str().map(str::to_string))
        .filter(|p| p.ends_with(".deb"))
        .collect()
}

#[test]
fn debian_hello_builds_from_source_with_the_build_step_offline() {
    if !require_root("debian_hello_builds_from_source_with_the_build_step_offline") {
        return;
    }
    let root = bookworm_root();
    let world = World::new();
    // The shipped profile, pointed at the cached root through `extends`.
    let profile = shipped_on(
        &world,
        "hello",
        "debian-hello",
        &root,
        "commands:\n  - apt-get update\n  - apt-get build-dep -y hello\n  - apt-get source hello\n  - name: build (no network)\n    run: |\n      if ping -c1 -W1 deb.debian.org >/dev/null 2>&1 || getent hosts deb.debian.org >/dev/null; then echo NET\"\"WORK-VISIBLE; fi\n      cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ' '; echo\n      cd hello-*/ && dpkg-buildpackage -b -uc -us\n    network: none\n",
    );
    let out = world.run(&profile, &[]);
    assert!(
        out.status.success(),
        "the hello build failed:\n{}",
        show(&out)
    );
    let report = world.report("hello");
    assert_eq!(report["outcome"], "success");
    let log = std::fs::read_to_string(world.latest("hello").join("build.log")).unwrap();
    assert!(
        !log.contains("NETWORK-VISIBLE"),
        "the build step saw the network"
    );
    assert!(
        log.contains("\nlo \n"),
        "the offline step should see only lo:\n{log}"
    );

    let debs = debs_of(&report);
    assert!(
        debs.iter()
            .any(|d| d.starts_with("hello_") && d.ends_with("_amd64.deb")),
        "{debs:?}"
    );
    for deb in &debs {
        let path = world.latest("hello").join("artifacts").join(deb);
        let info = Command::new("dpkg-deb")
            .arg("--info")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            info.status.success(),
            "dpkg-deb --info {deb}: {}",
            show(&info)
        );
        let text = String::from_utf8_lossy(&info.stdout);
        assert!(text.contains("Package: hello"), "{text}");
    }
    let hello = world
        .latest("hello")
        .join("artifacts")
        .join(debs.iter().find(|d| d.starts_with("hello_")).unwrap());
    let contents = Command::new("dpkg-deb")
        .arg("--contents")
        .arg(&hello)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&contents.stdout).contains("./usr/bin/hello"));
}

#[test]
fn debian_zlib_builds_several_packages_on_an_ephemeral_root_in_a_sized_tmpfs() {
    if !require_root("debian_zlib_builds_several_packages_on_an_ephemeral_root_in_a_sized_tmpfs") {
        return;
    }
    let root = bookworm_root();
    let world = World::new();
    let profile = shipped_on(
        &world,
        "zlib",
        "debian-zlib",
        &root,
        "commands:\n  - grep ' /build ' /proc/self/mountinfo | grep -o 'size=[0-9a-z]*'\n  - apt-get update\n  - apt-get build-dep -y zlib\n  - apt-get source zlib\n  - name: build (no network)\n    run: cd zlib-*/ && dpkg-buildpackage -b -uc -us -j2\n    network: none\n",
    );
    let status = root.join("var/lib/dpkg/status");
    let before = std::fs::read(&status).unwrap();
    let out = world.run(&profile, &[]);
    assert!(
        out.status.success(),
        "the zlib build failed:\n{}",
        show(&out)
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("size=4194304k"),
        "the build dir is the profile's 4G tmpfs:\n{log}"
    );
    // Ephemeral: the build-deps went to the overlay, the root's package database is as it was.
    assert_eq!(
        std::fs::read(&status).unwrap(),
        before,
        "the root's dpkg status changed"
    );
    let report = world.report("zlib");
    let debs = debs_of(&report);
    for pkg in ["zlib1g_", "zlib1g-dev_"] {
        assert!(
            debs.iter().any(|d| d.starts_with(pkg)),
            "no {pkg}*.deb in {debs:?}"
        );
    }
    assert!(debs.len() >= 3, "several packages: {debs:?}");
    let dir = world.latest("zlib").join("artifacts");
    let sums = Command::new("sha256sum")
        .args(["-c", "--quiet", "SHA256SUMS"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(sums.status.success(), "{}", show(&sums));
    for deb in &debs {
        let info = Command::new("dpkg-deb")
            .arg("--field")
            .arg(dir.join(deb))
            .arg("Package")
            .output()
            .unwrap();
        assert!(
            info.status.success(),
            "dpkg-deb --field {deb}: {}",
            show(&info)
        );
    }
}
