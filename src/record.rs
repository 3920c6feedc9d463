//! Run records (SPEC §3): the run id, the run directory with `build.log` and
//! `report.json`, the `latest` link and the index of runs in the state directory.
//! Nothing here overwrites: run directories are created exclusively, the report and the
//! link are replaced by rename, the log is appended as output arrives.

use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The version of `report.json`'s layout; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// A new run id: a sortable UTC timestamp and a short random suffix
/// (`20261201T090102Z-3f9a`).
pub fn new_run_id(now: SystemTime) -> String {
    let stamp = humantime::format_rfc3339_seconds(now).to_string();
    let compact: String = stamp
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let mut rnd = [0u8; 3];
    let _ = File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut rnd));
    let nanos = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{compact}-{:02x}{:02x}{:02x}",
        rnd[0] ^ (nanos as u8),
        rnd[1],
        rnd[2]
    )
}

/// True for text of the shape [`new_run_id`] makes, `YYYYMMDDTHHMMSSZ-xxxxxx` (and not,
/// say, a folder's `latest`).
pub fn is_run_id(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 23
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'Z'
        && b[16] == b'-'
        && b[17..].iter().all(u8::is_ascii_hexdigit)
}

/// RFC 3339 UTC time with milliseconds.
pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// A run directory while the run is going on: `<out>/<profile>/<run-id>.incomplete/`,
/// renamed to `<run-id>/` once its record is complete.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub id: String,
    /// Where the run is written while it goes on.
    pub work: PathBuf,
    /// Where it is published when complete.
    pub done: PathBuf,
}

impl RunDir {
    /// The run directory's paths for run `id` of `profile` under `out`; nothing is made.
    pub fn new(out: &Path, profile: &str, id: &str) -> RunDir {
        let parent = out.join(profile);
        RunDir {
            id: id.to_string(),
            work: parent.join(format!("{id}.incomplete")),
            done: parent.join(id),
        }
    }

    /// Creates `<out>/<profile>/<run-id>.incomplete/` exclusively. Fails if either form
    /// of the id is taken: an earlier run is never reused.
    pub fn create(&self) -> io::Result<()> {
        if let Some(parent) = self.work.parent() {
            fs::create_dir_all(parent)?;
        }
        if self.done.exists() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", self.done.display()),
            ));
        }
        fs::create_dir(&self.work)
    }

    /// Publishes the run: one rename, so it is never half-visible under its final name.
    /// `rename` refuses to replace a non-empty directory, so no earlier run is touched.
    pub fn publish(&self) -> io::Result<()> {
        fs::rename(&self.work, &self.done)
    }
}

/// The build log: created once, appended to as output arrives, never buffered.
pub struct BuildLog {
    file: File,
    pub path: PathBuf,
    at_line_start: bool,
    /// The first write that failed (a full disk): from there on the log is cut off, and
    /// the run must say so rather than pass for complete.
    pub lost: Option<String>,
}

impl BuildLog {
    pub fn create(dir: &Path) -> io::Result<BuildLog> {
        let path = dir.join("build.log");
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)?;
        Ok(BuildLog {
            file,
            path,
            at_line_start: true,
            lost: None,
        })
    }

    /// A line of bldr's own (a header or a note), with a timestamp.
    pub fn note(&mut self, text: &str) {
        let mut line = String::new();
        if !self.at_line_start {
            line.push('\n');
        }
        line.push_str(&format!("[{}] {text}\n", timestamp(SystemTime::now())));
        self.write(line.as_bytes());
        self.at_line_start = true;
    }

    /// The build's output, byte for byte.
    pub fn output(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.write(bytes);
        self.at_line_start = bytes.ends_with(b"\n");
    }

    /// Writes to the log until a write fails; after that nothing, so that the log
    /// ends where it was cut, with no hole in its middle if space comes back.
    fn write(&mut self, bytes: &[u8]) {
        if self.lost.is_some() {
            return;
        }
        if let Err(e) = self.file.write_all(bytes) {
            self.lost = Some(format!(
                "cannot write {}, which is cut off there: {e}",
                self.path.display()
            ));
        }
    }
}

