//! Artifact collection inside the build's namespace, after every process of the build is
//! dead: walk each rule's `from` in the pivoted root (so no path can lead out of the
//! chroot), let [`crate::artifact::Selector`] decide, and copy regular files into the
//! run's staging folder through a directory descriptor opened before the pivot. Nothing
//! is written anywhere else; setuid/setgid bits are dropped; links are never followed.

use super::init::Wire;
use super::proto::Event;
use crate::artifact::{self, Selector, Verdict};
use crate::plan::Plan;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// What the record says of a collection a stop signal cut short, whether init copied or
/// bldr's main process hashed in place.
pub const STOPPED: &str = "stopped by a signal before collection was complete";

/// Why collection ended before its end.
#[derive(Debug)]
pub enum Cut {
    /// It could not go on: the disk is full, a read failed.
    Failed(String),
    /// A stop signal (SIGINT, SIGTERM, ...) is waiting: the user wants the run to end
    /// now, not once gigabytes are copied. It is left pending, for init to take.
    Stopped,
}

impl From<String> for Cut {
    fn from(message: String) -> Cut {
        Cut::Failed(message)
    }
}

/// Whether a stop signal waits, checked before each file and each block copied.
fn stop_requested() -> Result<(), Cut> {
    if super::sys::signal_pending(&super::init::STOP_SIGNALS) {
        return Err(Cut::Stopped);
    }
    Ok(())
}

/// Copies every rule's files, unless it is cut short.
pub fn collect(plan: &Plan, stage: BorrowedFd<'_>, wire: &mut Wire) -> Result<(), Cut> {
    let mut buf = vec![0u8; 1 << 18];
    for (index, rule) in plan.artifacts.iter().enumerate() {
        if rule.host_path.is_some() && !rule.copy {
            // Already on the host in a shared tree: bldr's main process records it there.
            continue;
        }
        let sel =
            Selector::new(rule).map_err(|e| Cut::Failed(format!("artifacts[{index}]: {e}")))?;
        let from = Path::new(rule.from.as_str());
        let mut matched = 0;
        if from_is_a_folder(index, rule, wire) {
            for entry in walkdir::WalkDir::new(from).follow_links(false) {
                let entry = match entry {
                    Ok(e) => e,
                    Err(e) => {
                        let path = e
                            .path()
                            .map(|p| p.display().to_string())
                            .unwrap_or_default();
                        wire.send(Event::ArtifactRefused {
                            rule: index,
                            path,
                            path_hex: None,
                            reason: format!("cannot be read: {e}"),
                        });
                        continue;
                    }
                };
                let Ok(rel) = entry.path().strip_prefix(from) else {
                    continue;
                };
                if rel.as_os_str().is_empty() {
                    continue;
                }
                stop_requested()?;
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                let refused = |reason: String| {
                    let (path, path_hex) = artifact::display_path(rel.as_os_str().as_bytes());
                    Event::ArtifactRefused {
                        rule: index,
                        path,
                        path_hex,
                        reason,
                    }
                };
                match sel.decide(rel, artifact::kind_of(entry.file_type()), size) {
                    Verdict::Skip => {}
                    Verdict::Refuse(reason) => wire.send(refused(reason)),
                    Verdict::Take => match copy_one(entry.path(), rel, stage, &mut buf) {
                        Ok(Ok((size, sha256))) => {
                            matched += 1;
                            let (path, path_hex) =
                                artifact::display_path(rel.as_os_str().as_bytes());
                            wire.send(Event::ArtifactCopied {
                                rule: index,
                                path,
                                path_hex,
                                size,
                                sha256,
                                source: entry.path().display().to_string(),
                            });
                        }
                        Ok(Err(taken)) => wire.send(refused(taken.reason().into())),
                        Err(cut) => return Err(cut),
                    },
                }
            }
        }
        wire.send(Event::ArtifactRuleDone {
            rule: index,
            matched,
        });
    }
    Ok(())
}

/// True when rule `index`'s `from` is a folder to walk. `from` itself is never followed
/// (the walk would follow its root): a link, or a file, is refused in the report; a
/// missing one is a rule that matched nothing, which the log notes, as a rule that is
/// not `required` says no other word about it.
fn from_is_a_folder(index: usize, rule: &crate::plan::ArtifactPlan, wire: &mut Wire) -> bool {
    use artifact::EntryKind;
    let refuse = |reason: &str| Event::ArtifactRefused {
        rule: index,
        path: ".".into(),
        path_hex: None,
        reason: reason.into(),
    };
    match std::fs::symlink_metadata(rule.from.as_str()).map(|m| artifact::kind_of(m.file_type())) {
        Ok(EntryKind::Dir) => return true,
        Ok(EntryKind::Symlink) => wire.send(refuse(
            "`from` is a symbolic link, and bldr never follows links: name the folder it leads to",
        )),
        Ok(EntryKind::File) => wire.send(refuse("`from` is a file, not a folder")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => wire.send(Event::Note {
            message: format!(
                "artifacts[{index}]: {} does not exist in the chroot; nothing to collect from it",
                rule.from
            ),
        }),
        _ => {}
    }
    false
}

fn copy_failed(shown: &impl std::fmt::Display, e: std::io::Error) -> Cut {
    let what = if e.raw_os_error() == Some(libc::ENOSPC) {
        "disk full while writing the artifact"
    } else {
        "cannot copy the artifact"
    };
    Cut::Failed(format!("{what} {shown}: {e}"))
}

fn io_err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// Why a file that a rule takes is not copied: another rule's artifact is in its way.
/// A refusal of that file, not a failure of the collection.
enum Taken {
    /// A file of the same name.
    Name,
    /// A folder of the same name, holding another rule's files.
    IsFolder,
    /// A file where one of its folders would go.
    Folder,
}

impl Taken {
    fn reason(&self) -> &'static str {
        match self {
            Taken::Name => "another rule already collected a file of this name",
            Taken::IsFolder => "another rule already collected files in a folder of this name",
            Taken::Folder => "another rule already collected a file where one of its folders goes",
        }
    }
}

