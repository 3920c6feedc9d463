//! The bad-input catalogue of SPEC §1 as a test corpus: one profile per kind of mistake
//! in `tests/bad/` (or generated at test time when it cannot be committed), each with the
//! error lines bldr must print. Also the inputs that look odd but are fine (CRLF, a byte
//! order mark), and the readiness problems that `check` warns about and `run` refuses.

use assert_cmd::Command;
use std::path::{Path, PathBuf};

/// A scratch world for one test: a state directory and an empty config home, so no
/// command touches /var/lib/bldr or picks up the user's own profiles.
pub(crate) struct TestEnv {
    pub dir: tempfile::TempDir,
}

impl TestEnv {
    pub fn new() -> TestEnv {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("state")).expect("state dir");
        std::fs::create_dir(dir.path().join("config")).expect("config dir");
        TestEnv { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn state(&self) -> PathBuf {
        self.path().join("state")
    }

    /// `bldr` run from the crate's root (so `profiles/` and `tests/bad/` resolve) with
    /// this world's state and config, no colour, and no inherited profile path.
    pub fn bldr(&self) -> Command {
        let mut cmd = Command::cargo_bin("bldr").expect("the bldr binary");
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("BLDR_STATE_DIR", self.state())
            .env("XDG_CONFIG_HOME", self.path().join("config"))
            .env("NO_COLOR", "1")
            .env_remove("BLDR_PROFILE_PATH")
            .env_remove("CLICOLOR_FORCE");
        cmd
    }

    /// Runs `bldr ARGS... FILE` and returns what it did.
    pub fn output(&self, args: &[&str], file: &Path) -> std::process::Output {
        self.bldr().args(args).arg(file).output().expect("run bldr")
    }

    /// Writes `text` to `name` in this world and returns its path.
    pub fn write(&self, name: &str, text: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, text).expect("write");
        p
    }
}

/// Where one error must be reported and what it must say. `at` is what follows the
/// folder in `bldr: error: DIR/FILE:LINE:COL: KEY.PATH: message`; when it starts with `:`
/// (a position) or is just `: ` (no position known) the file is the case's own.
struct Expect {
    at: &'static str,
    says: &'static str,
}

/// How a case's file comes to be.
enum Source {
    /// `tests/bad/FILE`.
    Committed,
    /// Written into a tempdir at test time.
    Generated(fn() -> Vec<u8>),
}

struct Case {
    file: &'static str,
    source: Source,
    errors: &'static [Expect],
}

const fn bad(file: &'static str, errors: &'static [Expect]) -> Case {
    Case {
        file,
        source: Source::Committed,
        errors,
    }
}

const fn generated(file: &'static str, make: fn() -> Vec<u8>, errors: &'static [Expect]) -> Case {
    Case {
        file,
        source: Source::Generated(make),
        errors,
    }
}

const fn e(at: &'static str, says: &'static str) -> Expect {
    Expect { at, says }
}

