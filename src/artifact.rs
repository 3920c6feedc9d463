//! Which walked entries become artifacts: a pure decision over (relative path, file type,
//! size). Walking and copying are thin shells around it (the sandbox's `collect` inside
//! the build's namespace; [`changed_in_place`] for files a shared tree already put on
//! the host). Also the `SHA256SUMS` line format.

use crate::plan::ArtifactPlan;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The largest single artifact bldr copies. A bigger file (a runaway log, a sparse image)
/// is refused with a message instead of filling the disk.
pub const MAX_ARTIFACT_BYTES: u64 = 16 << 30;

/// Names bldr writes itself at the top of the artifacts folder.
pub const RESERVED_NAMES: &[&str] = &["SHA256SUMS"];

/// What a walked entry is, as far as the decision goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    Device,
    Other,
}

/// The verdict on one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not matched by the rule: say nothing.
    Skip,
    /// Matched and copyable.
    Take,
    /// Matched, but refused for this reason (recorded in the report).
    Refuse(String),
}

/// A compiled artifact rule.
pub struct Selector {
    include: GlobSet,
    exclude: GlobSet,
    max_bytes: u64,
    /// A copy rule, whose files land in the artifacts folder beside `SHA256SUMS`; an
    /// in-place rule's stay where they are, whatever their name.
    copies: bool,
}

fn globset(patterns: &[String]) -> Result<GlobSet, globset::Error> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        // `*` stays within one path component; `**` crosses them.
        b.add(GlobBuilder::new(p).literal_separator(true).build()?);
    }
    b.build()
}

impl Selector {
    pub fn new(rule: &ArtifactPlan) -> Result<Selector, globset::Error> {
        Ok(Selector {
            include: globset(&rule.include)?,
            exclude: globset(&rule.exclude)?,
            max_bytes: MAX_ARTIFACT_BYTES,
            copies: rule.host_path.is_none() || rule.copy,
        })
    }

    /// Overrides the size cap (tests).
    pub fn with_max_bytes(mut self, max: u64) -> Self {
        self.max_bytes = max;
        self
    }

    /// True when `rel` (relative to the rule's `from`) is selected by the globs.
    pub fn matches(&self, rel: &Path) -> bool {
        self.include.is_match(rel) && !self.exclude.is_match(rel)
    }

    /// Decides on one walked entry. Directories are never artifacts themselves.
    pub fn decide(&self, rel: &Path, kind: EntryKind, size: u64) -> Verdict {
        if kind == EntryKind::Dir || !self.matches(rel) {
            return Verdict::Skip;
        }
        // At the top, and so below a folder of that name too: the list is a file there.
        let top = rel.components().next().map(|c| c.as_os_str());
        if self.copies && RESERVED_NAMES.iter().any(|r| top == Some(OsStr::new(r))) {
            return Verdict::Refuse("the name is reserved for bldr's own checksum list".into());
        }
        match kind {
            EntryKind::File if size > self.max_bytes => Verdict::Refuse(format!(
                "{size} bytes is larger than the {} cap on one artifact",
                crate::units::Size::Bytes(self.max_bytes)
            )),
            EntryKind::File => Verdict::Take,
            EntryKind::Symlink => Verdict::Refuse(
                "a symbolic link: bldr copies regular files only and never follows links".into(),
            ),
            EntryKind::Fifo => Verdict::Refuse("a FIFO: skipped without being opened".into()),
            EntryKind::Socket => Verdict::Refuse("a socket: skipped".into()),
            EntryKind::Device => {
                Verdict::Refuse("a device node: skipped without being opened".into())
            }
            EntryKind::Other | EntryKind::Dir => Verdict::Refuse("not a regular file".into()),
        }
    }
}

/// Maps a file type to an [`EntryKind`].
pub fn kind_of(ft: std::fs::FileType) -> EntryKind {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_symlink() {
        EntryKind::Symlink
    } else if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_file() {
        EntryKind::File
    } else if ft.is_fifo() {
        EntryKind::Fifo
    } else if ft.is_socket() {
        EntryKind::Socket
    } else if ft.is_block_device() || ft.is_char_device() {
        EntryKind::Device
    } else {
        EntryKind::Other
    }
}

