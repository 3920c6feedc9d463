//! Executes the plan's root and mounts, in order, through the [`MountSys`] trait: the
//! sequence logic lives here and is tested against a recording fake; [`LiveMounts`] is
//! the real thing. Every target is resolved inside the new root, so a symlink in the
//! chroot can never send a mount or a mkdir to the host.

use super::sys::{self, SysError, SysResult};
use crate::chroot_path::ChrootPath;
use crate::plan::{DevLink, DeviceNode, MountKind, MountOp, Plan, Root};
use nix::errno::Errno;
use nix::mount::MsFlags;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

/// What a mount point bldr had to create was, so it can be removed after the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    Dir(ChrootPath, Ident),
    File(ChrootPath, Ident),
}

impl Created {
    pub fn path(&self) -> &ChrootPath {
        match self {
            Created::Dir(p, _) | Created::File(p, _) => p,
        }
    }
}

/// The device and inode of an entry bldr made, so that removing it later can check that
/// the path still names that very entry and not whatever a mount or the build put there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ident {
    pub dev: u64,
    pub ino: u64,
}

impl Ident {
    fn of(fd: std::os::fd::BorrowedFd<'_>) -> Ident {
        nix::sys::stat::fstat(fd)
            .map(|st| Ident {
                dev: st.st_dev,
                ino: st.st_ino,
            })
            .unwrap_or_default()
    }

    /// True when `dev`/`ino` are this entry's; an unknown identity never matches.
    fn is(&self, dev: u64, ino: u64) -> bool {
        *self != Ident::default() && self.dev == dev && self.ino == ino
    }
}

/// One line of the journal of mount points made in a chroot used in place (the file
/// `lock::journal_path` names). Init writes a `pending` line right before it creates an
/// entry and a line with the entry's device and inode right after, each with one
/// write(2), so that a SIGKILL at any moment leaves the entry known: the next run on the
/// chroot removes what a killed run left, the entries it made and nothing else.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JournalEntry {
    pub path: String,
    pub dir: bool,
    #[serde(default)]
    pub dev: u64,
    #[serde(default)]
    pub ino: u64,
    /// On a line written before the entry existed: when, in ns since the epoch. Its
    /// identity is not known then; it goes only if it is empty and its ctime is that
    /// moment's, within [`PENDING_SLACK_NS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_ns: Option<i64>,
}

/// How far the ctime of an entry may be from its `pending` line's time: the kernel's
/// timestamps come from a coarse clock, a tick behind the one bldr reads.
pub const PENDING_SLACK_NS: i64 = 2_000_000_000;

impl JournalEntry {
    fn pending(path: &ChrootPath, dir: bool) -> JournalEntry {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        JournalEntry {
            path: path.to_string(),
            dir,
            dev: 0,
            ino: 0,
            pending_ns: Some(now),
        }
    }

    fn made(path: &ChrootPath, dir: bool, id: Ident) -> JournalEntry {
        JournalEntry {
            path: path.to_string(),
            dir,
            dev: id.dev,
            ino: id.ino,
            pending_ns: None,
        }
    }
}

/// The operations the mount sequence needs. Paths are inside the new root.
pub trait MountSys {
    /// Makes `/` recursively slave: the first mount operation, always.
    fn isolate(&mut self) -> SysResult<()>;
    /// Prepares the root (bind onto itself, or the overlay) and keeps a handle on it.
    fn prepare_root(&mut self, root: &Root) -> SysResult<()>;
    fn exists(&mut self, target: &ChrootPath) -> SysResult<bool>;
    /// Creates `target` as a directory (or empty file) and any missing parents, each
    /// inside the root. Appends what it created to `created`, outermost first, also
    /// when it fails part of the way. `journaled`: each entry is written to the mount
    /// journal before and after it is made (not inside a filesystem this run mounted,
    /// which goes with the namespace).
    fn make_mount_point(
        &mut self,
        target: &ChrootPath,
        dir: bool,
        journaled: bool,
        created: &mut Vec<Created>,
    ) -> SysResult<()>;
    fn source_is_dir(&mut self, source: &Path) -> bool;
    fn mount(&mut self, op: &MountOp) -> SysResult<()>;
    fn populate_dev(
        &mut self,
        target: &ChrootPath,
        nodes: &[DeviceNode],
        links: &[DevLink],
    ) -> SysResult<()>;
    /// Makes the prepared root `/` and detaches the host's.
    fn pivot(&mut self) -> SysResult<()>;
    fn set_hostname(&mut self, name: &str) -> SysResult<()>;
    /// Undoes `created` when the setup fails half-way: unmounts what is on each and
    /// removes it, innermost first, resolving inside the root (the host's paths may
    /// still be reachable). Returns what could not be removed.
    fn remove_made(&mut self, created: &[Created]) -> Vec<String>;
}

