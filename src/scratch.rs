//! Scratch space for ephemeral runs: `<state>/scratch/<run-id>/{upper,work}`, the
//! overlay's writable layer on disk (an `emerge @world` writes gigabytes; RAM would not
//! do). The folder carries a `CACHEDIR.TAG` so tar, borg and restic skip it. Removal
//! never crosses into another filesystem, so it can never delete through a mount.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The Cache Directory Tagging Specification's signature line, then a note for people.
pub const CACHEDIR_TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
# This file is a cache directory tag created by bldr.\n\
# Overlay layers of ephemeral builds live here; backups need not keep them.\n";

/// Writes `CACHEDIR.TAG` into `dir` unless it is there.
pub fn tag(dir: &Path) -> io::Result<()> {
    let p = dir.join("CACHEDIR.TAG");
    if !p.exists() {
        fs::write(p, CACHEDIR_TAG)?;
    }
    Ok(())
}

/// Creates the scratch folder of one run, with the overlay's two directories. The
/// `scratch` folder above it is tagged, which covers every layer in it. A layer that may
/// be kept (`keep`) carries a tag of its own too, in case it is moved or backed up on its
/// own; it is made under a temporary name and renamed, so it is never seen untagged. A
/// throwaway layer skips that: on a file system mounted with `discard`, every file made
/// and removed per run shows in an ephemeral run's start-up.
pub fn create(state: &Path, run_id: &str, keep: bool) -> io::Result<PathBuf> {
    let root = state.join("scratch");
    fs::create_dir_all(&root)?;
    tag(&root)?;
    let dir = root.join(run_id);
    let tmp = if keep {
        root.join(format!(".{run_id}.new"))
    } else {
        dir.clone()
    };
    fs::create_dir(&tmp)?;
    if keep {
        tag(&tmp)?;
    }
    for sub in ["upper", "work"] {
        fs::create_dir(tmp.join(sub))?;
    }
    if keep {
        fs::rename(&tmp, &dir)?;
    }
    Ok(dir)
}

/// Removes `dir` and everything below it that is on the same filesystem as `dir`. An
/// entry on another filesystem (a mount) is left alone, and so are its parents; the
/// paths left are returned.
pub fn remove_same_fs(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let dev = fs::symlink_metadata(dir)?.dev();
    let mut left = Vec::new();
    remove_below(dir, dev, &mut left)?;
    if left.is_empty() {
        fs::remove_dir(dir)?;
    }
    Ok(left)
}

fn remove_below(dir: &Path, dev: u64, left: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let meta = fs::symlink_metadata(&path)?;
        if meta.dev() != dev {
            left.push(path);
            continue;
        }
        if meta.is_dir() {
            let before = left.len();
            // The overlay's work/work folder is mode 000; as root that is no obstacle,
            // but make it readable so removal works for the state dir's owner too.
            let _ = fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o700));
            remove_below(&path, dev, left)?;
            if left.len() == before {
                fs::remove_dir(&path)?;
            }
        } else {
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_is_tagged_and_removed() {
        let state = tempfile::tempdir().unwrap();
        let dir = create(state.path(), "r1", false).unwrap();
        let tagged = |d: &Path| {
            fs::read_to_string(d.join("CACHEDIR.TAG"))
                .is_ok_and(|t| t.starts_with("Signature: 8a477f597d28d172789f06886806bc55"))
        };
        assert!(tagged(&state.path().join("scratch")));
        assert!(!tagged(&dir), "a throwaway layer has no tag of its own");
        assert!(tagged(&create(state.path(), "r2", true).unwrap()));
        fs::create_dir_all(dir.join("upper/etc/deep")).unwrap();
        fs::write(dir.join("upper/etc/deep/f"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.join("upper/link")).unwrap();
        assert!(remove_same_fs(&dir).unwrap().is_empty());
        assert!(!dir.exists());
        assert!(
            Path::new("/etc/passwd").exists(),
            "a link's target is never touched"
        );
    }
}