/// One line of `SHA256SUMS`, in the format `sha256sum -c` reads: names holding a newline
/// or a backslash are escaped and the line starts with `\` (GNU coreutils).
pub fn sha256sums_line(sha256: &str, path: &[u8]) -> Vec<u8> {
    let needs_escape = path
        .iter()
        .any(|b| *b == b'\n' || *b == b'\\' || *b == b'\r');
    let mut line = Vec::with_capacity(path.len() + 70);
    if needs_escape {
        line.push(b'\\');
    }
    line.extend_from_slice(sha256.as_bytes());
    line.extend_from_slice(b"  ");
    for b in path {
        match (needs_escape, *b) {
            (true, b'\n') => line.extend_from_slice(b"\\n"),
            (true, b'\r') => line.extend_from_slice(b"\\r"),
            (true, b'\\') => line.extend_from_slice(b"\\\\"),
            (_, other) => line.push(other),
        }
    }
    line.push(b'\n');
    line
}

/// A path as report.json shows it: the text when it is UTF-8, else lossy, with the exact
/// bytes in hex beside it.
pub fn display_path(bytes: &[u8]) -> (String, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_string(), None),
        Err(_) => (
            String::from_utf8_lossy(bytes).into_owned(),
            Some(crate::record::hex(bytes)),
        ),
    }
}

/// What a file in a shared tree looked like when the run began.
pub type Snapshot = HashMap<PathBuf, (u64, i64, i64, u64)>;

/// Records size, mtime, ctime and inode of every regular file below `dir` (a host path
/// in a shared tree), without following links.
pub fn snapshot(dir: &Path) -> Snapshot {
    use std::os::unix::fs::MetadataExt;
    walkdir::WalkDir::new(dir)
        .follow_links(false)
        .follow_root_links(false)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((
                e.path().to_path_buf(),
                (
                    m.len(),
                    m.mtime_nsec() + m.mtime() * 1_000_000_000,
                    m.ctime(),
                    m.ino(),
                ),
            ))
        })
        .collect()
}

/// A file a shared tree holds on the host that is new or changed since `before`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InPlace {
    pub host_path: PathBuf,
    /// Relative to the rule's `from`.
    pub rel: PathBuf,
    pub size: u64,
}

/// The entries below `dir` (a rule's folder in a shared tree, on the host) that the rule
/// selects and that are new or changed since `before`, plus the refused ones.
pub fn changed_in_place(
    dir: &Path,
    sel: &Selector,
    before: &Snapshot,
) -> (Vec<InPlace>, Vec<(PathBuf, String)>) {
    use std::os::unix::fs::MetadataExt;
    let mut found = Vec::new();
    let mut refused = Vec::new();
    for entry in walkdir::WalkDir::new(dir)
        .follow_links(false)
        .into_iter()
        .filter_map(Result::ok)
    {
        let Ok(rel) = entry.path().strip_prefix(dir) else {
            continue;
        };
        if rel.as_os_str().is_empty() {
            continue;
        }
        let Ok(m) = entry.metadata() else { continue };
        match sel.decide(rel, kind_of(entry.file_type()), m.len()) {
            Verdict::Skip => {}
            Verdict::Refuse(why) => {
                // Only what changed during the run is the run's business.
                if !before.contains_key(entry.path()) {
                    refused.push((rel.to_path_buf(), why));
                }
            }
            Verdict::Take => {
                let now = (
                    m.len(),
                    m.mtime_nsec() + m.mtime() * 1_000_000_000,
                    m.ctime(),
                    m.ino(),
                );
                if before.get(entry.path()) != Some(&now) {
                    found.push(InPlace {
                        host_path: entry.path().to_path_buf(),
                        rel: rel.to_path_buf(),
                        size: m.len(),
                    });
                }
            }
        }
    }
    (found, refused)
}