/// Runs the whole sequence. Returns the mount points it created, in creation order.
/// When a step fails, the mount points created so far are removed again before the
/// error is returned: a failed setup leaves the chroot as it found it (SPEC §4.3).
pub fn apply(plan: &Plan, sys: &mut dyn MountSys) -> SysResult<Vec<Created>> {
    sys.isolate()?;
    sys.prepare_root(&plan.root)?;
    let mut created = Vec::new();
    let done = mount_all(plan, sys, &mut created)
        .and_then(|()| sys.pivot())
        .and_then(|()| sys.set_hostname(&plan.hostname));
    match done {
        Ok(()) => Ok(created),
        Err(mut e) => {
            let left = sys.remove_made(&created);
            if !left.is_empty() {
                e.what = format!("{} (left behind: {})", e.what, left.join(", "));
            }
            Err(e)
        }
    }
}

fn mount_all(plan: &Plan, sys: &mut dyn MountSys, created: &mut Vec<Created>) -> SysResult<()> {
    // Filesystems this run made from nothing (/dev, /dev/pts, a tmpfs): a mount point
    // created inside one vanishes with the namespace, so it is not recorded for removal.
    let mut fresh: Vec<&ChrootPath> = Vec::new();
    for op in &plan.mounts {
        if op.only_if_target_exists && !sys.exists(&op.target)? {
            continue;
        }
        let dir = match &op.kind {
            MountKind::Bind { source } => sys.source_is_dir(source),
            _ => true,
        };
        // What is created below a fresh filesystem's mount point is inside it: the
        // mount point itself existed, or that filesystem could not be there.
        let kept = !fresh.iter().any(|f| op.target.is_within(f));
        let mut made = Vec::new();
        let result = sys.make_mount_point(&op.target, dir, kept, &mut made);
        if kept {
            created.extend(made);
        }
        result?;
        sys.mount(op)?;
        if !matches!(op.kind, MountKind::Bind { .. }) {
            fresh.push(&op.target);
        }
        if let MountKind::Dev { nodes, links } = &op.kind {
            sys.populate_dev(&op.target, nodes, links)?;
        }
    }
    Ok(())
}

/// Removes the mount points bldr created, innermost first, after the build. Only empty
/// directories and empty regular files go; a mount still on one makes the removal fail
/// (EBUSY) and it stays, so nothing is ever deleted through a mount. Runs inside the new
/// root, after every process of the build is dead.
pub fn remove_created(created: &[Created]) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut left = Vec::new();
    for c in created.iter().rev() {
        let (path, is_dir, id) = match c {
            Created::Dir(p, id) => (p, true, id),
            Created::File(p, id) => (p, false, id),
        };
        // Unmount first: what was mounted here is the build's, in this namespace only.
        while sys::unmount(path.as_str()).is_ok() {}
        // Then remove only the very entry bldr made: if the build unmounted what held it
        // (say its own /dev), the path now names something else, which must stay.
        let res = match std::fs::symlink_metadata(path.as_str()) {
            Ok(m) if !id.is(m.dev(), m.ino()) => Err(std::io::Error::other(
                "it is no longer the entry bldr made; left alone",
            )),
            Ok(_) if is_dir => std::fs::remove_dir(path.as_str()),
            Ok(m) if m.is_file() && m.len() == 0 => std::fs::remove_file(path.as_str()),
            Ok(_) => Err(std::io::Error::other("it is no longer an empty file")),
            Err(e) => Err(e),
        };
        if let Err(e) = res {
            if e.kind() != std::io::ErrorKind::NotFound {
                left.push(format!("{path}: {e}"));
            }
        }
    }
    left
}

