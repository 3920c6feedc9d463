//! SPEC §4.3: paths inside the chroot are resolved inside it. A symlink in the chroot
//! that points outside can never place a mount or create a directory on the host.

use super::harness::{tree, Finished, Fixture, Outer};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// The names in a host folder, as the outer namespace sees it.
fn names_in(done: &Finished, dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(done.holder.view(dir))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A run that either refuses to set up (4) or succeeds with the mount inside the
/// chroot (0); either way the report agrees with the exit code.
fn refused_or_contained(done: &Finished, case: &str) {
    match done.code() {
        Some(4) => done.assert_outcome(4, "setup-failed"),
        Some(0) => done.assert_outcome(0, "success"),
        _ => panic!("{case}: unexpected result\n{}", done.context()),
    }
}

#[test]
fn a_symlink_in_the_chroot_cannot_send_a_mount_or_a_directory_to_the_host() {
    require_root!();
    enum Mount {
        Tmpfs,
        SharedDir,
        SharedFile,
    }
    struct Case {
        name: &'static str,
        link: &'static str,
        /// Where the link points, given the host path it is about.
        to: fn(&Path) -> PathBuf,
        /// The link's host path exists (an empty folder) or not.
        host_exists: bool,
        target: &'static str,
        mount: Mount,
    }
    let absolute = |host: &Path| host.to_path_buf();
    let climbing =
        |host: &Path| PathBuf::from(format!("../../../../../../../..{}", host.display()));
    let cases = [
        Case {
            name: "tmpfs on a link to a missing host path",
            link: "mnt/escape",
            to: absolute,
            host_exists: false,
            target: "/mnt/escape",
            mount: Mount::Tmpfs,
        },
        Case {
            name: "tmpfs below a link to a missing host path",
            link: "mnt/escape",
            to: absolute,
            host_exists: false,
            target: "/mnt/escape/deeper/still",
            mount: Mount::Tmpfs,
        },
        Case {
            name: "shared folder below a link to a host folder",
            link: "mnt/escape",
            to: absolute,
            host_exists: true,
            target: "/mnt/escape/sub",
            mount: Mount::SharedDir,
        },
        Case {
            name: "shared file below a link to a host folder",
            link: "mnt/escape",
            to: absolute,
            host_exists: true,
            target: "/mnt/escape/host.conf",
            mount: Mount::SharedFile,
        },
        Case {
            name: "tmpfs below a relative link that climbs out",
            link: "mnt/up",
            to: climbing,
            host_exists: true,
            target: "/mnt/up/sub",
            mount: Mount::Tmpfs,
        },
        Case {
            name: "shared folder on a link to a host folder",
            link: "var/escape",
            to: absolute,
            host_exists: true,
            target: "/var/escape",
            mount: Mount::SharedDir,
        },
    ];
    for case in &cases {
        let fx = Fixture::new();
        let (host, share, file) = (fx.path("outside"), fx.path("share"), fx.path("host.conf"));
        if case.host_exists {
            fs::create_dir(&host).unwrap();
        }
        fs::create_dir(&share).unwrap();
        fs::write(share.join("from-the-share"), "x").unwrap();
        fs::write(&file, "answer=42\n").unwrap();
        fs::create_dir_all(fx.root.join(Path::new(case.link).parent().unwrap())).unwrap();
        symlink((case.to)(&host), fx.root.join(case.link)).unwrap();
        let p = fx.profile("escape");
        let p = match case.mount {
            Mount::Tmpfs => p.tmpfs(case.target),
            Mount::SharedDir => p.share(&share, case.target),
            Mount::SharedFile => p.share(&file, case.target),
        };
        let profile = p
            .command(&format!("mount | grep -F ' {} ' || true", case.target))
            .write();
        let before = tree(&fx.root);
        let done = fx.run(&profile, &Outer::default());
        refused_or_contained(&done, case.name);
        // Refused or not, the mount points bldr made are gone again (SPEC §4.3).
        assert_eq!(
            tree(&fx.root),
            before,
            "{}: the chroot changed\n{}",
            case.name,
            done.context()
        );
        if case.host_exists {
            let names = names_in(&done, &host);
            assert!(
                names.is_empty(),
                "{}: {names:?} appeared in the host folder {}\n{}",
                case.name,
                host.display(),
                done.context()
            );
            assert!(
                fs::read_dir(&host).unwrap().next().is_none(),
                "{}",
                case.name
            );
        } else {
            assert!(
                !host.exists(),
                "{}: {} was created on the host",
                case.name,
                host.display()
            );
            assert!(
                !done.holder.view(&host).exists(),
                "{}: {} was created outside",
                case.name,
                host.display()
            );
        }
        assert_eq!(names_in(&done, &share), ["from-the-share"], "{}", case.name);
        done.assert_outer_unchanged();
    }
}

#[test]
fn a_symlink_to_the_host_root_resolves_inside_the_chroot() {
    require_root!();
    let fx = Fixture::new();
    let (outside, share) = (fx.path("outside-dir"), fx.path("share"));
    fs::create_dir(&outside).unwrap();
    fs::create_dir(&share).unwrap();
    fs::write(share.join("from-the-share"), "x").unwrap();
    fs::create_dir(fx.root.join("mnt")).unwrap();
    symlink("/", fx.root.join("mnt/hostroot")).unwrap();
    // /mnt/hostroot/<outside>/sub: through the link that is <chroot>/<outside>/sub, and
    // never <outside>/sub on the host.
    let target = format!("/mnt/hostroot{}/sub", outside.display());
    let profile = fx
        .profile("hostroot")
        .share(&share, &target)
        .command(&format!("echo \"SEEN $(ls {target})\""))
        .write();
    let before = tree(&fx.root);
    let done = fx.run(&profile, &Outer::default());
    done.assert_outcome(0, "success");
    assert_eq!(
        done.marked("SEEN "),
        ["from-the-share"],
        "{}",
        done.context()
    );
    assert!(
        names_in(&done, &outside).is_empty(),
        "the mount point went to the host: {:?}",
        names_in(&done, &outside)
    );
    assert_eq!(
        tree(&fx.root),
        before,
        "the mount points made inside the chroot were not removed"
    );
    done.assert_outer_unchanged();
}
