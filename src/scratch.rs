//! Scratch space for ephemeral runs: the overlay's writable layer on disk (an
//! `emerge @world` writes gigabytes; RAM would not do), under `<state>/scratch`, which
//! carries a `CACHEDIR.TAG` so tar, borg and restic skip it. A layer that may be kept is
//! one folder, `<run-id>/{upper,work}`, with a tag of its own; a throwaway layer is two
//! folders side by side, `<run-id>` (what the build wrote) and `<run-id>.work`. Removal
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

/// One run's overlay layer: the folder the build's writes go to and overlayfs's work
/// folder, which must be on the same filesystem and not inside each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub upper: PathBuf,
    pub work: PathBuf,
    /// The folder holding both, for a layer that may be kept; `None` for a throwaway one.
    pub folder: Option<PathBuf>,
}

impl Layer {
    /// Where run `run_id`'s throwaway layer goes in `scratch`. Pure.
    pub fn throwaway(scratch: &Path, run_id: &str) -> Layer {
        Layer {
            upper: scratch.join(run_id),
            work: scratch.join(format!("{run_id}.work")),
            folder: None,
        }
    }

    /// The folder that names the layer: its own folder, or for a throwaway layer the one
    /// the build's writes go to.
    pub fn path(&self) -> &Path {
        self.folder.as_deref().unwrap_or(&self.upper)
    }

    /// The layer kept in `folder` (`--keep`, re-entered by `bldr shell --run`). Pure.
    pub fn kept(folder: &Path) -> Layer {
        Layer {
            upper: folder.join("upper"),
            work: folder.join("work"),
            folder: Some(folder.to_path_buf()),
        }
    }
}

/// Creates the overlay layer of one run. The `scratch` folder above it is tagged, which
/// covers every layer in it. A layer that may be kept (`keep`) is one folder with a tag of
/// its own too, in case it is moved or backed up on its own; it is made under a
/// temporary name and renamed, so it is never seen untagged. A throwaway layer skips the
/// tag and the folder around its two: where freeing a folder's block waits for the disk
/// (ext4 without a journal, mounted `discard`), every folder made and removed per run
/// shows in an ephemeral run's time.
pub fn create(state: &Path, run_id: &str, keep: bool) -> io::Result<Layer> {
    let root = state.join("scratch");
    fs::create_dir_all(&root)?;
    tag(&root)?;
    if !keep {
        let layer = Layer::throwaway(&root, run_id);
        fs::create_dir(&layer.upper)?;
        if let Err(e) = fs::create_dir(&layer.work) {
            let _ = fs::remove_dir(&layer.upper);
            return Err(e);
        }
        return Ok(layer);
    }
    let tmp = root.join(format!(".{run_id}.new"));
    fs::create_dir(&tmp)?;
    tag(&tmp)?;
    for sub in ["upper", "work"] {
        fs::create_dir(tmp.join(sub))?;
    }
    let folder = root.join(run_id);
    fs::rename(&tmp, &folder)?;
    Ok(Layer::kept(&folder))
}

/// Removes the mark that overlayfs leaves in the work folder `work` of a `volatile`
/// mount, `work/incompat/volatile` with its `dirty` file, once the overlay is mounted.
/// overlayfs reads it only when mounting (a later mount over the same folders refuses to
/// start while it is there: the layer may be incomplete) and never writes it again, so
/// it can go while the build runs, instead of with the rest of the layer at the end,
/// where every folder removed on a filesystem that discards as it frees is time the run
/// waits. Nothing left is no error: the mark is there only if the kernel knew `volatile`.
pub fn remove_volatile_mark(work: &Path) {
    let incompat = work.join("work").join("incompat");
    if fs::symlink_metadata(&incompat).is_ok_and(|m| m.is_dir()) {
        let _ = remove_same_fs(&incompat);
    }
}

/// Removes `layer` with [`remove_same_fs`]; returns the paths left on other filesystems.
/// Of a throwaway layer's two folders, the second goes even when the first cannot.
pub fn remove(layer: &Layer) -> io::Result<Vec<PathBuf>> {
    match &layer.folder {
        Some(folder) => remove_same_fs(folder),
        None => {
            let upper = remove_same_fs(&layer.upper);
            let work = remove_same_fs(&layer.work);
            let mut left = upper?;
            left.extend(work?);
            Ok(left)
        }
    }
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
    fn a_layer_s_work_folder_goes_even_when_its_upper_folder_cannot() {
        let state = tempfile::tempdir().unwrap();
        let layer = create(state.path(), "r1", false).unwrap();
        fs::remove_dir(&layer.upper).unwrap();
        assert!(
            remove(&layer).is_err(),
            "the missing upper folder is an error"
        );
        assert!(!layer.work.exists(), "the work folder went all the same");
    }

    #[test]
    fn scratch_is_tagged_and_removed() {
        let state = tempfile::tempdir().unwrap();
        let scratch = state.path().join("scratch");
        let layer = create(state.path(), "r1", false).unwrap();
        assert_eq!(layer, Layer::throwaway(&scratch, "r1"));
        assert!(layer.upper.is_dir() && layer.work.is_dir());
        assert_eq!(
            layer.path(),
            scratch.join("r1"),
            "a throwaway layer is named by its upper folder"
        );
        let tagged = |d: &Path| {
            fs::read_to_string(d.join("CACHEDIR.TAG"))
                .is_ok_and(|t| t.starts_with("Signature: 8a477f597d28d172789f06886806bc55"))
        };
        assert!(tagged(&scratch));
        assert!(
            !tagged(&layer.upper),
            "a throwaway layer has no tag of its own"
        );
        let kept = create(state.path(), "r2", true).unwrap();
        assert_eq!(kept, Layer::kept(&scratch.join("r2")));
        assert_eq!(kept.path(), scratch.join("r2"));
        assert!(tagged(&scratch.join("r2")) && kept.upper.is_dir() && kept.work.is_dir());
        fs::create_dir_all(layer.upper.join("etc/deep")).unwrap();
        fs::write(layer.upper.join("etc/deep/f"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", layer.upper.join("link")).unwrap();
        assert!(remove(&layer).unwrap().is_empty());
        assert!(!layer.upper.exists() && !layer.work.exists());
        assert!(remove(&kept).unwrap().is_empty());
        assert_eq!(
            fs::read_dir(&scratch).unwrap().count(),
            1,
            "only the tag is left"
        );
        assert!(
            Path::new("/etc/passwd").exists(),
            "a link's target is never touched"
        );
    }
}
