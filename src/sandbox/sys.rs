//! Thin wrappers over the syscalls the sandbox uses. Each does one call and returns a
//! [`SysError`] naming the operation and the path. Comments cite the man page where the
//! reason for a flag is not obvious. Nothing here decides anything.

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag};
use std::ffi::CString;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// A failed syscall: what was attempted, on what, and the kernel's answer.
#[derive(Debug, Clone)]
pub struct SysError {
    pub op: &'static str,
    pub what: String,
    pub errno: Errno,
}

impl fmt::Display for SysError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.op, self.what, self.errno.desc())?;
        let hint = match self.errno {
            Errno::EPERM if !super::is_root() => Some("run as root: sudo bldr ..."),
            Errno::EPERM => Some("the kernel or a security module refused it; `bldr check` lists what this host supports"),
            Errno::ENOSYS => Some("the kernel is too old for this call; `bldr check` says what is missing"),
            Errno::EROFS => Some("the mount point must be created in a read-only tree; create it there, or share the tree writable"),
            _ => None,
        };
        if let Some(h) = hint {
            write!(f, " ({h})")?;
        }
        Ok(())
    }
}

impl std::error::Error for SysError {}

pub type SysResult<T> = Result<T, SysError>;

fn err(op: &'static str, what: impl fmt::Display) -> impl FnOnce(Errno) -> SysError {
    let what = what.to_string();
    move |errno| SysError { op, what, errno }
}

/// `mount(NULL, "/", NULL, MS_REC|MS_SLAVE)`: from here on no mount event of ours can
/// propagate to the host, even when the host's `/` is shared (systemd). mount_namespaces(7).
pub fn make_root_slave() -> SysResult<()> {
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(err("make / recursively slave", "/"))
}

