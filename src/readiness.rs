//! Is a valid profile ready to run *here*? The chroot and the shared sources are the
//! host's state, not the profile's, so `check` reports them as warnings and `run` refuses
//! to start without them. The checks are pure over a [`HostView`]; [`LiveHost`] is the
//! real filesystem (read-only calls: lstat, canonicalize).

use crate::profile::{Origin, Profile};
use std::path::{Path, PathBuf};

/// What a path is, without following a final symlink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathKind {
    Missing,
    Dir,
    File,
    Symlink,
    Other,
}

/// The facts readiness needs about host paths.
pub trait HostView {
    fn kind(&self, path: &Path) -> PathKind;
    /// The path with symlinks resolved, or of its nearest existing ancestor plus the rest.
    fn canonical(&self, path: &Path) -> PathBuf;
}

/// The real filesystem.
pub struct LiveHost;

impl HostView for LiveHost {
    fn kind(&self, path: &Path) -> PathKind {
        match std::fs::symlink_metadata(path) {
            Err(_) => PathKind::Missing,
            Ok(m) if m.file_type().is_symlink() => PathKind::Symlink,
            Ok(m) if m.is_dir() => PathKind::Dir,
            Ok(m) if m.is_file() => PathKind::File,
            Ok(_) => PathKind::Other,
        }
    }

    fn canonical(&self, path: &Path) -> PathBuf {
        let mut rest = Vec::new();
        let mut cur = path.to_path_buf();
        loop {
            if let Ok(c) = std::fs::canonicalize(&cur) {
                return rest.iter().rev().fold(c, |acc: PathBuf, r| acc.join(r));
            }
            match (cur.file_name().map(|n| n.to_os_string()), cur.parent()) {
                (Some(name), Some(parent)) => {
                    rest.push(name);
                    cur = parent.to_path_buf();
                }
                _ => return path.to_path_buf(),
            }
        }
    }
}

/// A reason a profile cannot run here yet, with the fix when there is an obvious one.
#[derive(Debug, Clone)]
pub struct Problem {
    pub origin: Origin,
    pub message: String,
    pub fix: Option<String>,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.origin, self.message)?;
        if let Some(fix) = &self.fix {
            write!(f, "\n  fix: {fix}")?;
        }
        Ok(())
    }
}