/// Checks that `dir` (a rule's folder on the host) really lies inside the shared tree
/// `share`: the build may have replaced a folder of a writable share with a symlink to
/// anywhere on the host, and bldr's main process must not follow it there.
pub fn inside_share(dir: &Path, share: &Path) -> Result<(), String> {
    let real_share =
        std::fs::canonicalize(share).map_err(|e| format!("{}: {e}", share.display()))?;
    let mut cur = real_share.clone();
    let rest = dir
        .strip_prefix(share)
        .map_err(|_| format!("{} is not below {}", dir.display(), share.display()))?;
    for c in rest.components() {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "{} is a symbolic link; bldr does not follow links out of a shared tree",
                    cur.display()
                ))
            }
            Ok(_) => {}
            Err(e) => return Err(format!("{}: {e}", cur.display())),
        }
    }
    Ok(())
}

/// `rel` as bytes.
pub fn bytes_of(rel: &Path) -> &[u8] {
    rel.as_os_str().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chroot_path::ChrootPath;

    fn rule(include: &[&str], exclude: &[&str]) -> Selector {
        Selector::new(&ArtifactPlan {
            from: ChrootPath::parse("/out").unwrap(),
            include: include.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
            required: false,
            copy: false,
            host_path: None,
            share_source: None,
        })
        .unwrap()
    }

    #[test]
    fn globs_support_double_star_and_alternatives() {
        let s = rule(&["**/*.{deb,ddeb}", "Packages"], &["**/*.partial"]);
        assert!(s.matches(Path::new("a/b/x.deb")));
        assert!(s.matches(Path::new("x.ddeb")));
        assert!(s.matches(Path::new("Packages")));
        assert!(
            !s.matches(Path::new("sub/Packages")),
            "a plain name matches at the top only"
        );
        assert!(!s.matches(Path::new("x.deb.partial")));
    }

    #[test]
    fn a_single_star_stays_in_one_folder() {
        let s = rule(&["*.tar.gz"], &[]);
        assert!(s.matches(Path::new("a.tar.gz")));
        assert!(!s.matches(Path::new("sub/a.tar.gz")));
    }

    #[test]
    fn only_regular_files_are_taken() {
        let s = rule(&["**"], &[]);
        assert_eq!(s.decide(Path::new("f"), EntryKind::File, 1), Verdict::Take);
        assert_eq!(s.decide(Path::new("d"), EntryKind::Dir, 0), Verdict::Skip);
        for k in [
            EntryKind::Symlink,
            EntryKind::Fifo,
            EntryKind::Socket,
            EntryKind::Device,
        ] {
            assert!(
                matches!(s.decide(Path::new("x"), k, 0), Verdict::Refuse(_)),
                "{k:?}"
            );
        }
    }

    #[test]
    fn huge_files_are_refused_with_the_cap_named() {
        let s = rule(&["**"], &[]).with_max_bytes(1 << 20);
        match s.decide(Path::new("sparse.img"), EntryKind::File, 1 << 40) {
            Verdict::Refuse(why) => assert!(why.contains("1M cap"), "{why}"),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn the_checksum_list_name_is_reserved_at_the_top_only() {
        let s = rule(&["**"], &[]);
        assert!(matches!(
            s.decide(Path::new("SHA256SUMS"), EntryKind::File, 1),
            Verdict::Refuse(_)
        ));
        assert_eq!(
            s.decide(Path::new("sub/SHA256SUMS"), EntryKind::File, 1),
            Verdict::Take
        );
        // A folder of that name at the top would stand where the list goes.
        assert!(matches!(
            s.decide(Path::new("SHA256SUMS/x"), EntryKind::File, 1),
            Verdict::Refuse(_)
        ));
        // An in-place rule writes no list: the name is the build's.
        let in_place = Selector::new(&ArtifactPlan {
            from: ChrootPath::parse("/out").unwrap(),
            include: vec!["**".into()],
            exclude: vec![],
            required: false,
            copy: false,
            host_path: Some("/srv/out".into()),
            share_source: Some("/srv/out".into()),
        })
        .unwrap();
        assert_eq!(
            in_place.decide(Path::new("SHA256SUMS"), EntryKind::File, 1),
            Verdict::Take
        );
    }

    #[test]
    fn sha256sums_lines_escape_like_coreutils() {
        assert_eq!(sha256sums_line("ab", b"x.deb"), b"ab  x.deb\n");
        assert_eq!(sha256sums_line("ab", b"a\nb"), b"\\ab  a\\nb\n");
        assert_eq!(sha256sums_line("ab", b"a\\b"), b"\\ab  a\\\\b\n");
    }
}
