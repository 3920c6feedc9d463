//! `bldr root create`: making the roots profiles run in. Debian and Ubuntu suites through
//! debootstrap (variant buildd, with deb-src lines so `apt-get source` works), Gentoo
//! from a stage3 tarball (numeric owners and xattrs kept), and a busybox root for demos
//! and tests. Never writes into a non-empty directory.
//!
//! Why a command and not a `bootstrap:` section in profiles: a root is host state that
//! many profiles share and that outlives them (like a machine image for
//! systemd-nspawn/machinectl); making one is a rare, slow, networked act that should not
//! hide inside `run`, and `check`/`run` can then keep saying plainly "the chroot is
//! missing" with the command that makes it.

use crate::reporter::Reporter;
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// The kind of root to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootKind {
    /// debootstrap `suite` from `mirror`.
    Debian {
        suite: String,
        mirror: String,
        include: Vec<String>,
    },
    /// A stage3 tarball: a local path or an http(s) URL.
    Gentoo { stage3: String },
    /// A static busybox with relative applet links.
    Busybox { busybox: PathBuf },
}

/// The default mirror for a suite: Ubuntu's code names go to Ubuntu's archive.
pub fn default_mirror(suite: &str) -> &'static str {
    const UBUNTU: &[&str] = &["focal", "jammy", "noble", "oracular", "plucky", "questing"];
    if UBUNTU.contains(&suite) {
        "http://archive.ubuntu.com/ubuntu"
    } else {
        "http://deb.debian.org/debian"
    }
}

/// The apt sources of a debootstrapped root: binaries and sources of the suite.
pub fn sources_list(suite: &str, mirror: &str) -> String {
    let components = if default_mirror(suite).contains("ubuntu") {
        "main universe"
    } else {
        "main"
    };
    format!("deb {mirror} {suite} {components}\ndeb-src {mirror} {suite} {components}\n")
}

fn refuse_non_empty(dir: &Path) -> Result<(), String> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(format!(
                    "{} exists and is not empty; bldr root create never writes into an existing root",
                    dir.display()
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot read {}: {e}", dir.display())),
    }
}

/// Runs a long step, showing its output lines as progress.
fn step(rep: &Reporter, what: &str, cmd: duct::Expression) -> Result<(), String> {
    rep.info(what);
    let reader = cmd
        .stderr_to_stdout()
        .unchecked()
        .reader()
        .map_err(|e| format!("{what}: {e}"))?;
    let mut last = Vec::new();
    let mut lines = std::io::BufReader::new(&reader);
    let mut line = String::new();
    while lines.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
        let l = line.trim_end().to_string();
        if l.starts_with("I: ") || l.starts_with("E: ") || l.starts_with("W: ") {
            rep.info(&format!("  {l}"));
        }
        last.push(l);
        if last.len() > 20 {
            last.remove(0);
        }
        line.clear();
    }
    match reader.try_wait() {
        Ok(Some(out)) if out.status.success() => Ok(()),
        _ => Err(format!(
            "{what} failed; its last lines:\n  {}",
            last.join("\n  ")
        )),
    }
}

/// Why a root was not made.
#[derive(Debug)]
pub enum RootError {
    /// Refused before touching anything (exit 2).
    Refused(String),
    /// A step failed (exit 4).
    Failed(String),
}

/// Makes a root of `kind` in `dir`.
pub fn create(rep: &Reporter, kind: &RootKind, dir: &Path) -> Result<(), RootError> {
    refuse_non_empty(dir).map_err(RootError::Refused)?;
    if !crate::sandbox::is_root() {
        return Err(RootError::Refused(
            "making a root needs root (device nodes, owners): run it with sudo".into(),
        ));
    }
    make(rep, kind, dir).map_err(RootError::Failed)
}