/// How a run ended (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Success,
    CommandFailed,
    Timeout,
    SetupFailed,
    ArtifactsFailed,
    Interrupted,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::CommandFailed => "command-failed",
            Outcome::Timeout => "timeout",
            Outcome::SetupFailed => "setup-failed",
            Outcome::ArtifactsFailed => "artifacts-failed",
            Outcome::Interrupted => "interrupted",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProfileInfo {
    pub name: String,
    pub path: PathBuf,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommandRecord {
    pub number: usize,
    pub name: String,
    pub run: String,
    /// `success`, `failed`, `timeout`, `interrupted` or `not-run`.
    pub status: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub duration_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArtifactRecord {
    /// The index of the rule in `artifacts` that selected it.
    pub rule: usize,
    /// Relative to the artifacts folder (or to the rule's `from` for shared-tree files).
    pub path: String,
    /// The exact bytes of `path` in hex, when they are not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub path_hex: Option<String>,
    pub size: u64,
    pub sha256: String,
    /// Where it came from inside the chroot.
    pub source: String,
    /// `copied` into the run directory, or `in-place` in a shared tree on the host.
    pub stored: String,
    /// The host path, for files left in place in a shared tree.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_path: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refusal {
    pub rule: usize,
    pub path: String,
    /// The exact bytes of `path` in hex, when they are not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub path_hex: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HostClean {
    /// True when the host's mount table after the run equals the one before.
    pub clean: bool,
    pub mounts_before: usize,
    pub mounts_after: usize,
    pub appeared: Vec<String>,
    pub disappeared: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    pub bldr_version: String,
    pub run_id: String,
    pub run_dir: PathBuf,
    pub profile: ProfileInfo,
    pub chroot: PathBuf,
    pub ephemeral: bool,
    pub started: String,
    pub ended: String,
    pub duration_ms: u64,
    pub outcome: Outcome,
    pub exit_code: i32,
    /// The signal that stopped bldr, for `interrupted`.
    pub signal: Option<i32>,
    pub message: Option<String>,
    pub namespaces: Namespaces,
    pub commands: Vec<CommandRecord>,
    pub artifacts: ArtifactList,
    pub refused: Vec<Refusal>,
    pub host_clean: HostClean,
    /// The overlay layer of an ephemeral run, when it was kept (`--keep`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scratch: Option<PathBuf>,
}

/// The artifacts of a report: in memory when read back, or streamed from the run's
/// JSON-lines list when written, so that writing a report of 100,000 artifacts takes no
/// more memory than one of ten.
#[derive(Debug, Clone)]
pub enum ArtifactList {
    Loaded(Vec<ArtifactRecord>),
    Streamed { file: PathBuf, count: usize },
}

impl ArtifactList {
    pub fn len(&self) -> usize {
        match self {
            ArtifactList::Loaded(v) => v.len(),
            ArtifactList::Streamed { count, .. } => *count,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every record, one at a time.
    pub fn for_each(&self, mut f: impl FnMut(ArtifactRecord)) -> io::Result<()> {
        match self {
            ArtifactList::Loaded(v) => v.iter().cloned().for_each(f),
            // No record, no file (see `run::ArtifactSink`).
            ArtifactList::Streamed { count: 0, .. } => {}
            ArtifactList::Streamed { file, .. } => {
                use std::io::BufRead;
                for line in io::BufReader::new(File::open(file)?).lines() {
                    if let Ok(rec) = serde_json::from_str(&line?) {
                        f(rec);
                    }
                }
            }
        }
        Ok(())
    }
}

impl Serialize for ArtifactList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeSeq};
        let mut seq = s.serialize_seq(Some(self.len()))?;
        let mut failed = None;
        let mut result = Ok(());
        self.for_each(|rec| {
            if result.is_ok() {
                result = seq.serialize_element(&rec);
            }
        })
        .unwrap_or_else(|e| failed = Some(e));
        result?;
        if let Some(e) = failed {
            return Err(S::Error::custom(e));
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for ArtifactList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::deserialize(d).map(ArtifactList::Loaded)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Namespaces {
    pub pid: u64,
    pub mnt: u64,
}

/// Writes `bytes` to `path` by writing a temporary file beside it and renaming it over.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomically_with(path, |w| w.write_all(bytes))
}

/// Like [`write_atomically`], with the content streamed by `fill` (a report with
/// 100,000 artifacts is never held in memory whole).
pub fn write_atomically_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    // Records are for reading: the usual 0644, not tempfile's 0600.
    tmp.as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    let mut out = io::BufWriter::new(tmp);
    fill(&mut out)?;
    let tmp = out.into_inner().map_err(|e| e.into_error())?;
    // No fsync: the guarantee is that a reader never sees a half-written report (the
    // rename), not durability across a power cut; an fsync per run costs more than the
    // whole sandbox on a busy disk. ext4 and xfs flush a file renamed over another
    // before the rename (auto_da_alloc).
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Points `<out>/<profile>/latest` at `run_id`, atomically (a new link renamed over).
pub fn set_latest(profile_dir: &Path, run_id: &str) -> io::Result<()> {
    let tmp = profile_dir.join(format!(".latest.{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(run_id, &tmp)?;
    // A `latest` that is a folder (someone made one) cannot be replaced: say so, and leave
    // no new link behind.
    fs::rename(&tmp, profile_dir.join("latest")).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

/// The state directory's index of runs: one JSON line per finished run, so `bldr runs`
/// finds runs written to any `--out`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexEntry {
    pub run_id: String,
    pub profile: String,
    pub run_dir: PathBuf,
    pub outcome: Outcome,
    pub started: String,
    pub duration_ms: u64,
    pub artifacts: usize,
}

pub fn index_path(state: &Path) -> PathBuf {
    state.join("runs.jsonl")
}

/// Appends one entry with a single write (O_APPEND keeps concurrent runs' lines whole).
pub fn append_index(state: &Path, entry: &IndexEntry) -> io::Result<()> {
    fs::create_dir_all(state)?;
    let mut line = serde_json::to_vec(entry).map_err(io::Error::other)?;
    line.push(b'\n');
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .open(index_path(state))?;
    f.write_all(&line)
}

/// Every indexed run, oldest first; unreadable lines are skipped.
pub fn read_index(state: &Path) -> Vec<IndexEntry> {
    fs::read_to_string(index_path(state))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The sha256 of a small file (a profile), read whole, as lowercase hex. No 64 KiB
/// buffer to zero for a file of a few hundred bytes.
pub fn sha256_small_file(path: &Path) -> io::Result<String> {
    use sha2::{Digest, Sha256};
    Ok(hex(&Sha256::digest(fs::read(path)?)))
}

/// The sha256 of a file, as lowercase hex.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of [`hex`]'s output (pairs that are not hex digits are skipped).
pub fn unhex(text: &str) -> Vec<u8> {
    (0..text.len() / 2)
        .filter_map(|i| {
            text.get(2 * i..2 * i + 2)
                .and_then(|p| u8::from_str_radix(p, 16).ok())
        })
        .collect()
}

/// The host's mount table, one line per mount with the mount and parent ids dropped (so
/// the comparison is about what is mounted where, not the kernel's numbering).
pub fn host_mounts() -> Vec<String> {
    File::open("/proc/self/mountinfo")
        .map(|f| mount_lines(&f))
        .unwrap_or_default()
}

fn mount_lines(mut f: &File) -> Vec<String> {
    // procfs files report size 0, so read_to_string would start at 32 bytes and grow:
    // eight reads, each regenerating the table, where one 64 KiB read does.
    let mut text = String::with_capacity(1 << 16);
    let _ = f.read_to_string(&mut text);
    text.lines()
        .map(|l| l.splitn(3, ' ').nth(2).unwrap_or(l).to_string())
        .collect()
}

/// The host's mount table when a run starts, and at its end whether it changed.
/// /proc/self/mountinfo reports POLLPRI once its namespace's table has changed since the
/// file was opened (proc(5)), so an unchanged table, the usual case, is known without
/// generating it a second time; a changed one is read again and compared.
///
/// The watch begins when the file is opened ([`MountWatch::start`]); the table itself is
/// read a little later ([`MountWatch::read_table`]), once init has its plan and sets up
/// its mounts, which takes the read off the path to the build's start. A change between
/// the two is seen all the same: the poll says so, and the run is reported not clean.
pub struct MountWatch {
    file: Option<File>,
    before: Vec<String>,
    changed_before_read: bool,
}

impl MountWatch {
    pub fn start() -> MountWatch {
        MountWatch {
            file: File::open("/proc/self/mountinfo").ok(),
            before: Vec::new(),
            changed_before_read: false,
        }
    }

    /// Reads the table the end of the run compares with.
    pub fn read_table(&mut self) {
        use std::os::fd::AsFd;
        if let Some(f) = &self.file {
            self.changed_before_read = crate::sandbox::sys::mount_table_changed(f.as_fd());
            self.before = mount_lines(f);
        }
    }

    pub fn finish(&self) -> HostClean {
        use std::os::fd::AsFd;
        let unchanged = !self.changed_before_read
            && self
                .file
                .as_ref()
                .is_some_and(|f| !crate::sandbox::sys::mount_table_changed(f.as_fd()));
        if unchanged {
            let n = self.before.len();
            return HostClean {
                clean: true,
                mounts_before: n,
                mounts_after: n,
                appeared: vec![],
                disappeared: vec![],
            };
        }
        let mut clean = compare_mounts(&self.before, &host_mounts());
        // What changed before the table was read is in neither list, but it changed.
        clean.clean &= !self.changed_before_read;
        clean
    }
}

/// Compares two mount tables.
pub fn compare_mounts(before: &[String], after: &[String]) -> HostClean {
    use std::collections::HashSet;
    // Sets, not `contains` on the lists: a container host has thousands of mounts.
    let (b, a): (HashSet<&String>, HashSet<&String>) =
        (before.iter().collect(), after.iter().collect());
    let appeared: Vec<String> = after.iter().filter(|l| !b.contains(l)).cloned().collect();
    let disappeared: Vec<String> = before.iter().filter(|l| !a.contains(l)).cloned().collect();
    HostClean {
        clean: appeared.is_empty() && disappeared.is_empty(),
        mounts_before: before.len(),
        mounts_after: after.len(),
        appeared,
        disappeared,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_before_the_table_was_read_makes_the_run_not_clean() {
        // No file to poll: the end reads the table again and compares, as after a change.
        let watch = |changed_before_read| MountWatch {
            file: None,
            before: host_mounts(),
            changed_before_read,
        };
        assert!(watch(false).finish().clean, "the same table twice is clean");
        let hc = watch(true).finish();
        assert!(!hc.clean, "a change neither list names still counts");
        assert!(hc.appeared.is_empty() && hc.disappeared.is_empty());
    }

    #[test]
    fn run_ids_sort_by_time() {
        let a = new_run_id(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000));
        let b = new_run_id(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(2_000_000));
        assert!(a < b, "{a} < {b}");
        assert!(a.starts_with("19700112T134640Z-"), "{a}");
        assert!(
            is_run_id(&a) && is_run_id(&new_run_id(SystemTime::now())),
            "{a}"
        );
        for not in [
            "latest",
            "",
            "20261201T193952Z-04d353.incomplete",
            "../x",
            "demo",
        ] {
            assert!(!is_run_id(not), "{not}");
        }
    }

    #[test]
    fn run_dirs_are_never_reused_and_publish_by_rename() {
        let t = tempfile::tempdir().unwrap();
        let a = RunDir::new(t.path(), "p", "a");
        a.create().unwrap();
        assert!(
            RunDir::new(t.path(), "p", "a").create().is_err(),
            "an id is never reused"
        );
        assert!(a.work.ends_with(format!("{}.incomplete", a.id)));
        a.publish().unwrap();
        assert!(a.done.is_dir() && !a.work.exists());
        assert!(
            RunDir::new(t.path(), "p", "a").create().is_err(),
            "nor after publishing"
        );
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(unhex(&hex(b"a\xff\n")), b"a\xff\n");
    }

    #[test]
    fn mount_table_changes_are_reported() {
        let before = vec!["a".to_string(), "b".to_string()];
        let after = vec!["a".to_string(), "c".to_string()];
        let hc = compare_mounts(&before, &after);
        assert!(!hc.clean);
        assert_eq!(hc.appeared, ["c"]);
        assert_eq!(hc.disappeared, ["b"]);
        assert!(compare_mounts(&before, &before).clean);
    }
}