/// The catalogue. Each line: the file, then every error line it must produce (position,
/// key path, a fragment of the message).
#[rustfmt::skip]
const CASES: &[Case] = &[
    // YAML syntax and file shape
    bad("syntax_unclosed_list.yaml",  &[e(":4:1: ", "did not find expected ',' or ']'")]),
    bad("syntax_unclosed_quote.yaml", &[e(":4:1: ", "unexpected end of stream")]),
    bad("syntax_bad_indent.yaml",     &[e(":3:11: ", "mapping values are not allowed")]),
    bad("tab_indent.yaml",            &[e(":4:1: ", "YAML does not allow tabs for indentation, indent with spaces")]),
    bad("two_documents.yaml",         &[e(":4:1: ", "more than one YAML document")]),
    bad("empty.yaml",                 &[e(": ", "the profile is empty")]),
    bad("comments_only.yaml",         &[e(": ", "the profile is empty")]),
    generated("huge.yaml", huge,      &[e(": ", "a profile is at most 1048576 bytes")]),
    generated("invalid_utf8.yaml", invalid_utf8, &[e(":3:17: ", "not valid UTF-8")]),
    bad("top_level_list.yaml",        &[e(":2:1: ", "expected a map of profile keys, found a list")]),
    bad("lenient_layout.yaml",        &[e(": env.JOBS: ", "YAML reads this as the number 8 and bldr cannot tell how it was written, since its strict reading stops at line 7 (invalid indentation in quoted scalar)")]),
    // duplicate and unknown keys
    bad("duplicate_key.yaml",         &[e(":4:1: chroot: ", "duplicate key")]),
    bad("duplicate_env_key.yaml",     &[e(":5:3: env.MAKEOPTS: ", "duplicate key")]),
    bad("unknown_key_comands.yaml",   &[e(":3:1: ", "unknown key `comands` (did you mean `commands`?)")]),
    bad("unknown_key_in_shared.yaml", &[e(":6:5: shared[1]: ", "unknown key `taget` (did you mean `target`?)")]),
    bad("unknown_key_in_command.yaml", &[e(":5:5: commands[0]: ", "unknown key `timout` (did you mean `timeout`?)")]),
    bad("unknown_key_in_artifact.yaml", &[e(":6:5: artifacts[0]: ", "unknown key `includes` (did you mean `include`?)")]),
    // required keys
    bad("missing_chroot.yaml",        &[e(": ", "missing key `chroot`")]),
    bad("missing_commands.yaml",      &[e(": ", "missing key `commands`")]),
    bad("empty_commands.yaml",        &[e(":3:1: commands: ", "`commands` is empty")]),
    bad("empty_chroot_value.yaml",    &[e(":2:1: chroot: ", "the path is empty")]),
    bad("empty_command.yaml",         &[e(":5:5: commands[1]: ", "the command is empty")]),
    bad("null_value.yaml",            &[e(":4:1: network: ", "the key has no value (YAML reads it as null); write one, or leave the key out")]),
    bad("empty_readonly.yaml",        &[e(":4:34: shared[0].readonly: ", "the key has no value")]),
    bad("null_list_entry.yaml",       &[e(":5:4: commands[1]: ", "found nothing (the value is empty)")]),
    bad("command_without_run.yaml",   &[e(":5:5: commands[1]: ", "missing key `run`")]),
    bad("shared_without_source.yaml", &[e(":4:5: shared[0]: ", "missing key `source`")]),
    bad("tmpfs_without_target.yaml",  &[e(":4:5: tmpfs[0]: ", "missing key `target`")]),
    // wrong types
    bad("string_for_list.yaml",       &[e(":3:9: shared: ", "expected a list, found the string \"/var/cache/distfiles\"")]),
    bad("number_for_chroot.yaml",     &[e(":2:9: chroot: ", "expected a string, found the number 42")]),
    bad("number_for_share.yaml",      &[e(":3:10: shared[0]: ", "expected a path, found the number 42; put it in quotes")]),
    bad("map_for_commands.yaml",      &[e(":4:3: commands: ", "expected a list, found a map")]),
    bad("list_for_map.yaml",          &[e(":4:3: env: ", "expected a map, found a list; write `KEY: value` lines")]),
    bad("map_for_env_value.yaml",     &[e(":4:13: env.MAKEOPTS: ", "expected a string or a number, found a map")]),
    bad("string_for_artifact.yaml",   &[e(":5:5: artifacts[0]: ", "expected a map with `from`")]),
    bad("yes_for_boolean.yaml",       &[e(":3:12: ephemeral: ", "`yes` is a string in YAML 1.2, write `true` or `false`")]),
    bad("number_for_boolean.yaml",    &[e(":6:15: shared[0].readonly: ", "expected a boolean, found the number 1")]),
    // mount targets
    bad("relative_target.yaml",       &[e(":6:5: shared[1].target: ", "`src` is relative")]),
    bad("dotdot_target.yaml",         &[e(":4:5: tmpfs[0]: ", "contains `..`")]),
    bad("target_under_proc.yaml",     &[e(":4:5: tmpfs[0]: ", "`/proc/sys` is under /proc")]),
    bad("target_sys.yaml",            &[e(":5:5: shared[0].target: ", "`/sys` is set up by bldr itself")]),
    bad("target_under_dev.yaml",      &[e(":4:5: tmpfs[0].target: ", "`/dev/shm` is under /dev")]),
    bad("target_root.yaml",           &[e(":4:5: tmpfs[0]: ", "cannot mount over the chroot's `/`")]),
    bad("duplicate_target.yaml",      &[e(":6:5: tmpfs[0]: ", "duplicate target `/var/tmp/portage`: shared[0] (line 4)")]),
    bad("duplicate_target_normalized.yaml", &[e(":6:5: shared[1]: ", "duplicate target `/srv/data`: shared[0] (line 4)")]),
    bad("relative_workdir.yaml",      &[e(":3:1: workdir: ", "`build` is relative")]),
    bad("tilde_user.yaml",            &[e(":4:5: shared[0].source: ", "only `~/` (your own home) is expanded")]),
    // the chroot itself
    bad("chroot_root.yaml",           &[e(":2:1: chroot: ", "the chroot is the host's `/`")]),
    bad("chroot_root_dotdot.yaml",    &[e(":2:1: chroot: ", "the chroot is the host's `/`")]),
    // sizes, modes, durations
    bad("bad_size.yaml",              &[e(":5:5: tmpfs[0].size: ", "invalid size `4Q`: unknown unit `Q`")]),
    bad("bad_size_percent.yaml",      &[e(":5:5: tmpfs[0].size: ", "a percentage must be 1% to 100%")]),
    bad("bad_mode.yaml",              &[e(":5:5: tmpfs[0].mode: ", "invalid mode `0999`: write it in octal")]),
    bad("hex_mode.yaml",              &[e(":5:5: tmpfs[0].mode: ", "invalid mode `0x1ff`: write it in octal")]),
    bad("bad_duration.yaml",          &[e(":3:1: timeout: ", "invalid duration `10 minutes`")]),
    bad("bad_duration_unit.yaml",     &[e(":3:1: timeout: ", "unknown unit `weeks`")]),
    bad("duration_without_unit.yaml", &[e(":3:1: timeout: ", "duration `3600` has no unit; write `3600s`")]),
    bad("command_duration_without_unit.yaml", &[e(":6:5: commands[0].timeout: ", "duration `90` has no unit")]),
    bad("zero_duration.yaml",         &[e(":3:1: timeout: ", "is zero")]),
    // names
    bad("bad_hostname.yaml",          &[e(":3:1: hostname: ", "`my_build!` is not a valid hostname")]),
    bad("hostname_too_long.yaml",     &[e(":3:1: hostname: ", "at most 64 characters")]),
    bad("bad_env_name.yaml",          &[e(":4:3: env.2JOBS: ", "`2JOBS` is not a valid variable name")]),
    bad("bad_env_name_dash.yaml",     &[e(":4:3: env.MAKE-OPTS: ", "`MAKE-OPTS` is not a valid variable name")]),
    bad("bad_pass_env_name.yaml",     &[e(":5:5: pass_env[1]: ", "`SSH AUTH SOCK` is not a valid variable name")]),
    bad("bad_network.yaml",           &[e(":3:1: network: ", "unknown network `nnone` (did you mean `none`?)")]),
    bad("command_network_above_build.yaml", &[e(":6:5: commands[0].network: ", "a command cannot have more network than its build")]),
    bad("source_host_dev.yaml",       &[e(":4:5: shared[0]: ", "bldr never binds the host's /proc, /sys or /dev")]),
    bad("source_host_root.yaml",      &[e(":4:5: shared[0].source: ", "the source is the host's `/`")]),
        bad("bad_command_network.yaml",   &[e(":5:5: commands[0].network: ", "unknown network `offline`; use `host` or `none`")]),
    // artifact rules
    bad("absolute_glob.yaml",         &[e(":6:15: artifacts[0].include[0]: ", "`/etc/shadow` is absolute")]),
    bad("glob_dotdot.yaml",           &[e(":6:24: artifacts[0].include[1]: ", "`../../*` climbs out with `..`")]),
    bad("invalid_glob.yaml",          &[e(":6:15: artifacts[0].exclude[0]: ", "invalid glob `[a-`: unclosed character class")]),
    bad("invalid_glob_braces.yaml",   &[e(":6:5: artifacts[0].include[0]: ", "unclosed alternate group")]),
    bad("relative_artifact_from.yaml", &[e(":5:5: artifacts[0].from: ", "`build/out` is relative")]),
    bad("artifact_mount_below_from.yaml", &[e(":6:14: artifacts[0].from: ", "`/var/cache` is in a shared tree, and tmpfs[0] (line 5) mounts `/var/cache/binpkgs` below it")]),
    bad("glob_as_path.yaml", &[
        e(":6:15: artifacts[0].include[0]: ", "`./Packages` can never match"),
        e(":6:27: artifacts[0].include[1]: ", "`sub/` can never match"),
    ]),
    // commands
    bad("nul_in_command.yaml",        &[e(":3:12: commands[0]: ", "the command contains a NUL byte")]),
    // extends
    bad("extends_cycle_a.yaml",       &[e("extends_cycle_b.yaml:2:1: extends: ", "`extends` forms a cycle")]),
    bad("extends_cycle_b.yaml",       &[e("extends_cycle_a.yaml:2:1: extends: ", "`extends` forms a cycle")]),
    bad("extends_missing.yaml",       &[e(":2:1: extends: ", "no profile named `no-such-base`")]),
    bad("extends_missing_path.yaml",  &[e(":2:1: extends: ", "no-such-base.yaml does not exist")]),
    // validation reports every mistake, not just the first
    bad("several_mistakes.yaml", &[
        e(":3:1: hostname: ", "`-build-` is not a valid hostname"),
        e(":4:1: timeout: ", "duration `8` has no unit"),
        e(":6:5: tmpfs[0].target: ", "`tmp` is relative"),
    ]),
];