/// Everything that stands between the profile and a run on this host. `out` is the
/// folder the run records would go to.
pub fn check(profile: &Profile, out: &Path, host: &dyn HostView) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut problem = |origin: &Origin, message: String, fix: Option<String>| {
        problems.push(Problem {
            origin: origin.clone(),
            message,
            fix,
        })
    };
    let chroot = &profile.chroot;
    let co = &profile.chroot_origin;
    let real_chroot = host.canonical(chroot);
    let real_out = host.canonical(out);
    match host.kind(chroot) {
        PathKind::Missing => problem(
            co,
            format!("the chroot {} does not exist", chroot.display()),
            Some(format!(
                "create it (`bldr root create`, debootstrap, or unpack a stage3 into {})",
                chroot.display()
            )),
        ),
        PathKind::Dir | PathKind::Symlink if real_chroot == Path::new("/") => problem(
            co,
            format!("the chroot {} is the host's `/`", chroot.display()),
            Some("name a separate root directory".into()),
        ),
        PathKind::Dir | PathKind::Symlink if host.kind(&real_chroot) == PathKind::Dir => {
            let real = &real_chroot;
            for sub in ["proc", "dev", "sys"] {
                let p = real.join(sub);
                match host.kind(&p) {
                    PathKind::Dir => {}
                    PathKind::Missing => problem(
                        co,
                        format!("the chroot has no /{sub} directory"),
                        Some(format!("mkdir {}", p.display())),
                    ),
                    _ => problem(
                        co,
                        format!("the chroot's /{sub} is not a real directory (a symlink could send a mount to the host)"),
                        Some(format!("replace {} with an empty directory", p.display())),
                    ),
                }
            }
            if host.kind(&real.join("bin/sh")) == PathKind::Missing
                && host.kind(&real.join("usr/bin/sh")) == PathKind::Missing
            {
                problem(
                    co,
                    "the chroot has no /bin/sh, which runs the commands".into(),
                    Some("install a shell in the chroot (busybox, dash or bash)".into()),
                );
            }
            if real_out.starts_with(real) {
                // Blame the profile's `out:` when that is where the folder comes from.
                let (origin, fix) = match &profile.out_origin {
                    Some(o) if profile.out.as_deref() == Some(out) => {
                        (o, "choose an `out:` outside the chroot, or give --out")
                    }
                    _ => (co, "choose an --out (or BLDR_STATE_DIR) outside the chroot"),
                };
                problem(
                    origin,
                    format!("the output folder {} is inside the chroot", out.display()),
                    Some(fix.into()),
                );
            }
        }
        _ => problem(
            co,
            format!("the chroot {} is not a directory", chroot.display()),
            None,
        ),
    }
    for share in &profile.shared {
        // The profile's check of the source is on its text; a symlink can still lead to
        // a tree bldr never binds (`/var/run` to `/run`).
        let real = host.canonical(&share.source);
        let refused = (real != share.source)
            .then(|| crate::profile::validate::host_tree_refused(&real))
            .flatten();
        if let Some(why) = refused {
            problem(
                &share.origin,
                format!(
                    "the shared source {} leads to {}: {why}",
                    share.source.display(),
                    real.display()
                ),
                Some("share the folder the link leads to, if it is one bldr may bind".into()),
            );
        } else if host.kind(&share.source) == PathKind::Missing {
            problem(
                &share.origin,
                format!(
                    "the shared source {} does not exist",
                    share.source.display()
                ),
                Some(format!("mkdir -p {}", share.source.display())),
            );
        } else if !share.readonly && real_out.starts_with(&real) {
            problem(
                &share.origin,
                format!(
                    "the output folder {} is inside the writable shared tree {}; the build could rewrite its own records",
                    out.display(),
                    share.source.display()
                ),
                Some("choose another --out, or share the tree read-only".into()),
            );
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::layer::parse_layer;
    use crate::profile::{validate, Context};
    use std::collections::HashMap;

    struct FakeHost(HashMap<PathBuf, PathKind>);

    impl HostView for FakeHost {
        fn kind(&self, path: &Path) -> PathKind {
            self.0.get(path).cloned().unwrap_or(PathKind::Missing)
        }
        /// The fake host has one symlink, Debian's `/var/run` to `/run`.
        fn canonical(&self, path: &Path) -> PathBuf {
            match path.strip_prefix("/var/run") {
                Ok(rest) => Path::new("/run").join(rest),
                Err(_) => path.to_path_buf(),
            }
        }
    }

    fn problems(yaml: &str, present: &[(&str, PathKind)], out: &str) -> Vec<String> {
        let layer = parse_layer(yaml.as_bytes(), Path::new("/p/t.yaml")).unwrap();
        let ctx = Context {
            name: "t".into(),
            file: "/p/t.yaml".into(),
            files: vec![],
            home: None,
            cwd: "/".into(),
        };
        let profile = validate(&layer, &ctx).unwrap();
        let host = FakeHost(
            present
                .iter()
                .map(|(p, k)| (PathBuf::from(p), k.clone()))
                .collect(),
        );
        check(&profile, Path::new(out), &host)
            .into_iter()
            .map(|p| p.message)
            .collect()
    }

    const ROOT: &[(&str, PathKind)] = &[
        ("/r", PathKind::Dir),
        ("/r/proc", PathKind::Dir),
        ("/r/dev", PathKind::Dir),
        ("/r/sys", PathKind::Dir),
        ("/r/bin/sh", PathKind::Symlink),
    ];

    #[test]
    fn a_shared_source_that_leads_to_the_host_s_run_is_refused() {
        let with_run: Vec<(&str, PathKind)> = ROOT
            .iter()
            .cloned()
            .chain([
                ("/var/run", PathKind::Symlink),
                ("/var/run/dbus", PathKind::Dir),
            ])
            .collect();
        let got = problems(
            "chroot: /r\nshared: [/var/run]\ncommands: [true]\n",
            &with_run,
            "/out",
        );
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].contains("/var/run leads to /run") && got[0].contains("never binds"),
            "{got:?}"
        );
        // One folder below it is no problem.
        let got = problems(
            "chroot: /r\nshared: [/var/run/dbus]\ncommands: [true]\n",
            &with_run,
            "/out",
        );
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn a_complete_root_is_ready() {
        assert!(problems("chroot: /r\ncommands: [true]\n", ROOT, "/out").is_empty());
    }

    #[test]
    fn a_missing_chroot_is_not_ready() {
        let p = problems("chroot: /nope\ncommands: [true]\n", ROOT, "/out");
        assert!(p[0].contains("does not exist"), "{p:?}");
    }

    #[test]
    fn a_proc_symlink_is_refused() {
        let mut host = ROOT.to_vec();
        host[1] = ("/r/proc", PathKind::Symlink);
        let p = problems("chroot: /r\ncommands: [true]\n", &host, "/out");
        assert!(p[0].contains("/proc is not a real directory"), "{p:?}");
    }

    #[test]
    fn output_inside_the_chroot_or_a_writable_share_is_refused() {
        let p = problems("chroot: /r\ncommands: [true]\n", ROOT, "/r/var/out");
        assert!(p[0].contains("inside the chroot"), "{p:?}");
        let mut host = ROOT.to_vec();
        host.push(("/srv", PathKind::Dir));
        let p = problems(
            "chroot: /r\ncommands: [true]\nshared: [{source: /srv, target: /srv}]\n",
            &host,
            "/srv/out",
        );
        assert!(p[0].contains("writable shared tree"), "{p:?}");
        let p = problems("chroot: /r\ncommands: [true]\nshared: [{source: /srv, target: /srv, readonly: true}]\n", &host, "/srv/out");
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn a_missing_share_source_is_not_ready() {
        let p = problems(
            "chroot: /r\ncommands: [true]\nshared: [/var/db/repos/gentoo]\n",
            ROOT,
            "/out",
        );
        assert!(
            p[0].contains("/var/db/repos/gentoo does not exist"),
            "{p:?}"
        );
    }
}