/// Binds `path` onto itself, recursively, so that it is a mount point (pivot_root(2)
/// requires one) private to this namespace.
pub fn bind_onto_itself(path: &Path) -> SysResult<()> {
    nix::mount::mount(
        Some(path),
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(err("bind the chroot onto itself", path.display()))
}

/// Mounts an overlay at `merged` (which may be `lower` itself). The paths must not contain `,` `:` or `\`, which the
/// overlay option syntax gives meaning to; the caller checks.
pub fn mount_overlay(
    lower: &Path,
    upper: &Path,
    work: &Path,
    merged: &Path,
    volatile: bool,
) -> SysResult<()> {
    let data = format!(
        "lowerdir={},upperdir={},workdir={}{}",
        lower.display(),
        upper.display(),
        work.display(),
        if volatile { ",volatile" } else { "" }
    );
    nix::mount::mount(
        Some("overlay"),
        merged,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(err("mount the overlay on", merged.display()))
}

/// Opens a directory as an `O_PATH` handle.
pub fn open_path(path: &Path) -> SysResult<OwnedFd> {
    nix::fcntl::open(
        path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(err("open", path.display()))
}

/// Opens a directory for reading and writing entries below it (`O_DIRECTORY`).
pub fn open_dir(path: &Path) -> SysResult<OwnedFd> {
    nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(err("open", path.display()))
}

/// Resolves `rel` below `root` as if `root` were `/`: `..` and absolute symlinks stay
/// inside (openat2(2) `RESOLVE_IN_ROOT`), and /proc magic links are refused. Returns the
/// raw errno so the caller can tell a missing entry from a failure.
pub fn resolve_in_root(root: BorrowedFd<'_>, rel: &str) -> Result<OwnedFd, Errno> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let rel = if rel.is_empty() { "." } else { rel };
    nix::fcntl::openat2(root, rel, how)
}

/// Creates directory `name` (one component) in `parent`.
pub fn mkdir_at(parent: BorrowedFd<'_>, name: &str, what: &str) -> SysResult<()> {
    nix::sys::stat::mkdirat(parent, name, Mode::from_bits_truncate(0o755))
        .map_err(err("create mount point", what))
}

/// Creates an empty regular file `name` (one component) in `parent`, never following a
/// symlink and never reusing an existing entry.
pub fn create_file_at(parent: BorrowedFd<'_>, name: &str, what: &str) -> SysResult<()> {
    nix::fcntl::openat(
        parent,
        name,
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )
    .map(drop)
    .map_err(err("create mount point", what))
}

/// True when the handle refers to a directory.
pub fn is_dir(fd: BorrowedFd<'_>) -> bool {
    nix::sys::stat::fstat(fd)
        .is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR)
}

/// True when the host path is a directory (following symlinks, as a bind does).
pub fn host_is_dir(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_dir())
}

fn fd_path(fd: BorrowedFd<'_>) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Mounts a fresh filesystem on the directory `target` (an `O_PATH` handle), through its
/// /proc/self/fd magic link so the path is never resolved again.
pub fn mount_fs_at(
    target: BorrowedFd<'_>,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
    what: &str,
) -> SysResult<()> {
    nix::mount::mount(
        Some(fstype),
        fd_path(target).as_str(),
        Some(fstype),
        flags,
        data,
    )
    .map_err(err("mount", format!("{fstype} on {what}")))
}

fn syscall_result(ret: libc::c_long) -> Result<libc::c_long, Errno> {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

/// Clones the mount tree at `source` (open_tree(2) `OPEN_TREE_CLONE|AT_RECURSIVE`),
/// applies the attributes to every mount in it (mount_setattr(2) `AT_RECURSIVE`: a
/// read-only share is read-only in its sub-mounts too), then attaches it at `target`
/// (move_mount(2)). The tree is detached until the last step, so a failure leaves nothing.
///
/// A read-only tree is also made private. As a slave (what the clone of a mount of a
/// slave `/` is), it would receive the mounts the host makes below `source` later, and
/// those arrive without the attributes, read-write (mount_namespaces(7)).
pub fn bind_tree_at(
    source: &Path,
    target: BorrowedFd<'_>,
    attrs: u64,
    what: &str,
) -> SysResult<()> {
    let csource = CString::new(source.as_os_str().as_encoded_bytes()).map_err(|_| SysError {
        op: "bind",
        what: source.display().to_string(),
        errno: Errno::EINVAL,
    })?;
    // SAFETY: open_tree takes a dirfd, a NUL-terminated path that outlives the call, and
    // flags; it returns a new fd or -1.
    let tree = syscall_result(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            csource.as_ptr(),
            libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_RECURSIVE as libc::c_uint,
        )
    })
    .map_err(err("clone the mount tree of", source.display()))?;
    // SAFETY: open_tree returned a fresh fd that nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as RawFd) };
    let propagation = if attrs & ATTR_RDONLY != 0 {
        PROPAGATION_PRIVATE
    } else {
        0
    };
    if attrs != 0 || propagation != 0 {
        set_attrs_recursive(tree.as_fd(), attrs, propagation, source)?;
    }
    let empty = c"";
    // SAFETY: both fds are valid for the call, both paths are empty NUL-terminated strings,
    // as MOVE_MOUNT_{F,T}_EMPTY_PATH require.
    syscall_result(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            target.as_raw_fd(),
            empty.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH,
        )
    })
    .map_err(err("attach the bind mount on", what))?;
    Ok(())
}

/// mount_setattr(2) with `AT_RECURSIVE` on a mount handle: sets `attrs` and, unless
/// it is 0, the propagation type (`MS_PRIVATE`, `MS_SLAVE`, ...).
fn set_attrs_recursive(
    tree: BorrowedFd<'_>,
    attrs: u64,
    propagation: u64,
    source: &Path,
) -> SysResult<()> {
    let attr = libc::mount_attr {
        attr_set: attrs,
        attr_clr: 0,
        propagation,
        userns_fd: 0,
    };
    let empty = c"";
    // SAFETY: `attr` lives across the call and its size is passed; the path is empty and
    // AT_EMPTY_PATH makes the call act on the fd itself.
    syscall_result(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    })
    .map(drop)
    .map_err(err(
        "set mount attributes (mount_setattr) on",
        source.display(),
    ))
}