/// A valid profile padded past the size limit with comments.
fn huge() -> Vec<u8> {
    let mut text = b"chroot: /r\ncommands: [true]\n".to_vec();
    let line = b"# padding padding padding padding padding padding padding padding\n";
    while text.len() <= (1 << 20) {
        text.extend_from_slice(line);
    }
    text
}

/// A Latin-1 `é` in an otherwise valid profile.
fn invalid_utf8() -> Vec<u8> {
    b"# Saved as Latin-1, not UTF-8.\nchroot: /r\ndescription: caf\xe9 build\ncommands: [true]\n"
        .to_vec()
}

fn bad_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad")
}

/// Puts the case's file in place; returns its path.
fn materialize(case: &Case, env: &TestEnv) -> PathBuf {
    match case.source {
        Source::Committed => bad_dir().join(case.file),
        Source::Generated(make) => env.write(case.file, make()),
    }
}

/// The text every expected error line must start with, after `prefix`.
fn expected_lines(case: &Case, path: &Path) -> Vec<(String, &'static str)> {
    let dir = path.parent().expect("a folder");
    case.errors
        .iter()
        .map(|x| {
            let head = if x.at.starts_with(':') {
                format!("{}{}", path.display(), x.at)
            } else {
                format!("{}/{}", dir.display(), x.at)
            };
            (head, x.says)
        })
        .collect()
}