/// Removes mount points an earlier run made in the chroot at `root` and could not remove
/// because it was killed (its journal, `entries`), innermost first. Runs on the host, in
/// bldr's main process, while it holds the chroot's exclusive lock and nothing is mounted
/// there: every path is resolved inside the chroot, and an entry goes only if it is an
/// empty folder or empty file that is still the one init made: the device and inode
/// recorded, or, for an entry whose identity was not written yet (init was killed right
/// after making it), a ctime at its `pending` line's time. Returns how many went and
/// what stayed.
pub fn remove_journaled(root: &Path, entries: &[JournalEntry]) -> (usize, Vec<String>) {
    let Ok(root_fd) = sys::open_path(root) else {
        return (
            0,
            vec![format!("{}: cannot open the chroot", root.display())],
        );
    };
    // A path's last line says what is known of it: its identity once that was written.
    let mut made: Vec<(ChrootPath, &JournalEntry)> = Vec::new();
    for e in entries {
        let Ok(path) = ChrootPath::parse(&e.path) else {
            continue;
        };
        match made.iter_mut().find(|(p, _)| *p == path) {
            Some(slot) => slot.1 = e,
            None => made.push((path, e)),
        }
    }
    // Each is judged before any goes: removing a folder's child changes its ctime.
    let judged: Vec<(&ChrootPath, &JournalEntry, Result<bool, Errno>)> = made
        .iter()
        .map(|(path, e)| {
            let ours = sys::resolve_in_root(root_fd.as_fd(), path.relative())
                .and_then(|fd| nix::sys::stat::fstat(fd.as_fd()))
                .map(|st| {
                    let kind_ok = if e.dir {
                        st.st_mode & libc::S_IFMT == libc::S_IFDIR
                    } else {
                        st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_size == 0
                    };
                    let same = match e.pending_ns {
                        None => Ident {
                            dev: e.dev,
                            ino: e.ino,
                        }
                        .is(st.st_dev, st.st_ino),
                        Some(at) => {
                            let ctime = st.st_ctime * 1_000_000_000 + st.st_ctime_nsec;
                            (ctime - at).abs() <= PENDING_SLACK_NS
                        }
                    };
                    kind_ok && same
                });
            (path, *e, ours)
        })
        .collect();
    let mut removed = 0;
    let mut left = Vec::new();
    for (path, e, ours) in judged.into_iter().rev() {
        let (parent, name) = path
            .relative()
            .rsplit_once('/')
            .unwrap_or(("", path.relative()));
        let res = match ours {
            Ok(true) => sys::resolve_in_root(root_fd.as_fd(), parent)
                .and_then(|p| sys::remove_at(p.as_fd(), name, e.dir)),
            Ok(false) => Err(Errno::ESTALE),
            Err(e) => Err(e),
        };
        match res {
            Ok(()) => removed += 1,
            Err(Errno::ENOENT) => {}
            Err(Errno::ESTALE) => {
                left.push(format!("{path}: no longer the entry bldr made; left alone"))
            }
            Err(e) => left.push(format!("{path}: {}", e.desc())),
        }
    }
    (removed, left)
}

/// Where init writes the mount journal: the file, opened on the first entry.
struct Journal {
    path: PathBuf,
    file: Option<std::fs::File>,
}

impl Journal {
    /// One line, one write(2) in append mode. A journal that cannot be written is no
    /// reason to stop the build: init removes its mount points itself at the end; only
    /// a kill would leave them.
    fn write(&mut self, e: &JournalEntry) {
        use std::io::Write;
        if self.file.is_none() {
            use std::os::unix::fs::OpenOptionsExt;
            self.file = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(&self.path)
                .ok();
        }
        if let (Some(f), Ok(mut line)) = (&mut self.file, serde_json::to_vec(e)) {
            line.push(b'\n');
            let _ = f.write_all(&line);
        }
    }
}