/// `MS_PRIVATE` (linux/mount.h), as the u64 that mount_attr's propagation field takes.
const PROPAGATION_PRIVATE: u64 = 1 << 18;

pub const ATTR_RDONLY: u64 = libc::MOUNT_ATTR_RDONLY;
pub const ATTR_NOSUID: u64 = libc::MOUNT_ATTR_NOSUID;
pub const ATTR_NODEV: u64 = libc::MOUNT_ATTR_NODEV;
pub const ATTR_NOEXEC: u64 = libc::MOUNT_ATTR_NOEXEC;

/// Creates a character device node in `dir`.
pub fn mknod_at(
    dir: BorrowedFd<'_>,
    name: &str,
    major: u32,
    minor: u32,
    mode: u32,
) -> SysResult<()> {
    nix::sys::stat::mknodat(
        dir,
        name,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(mode),
        nix::sys::stat::makedev(major.into(), minor.into()),
    )
    .map_err(err("create device node", format!("/dev/{name}")))
}

pub fn symlink_at(dir: BorrowedFd<'_>, name: &str, to: &str) -> SysResult<()> {
    nix::unistd::symlinkat(to, dir, name).map_err(err("create symlink", format!("/dev/{name}")))
}

/// Makes `root` the root of this mount namespace and detaches the old root entirely.
/// `pivot_root(".", ".")` stacks the old root on top of the new one, and the lazy unmount
/// of "." then removes it, so no directory for the old root is needed in the chroot
/// (pivot_root(2), NOTES).
pub fn pivot_into(root: BorrowedFd<'_>) -> SysResult<()> {
    nix::unistd::fchdir(root).map_err(err("enter", "the new root"))?;
    nix::unistd::pivot_root(".", ".").map_err(err("pivot_root into", "the chroot"))?;
    nix::mount::umount2(".", MntFlags::MNT_DETACH).map_err(err("detach", "the old root"))?;
    nix::unistd::chdir("/").map_err(err("enter", "/"))
}

/// Lets go of the build's root, for init once the build is over: the whole mount tree is
/// detached (umount2(2) `MNT_DETACH` on `/`, which a namespace's root allows) and init's
/// root and working directory move into an empty tmpfs that is attached nowhere
/// (fsopen(2), fsmount(2)). With no mount and no process left on it, the kernel frees
/// the tree before the last call returns, not when init exits: an overlay's layer is
/// then no filesystem's any more. Every process of the build must be dead already.
pub fn release_root() -> SysResult<()> {
    nix::mount::umount2("/", MntFlags::MNT_DETACH).map_err(err("detach", "the build's root"))?;
    // SAFETY: fsopen takes a NUL-terminated name that outlives the call and flags; it
    // returns a new fd or -1.
    let fs = syscall_result(unsafe {
        libc::syscall(libc::SYS_fsopen, c"tmpfs".as_ptr(), libc::FSOPEN_CLOEXEC)
    })
    .map_err(err("open a filesystem context for", "an empty tmpfs"))?;
    // SAFETY: fsopen returned a fresh fd that nothing else owns.
    let fs = unsafe { OwnedFd::from_raw_fd(fs as RawFd) };
    // SAFETY: FSCONFIG_CMD_CREATE takes no key, value or aux; the fd is valid.
    syscall_result(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            libc::FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    })
    .map_err(err("create", "an empty tmpfs"))?;
    // SAFETY: the fd is a created filesystem context; fsmount returns a new fd or -1.
    let mnt = syscall_result(unsafe {
        libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), libc::FSMOUNT_CLOEXEC, 0)
    })
    .map_err(err("mount", "an empty tmpfs"))?;
    // SAFETY: fsmount returned a fresh fd that nothing else owns.
    let mnt = unsafe { OwnedFd::from_raw_fd(mnt as RawFd) };
    nix::unistd::fchdir(&mnt).map_err(err("enter", "an empty tmpfs"))?;
    nix::unistd::chroot(".").map_err(err("chroot into", "an empty tmpfs"))?;
    // The handle stays open until init exits: closing it now would tear down the
    // tmpfs's own (anonymous) mount namespace, which waits for an RCU grace period
    // that the caller need not wait for.
    let _ = std::os::fd::IntoRawFd::into_raw_fd(mnt);
    Ok(())
}

