//! Where bldr keeps its state: run records, the run index, locks and scratch space.
//! `$BLDR_STATE_DIR`, else `/var/lib/bldr` as root, else `$XDG_STATE_HOME/bldr`
//! (or `~/.local/state/bldr`).

use std::path::{Path, PathBuf};

/// The state directory, from the given environment values (pure). A relative
/// `$BLDR_STATE_DIR` is taken from `cwd`, as `--out` is: the records' paths, and the
/// check that they are not inside the chroot, need it absolute.
pub fn state_dir_from(
    bldr_state_dir: Option<&Path>,
    is_root: bool,
    xdg_state_home: Option<&Path>,
    home: Option<&Path>,
    cwd: &Path,
) -> PathBuf {
    if let Some(d) = bldr_state_dir.filter(|d| !d.as_os_str().is_empty()) {
        return crate::profile::validate::normalize(&cwd.join(d));
    }
    if is_root {
        return PathBuf::from("/var/lib/bldr");
    }
    match (xdg_state_home, home) {
        (Some(x), _) if x.is_absolute() => x.join("bldr"),
        (_, Some(h)) => h.join(".local/state/bldr"),
        _ => PathBuf::from("/tmp/bldr-state"),
    }
}

/// The state directory of this process.
pub fn state_dir() -> PathBuf {
    let var = |n| std::env::var_os(n).map(PathBuf::from);
    state_dir_from(
        var("BLDR_STATE_DIR").as_deref(),
        crate::sandbox::is_root(),
        var("XDG_STATE_HOME").as_deref(),
        var("HOME").as_deref(),
        &std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_dir_follows_spec_order() {
        let p = |s: &str| Some(PathBuf::from(s));
        let cwd = Path::new("/work");
        assert_eq!(
            state_dir_from(p("/s").as_deref(), true, None, None, cwd),
            PathBuf::from("/s")
        );
        assert_eq!(
            state_dir_from(p("state/../st").as_deref(), true, None, None, cwd),
            PathBuf::from("/work/st"),
            "a relative BLDR_STATE_DIR is taken from the working directory"
        );
        assert_eq!(
            state_dir_from(None, true, p("/x").as_deref(), None, cwd),
            PathBuf::from("/var/lib/bldr")
        );
        assert_eq!(
            state_dir_from(None, false, p("/x").as_deref(), p("/h").as_deref(), cwd),
            PathBuf::from("/x/bldr")
        );
        assert_eq!(
            state_dir_from(None, false, None, p("/h").as_deref(), cwd),
            PathBuf::from("/h/.local/state/bldr")
        );
    }
}