/// Checks that `stderr` holds each expected error, as a line `PREFIX HEAD...SAYS...`, and
/// nothing else claiming to be an error. Returns what is wrong, if anything.
fn compare(case: &Case, path: &Path, stderr: &str, prefix: &str) -> Option<String> {
    let mut wrong = Vec::new();
    let expected = expected_lines(case, path);
    for (head, says) in &expected {
        let start = format!("{prefix}{head}");
        let found = stderr.lines().any(|line| {
            line.strip_prefix(&start)
                .is_some_and(|rest| rest.contains(says))
        });
        if !found {
            wrong.push(format!("no line `{start}...{says}...`"));
        }
    }
    let error_lines = stderr.lines().filter(|l| l.starts_with(prefix)).count();
    if error_lines != expected.len() {
        wrong.push(format!(
            "{error_lines} error lines, expected {}",
            expected.len()
        ));
    }
    (!wrong.is_empty()).then(|| {
        format!(
            "{}: {}\n--- stderr ---\n{stderr}--------------",
            case.file,
            wrong.join("; ")
        )
    })
}

#[test]
fn the_catalogue_has_a_case_for_every_kind_of_mistake() {
    assert!(CASES.len() >= 45, "only {} cases", CASES.len());
    // Every committed file has a case, and every case's file is there: a file added
    // without an expectation, or a case whose file was deleted, is a mistake.
    let mut on_disk: Vec<String> = std::fs::read_dir(bad_dir())
        .expect("tests/bad")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut committed: Vec<String> = CASES
        .iter()
        .filter(|c| matches!(c.source, Source::Committed))
        .map(|c| c.file.to_string())
        .collect();
    committed.sort();
    assert_eq!(on_disk, committed);
}