pub fn set_hostname(name: &str) -> SysResult<()> {
    nix::unistd::sethostname(name).map_err(err("set hostname", name))
}

/// Lazily unmounts `path` (inside the current root).
pub fn unmount(path: &str) -> Result<(), Errno> {
    nix::mount::umount2(path, MntFlags::MNT_DETACH)
}

/// Lazily unmounts the mount on `path`, never following a final symlink
/// (umount2(2) `MNT_DETACH|UMOUNT_NOFOLLOW`).
pub fn unmount_nofollow(path: &Path) -> Result<(), Errno> {
    nix::mount::umount2(path, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW)
}

/// Whether any mount sits below the mount whose root `dir` is, by listmount(2) (Linux
/// 6.8): one call where reading /proc/self/mountinfo means the kernel printing every
/// mount of the namespace. `None` when the kernel cannot say (older than 6.8): the
/// caller reads mountinfo then.
pub fn has_submounts(dir: BorrowedFd<'_>) -> Option<bool> {
    // statx(2) STATX_MNT_ID_UNIQUE and listmount(2)'s request, from linux/stat.h and
    // linux/mount.h; the libc crate has neither yet. 458 is listmount's number in the
    // x86_64 table and the generic one alike.
    const STATX_MNT_ID_UNIQUE: u32 = 0x4000;
    const SYS_LISTMOUNT: libc::c_long = 458;
    #[repr(C)]
    struct MntIdReq {
        size: u32,
        spare: u32,
        mnt_id: u64,
        param: u64,
    }
    // SAFETY: statx writes into `st`, a plain struct of integers; the path is empty and
    // AT_EMPTY_PATH makes the call act on the fd itself.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    let r = unsafe {
        libc::statx(
            dir.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            STATX_MNT_ID_UNIQUE,
            &mut st,
        )
    };
    if r != 0 || st.stx_mask & STATX_MNT_ID_UNIQUE == 0 {
        return None;
    }
    let req = MntIdReq {
        size: std::mem::size_of::<MntIdReq>() as u32,
        spare: 0,
        mnt_id: st.stx_mnt_id,
        param: 0,
    };
    let mut first = 0u64;
    // SAFETY: `req` lives across the call and says its own size; the kernel writes at
    // most one mount id into `first`.
    let n = syscall_result(unsafe {
        libc::syscall(
            SYS_LISTMOUNT,
            &req as *const MntIdReq,
            &mut first as *mut u64,
            1usize,
            0u32,
        )
    })
    .ok()?;
    Some(n > 0)
}

/// The mount points of this process's mount namespace, from /proc/self/mountinfo, with
/// its octal escapes (`\040` for a space) decoded (proc(5)).
pub fn own_mount_points() -> SysResult<Vec<std::path::PathBuf>> {
    use std::io::Read;
    use std::os::unix::ffi::OsStringExt;
    // One 64 KiB read, not std::fs::read's growth from 32 bytes (procfs says size 0).
    let mut text = Vec::with_capacity(1 << 16);
    std::fs::File::open("/proc/self/mountinfo")
        .and_then(|mut f| f.read_to_end(&mut text))
        .map_err(|e| SysError {
            op: "read",
            what: "/proc/self/mountinfo".into(),
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        })?;
    Ok(text
        .split(|b| *b == b'\n')
        .filter_map(|line| line.split(|b| *b == b' ').nth(4))
        .map(|field| {
            let mut out = Vec::with_capacity(field.len());
            let mut i = 0;
            while i < field.len() {
                let oct = field
                    .get(i + 1..i + 4)
                    .filter(|o| o.iter().all(|d| (b'0'..=b'7').contains(d)));
                match (field[i], oct) {
                    (b'\\', Some(o)) => {
                        out.push(o.iter().fold(0u8, |n, d| n.wrapping_mul(8) + (d - b'0')));
                        i += 4;
                    }
                    (b, _) => {
                        out.push(b);
                        i += 1;
                    }
                }
            }
            std::path::PathBuf::from(std::ffi::OsString::from_vec(out))
        })
        .collect())
}

