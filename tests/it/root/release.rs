//! `sys::release_root`: init letting go of the build's root at the end, so that bldr may
//! remove an overlay's layer while init is still exiting. The promise checked here is
//! the one that removal rests on: once the call returns, no mount holds the layer.
//!
//! The probe is overlayfs itself: an overlay mounted with `index=on` refuses an upper
//! folder that another overlay still uses (EBUSY). The test re-runs itself twice, each
//! time in a mount namespace of its own, where it mounts and pivots freely: the
//! releaser mounts an overlay, pivots into it and lets go of it, and the prober, in a
//! namespace copied before that overlay existed, then mounts the probe.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

const NAME: &str = "root::release::releasing_the_root_frees_an_overlay_before_it_returns";
const ROLE: &str = "BLDR_TEST_RELEASE_ROLE";
const DIR: &str = "BLDR_TEST_RELEASE_DIR";

#[test]
fn releasing_the_root_frees_an_overlay_before_it_returns() {
    if let (Ok(role), Some(dir)) = (std::env::var(ROLE), std::env::var_os(DIR)) {
        let dir = Path::new(&dir);
        std::process::exit(if role == "releaser" {
            releaser(dir)
        } else {
            prober(dir)
        });
    }
    require_root!();
    // On the disk, as scratch space is: overlayfs wants xattrs and file handles there.
    let dir = tempfile::Builder::new()
        .prefix("bldr-release-")
        .tempdir_in("/var/tmp")
        .unwrap();
    for d in ["lower", "upper", "work", "merged", "probe", "probe-work"] {
        std::fs::create_dir(dir.path().join(d)).unwrap();
    }
    std::fs::write(dir.path().join("lower/file"), "lower\n").unwrap();
    let out = in_own_namespace("releaser", dir.path()).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{said}", out.status);
    assert!(said.contains("the upper folder is free"), "{said}");
}

/// This test, re-run as `role` in a mount namespace of its own, made private first.
fn in_own_namespace(role: &str, dir: &Path) -> Command {
    let mut c = Command::new("unshare");
    c.args(["--mount", "--propagation", "private", "--"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(DIR, dir);
    c
}

/// Mounts the overlay, checks that the probe fails while it is there, pivots into it
/// and releases it, then has the prober try again. Reports on stderr; returns the exit
/// code.
fn releaser(dir: &Path) -> i32 {
    // Started first, so that its namespace has no copy of the overlay to hold.
    let mut prober = in_own_namespace("prober", dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the prober");
    let code = release_and_probe(dir, &mut prober);
    drop(prober.stdin.take());
    let _ = prober.wait();
    code
}

fn release_and_probe(dir: &Path, prober: &mut std::process::Child) -> i32 {
    use bldr::sandbox::sys;
    // The harness prints to stdout too; the prober's words follow a marker.
    let mut said = BufReader::new(prober.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| l.split_once("probe: ").map(|(_, w)| w.to_string()));
    if said.next().as_deref() != Some("ready") {
        eprintln!("the prober did not start");
        return 2;
    }
    let merged = dir.join("merged");
    sys::mount_overlay(
        &dir.join("lower"),
        &dir.join("upper"),
        &dir.join("work"),
        &merged,
        true,
    )
    .expect("mount the overlay");
    // The probe can fail: while the overlay is mounted, its upper folder is refused.
    match probe(dir) {
        Err(nix::errno::Errno::EBUSY) => {}
        Err(e) => {
            eprintln!("the probe fails here for another reason: {e}");
            return 3;
        }
        Ok(()) => {
            eprintln!("the probe took an upper folder in use");
            return 4;
        }
    }
    let root = sys::open_path(&merged).unwrap();
    sys::pivot_into(std::os::fd::AsFd::as_fd(&root)).expect("pivot into the overlay");
    drop(root);
    if let Err(e) = sys::release_root() {
        eprintln!("release_root: {e}");
        return 5;
    }
    if std::fs::read_dir("/").map(|d| d.count()).ok() != Some(0) {
        eprintln!("the root after release_root is not an empty folder");
        return 6;
    }
    let asked = writeln!(prober.stdin.take().unwrap(), "probe");
    let answer = said.next().unwrap_or_default();
    if asked.is_err() || answer != "free" {
        eprintln!("the overlay still holds its upper folder after release_root: {answer}");
        return 7;
    }
    eprintln!("released: the upper folder is free");
    0
}

/// Says `probe: ready`, waits for a line on stdin, then mounts the probe and says
/// `probe: free` or the errno.
fn prober(dir: &Path) -> i32 {
    // Its namespace exists by now, copied before the releaser mounted anything.
    println!("probe: ready");
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line).unwrap_or(0) == 0 {
        return 0;
    }
    match probe(dir) {
        Ok(()) => println!("probe: free"),
        Err(e) => println!("probe: {e}"),
    }
    0
}

/// Mounts a second overlay over the same upper folder (with a work folder of its own, as
/// the first one's keeps the mark of a `volatile` mount) with `index=on`, which fails with
/// EBUSY while another overlay uses that upper folder.
fn probe(dir: &Path) -> Result<(), nix::errno::Errno> {
    let data = format!(
        "lowerdir={},upperdir={},workdir={},index=on",
        dir.join("lower").display(),
        dir.join("upper").display(),
        dir.join("probe-work").display()
    );
    nix::mount::mount(
        Some("overlay"),
        &dir.join("probe"),
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(data.as_str()),
    )
}