#[test]
fn plan_refuses_every_bad_profile_with_a_located_error() {
    let mut failures = Vec::new();
    for case in CASES {
        let env = TestEnv::new();
        let path = materialize(case, &env);
        let out = env.output(&["plan"], &path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(2) {
            failures.push(format!(
                "{}: exit {:?}, expected 2\n{stderr}",
                case.file,
                out.status.code()
            ));
            continue;
        }
        if !out.stdout.is_empty() {
            failures.push(format!("{}: printed a plan on stdout", case.file));
        }
        if let Some(f) = compare(case, &path, &stderr, "bldr: error: ") {
            failures.push(f);
        }
        // No side effect: nothing was written to the state directory.
        let left: Vec<_> = std::fs::read_dir(env.state()).expect("state").collect();
        if !left.is_empty() {
            failures.push(format!("{}: the state directory is not empty", case.file));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n\n")
    );
}

#[test]
fn check_refuses_every_bad_profile_with_the_same_errors() {
    let mut failures = Vec::new();
    for case in CASES {
        let env = TestEnv::new();
        let path = materialize(case, &env);
        let out = env.output(&["check"], &path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(2) {
            failures.push(format!(
                "{}: exit {:?}, expected 2\n{stderr}",
                case.file,
                out.status.code()
            ));
            continue;
        }
        if let Some(f) = compare(case, &path, &stderr, "  error: ") {
            failures.push(f);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n\n")
    );
}

/// Every string anywhere in a JSON value.
fn strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        serde_json::Value::Object(o) => o.iter().for_each(|(k, x)| {
            out.push(k.clone());
            strings(x, out)
        }),
        _ => {}
    }
}

fn plan_json(env: &TestEnv, path: &Path) -> serde_json::Value {
    let out = env.output(&["plan", "--json"], path);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the plan is JSON")
}

/// The value of the build's variable `name` in a plan's JSON, if it has one.
fn plan_env(plan: &serde_json::Value, name: &str) -> Option<serde_json::Value> {
    plan["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|v| v["name"] == name)
        .map(|v| v["value"].clone())
}

/// The mount at `target` in a plan's JSON.
fn plan_mount<'a>(plan: &'a serde_json::Value, target: &str) -> &'a serde_json::Value {
    plan["mounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["target"] == target)
        .unwrap_or_else(|| panic!("no mount at {target}"))
}

#[test]
fn a_crlf_profile_is_accepted_and_no_value_keeps_a_carriage_return() {
    let env = TestEnv::new();
    let text = "# written on Windows\ndescription: CRLF line endings\nchroot: /r\nhostname: crlf-build\nenv:\n  MAKEOPTS: -j8\ntmpfs:\n  - target: /build\n    size: 1G\ncommands:\n  - echo one\n  - name: two\n    run: echo two\nartifacts:\n  - from: /build\n    include: [\"*.deb\"]\n"
        .replace('\n', "\r\n");
    let path = env.write("crlf.yaml", text);
    let plan = plan_json(&env, &path);
    let mut all = Vec::new();
    strings(&plan, &mut all);
    let with_cr: Vec<&String> = all.iter().filter(|s| s.contains('\r')).collect();
    assert!(with_cr.is_empty(), "values with \\r: {with_cr:?}");
    assert_eq!(plan["hostname"], "crlf-build");
    let runs: Vec<&str> = plan["commands"]
        .as_array()
        .expect("commands")
        .iter()
        .map(|c| c["run"].as_str().expect("run"))
        .collect();
    assert_eq!(runs, ["echo one", "echo two"]);
    assert_eq!(plan_env(&plan, "MAKEOPTS"), Some("-j8".into()));
}

#[test]
fn numbers_keep_the_digits_the_file_writes() {
    // YAML reads `0o644` as 420, `3.10` as 3.1, `007` as 7 and `True` as true; a mode
    // and a variable's value take the text as written.
    let env = TestEnv::new();
    let path = env.write(
        "numbers.yaml",
        "chroot: /r\ntmpfs:\n  - target: /build\n    mode: 0o644\nenv:\n  PYTHON: 3.10\n  CODE: 007\n  JOBS: 8\n  DEBUG: True\ncommands:\n  - name: one\n    run: 'true'\n    env:\n      RELEASE: 1.0\n",
    );
    let plan = plan_json(&env, &path);
    let build = plan_mount(&plan, "/build");
    assert_eq!(build["mode"], 0o644, "{build}");
    let value = |name: &str| plan_env(&plan, name);
    assert_eq!(value("PYTHON"), Some("3.10".into()));
    assert_eq!(value("CODE"), Some("007".into()));
    assert_eq!(value("JOBS"), Some("8".into()));
    assert_eq!(value("DEBUG"), Some("True".into()));
    assert_eq!(plan["commands"][0]["env"]["RELEASE"], "1.0");
    // An alias of a scalar is written as its anchor.
    let path = env.write(
        "aliases.yaml",
        "chroot: /r\ntmpfs:\n  - {target: /a, mode: &m 0o644}\n  - {target: /b, mode: *m}\nenv: {V: &v 1.10, W: *v}\ncommands: [true]\n",
    );
    let plan = plan_json(&env, &path);
    let modes = [
        &plan_mount(&plan, "/a")["mode"],
        &plan_mount(&plan, "/b")["mode"],
    ];
    assert_eq!(modes, [0o644, 0o644]);
    assert_eq!(plan_env(&plan, "W"), Some("1.10".into()));
    // A command in the short form runs as written too; `true` stays the shell's `true`.
    let path = env.write(
        "commands.yaml",
        "chroot: /r\ncommands: [0x10, 007, 3.10, True, true, {run: 0x10}]\n",
    );
    let plan = plan_json(&env, &path);
    let runs: Vec<_> = plan["commands"]
        .as_array()
        .expect("commands")
        .iter()
        .map(|c| c["run"].as_str().expect("run"))
        .collect();
    assert_eq!(runs, ["0x10", "007", "3.10", "True", "true", "0x10"]);
}

#[test]
fn layouts_lenient_parsers_take_and_empty_lists_are_accepted() {
    let env = TestEnv::new();
    // A flow list closed at its key's indent (the strict event parser stops there, and
    // no number is in the file), lists and maps whose entries are commented out, an
    // alias of a map with numbers in it.
    let path = env.write(
        "fine.yaml",
        "chroot: /r\ncommands: [\n  \"make\",\n  \"make install\"\n]\nshared:\n  # - /srv/distfiles\nenv:\n  # CFLAGS: -O2\n",
    );
    let plan = plan_json(&env, &path);
    assert_eq!(plan["commands"][1]["run"], "make install");
    let path = env.write(
        "alias.yaml",
        "chroot: /r\nenv: &common {JOBS: 8, V: 1.10}\ntmpfs:\n  - &t {target: /a, mode: 0o755}\ncommands: [{run: make, env: *common}]\nartifacts:\n#  - from: /out\n",
    );
    let plan = plan_json(&env, &path);
    assert_eq!(plan["commands"][0]["env"]["JOBS"], "8");
    assert_eq!(plan["commands"][0]["env"]["V"], "1.10");
    // A bare `key:` is located at its key, also on the last line.
    let path = env.write("bare.yaml", "chroot: /r\ncommands: [true]\nnetwork:\n");
    let out = env.output(&["plan"], &path);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bare.yaml:3:1: network: the key has no value"),
        "{stderr}"
    );
}

#[test]
fn a_profile_with_a_byte_order_mark_is_accepted() {
    let env = TestEnv::new();
    let path = env.write(
        "bom.yaml",
        "\u{feff}chroot: /r\nhostname: bom-build\ncommands: [true]\n",
    );
    assert_eq!(plan_json(&env, &path)["hostname"], "bom-build");
}

/// A chroot in a tempdir with /proc, /dev, /sys and /bin/sh, plus a shared source: ready
/// to run, until a test breaks one piece of it.
fn ready_root(env: &TestEnv) -> PathBuf {
    let root = env.path().join("root");
    for d in ["proc", "dev", "sys", "bin"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    std::fs::write(root.join("bin/sh"), "").expect("sh");
    std::fs::create_dir_all(env.path().join("src")).expect("src");
    root
}

/// Everything below `dir`, sorted, to show that nothing was created or removed.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = walkdir(dir);
    all.sort();
    all
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            out.push(p.clone());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(walkdir(&p));
            }
        }
    }
    out
}