fn make(rep: &Reporter, kind: &RootKind, dir: &Path) -> Result<(), String> {
    match kind {
        RootKind::Debian {
            suite,
            mirror,
            include,
        } => {
            if which("debootstrap").is_none() {
                return Err("debootstrap is not installed (apt-get install debootstrap)".into());
            }
            let mut args = vec!["--variant=buildd".to_string()];
            if !include.is_empty() {
                args.push(format!("--include={}", include.join(",")));
            }
            args.extend([suite.clone(), dir.display().to_string(), mirror.clone()]);
            step(
                rep,
                &format!("debootstrap {suite} into {} (a few minutes)", dir.display()),
                duct::cmd("debootstrap", &args),
            )?;
            std::fs::write(
                dir.join("etc/apt/sources.list"),
                sources_list(suite, mirror),
            )
            .map_err(|e| format!("cannot write the apt sources: {e}"))?;
            // A deb822 file from debootstrap would duplicate the one-line list.
            let _ = std::fs::remove_file(dir.join("etc/apt/sources.list.d/debian.sources"));
        }
        RootKind::Gentoo { stage3 } => {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            let tarball = if stage3.starts_with("http://") || stage3.starts_with("https://") {
                let local = PathBuf::from(format!("{}.stage3.download", dir.display()));
                step(
                    rep,
                    &format!("download {stage3}"),
                    duct::cmd!("curl", "-fL", "--progress-bar", "-o", &local, stage3),
                )?;
                local
            } else {
                PathBuf::from(stage3)
            };
            // --numeric-owner: the host's passwd must not remap the root's owners;
            // --xattrs: file capabilities (ping's cap_net_raw) live there.
            step(
                rep,
                &format!("unpack {} into {}", tarball.display(), dir.display()),
                duct::cmd!(
                    "tar",
                    "-x",
                    "-p",
                    "--numeric-owner",
                    "--xattrs",
                    "--xattrs-include=*.*",
                    "-f",
                    &tarball,
                    "-C",
                    dir
                ),
            )?;
            if tarball.extension().is_some_and(|e| e == "download") {
                let _ = std::fs::remove_file(&tarball);
            }
            for d in ["proc", "dev", "sys"] {
                let _ = std::fs::create_dir_all(dir.join(d));
            }
        }
        RootKind::Busybox { busybox } => busybox_root(busybox, dir)?,
    }
    rep.info(&format!(
        "made {}; point a profile's `chroot:` at it",
        dir.display()
    ));
    Ok(())
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// A busybox root: /bin/busybox, every applet as a relative link to it, the folders a
/// build needs, a root user.
pub fn busybox_root(busybox: &Path, dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let list = duct::cmd!(busybox, "--list-full").read().map_err(|e| {
        format!(
            "{} --list-full: {e} (apt-get install busybox-static)",
            busybox.display()
        )
    })?;
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    for d in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "proc",
        "sys",
        "dev",
        "tmp",
        "etc",
        "root",
        "var/tmp",
        "var/cache",
        "home",
    ] {
        std::fs::create_dir_all(dir.join(d)).map_err(|e| io(d, e))?;
    }
    for t in ["tmp", "var/tmp"] {
        std::fs::set_permissions(dir.join(t), std::fs::Permissions::from_mode(0o1777))
            .map_err(|e| io(t, e))?;
    }
    std::fs::copy(busybox, dir.join("bin/busybox")).map_err(|e| io("copy busybox", e))?;
    for applet in list
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "bin/busybox")
    {
        let link = dir.join(applet);
        if link.symlink_metadata().is_ok() {
            continue;
        }
        let depth = Path::new(applet).components().count() - 1;
        let target = format!("{}bin/busybox", "../".repeat(depth));
        std::os::unix::fs::symlink(&target, &link).map_err(|e| io(applet, e))?;
    }
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")
        .map_err(|e| io("passwd", e))?;
    std::fs::write(dir.join("etc/group"), "root:x:0:\ntty:x:5:\n").map_err(|e| io("group", e))?;
    std::fs::write(dir.join("etc/resolv.conf"), "").map_err(|e| io("resolv.conf", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ubuntu_suites_use_ubuntus_archive() {
        assert_eq!(default_mirror("noble"), "http://archive.ubuntu.com/ubuntu");
        assert_eq!(default_mirror("bookworm"), "http://deb.debian.org/debian");
        assert!(sources_list("bookworm", "http://m/debian")
            .contains("deb-src http://m/debian bookworm main"));
    }

    #[test]
    fn a_non_empty_directory_is_refused() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("x"), "").unwrap();
        assert!(refuse_non_empty(t.path())
            .unwrap_err()
            .contains("not empty"));
        assert!(refuse_non_empty(&t.path().join("new")).is_ok());
    }
}
