//! Chroot locks (SPEC §3): two runs that would write the same non-ephemeral chroot are
//! serialised. A run on the chroot itself holds an exclusive lock; ephemeral runs hold a
//! shared one, so nobody rewrites the lower layer under them. Locks live in
//! `/run/lock/bldr` (see [`lock_dir`]), keyed by the chroot's device and inode (so two
//! paths to one tree share a lock), as flock(2) locks: the kernel releases them when the holder dies, even by
//! SIGKILL. Beside each lock, one small file per holder says who it is.

use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Who holds a lock, for the message of a run that has to wait.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub run_id: String,
    pub profile: String,
    pub since: String,
    pub shared: bool,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} (run {} of {}, {} since {})",
            self.pid,
            self.run_id,
            self.profile,
            if self.shared { "shared" } else { "exclusive" },
            self.since
        )
    }
}

/// A held lock. Dropping it removes the holder note; the lock itself goes when the last
/// descriptor of it closes (the sandbox keeps a copy until the build is gone).
pub struct ChrootLock {
    pub file: File,
    note: PathBuf,
}

impl Drop for ChrootLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.note);
    }
}

/// Why a lock was not taken.
#[derive(Debug)]
pub enum LockError {
    /// `--no-wait` and somebody holds it.
    Busy(Vec<Holder>),
    Io(io::Error, PathBuf),
}

/// Where locks live: the system's lock folder (`/run/lock/bldr`) when bldr runs as
/// root, so that every run on a chroot sees the same lock whatever its state directory
/// (`BLDR_STATE_DIR` separates records, not roots); else `<state>/locks`.
pub fn lock_dir(state: &Path) -> PathBuf {
    let system = Path::new("/run/lock");
    if crate::sandbox::is_root() && system.is_dir() {
        system.join("bldr")
    } else {
        state.join("locks")
    }
}

/// The journal of mount points a run made in `chroot` (see `run::MountJournal`), beside
/// the chroot's lock.
pub fn journal_path(state: &Path, chroot: &Path) -> io::Result<PathBuf> {
    keyed(state, chroot, "made")
}

/// `<lock dir>/<dev>-<inode>.<ext>` for the chroot (the device in hex, as `stat -c %D`).
fn keyed(state: &Path, chroot: &Path, ext: &str) -> io::Result<PathBuf> {
    let m = fs::metadata(chroot)?;
    Ok(lock_dir(state).join(format!("{:x}-{}.{ext}", m.dev(), m.ino())))
}