/// The readiness problems: each a warning in `check`, a refusal in `run`.
struct NotReady {
    name: &'static str,
    /// Breaks the ready root.
    spoil: fn(&Path),
    /// Extra profile lines.
    profile: &'static str,
    says: &'static str,
}

#[rustfmt::skip]
const NOT_READY: &[NotReady] = &[
    NotReady { name: "missing chroot", spoil: |root| std::fs::remove_dir_all(root).unwrap(),
               profile: "", says: "does not exist" },
    NotReady { name: "/proc is a symlink", spoil: |root| {
                   std::fs::remove_dir(root.join("proc")).unwrap();
                   std::os::unix::fs::symlink("/proc", root.join("proc")).unwrap();
               },
               profile: "", says: "the chroot's /proc is not a real directory" },
    NotReady { name: "/dev is missing", spoil: |root| std::fs::remove_dir(root.join("dev")).unwrap(),
               profile: "", says: "the chroot has no /dev directory" },
    NotReady { name: "/sys is a file", spoil: |root| {
                   std::fs::remove_dir(root.join("sys")).unwrap();
                   std::fs::write(root.join("sys"), "").unwrap();
               },
               profile: "", says: "the chroot's /sys is not a real directory" },
    NotReady { name: "missing shared source", spoil: |_| {},
               profile: "shared:\n  - source: no-such-tree\n    target: /x\n",
               says: "the shared source" },
    NotReady { name: "output inside the chroot", spoil: |_| {},
               profile: "out: root/var/out\n", says: ":3:1: out: the output folder" },
    NotReady { name: "output inside a writable shared tree", spoil: |_| {},
               profile: "shared:\n  - source: src\n    target: /src\nout: src/runs\n",
               says: "inside the writable shared tree" },
];

