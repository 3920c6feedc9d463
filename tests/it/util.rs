//! Fixtures shared by the integration tests: the root-test gate, busybox roots built at
//! test time, and a `bldr` command with its own state directory, run inside a private
//! mount namespace of its own so that no bug can touch the machine's mount table.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// True when this root test can run. Not root: a skip, or a failure under
/// `BLDR_REQUIRE_ROOT_TESTS=1`.
pub fn require_root(test: &str) -> bool {
    if nix_is_root() {
        return true;
    }
    if std::env::var("BLDR_REQUIRE_ROOT_TESTS").as_deref() == Ok("1") {
        panic!("root test {test} cannot run: not root, and BLDR_REQUIRE_ROOT_TESTS=1");
    }
    eprintln!("skipping root test {test}: not root");
    false
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// The binary under test.
pub fn bldr_bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("bldr")
}

/// A temporary world for one test: a busybox root, a state dir, a place for profiles.
pub struct World {
    pub dir: tempfile::TempDir,
}

impl World {
    pub fn new() -> World {
        World {
            dir: tempfile::Builder::new()
                .prefix("bldr-it-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Builds a busybox root at `rel` with `bldr root create busybox`.
    pub fn busybox_root(&self, rel: &str) -> PathBuf {
        let root = self.path(rel);
        let out = Command::new(bldr_bin())
            .args(["root", "create", "busybox"])
            .arg(&root)
            .output()
            .expect("run bldr root create");
        assert!(
            out.status.success(),
            "bldr root create busybox failed: {}",
            show(&out)
        );
        root
    }

    /// Writes a profile file and returns its path.
    pub fn profile(&self, name: &str, yaml: &str) -> PathBuf {
        let p = self.path(&format!("{name}.yaml"));
        std::fs::write(&p, yaml).expect("write profile");
        p
    }

    pub fn state(&self) -> PathBuf {
        self.path("state")
    }

    /// `bldr ARGS` with this world's state dir, inside a private mount namespace
    /// (`unshare --mount --propagation private`), so the test's "host" is that namespace.
    pub fn bldr(&self, args: &[&str]) -> Command {
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "--"])
            .arg(bldr_bin())
            .args(args);
        c.env("BLDR_STATE_DIR", self.state()).env_remove("NO_COLOR");
        c
    }

    /// Runs `bldr run PROFILE --progress plain` and returns its output.
    pub fn run(&self, profile: &Path, extra: &[&str]) -> Output {
        let p = profile.to_str().expect("utf-8 path");
        let mut args = vec!["run", p, "--progress", "plain"];
        args.extend_from_slice(extra);
        self.bldr(&args).output().expect("run bldr")
    }

    /// The latest published run directory of `profile`.
    pub fn latest(&self, profile: &str) -> PathBuf {
        let link = self.state().join("runs").join(profile).join("latest");
        std::fs::canonicalize(&link).unwrap_or(link)
    }

    /// The latest report of `profile`, parsed.
    pub fn report(&self, profile: &str) -> serde_json::Value {
        let text =
            std::fs::read_to_string(self.latest(profile).join("report.json")).expect("report.json");
        serde_json::from_str(&text).expect("report.json is JSON")
    }
}

/// A digest of a tree: every path with its type, size and mode, sorted; for "the chroot
/// is unchanged" assertions.
pub fn tree_listing(root: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out: Vec<String> = walkdir::WalkDir::new(root)
        .follow_links(false)
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| {
            let m = e.metadata().expect("metadata");
            let rel = e
                .path()
                .strip_prefix(root)
                .unwrap_or(e.path())
                .display()
                .to_string();
            format!(
                "{rel} {:o} {} {}",
                m.mode(),
                if m.is_dir() { 0 } else { m.len() },
                m.mtime()
            )
        })
        .collect();
    out.sort();
    out
}

/// Combined output, for assertion messages.
pub fn show(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The pids of the sandbox processes (init) of the bldr with pid `bldr`:
/// their command line is `bldr __sandbox --parent PID`.
pub fn sandbox_of(bldr: u32) -> Vec<u32> {
    let needle = format!("__sandbox\0--parent\0{bldr}\0");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
        })
        .collect()
}