/// Lazily unmounts the mount whose root `fd` is, through its /proc/self/fd link, so the
/// path is never resolved again. Fails (EINVAL) when `fd` is not the root of a mount.
pub fn unmount_at(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    nix::mount::umount2(fd_path(fd).as_str(), MntFlags::MNT_DETACH)
}

/// Removes the entry `name` (one component) of `parent`: an empty directory when
/// `dir`, else a non-directory (unlinkat(2), which never follows a final symlink).
pub fn remove_at(parent: BorrowedFd<'_>, name: &str, dir: bool) -> Result<(), Errno> {
    let flag = if dir {
        nix::unistd::UnlinkatFlags::RemoveDir
    } else {
        nix::unistd::UnlinkatFlags::NoRemoveDir
    };
    nix::unistd::unlinkat(parent, name, flag)
}

/// The inode of one of this process's namespaces (`/proc/self/ns/NAME`).
pub fn namespace_inode(name: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/self/ns/{name}"))
        .map(|m| m.ino())
        .unwrap_or(0)
}

/// Starts bldr's sandbox: `exe` with `args` and an empty environment, with `stdio` as its
/// descriptors 0, 1 and 2 and no other, as the first process of a new PID namespace, so
/// that what it execs is that namespace's PID 1 (pid_namespaces(7)). Returns its pid as
/// this process sees it.
///
/// The child is made the way posix_spawn(3) makes one, by clone(2) with `CLONE_VM |
/// CLONE_VFORK`: it shares this process's memory, this thread waits until it has exec'd,
/// and between the clone and the exec it only moves descriptors and calls execve, both
/// async-signal-safe, so this is sound in a process with threads. Every signal is
/// blocked across the clone, so that no handler of this process runs in the child. The
/// other namespaces are made by the new process itself (`init::main`), which refuses to
/// run as anything but PID 1.
pub fn spawn_sandbox(
    exe: &Path,
    args: &[&str],
    stdio: [BorrowedFd<'_>; 3],
) -> Result<nix::unistd::Pid, Errno> {
    use std::os::unix::ffi::OsStrExt;
    use std::sync::atomic::{AtomicI32, Ordering};
    let path = CString::new(exe.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
    let mut owned = vec![path.clone()];
    for a in args {
        owned.push(CString::new(*a).map_err(|_| Errno::EINVAL)?);
    }
    let mut argv: Vec<*const libc::c_char> = owned.iter().map(|c| c.as_ptr()).collect();
    argv.push(std::ptr::null());
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let fds = stdio.map(|f| f.as_raw_fd());
    // The child's errno, should its exec fail; it shares our memory.
    let failed = AtomicI32::new(0);
    let mut stack = vec![0u8; 64 * 1024];
    let child = || -> isize {
        for (target, &fd) in fds.iter().enumerate() {
            // dup2 or fcntl, and errno on failure: async-signal-safe, no allocation.
            if let Err(e) = dup_onto(fd, target as RawFd) {
                failed.store(e.raw_os_error().unwrap_or(libc::EIO), Ordering::SeqCst);
                return 127;
            }
        }
        // SAFETY: argv and envp are null-terminated arrays of C strings that outlive the
        // call (this thread of the parent waits for the exec).
        unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        failed.store(Errno::last_raw(), Ordering::SeqCst);
        127
    };
    let all = nix::sys::signal::SigSet::all();
    let mut old = nix::sys::signal::SigSet::empty();
    nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&all),
        Some(&mut old),
    )?;
    // SAFETY: see above: the child runs `child` on its own stack, touches nothing of ours
    // but `failed`, and ends in exec or in a return, which exits it (clone(2), glibc).
    let spawned = unsafe {
        nix::sched::clone(
            Box::new(child),
            &mut stack,
            nix::sched::CloneFlags::CLONE_VM
                | nix::sched::CloneFlags::CLONE_VFORK
                | nix::sched::CloneFlags::CLONE_NEWPID,
            Some(libc::SIGCHLD),
        )
    };
    let _ = nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&old),
        None,
    );
    let pid = spawned?;
    match failed.load(Ordering::SeqCst) {
        0 => Ok(pid),
        errno => {
            let _ = nix::sys::wait::waitpid(pid, None);
            Err(Errno::from_raw(errno))
        }
    }
}