fn not_ready_profile(env: &TestEnv, case: &NotReady) -> PathBuf {
    let root = ready_root(env);
    (case.spoil)(&root);
    env.write(
        "p.yaml",
        format!(
            "chroot: root\ncommands: [\"echo ran > /ran\"]\n{}",
            case.profile
        ),
    )
}

#[test]
fn a_ready_root_is_ready() {
    // The baseline the next two tests break: if this fails, so would they, for the
    // wrong reason.
    let env = TestEnv::new();
    ready_root(&env);
    let path = env.write("p.yaml", "chroot: root\ncommands: [true]\n");
    let out = env.output(&["check"], &path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("valid, ready to run"), "{stderr}");
}

#[test]
fn check_only_warns_about_a_profile_that_is_not_ready_here() {
    for case in NOT_READY {
        let env = TestEnv::new();
        let path = not_ready_profile(&env, case);
        let out = env.output(&["check"], &path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{}: {stderr}", case.name);
        assert!(
            stderr.contains("valid, not ready here"),
            "{}: {stderr}",
            case.name
        );
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("  warning: ") && l.contains(case.says)),
            "{}: no warning saying `{}`:\n{stderr}",
            case.name,
            case.says
        );
    }
}

#[test]
fn run_refuses_a_profile_that_is_not_ready_before_touching_anything() {
    for case in NOT_READY {
        let env = TestEnv::new();
        let path = not_ready_profile(&env, case);
        let before = tree(env.path());
        let out = env.output(&["run"], &path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {stderr}", case.name);
        let refusal = stderr
            .lines()
            .find(|l| l.starts_with("bldr: error: not ready: ") && l.contains(case.says));
        assert!(
            refusal.is_some(),
            "{}: no refusal saying `{}`:\n{stderr}",
            case.name,
            case.says
        );
        // It names the profile file and the key that needs the fix.
        assert!(
            refusal.is_some_and(|l| l.contains(&path.display().to_string())),
            "{}: {stderr}",
            case.name
        );
        assert_eq!(
            tree(env.path()),
            before,
            "{}: run changed the filesystem",
            case.name
        );
    }
}

#[test]
fn several_errors_are_listed_in_the_order_of_the_file() {
    let env = TestEnv::new();
    let path = env.write(
        "order.yaml",
        "chroot: /r\nshared:\n  - {source: /s, target: rel}\ntmpfs:\n  - target: /t\n    size: lots\nenv: {1X: a}\ncommands: [true]\ntimeout: 5\n",
    );
    let out = env.output(&["plan"], &path);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<usize> = stderr
        .lines()
        .filter_map(|l| l.split("order.yaml:").nth(1))
        .filter_map(|rest| rest.split(':').next()?.parse().ok())
        .collect();
    assert_eq!(lines, [3, 6, 7, 9], "{stderr}");
}

#[test]
fn a_profile_path_that_does_not_exist_points_at_the_profile_of_that_name() {
    let env = TestEnv::new();
    // Run from the crate's root, where `profiles/demo.yaml` is on the search path.
    let out = env.bldr().args(["plan", "demo.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read the profile")
            && stderr.contains("did you mean the profile `demo`"),
        "{stderr}"
    );
    let out = env
        .bldr()
        .args(["plan", "no-such-profile.yaml"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains("did you mean"));
}
