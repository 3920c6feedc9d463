//! Mount points a run made in a chroot used in place, when bldr is SIGKILLed before its
//! init could remove them: the next run on that chroot removes them (SPEC §4.3), and only
//! them.

use crate::util::*;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[test]
fn mount_points_left_by_a_killed_run_are_removed_by_the_next_run() {
    if !require_root("mount_points_left_by_a_killed_run_are_removed_by_the_next_run") {
        return;
    }
    let w = World::new();
    let root = w.busybox_root("root");
    std::fs::create_dir_all(w.path("src")).unwrap();
    let before = tree_listing(&root);
    let ready = w.path("src/ready");
    let slow = w.profile(
        "slow",
        &format!(
            "chroot: {}\ntmpfs: [/build/deep/tmp]\nshared: [{{source: {}, target: /mnt/src}}]\ncommands: ['touch /mnt/src/ready; sleep 60']\n",
            root.display(),
            w.path("src").display()
        ),
    );
    let mut child = w
        .bldr(&["run", slow.to_str().unwrap(), "--progress", "none"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !ready.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the build never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // SIGKILL of bldr itself (the unshare wrapper execs it, so the child's pid is bldr's).
    nix_kill_9(child.id());
    let _ = child.wait();
    // The build dies with bldr; give the kernel a moment to tear the namespace down.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        root.join("build/deep/tmp").is_dir(),
        "the killed run had no chance to clean up"
    );
    // Something the user put in the chroot meanwhile stays.
    std::fs::write(root.join("mnt/keep-me"), "mine").unwrap();

    let out = next_run_removes(&w, &root, "left in the chroot by a run that was killed");
    assert!(!root.join("build").exists(), "{}", show(&out));
    assert!(!root.join("mnt/src").exists());
    assert_eq!(
        std::fs::read_to_string(root.join("mnt/keep-me")).unwrap(),
        "mine"
    );
    std::fs::remove_file(root.join("mnt/keep-me")).unwrap();
    // bldr made /mnt too; it was not empty at the next run, so it stayed: remove it and
    // the tree is what it was.
    let _ = std::fs::remove_dir(root.join("mnt"));
    // Paths, types and sizes as before (a folder's mtime moves when an entry comes and goes).
    let shape = |listing: Vec<String>| -> Vec<String> {
        listing
            .into_iter()
            .map(|l| l.rsplit_once(' ').map(|(a, _)| a.to_string()).unwrap_or(l))
            .collect()
    };
    assert_eq!(shape(tree_listing(&root)), shape(before));
}

/// The next run on the chroot at `root`: it succeeds and says `says` (what it removed).
fn next_run_removes(w: &World, root: &std::path::Path, says: &str) -> std::process::Output {
    let next = w.profile(
        "next",
        &format!("chroot: {}\ncommands: ['true']\n", root.display()),
    );
    let out = w.run(&next, &[]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(says),
        "{}",
        show(&out)
    );
    out
}

fn nix_kill_9(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
}

/// A run killed right after init made a mount point, before it wrote the entry's
/// identity, leaves only the `pending` line written before it: the next run removes such
/// an entry only if it is empty and its ctime is that line's moment, and so never what
/// was there before or was changed since.
#[test]
fn a_mount_point_journaled_only_as_pending_is_removed_when_it_is_the_one_made() {
    if !require_root("a_mount_point_journaled_only_as_pending_is_removed_when_it_is_the_one_made") {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let w = World::new();
    let root = w.busybox_root("root");
    let opt = root.join("opt");
    std::fs::create_dir_all(&opt).unwrap();
    // Before the "killed run": an empty folder that was there already.
    std::fs::create_dir(opt.join("older")).unwrap();
    let now_ns = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64
    };
    let hour = 3_600_000_000_000i64;
    // The killed run: pending lines, each followed by the entry it names.
    let pending = |path: &str, dir: bool, at: i64| {
        format!("{{\"path\":\"{path}\",\"dir\":{dir},\"pending_ns\":{at}}}\n")
    };
    let mut journal = String::new();
    journal.push_str(&pending("/opt/made", true, now_ns()));
    std::fs::create_dir(opt.join("made")).unwrap();
    journal.push_str(&pending("/opt/made/inner", false, now_ns()));
    std::fs::write(opt.join("made/inner"), "").unwrap();
    journal.push_str(&pending("/opt/written", false, now_ns()));
    std::fs::write(
        opt.join("written"),
        "the build never ran, but this is not empty",
    )
    .unwrap();
    journal.push_str(&pending("/opt/older", true, now_ns() - hour));
    journal.push_str(&pending("/opt/never-made", true, now_ns()));
    let meta = std::fs::metadata(&root).unwrap();
    let path = std::path::Path::new("/run/lock/bldr").join(format!(
        "{:x}-{}.made",
        meta.dev(),
        meta.ino()
    ));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, journal).unwrap();

    let out = next_run_removes(
        &w,
        &root,
        "removed 2 mount point(s) left in the chroot by a run that was killed",
    );
    assert!(!opt.join("made").exists(), "{}", show(&out));
    assert!(opt.join("older").is_dir(), "what was there before stays");
    assert_eq!(
        std::fs::read_to_string(opt.join("written")).unwrap(),
        "the build never ran, but this is not empty"
    );
    assert!(!path.exists(), "the journal was replayed and removed");
}