/// Starts `argv` with `envp` by posix_spawn(3): stdin from `stdin`, stdout and stderr to
/// `out`, no other descriptor, a new session, an empty signal mask and every signal at
/// its default action, in `workdir`. glibc's posix_spawn is a vfork:
/// no copy of init's page tables, no copy-on-write faults after it (a fork cost about
/// 0.15 ms per command, perf trace). Any failure (the working directory, the exec) is an
/// `Err`; the caller then takes the fork path, which reports it the usual way.
#[cfg(target_env = "gnu")]
pub fn spawn_command(
    argv: &[CString],
    envp: &[CString],
    stdin: RawFd,
    out: RawFd,
    workdir: &std::ffi::CStr,
) -> Result<nix::unistd::Pid, Errno> {
    use std::ptr::null_mut;
    let ptrs = |v: &[CString]| -> Vec<*mut libc::c_char> {
        v.iter()
            .map(|c| c.as_ptr().cast_mut())
            .chain(std::iter::once(null_mut()))
            .collect()
    };
    let (argv_p, envp_p) = (ptrs(argv), ptrs(envp));
    let check = |r: libc::c_int| {
        if r == 0 {
            Ok(())
        } else {
            Err(Errno::from_raw(r))
        }
    };
    // SAFETY: the file actions and attributes are initialised before use and destroyed
    // after; every pointer handed over (argv, envp, workdir) outlives the call, and the
    // arrays end in NULL as posix_spawn(3) requires.
    unsafe {
        let mut fa: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        let mut at: libc::posix_spawnattr_t = std::mem::zeroed();
        check(libc::posix_spawn_file_actions_init(&mut fa))?;
        if let Err(e) = check(libc::posix_spawnattr_init(&mut at)) {
            libc::posix_spawn_file_actions_destroy(&mut fa);
            return Err(e);
        }
        let result = (|| {
            check(libc::posix_spawn_file_actions_adddup2(&mut fa, stdin, 0))?;
            check(libc::posix_spawn_file_actions_adddup2(&mut fa, out, 1))?;
            check(libc::posix_spawn_file_actions_adddup2(&mut fa, out, 2))?;
            check(libc::posix_spawn_file_actions_addclosefrom_np(&mut fa, 3))?;
            check(libc::posix_spawn_file_actions_addchdir_np(
                &mut fa,
                workdir.as_ptr(),
            ))?;
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            check(libc::posix_spawnattr_setsigmask(&mut at, &empty))?;
            // Every signal back to its default action in the command, glibc's internal
            // 32 and 33 included: its posix_spawn would leave those ignored, and its
            // sigfillset/sigaddset skip them, so their bits are set by hand (the set is
            // an array of words, signal n at bit n-1).
            let mut defaults: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut defaults);
            *(&mut defaults as *mut libc::sigset_t).cast::<u64>() = u64::MAX;
            check(libc::posix_spawnattr_setsigdefault(&mut at, &defaults))?;
            // The constants' integer types differ in libc; the values fit a c_short.
            let flags = (libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF)
                as libc::c_short
                | libc::POSIX_SPAWN_SETSID as libc::c_short;
            check(libc::posix_spawnattr_setflags(
                &mut at,
                flags as libc::c_short,
            ))?;
            let mut pid: libc::pid_t = 0;
            check(libc::posix_spawn(
                &mut pid,
                argv[0].as_ptr(),
                &fa,
                &at,
                argv_p.as_ptr(),
                envp_p.as_ptr(),
            ))?;
            Ok(nix::unistd::Pid::from_raw(pid))
        })();
        libc::posix_spawnattr_destroy(&mut at);
        libc::posix_spawn_file_actions_destroy(&mut fa);
        result
    }
}