fn paths(state: &Path, chroot: &Path) -> io::Result<(PathBuf, PathBuf)> {
    Ok((
        keyed(state, chroot, "lock")?,
        keyed(state, chroot, "holders")?,
    ))
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The current holders, from their notes: those whose process runs here, or, if none
/// does, every note (a holder in another PID namespace, a container sharing
/// /run/lock/bldr, has a pid that means nothing here). Nothing is removed: a note that
/// looks dead may be a live holder elsewhere; the next exclusive holder clears them.
pub fn holders(holders_dir: &Path) -> Vec<Holder> {
    let mut all: Vec<Holder> = fs::read_dir(holders_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| fs::read_to_string(e.path()).ok())
        .filter_map(|text| serde_json::from_str::<Holder>(&text).ok())
        .collect();
    if all.iter().any(|h| alive(h.pid)) {
        all.retain(|h| alive(h.pid));
    }
    all.sort_by(|a, b| a.since.cmp(&b.since));
    all
}

/// Takes the chroot's lock. When it is held: with `wait`, calls `waiting` with the
/// holders once and blocks; without, returns [`LockError::Busy`].
pub fn acquire(
    state: &Path,
    chroot: &Path,
    me: Holder,
    wait: bool,
    waiting: impl FnOnce(&[Holder]),
) -> Result<ChrootLock, LockError> {
    let (lock_path, holders_dir) =
        paths(state, chroot).map_err(|e| LockError::Io(e, chroot.to_path_buf()))?;
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| LockError::Io(e, p)
    };
    fs::create_dir_all(&holders_dir).map_err(io(&holders_dir))?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(io(&lock_path))?;
    let tried = if me.shared {
        file.try_lock_shared()
    } else {
        file.try_lock()
    };
    match tried {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let who = holders(&holders_dir);
            if !wait {
                return Err(LockError::Busy(who));
            }
            waiting(&who);
            let r = if me.shared {
                file.lock_shared()
            } else {
                file.lock()
            };
            r.map_err(io(&lock_path))?;
        }
        Err(fs::TryLockError::Error(e)) => return Err(LockError::Io(e, lock_path)),
    }
    // Notes of runs that were killed stay behind. An exclusive holder is alone, in
    // whatever PID namespace the others ran, so it clears them all.
    if !me.shared {
        for e in fs::read_dir(&holders_dir).into_iter().flatten().flatten() {
            let _ = fs::remove_file(e.path());
        }
    }
    // Written aside and renamed, so that a reader never takes a half-written note.
    let note = holders_dir.join(me.pid.to_string());
    let tmp = holders_dir.join(format!(".{}.new", me.pid));
    let text = serde_json::to_string(&me).expect("holders serialize");
    fs::write(&tmp, text)
        .and_then(|()| fs::rename(&tmp, &note))
        .map_err(io(&note))?;
    Ok(ChrootLock { file, note })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me(shared: bool, run: &str) -> Holder {
        Holder {
            pid: std::process::id(),
            run_id: run.into(),
            profile: "p".into(),
            since: "now".into(),
            shared,
        }
    }

    #[test]
    fn an_exclusive_lock_excludes_and_names_its_holder() {
        let state = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let first = acquire(state.path(), root.path(), me(false, "a"), false, |_| {}).unwrap();
        match acquire(state.path(), root.path(), me(false, "b"), false, |_| {}) {
            Err(LockError::Busy(h)) => assert_eq!(h[0].run_id, "a"),
            _ => panic!("the second exclusive lock must be refused"),
        }
        drop(first);
        assert!(acquire(state.path(), root.path(), me(false, "c"), false, |_| {}).is_ok());
    }

    #[test]
    fn notes_left_by_killed_runs_are_cleared_by_the_next_exclusive_holder() {
        let state = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let (_, holders_dir) = paths(state.path(), root.path()).unwrap();
        fs::create_dir_all(&holders_dir).unwrap();
        // The note of a run whose bldr was killed (no such pid here).
        let dead = Holder {
            pid: u32::MAX - 1,
            ..me(false, "killed")
        };
        let stale = holders_dir.join("4294967294");
        fs::write(&stale, serde_json::to_string(&dead).unwrap()).unwrap();
        let names = |d: &Path| -> Vec<String> {
            let mut v: Vec<String> = fs::read_dir(d)
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        // A shared holder leaves it: its pid may be a live holder in another PID
        // namespace (a container sharing the lock folder).
        let shared = acquire(state.path(), root.path(), me(true, "s"), false, |_| {}).unwrap();
        assert!(stale.exists());
        assert_eq!(holders(&holders_dir).len(), 1, "only the live one is named");
        drop(shared);
        let _mine = acquire(state.path(), root.path(), me(false, "x"), false, |_| {}).unwrap();
        assert_eq!(names(&holders_dir), [std::process::id().to_string()]);
    }

    #[test]
    fn shared_locks_coexist_but_exclude_a_writer() {
        let state = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let _a = acquire(state.path(), root.path(), me(true, "a"), false, |_| {}).unwrap();
        let _b = acquire(state.path(), root.path(), me(true, "b"), false, |_| {}).unwrap();
        assert!(matches!(
            acquire(state.path(), root.path(), me(false, "c"), false, |_| {}),
            Err(LockError::Busy(_))
        ));
    }
}