/// Opens (creating as needed) the folder for `rel`'s parent below `stage`; `Ok(Err)` when
/// a file another rule collected stands where one of those folders goes.
fn parent_dir(stage: BorrowedFd<'_>, rel: &Path) -> Result<Result<OwnedFd, Taken>, String> {
    let mut dir = nix::unistd::dup(stage).map_err(|e| io_err("dup", e))?;
    if let Some(parent) = rel.parent() {
        for c in parent.components() {
            let name = c.as_os_str();
            match nix::sys::stat::mkdirat(dir.as_fd(), name, Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => {
                    return Err(io_err(
                        &format!("create folder {} in the artifacts", parent.display()),
                        e,
                    ))
                }
            }
            dir = match nix::fcntl::openat(
                dir.as_fd(),
                name,
                OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            ) {
                Ok(d) => d,
                // Only bldr writes there, so what is not a folder is an artifact.
                Err(nix::errno::Errno::ENOTDIR | nix::errno::Errno::ELOOP) => {
                    return Ok(Err(Taken::Folder))
                }
                Err(e) => {
                    return Err(io_err(
                        &format!("open folder {} in the artifacts", parent.display()),
                        e,
                    ))
                }
            };
        }
    }
    Ok(Ok(dir))
}

/// Copies one regular file, hashing it on the way: its size and sha256, or `Ok(Err)` when
/// another rule's artifact is in its way.
fn copy_one(
    src: &Path,
    rel: &Path,
    stage: BorrowedFd<'_>,
    buf: &mut [u8],
) -> Result<Result<(u64, String), Taken>, Cut> {
    let shown = rel.display();
    // O_NOFOLLOW and O_NONBLOCK: a swapped-in link is refused, a FIFO never blocks us.
    let mut from = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(src)
        .map_err(|e| io_err(&format!("open {}", src.display()), e))?;
    let meta = from
        .metadata()
        .map_err(|e| io_err(&format!("stat {}", src.display()), e))?;
    if !meta.is_file() {
        return Err(format!("{} changed type during collection", src.display()).into());
    }
    let size = meta.len();
    let free = nix::sys::statvfs::fstatvfs(stage)
        .map(|s| s.blocks_available() * s.fragment_size())
        .unwrap_or(u64::MAX);
    if size > free {
        return Err(format!(
            "disk full: the artifact {shown} needs {size} bytes and the output filesystem has {free} free"
        )
        .into());
    }
    let dir = match parent_dir(stage, rel)? {
        Ok(d) => d,
        Err(taken) => return Ok(Err(taken)),
    };
    let name = rel
        .file_name()
        .ok_or_else(|| format!("{shown} has no file name"))?;
    let fd = match nix::fcntl::openat(
        dir.as_fd(),
        name,
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    ) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::EEXIST) => {
            let folder = nix::sys::stat::fstatat(
                dir.as_fd(),
                name,
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
            return Ok(Err(if folder { Taken::IsFolder } else { Taken::Name }));
        }
        Err(e) => return Err(io_err(&format!("create the artifact {shown}"), e).into()),
    };
    let mut to = File::from(fd);
    let mut hash = Sha256::new();
    let mut copied = 0u64;
    let result = (|| -> Result<(), Cut> {
        loop {
            stop_requested()?;
            let n = from.read(buf).map_err(|e| copy_failed(&shown, e))?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            to.write_all(&buf[..n])
                .map_err(|e| copy_failed(&shown, e))?;
            copied += n as u64;
        }
        Ok(())
    })();
    if let Err(cut) = result {
        // Half a file is no artifact.
        drop(to);
        let _ = nix::unistd::unlinkat(dir.as_fd(), name, nix::unistd::UnlinkatFlags::NoRemoveDir);
        return Err(cut);
    }
    // Keep the permission bits but never setuid, setgid or sticky; keep the mtime.
    let _ = nix::sys::stat::fchmod(to.as_fd(), Mode::from_bits_truncate(meta.mode() & 0o777));
    let mtime = nix::sys::time::TimeSpec::new(meta.mtime(), meta.mtime_nsec());
    let _ = nix::sys::stat::futimens(to.as_fd(), &mtime, &mtime);
    Ok(Ok((copied, crate::record::hex(&hash.finalize()))))
}