/// Sets every signal's action back to the default, except SIGSEGV and SIGBUS (Rust's
/// stack-overflow report) and the two that cannot change. init calls it first: it may
/// start with actions it must not pass on, SIG_IGN for SIGINT and SIGQUIT from a caller
/// that ignores them (a script's background job; bldr starts init before its own
/// handlers exist); an ignored signal survives exec and would reach every process of the
/// build, and a blocked-and-ignored one never reaches init's signalfd. The raw
/// rt_sigaction(2) syscall is used because glibc's sigaction refuses its internal
/// signals.
pub fn reset_signal_actions() {
    // The kernel's struct sigaction (x86_64 and the generic layout: handler, flags,
    // restorer, mask); all zero is SIG_DFL with no flags.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: libc::c_ulong,
        restorer: usize,
        mask: u64,
    }
    let dfl = KernelSigaction {
        handler: 0,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64 {
        if [libc::SIGKILL, libc::SIGSTOP, libc::SIGSEGV, libc::SIGBUS].contains(&sig) {
            continue;
        }
        // SAFETY: installs SIG_DFL, which runs no code of ours; the old action is not
        // asked for (NULL), and 8 is the kernel's sigset size.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &dfl as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            );
        }
    }
}

/// True when one of `signals`, blocked in this thread, is waiting to be taken
/// (sigpending(2)); it stays pending. Cheap enough to ask between every block of a copy.
pub fn signal_pending(signals: &[nix::sys::signal::Signal]) -> bool {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigpending fills the set it is given; it is read only when that succeeded.
    if unsafe { libc::sigpending(set.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: initialised by the successful sigpending above.
    let set = unsafe { set.assume_init() };
    signals
        .iter()
        // SAFETY: sigismember only reads the initialised set.
        .any(|s| unsafe { libc::sigismember(&set, *s as libc::c_int) } == 1)
}

/// Drops `caps` from this process's capability bounding set (prctl(2),
/// PR_CAPBSET_DROP). A capability the kernel does not know (EINVAL) is skipped: there is
/// nothing to drop.
pub fn drop_from_bounding_set(caps: &[i32]) -> Result<(), Errno> {
    for cap in caps {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, *cap as libc::c_ulong, 0, 0, 0) } < 0 {
            let e = Errno::last();
            if e != Errno::EINVAL {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// True when the mount table behind `mountinfo`, an open /proc/PID/mountinfo, has changed
/// since it was opened: the file then polls POLLPRI (proc(5)). A poll that fails says
/// "changed", so the caller compares the tables.
pub fn mount_table_changed(mountinfo: BorrowedFd<'_>) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(mountinfo, PollFlags::POLLPRI)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(_) => fds[0]
            .revents()
            .is_none_or(|r| r.intersects(PollFlags::POLLPRI | PollFlags::POLLERR)),
        Err(_) => true,
    }
}

/// Sets or clears close-on-exec on `fd` (fcntl(2), F_SETFD).
pub fn set_cloexec(fd: RawFd, on: bool) -> std::io::Result<()> {
    let flags = if on { libc::FD_CLOEXEC } else { 0 };
    // SAFETY: F_SETFD only changes the descriptor's flags.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Makes `to` a copy of `from` (dup2(2)); the copy is not close-on-exec.
pub fn dup_onto(from: RawFd, to: RawFd) -> std::io::Result<()> {
    if from == to {
        return set_cloexec(to, false);
    }
    // SAFETY: dup2 replaces `to`, which the caller is discarding anyway.
    if unsafe { libc::dup2(from, to) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Closes every descriptor from `first` up (close_range(2)).
pub fn close_from(first: u32) {
    // SAFETY: close_range only closes descriptors; callers own everything at or above
    // `first` and keep no Rust handles to them.
    unsafe {
        libc::close_range(first, u32::MAX, 0);
    }
}

/// Brings the loopback device of the current network namespace up (netdevice(7)).
pub fn loopback_up() -> SysResult<()> {
    let fail = err("bring up", "lo");
    // SAFETY: socket() has no memory arguments.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(fail(Errno::last()));
    }
    // SAFETY: the fd was just created and is owned here.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads into the ifreq we own.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(fail(Errno::last()));
    }
    // SAFETY: the flags member of the union is the one SIOCGIFFLAGS filled.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS reads the ifreq we own.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(fail(Errno::last()));
    }
    Ok(())
}

/// Closes one descriptor this process owns and holds no Rust handle to.
pub fn close_fd(fd: RawFd) {
    // SAFETY: the caller owns `fd` and nothing else refers to it.
    unsafe {
        libc::close(fd);
    }
}

/// Sends all of `bytes` on a stream socket, with `fd` (if any) riding on the first
/// segment as SCM_RIGHTS (unix(7)).
pub fn send_with_fd(
    sock: BorrowedFd<'_>,
    bytes: &[u8],
    fd: Option<BorrowedFd<'_>>,
) -> Result<(), Errno> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let fds: Vec<RawFd> = fd.iter().map(|f| f.as_raw_fd()).collect();
    let cmsgs: Vec<ControlMessage<'_>> = if fds.is_empty() {
        vec![]
    } else {
        vec![ControlMessage::ScmRights(&fds)]
    };
    let mut sent = 0;
    while sent < bytes.len() {
        let iov = [std::io::IoSlice::new(&bytes[sent..])];
        let extra = if sent == 0 { &cmsgs[..] } else { &[] };
        match sendmsg::<()>(sock.as_raw_fd(), &iov, extra, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(n) => sent += n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One recvmsg(2) into `buf`, keeping the descriptors that came along (SCM_RIGHTS,
/// close-on-exec) in `fds`; an interrupted call is retried. Returns the bytes read, 0 at
/// end of stream.
pub fn recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> Result<usize, Errno> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    loop {
        let mut space = nix::cmsg_space!([RawFd; 4]);
        let mut iov = [std::io::IoSliceMut::new(buf)];
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => {
                // Control data the kernel could not fit (more than four descriptors) is
                // dropped with them; the bytes still count.
                for c in msg.cmsgs().into_iter().flatten() {
                    if let ControlMessageOwned::ScmRights(got) = c {
                        // SAFETY: the kernel installed these descriptors for us just now.
                        fds.extend(
                            got.into_iter()
                                .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                        );
                    }
                }
                return Ok(msg.bytes);
            }
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// A line received with [`recv_line_with_fds`], the descriptors that came with it, and
/// whatever bytes followed the line in the same read.
pub struct LineWithFds {
    pub line: Vec<u8>,
    pub fds: Vec<OwnedFd>,
    pub rest: Vec<u8>,
}

/// Reads one line (up to and without its `\n`) from a stream socket, with the
/// descriptors that came along. A stream has no message boundaries, so what the peer sent
/// after the line may come in the same read: it is returned as `rest`. `None` at end of
/// stream before a whole line.
pub fn recv_line_with_fds(sock: BorrowedFd<'_>) -> Result<Option<LineWithFds>, Errno> {
    let mut line = Vec::new();
    let mut fds = Vec::new();
    let mut buf = vec![0u8; 1 << 14];
    loop {
        let n = recv_with_fds(sock, &mut buf, &mut fds)?;
        if n == 0 {
            return Ok(None);
        }
        let seen = line.len();
        line.extend_from_slice(&buf[..n]);
        if let Some(end) = line[seen..].iter().position(|&b| b == b'\n') {
            let rest = line.split_off(seen + end + 1);
            line.pop();
            return Ok(Some(LineWithFds { line, fds, rest }));
        }
    }
}

/// Receives one descriptor sent with one byte by [`send_with_fd`]; `EBADMSG` when the
/// byte came alone.
pub fn recv_fd(sock: BorrowedFd<'_>) -> Result<OwnedFd, Errno> {
    let mut fds = Vec::new();
    recv_with_fds(sock, &mut [0u8; 1], &mut fds)?;
    fds.pop().ok_or(Errno::EBADMSG)
}