/// The real mount sequence.
#[derive(Default)]
pub struct LiveMounts {
    root: Option<OwnedFd>,
    root_path: PathBuf,
    journal: Option<Journal>,
}

impl LiveMounts {
    /// Mounts that journal each mount point they create in `journal` (a chroot used in
    /// place; see [`JournalEntry`]), if one is given.
    pub fn journaled(journal: Option<PathBuf>) -> LiveMounts {
        LiveMounts {
            journal: journal.map(|path| Journal { path, file: None }),
            ..LiveMounts::default()
        }
    }

    fn journal(&mut self, entry: impl FnOnce() -> JournalEntry) {
        if let Some(j) = &mut self.journal {
            j.write(&entry());
        }
    }

    fn root(&self) -> &OwnedFd {
        self.root.as_ref().expect("prepare_root runs first")
    }

    fn resolve(&self, target: &ChrootPath) -> SysResult<OwnedFd> {
        sys::resolve_in_root(self.root().as_fd(), target.relative()).map_err(|errno| SysError {
            op: "resolve inside the chroot",
            what: target.to_string(),
            errno,
        })
    }
}

/// The mount points at or below `root`'s /proc, /sys, /dev and /run, deepest first:
/// what a recursive bind of the chroot brings of the host's system trees.
fn host_system_mounts(mount_points: &[PathBuf], root: &Path) -> Vec<PathBuf> {
    let tops: Vec<PathBuf> = ["proc", "sys", "dev", "run"]
        .iter()
        .map(|d| root.join(d))
        .collect();
    let mut found: Vec<PathBuf> = mount_points
        .iter()
        .filter(|m| tops.iter().any(|t| m.starts_with(t)))
        .cloned()
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    found.dedup();
    found
}

fn overlay_safe(p: &Path) -> bool {
    !p.as_os_str()
        .as_encoded_bytes()
        .iter()
        .any(|b| b",:\\".contains(b))
}

impl MountSys for LiveMounts {
    fn isolate(&mut self) -> SysResult<()> {
        sys::make_root_slave()
    }

    fn prepare_root(&mut self, root: &Root) -> SysResult<()> {
        let (path, handle) = match root {
            Root::Bind { path } => {
                sys::bind_onto_itself(path)?;
                // The bind is recursive, so mounts the host has on the chroot's
                // /proc, /sys, /dev or /run (a chroot session that was never cleaned
                // up) came along; they go, in this namespace only (SPEC §4.2). Most
                // chroots have no mount below them at all, which one call tells.
                let bound = sys::open_path(path)?;
                if sys::has_submounts(bound.as_fd()) != Some(false) {
                    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
                    for m in host_system_mounts(&sys::own_mount_points()?, &real) {
                        while sys::unmount_nofollow(&m).is_ok() {}
                    }
                }
                (path.clone(), bound)
            }
            Root::Overlay {
                lower,
                upper,
                work,
                volatile,
            } => {
                // The overlay goes over the chroot itself, in this namespace only:
                // overlayfs takes hold of its lower layer before covering it, and no
                // extra mount point has to be made and removed per run.
                for p in [lower, upper, work] {
                    if !overlay_safe(p) {
                        return Err(SysError {
                            op: "mount the overlay with",
                            what: format!(
                                "{} (overlayfs cannot take `,`, `:` or `\\` in a path)",
                                p.display()
                            ),
                            errno: Errno::EINVAL,
                        });
                    }
                }
                // A kernel without `volatile` (before 5.10) refuses it; the layer is then
                // synced on unmount as any other.
                if !(*volatile && sys::mount_overlay(lower, upper, work, lower, true).is_ok()) {
                    sys::mount_overlay(lower, upper, work, lower, false)?;
                }
                (lower.clone(), sys::open_path(lower)?)
            }
        };
        self.root = Some(handle);
        self.root_path = path;
        Ok(())
    }

    fn exists(&mut self, target: &ChrootPath) -> SysResult<bool> {
        match sys::resolve_in_root(self.root().as_fd(), target.relative()) {
            Ok(_) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(errno) => Err(SysError {
                op: "resolve inside the chroot",
                what: target.to_string(),
                errno,
            }),
        }
    }

    fn make_mount_point(
        &mut self,
        target: &ChrootPath,
        dir: bool,
        journaled: bool,
        created: &mut Vec<Created>,
    ) -> SysResult<()> {
        let mut parent = self.resolve(&ChrootPath::root())?;
        let mut so_far = ChrootPath::root();
        let parts: Vec<&str> = target.components().collect();
        for (i, name) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            so_far = so_far.join(name).map_err(|_| SysError {
                op: "resolve inside the chroot",
                what: target.to_string(),
                errno: Errno::EINVAL,
            })?;
            match sys::resolve_in_root(self.root().as_fd(), so_far.relative()) {
                Ok(fd) => {
                    if !last && !sys::is_dir(fd.as_fd()) {
                        return Err(SysError {
                            op: "create mount point",
                            what: format!("{target} ({so_far} is not a directory)"),
                            errno: Errno::ENOTDIR,
                        });
                    }
                    parent = fd;
                }
                Err(Errno::ENOENT) => {
                    // `so_far` may be a dangling symlink: resolving its parent inside the
                    // root and creating the single name there cannot leave the root.
                    let file = last && !dir;
                    if journaled {
                        self.journal(|| JournalEntry::pending(&so_far, !file));
                    }
                    if file {
                        sys::create_file_at(parent.as_fd(), name, so_far.as_str())?;
                    } else {
                        sys::mkdir_at(parent.as_fd(), name, so_far.as_str())?;
                    }
                    parent = self.resolve(&so_far)?;
                    let id = Ident::of(parent.as_fd());
                    if journaled {
                        self.journal(|| JournalEntry::made(&so_far, !file, id));
                    }
                    created.push(if file {
                        Created::File(so_far.clone(), id)
                    } else {
                        Created::Dir(so_far.clone(), id)
                    });
                }
                Err(errno) => {
                    return Err(SysError {
                        op: "resolve inside the chroot",
                        what: so_far.to_string(),
                        errno,
                    })
                }
            }
        }
        Ok(())
    }

    fn source_is_dir(&mut self, source: &Path) -> bool {
        sys::host_is_dir(source)
    }

    fn mount(&mut self, op: &MountOp) -> SysResult<()> {
        let target = self.resolve(&op.target)?;
        let what = op.target.as_str();
        let mut flags = MsFlags::empty();
        flags.set(MsFlags::MS_NOSUID, op.nosuid);
        flags.set(MsFlags::MS_NODEV, op.nodev);
        flags.set(MsFlags::MS_NOEXEC, op.noexec);
        flags.set(MsFlags::MS_RDONLY, op.readonly);
        let fd = target.as_fd();
        match &op.kind {
            MountKind::Proc => sys::mount_fs_at(fd, "proc", flags, None, what),
            MountKind::Sysfs => {
                sys::mount_fs_at(fd, "sysfs", flags | MsFlags::MS_RDONLY, None, what)
            }
            MountKind::Dev { .. } => {
                sys::mount_fs_at(fd, "tmpfs", flags, Some("mode=755,size=4m"), what)
            }
            // A new instance with its own ptmx: the build never sees the host's ptys
            // (devpts documentation, "newinstance").
            MountKind::Devpts => sys::mount_fs_at(
                fd,
                "devpts",
                flags,
                Some("newinstance,ptmxmode=0666,mode=620"),
                what,
            ),
            MountKind::Tmpfs { size, mode } => {
                let mut data = format!("mode={mode:o}");
                if let Some(s) = size {
                    data.push_str(&format!(",size={}", s.mount_option()));
                }
                sys::mount_fs_at(fd, "tmpfs", flags, Some(&data), what)
            }
            MountKind::Bind { source } => {
                let mut attrs = 0;
                for (on, a) in [
                    (op.readonly, sys::ATTR_RDONLY),
                    (op.nosuid, sys::ATTR_NOSUID),
                    (op.nodev, sys::ATTR_NODEV),
                    (op.noexec, sys::ATTR_NOEXEC),
                ] {
                    if on {
                        attrs |= a;
                    }
                }
                sys::bind_tree_at(source, fd, attrs, what)
            }
        }
    }

    fn populate_dev(
        &mut self,
        target: &ChrootPath,
        nodes: &[DeviceNode],
        links: &[DevLink],
    ) -> SysResult<()> {
        let dir = self.resolve(target)?;
        // The fd above is O_PATH; mknodat and symlinkat accept it as a directory.
        for n in nodes {
            sys::mknod_at(dir.as_fd(), &n.name, n.major, n.minor, n.mode)?;
        }
        for l in links {
            sys::symlink_at(dir.as_fd(), &l.name, &l.to)?;
        }
        Ok(())
    }

    fn pivot(&mut self) -> SysResult<()> {
        sys::pivot_into(self.root().as_fd())
    }

    fn set_hostname(&mut self, name: &str) -> SysResult<()> {
        sys::set_hostname(name)
    }

    fn remove_made(&mut self, created: &[Created]) -> Vec<String> {
        let mut left = Vec::new();
        let Some(root) = self.root.as_ref() else {
            return created.iter().map(|c| format!("{c:?}")).collect();
        };
        for c in created.iter().rev() {
            let (path, dir, id) = match c {
                Created::Dir(p, id) => (p, true, id),
                Created::File(p, id) => (p, false, id),
            };
            // What this setup mounted there is ours, in this namespace only. Nothing of
            // the build has run yet, so the path is still the one bldr made.
            while let Ok(fd) = sys::resolve_in_root(root.as_fd(), path.relative()) {
                if sys::unmount_at(fd.as_fd()).is_err() {
                    break;
                }
            }
            let (parent, name) = path
                .relative()
                .rsplit_once('/')
                .unwrap_or(("", path.relative()));
            // Only the very entry bldr made goes (see `remove_created`).
            let still_ours = sys::resolve_in_root(root.as_fd(), path.relative())
                .map(|fd| Ident::of(fd.as_fd()) == *id && *id != Ident::default());
            let removed = match still_ours {
                Ok(true) => sys::resolve_in_root(root.as_fd(), parent)
                    .and_then(|p| sys::remove_at(p.as_fd(), name, dir)),
                Ok(false) => Err(Errno::ESTALE),
                Err(e) => Err(e),
            };
            if let Err(e) = removed {
                if e != Errno::ENOENT {
                    left.push(format!("{path}: {}", e.desc()));
                }
            }
        }
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{build, PlanInputs};
    use crate::profile::layer::parse_layer;
    use crate::profile::{validate, Context};

    /// Records the calls; pretends `existing` paths exist in the root.
    struct Recorder {
        calls: Vec<String>,
        existing: Vec<&'static str>,
        /// A target whose mount fails.
        failing: Option<&'static str>,
    }

    impl MountSys for Recorder {
        fn isolate(&mut self) -> SysResult<()> {
            self.calls.push("isolate".into());
            Ok(())
        }
        fn prepare_root(&mut self, root: &Root) -> SysResult<()> {
            self.calls.push(format!("root {root:?}"));
            Ok(())
        }
        fn exists(&mut self, t: &ChrootPath) -> SysResult<bool> {
            Ok(self.existing.contains(&t.as_str()))
        }
        fn make_mount_point(
            &mut self,
            t: &ChrootPath,
            dir: bool,
            _journaled: bool,
            created: &mut Vec<Created>,
        ) -> SysResult<()> {
            if self.existing.contains(&t.as_str()) {
                return Ok(());
            }
            self.calls.push(format!("mkpoint {t} dir={dir}"));
            created.push(if dir {
                Created::Dir(t.clone(), Ident::default())
            } else {
                Created::File(t.clone(), Ident::default())
            });
            Ok(())
        }
        fn source_is_dir(&mut self, s: &Path) -> bool {
            !s.ends_with("file")
        }
        fn mount(&mut self, op: &MountOp) -> SysResult<()> {
            let kind = match &op.kind {
                MountKind::Bind { source } => format!("bind {}", source.display()),
                other => format!("{other:?}")
                    .split([' ', '{'])
                    .next()
                    .unwrap_or("")
                    .to_lowercase(),
            };
            self.calls
                .push(format!("mount {} {kind} ro={}", op.target, op.readonly));
            if self.failing == Some(op.target.as_str()) {
                return Err(SysError {
                    op: "mount",
                    what: op.target.to_string(),
                    errno: Errno::ENOTDIR,
                });
            }
            Ok(())
        }
        fn populate_dev(
            &mut self,
            t: &ChrootPath,
            n: &[DeviceNode],
            _: &[DevLink],
        ) -> SysResult<()> {
            self.calls.push(format!("populate {t} {}", n.len()));
            Ok(())
        }
        fn pivot(&mut self) -> SysResult<()> {
            self.calls.push("pivot".into());
            Ok(())
        }
        fn set_hostname(&mut self, n: &str) -> SysResult<()> {
            self.calls.push(format!("hostname {n}"));
            Ok(())
        }
        fn remove_made(&mut self, created: &[Created]) -> Vec<String> {
            for c in created.iter().rev() {
                self.calls.push(format!("remove {c:?}"));
            }
            vec![]
        }
    }

    fn run(yaml: &str, existing: Vec<&'static str>) -> (Vec<String>, Vec<Created>) {
        let (calls, created) = run_failing(yaml, existing, None);
        (calls, created.unwrap())
    }

    fn run_failing(
        yaml: &str,
        existing: Vec<&'static str>,
        failing: Option<&'static str>,
    ) -> (Vec<String>, SysResult<Vec<Created>>) {
        let layer = parse_layer(yaml.as_bytes(), Path::new("/p/t.yaml")).unwrap();
        let ctx = Context {
            name: "t".into(),
            file: "/p/t.yaml".into(),
            files: vec![],
            home: None,
            cwd: "/".into(),
        };
        let plan = build(&validate(&layer, &ctx).unwrap(), &PlanInputs::default());
        let mut r = Recorder {
            calls: vec![],
            existing,
            failing,
        };
        let created = apply(&plan, &mut r);
        (r.calls, created)
    }

    const BASE: &[&str] = &["/proc", "/sys", "/dev", "/etc/resolv.conf"];

    #[test]
    fn isolation_comes_before_any_mount_and_pivot_after_all() {
        let (calls, _) = run(
            "chroot: /r\ncommands: [true]\nshared: [/src]\n",
            BASE.to_vec(),
        );
        assert_eq!(calls[0], "isolate");
        assert!(calls[1].starts_with("root Bind"));
        let pivot = calls.iter().position(|c| c == "pivot").unwrap();
        assert!(
            calls[..pivot]
                .iter()
                .filter(|c| c.starts_with("mount"))
                .count()
                >= 6
        );
        assert!(calls[pivot + 1..].iter().all(|c| !c.starts_with("mount")));
        assert_eq!(calls.last().unwrap(), "hostname t");
    }

    #[test]
    fn dev_is_populated_right_after_its_tmpfs_and_before_devpts() {
        let (calls, _) = run("chroot: /r\ncommands: [true]\n", BASE.to_vec());
        let dev = calls
            .iter()
            .position(|c| c.starts_with("mount /dev dev"))
            .unwrap();
        assert_eq!(calls[dev + 1], "populate /dev 6");
        assert!(calls[dev + 2..]
            .iter()
            .any(|c| c.starts_with("mount /dev/pts devpts")));
    }

    #[test]
    fn resolv_conf_is_bound_only_when_the_chroot_has_one() {
        let (calls, _) = run(
            "chroot: /r\ncommands: [true]\n",
            vec!["/proc", "/sys", "/dev"],
        );
        assert!(
            !calls.iter().any(|c| c.contains("resolv.conf")),
            "{calls:?}"
        );
        let (calls, _) = run("chroot: /r\ncommands: [true]\n", BASE.to_vec());
        assert!(
            calls
                .iter()
                .any(|c| c == "mount /etc/resolv.conf bind /etc/resolv.conf ro=true"),
            "{calls:?}"
        );
    }

    #[test]
    fn missing_mount_points_are_created_and_reported() {
        let (calls, created) = run("chroot: /r\ncommands: [true]\nshared: [{source: /h/file, target: /etc/x.conf}]\ntmpfs: [/var/tmp/portage]\n", BASE.to_vec());
        assert!(calls.contains(&"mkpoint /etc/x.conf dir=false".to_string()));
        assert!(created.contains(&Created::Dir(
            ChrootPath::parse("/var/tmp/portage").unwrap(),
            Ident::default()
        )));
        assert!(created.contains(&Created::File(
            ChrootPath::parse("/etc/x.conf").unwrap(),
            Ident::default()
        )));
    }

    /// /dev/pts and /dev/shm go into bldr's own /dev tmpfs, which dies with the
    /// namespace: removing them after the run was work (two umount2 each) for nothing.
    #[test]
    fn mount_points_inside_a_fresh_filesystem_are_not_recorded() {
        let (_, created) = run(
            "chroot: /r\ncommands: [true]\ntmpfs: [/var/tmp/portage]\nshared: [{source: /s, target: /var/tmp/portage/distfiles}, {source: /t, target: /opt/t}]\n",
            vec!["/proc", "/sys", "/dev"],
        );
        let paths: Vec<&str> = created.iter().map(|c| c.path().as_str()).collect();
        assert_eq!(paths, ["/opt/t", "/var/tmp/portage"]);
    }

    /// Regression: a setup that failed half-way left the mount points it had made in
    /// the chroot.
    #[test]
    fn a_failed_setup_removes_the_mount_points_it_made_innermost_first() {
        let mut existing = BASE.to_vec();
        existing.extend(["/dev/pts", "/dev/shm", "/etc/x/passwd"]);
        let (calls, result) = run_failing(
            "chroot: /r\ncommands: [true]\nshared: [{source: /s, target: /opt/a}, {source: /t, target: /opt/a/b}]\ntmpfs: [/etc/x/passwd]\n",
            existing,
            Some("/etc/x/passwd"),
        );
        assert!(result.is_err());
        let tail: Vec<&str> = calls
            .iter()
            .skip_while(|c| !c.starts_with("mount /etc/x/passwd"))
            .skip(1)
            .map(String::as_str)
            .collect();
        assert_eq!(
            tail,
            [
                "remove Dir(ChrootPath(\"/opt/a/b\"), Ident { dev: 0, ino: 0 })",
                "remove Dir(ChrootPath(\"/opt/a\"), Ident { dev: 0, ino: 0 })"
            ]
        );
        assert!(!calls.contains(&"pivot".to_string()), "{calls:?}");
    }

    #[test]
    fn host_mounts_on_the_chroot_s_system_trees_are_found_deepest_first() {
        let points: Vec<PathBuf> = [
            "/",
            "/r",
            "/r/proc",
            "/r/dev",
            "/r/dev/pts",
            "/r/dev/pts",
            "/r/run",
            "/r/devices",
            "/r/var/cache",
            "/proc",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        let found = host_system_mounts(&points, Path::new("/r"));
        assert_eq!(found[0], Path::new("/r/dev/pts"));
        let mut rest: Vec<&Path> = found[1..].iter().map(PathBuf::as_path).collect();
        rest.sort();
        assert_eq!(
            rest,
            [
                Path::new("/r/dev"),
                Path::new("/r/proc"),
                Path::new("/r/run")
            ]
        );
    }

    #[test]
    fn readonly_shares_are_mounted_readonly() {
        let (calls, _) = run(
            "chroot: /r\ncommands: [true]\nshared: [{source: /src, readonly: true}]\n",
            BASE.to_vec(),
        );
        assert!(
            calls.contains(&"mount /src bind /src ro=true".to_string()),
            "{calls:?}"
        );
    }
}
