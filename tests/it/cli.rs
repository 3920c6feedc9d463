//! The command line as a user meets it: help, `list`, `plan` (text and JSON), `check` on
//! the shipped profiles, name lookup and the nspawn-style overrides. Nothing here runs a
//! build or needs root.

use super::corpus::TestEnv;
use std::path::{Path, PathBuf};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The subcommands `bldr --help` lists (without `help` itself).
fn subcommands(env: &TestEnv) -> Vec<String> {
    let out = env.bldr().arg("--help").output().expect("run bldr");
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|name| name != "help")
        .collect()
}

#[test]
fn every_subcommand_has_help() {
    let env = TestEnv::new();
    let subs = subcommands(&env);
    for expected in ["run", "shell", "plan", "check", "list", "runs", "logs"] {
        assert!(subs.iter().any(|s| s == expected), "{expected} in {subs:?}");
    }
    assert!(
        !subs.iter().any(|s| s.starts_with("__")),
        "internal subcommands are hidden: {subs:?}"
    );
    for sub in &subs {
        let out = env.bldr().args([sub, "--help"]).output().expect("run bldr");
        assert_eq!(out.status.code(), Some(0), "{sub}: {}", stderr(&out));
        assert!(
            stdout(&out).contains(&format!("Usage: bldr {sub}")),
            "{sub}: {}",
            stdout(&out)
        );
    }
}

#[test]
fn run_help_documents_every_exit_code() {
    let env = TestEnv::new();
    let out = env
        .bldr()
        .args(["run", "--help"])
        .output()
        .expect("run bldr");
    assert_eq!(out.status.code(), Some(0));
    let help = stdout(&out);
    let table: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Exit status:"))
        .skip(1)
        .collect();
    assert!(!table.is_empty(), "no exit status table:\n{help}");
    for code in ["0", "1", "2", "3", "4", "75", "124", "128+N"] {
        assert!(
            table
                .iter()
                .any(|l| l.split_whitespace().next() == Some(code)),
            "exit code {code} is not documented:\n{help}"
        );
    }
}

#[test]
fn an_unknown_option_is_a_usage_error() {
    let env = TestEnv::new();
    let out = env
        .bldr()
        .args(["plan", "--no-such-option", "profiles/demo.yaml"])
        .output()
        .expect("run bldr");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// Two profile folders: `one` holds alpha and shared, `two` holds beta and another
/// shared (which `one` hides), plus a file that is not a profile.
fn two_profile_dirs(env: &TestEnv) -> (PathBuf, PathBuf) {
    let one = env.path().join("one");
    let two = env.path().join("two");
    env.write(
        "one/alpha.yaml",
        "description: Alpha build\nchroot: /r\ncommands: [true]\n",
    );
    env.write(
        "one/shared.yaml",
        "description: Shared from one\nchroot: /r\ncommands: [true]\n",
    );
    env.write(
        "two/beta.yml",
        "description: Beta build\nchroot: /r\ncommands: [true]\n",
    );
    env.write(
        "two/shared.yaml",
        "description: Shared from two\nchroot: /r\ncommands: [true]\n",
    );
    env.write("two/notes.txt", "not a profile\n");
    (one, two)
}

/// `bldr list --json` run in an empty folder (so `./profiles` adds nothing), as
/// (name, description, file) rows from `dirs` only.
fn list_json(
    env: &TestEnv,
    args: &[&str],
    profile_path: Option<&str>,
) -> Vec<(String, String, PathBuf)> {
    let cwd = env.path().join("cwd");
    std::fs::create_dir_all(&cwd).expect("cwd");
    let mut cmd = env.bldr();
    cmd.current_dir(&cwd).args(args).args(["list", "--json"]);
    if let Some(p) = profile_path {
        cmd.env("BLDR_PROFILE_PATH", p);
    }
    let out = cmd.output().expect("run bldr");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("list --json is JSON");
    rows.as_array()
        .expect("an array")
        .iter()
        .map(|r| {
            (
                r["name"].as_str().expect("name").to_string(),
                r["description"].as_str().unwrap_or("").to_string(),
                PathBuf::from(r["file"].as_str().expect("file")),
            )
        })
        // /etc/bldr/profiles may hold the host's own profiles; they are not ours.
        .filter(|(_, _, f)| f.starts_with(env.path()))
        .collect()
}

#[test]
fn list_finds_the_profiles_of_a_profiles_dir() {
    let env = TestEnv::new();
    let (one, _) = two_profile_dirs(&env);
    let flag = one.to_str().expect("utf-8");
    let rows = list_json(&env, &["--profiles", flag], None);
    let names: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(names, ["alpha", "shared"]);
    assert_eq!(rows[0].1, "Alpha build");
    assert_eq!(rows[0].2, one.join("alpha.yaml"));

    // The flag also works after the subcommand, and the table shows the same.
    let out = env
        .bldr()
        .current_dir(env.path())
        .args(["list", "--profiles", flag])
        .output()
        .expect("run bldr");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(
        table.lines().next().is_some_and(|l| l.starts_with("NAME")),
        "{table}"
    );
    let alpha = table
        .lines()
        .find(|l| l.starts_with("alpha "))
        .unwrap_or_else(|| panic!("no alpha row:\n{table}"));
    assert!(alpha.contains("Alpha build"), "{alpha}");
    assert!(alpha.contains(&one.join("alpha.yaml").display().to_string()));
}

#[test]
fn list_shows_the_description_a_profile_inherits_through_extends() {
    let env = TestEnv::new();
    env.write(
        "ext/base.yaml",
        "description: The base build\nchroot: /r\ncommands: [true]\n",
    );
    env.write("ext/child.yaml", "extends: base\nhostname: child\n");
    let dir = env.path().join("ext");
    let rows = list_json(&env, &["--profiles", dir.to_str().expect("utf-8")], None);
    let child = rows.iter().find(|r| r.0 == "child").expect("the child");
    assert_eq!(child.1, "The base build");
}

#[test]
fn list_follows_bldr_profile_path_and_the_first_folder_wins() {
    let env = TestEnv::new();
    let (one, two) = two_profile_dirs(&env);
    let path = format!("{}:{}", one.display(), two.display());
    let rows = list_json(&env, &[], Some(&path));
    let found: Vec<(&str, &str)> = rows.iter().map(|r| (r.0.as_str(), r.1.as_str())).collect();
    assert_eq!(
        found,
        [
            ("alpha", "Alpha build"),
            ("shared", "Shared from one"),
            ("beta", "Beta build"),
        ]
    );
    // --profiles comes before $BLDR_PROFILE_PATH.
    let rows = list_json(
        &env,
        &["--profiles", two.to_str().expect("utf-8")],
        Some(&path),
    );
    let shared = rows.iter().find(|r| r.0 == "shared").expect("shared");
    assert_eq!(shared.2, two.join("shared.yaml"));
}

#[test]
fn a_profile_is_found_by_name_and_a_near_miss_gets_a_suggestion() {
    let env = TestEnv::new();
    let out = env
        .bldr()
        .args(["plan", "demo"])
        .output()
        .expect("run bldr");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let out = env
        .bldr()
        .args(["plan", "dmeo"])
        .output()
        .expect("run bldr");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.starts_with("bldr: error: "), "{err}");
    assert!(err.contains("no profile named `dmeo`"), "{err}");
    assert!(err.contains("(did you mean `demo`?)"), "{err}");
    assert!(out.stdout.is_empty());
}

fn plan_text(env: &TestEnv, args: &[&str]) -> String {
    let out = env
        .bldr()
        .arg("plan")
        .args(args)
        .output()
        .expect("run bldr");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stdout(&out)
}

fn plan_json(env: &TestEnv, args: &[&str]) -> serde_json::Value {
    let out = env
        .bldr()
        .args(["plan", "--json"])
        .args(args)
        .output()
        .expect("run bldr");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("plan --json is JSON")
}

/// The mount targets of the text plan, in the order printed.
fn text_mount_targets(plan: &str) -> Vec<String> {
    plan.lines()
        .skip_while(|l| !l.starts_with("mounts"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
fn plan_prints_the_mounts_in_order_with_the_kernel_trees_first() {
    let env = TestEnv::new();
    let plan = plan_text(&env, &["profiles/demo.yaml"]);
    let targets = text_mount_targets(&plan);
    assert_eq!(
        targets[..5],
        ["/proc", "/sys", "/dev", "/dev/pts", "/dev/shm"],
        "{plan}"
    );
    // Then the profile's own mounts.
    assert!(targets.iter().any(|t| t == "/src"), "{plan}");
    assert!(targets.iter().any(|t| t == "/build"), "{plan}");
    let src = plan
        .lines()
        .find(|l| l.trim_start().starts_with("/src "))
        .expect("the /src line");
    assert!(
        src.contains("examples/hello") && src.contains("[ro"),
        "{src}"
    );
    assert!(plan.contains("demo-build"), "{plan}");
}

#[test]
fn plan_json_has_mounts_namespaces_env_commands_and_artifacts() {
    let env = TestEnv::new();
    let plan = plan_json(&env, &["profiles/demo.yaml"]);
    for field in ["mounts", "namespaces", "env", "commands", "artifacts"] {
        assert!(plan[field].is_array(), "{field} is not a list in {plan:#}");
    }
    let targets: Vec<&str> = plan["mounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .map(|m| m["target"].as_str().expect("target"))
        .collect();
    assert_eq!(
        targets[..5],
        ["/proc", "/sys", "/dev", "/dev/pts", "/dev/shm"]
    );
    // The text form and the JSON form describe the same mounts.
    assert_eq!(
        text_mount_targets(&plan_text(&env, &["profiles/demo.yaml"])),
        targets
    );
    let ns: Vec<&str> = plan["namespaces"]
        .as_array()
        .expect("namespaces")
        .iter()
        .map(|n| n.as_str().expect("a name"))
        .collect();
    for n in ["mount", "pid", "uts", "ipc"] {
        assert!(ns.contains(&n), "{n} in {ns:?}");
    }
    let commands = plan["commands"].as_array().expect("commands");
    assert!(commands.len() >= 3);
    assert_eq!(commands[0]["name"], "configure");
    assert!(plan["env"]
        .as_array()
        .expect("env")
        .iter()
        .any(|v| v["name"] == "VERSION" && v["value"] == "1.0"));
    assert_eq!(plan["artifacts"][0]["from"], "/build/out");
}

#[test]
fn plan_never_prints_the_value_of_a_passed_through_variable() {
    let env = TestEnv::new();
    let secret = "hunter2-s3cr3t-6f1c";
    let path = env.write(
        "secret.yaml",
        "chroot: /r\npass_env: [BLDR_TEST_TOKEN]\ncommands: [true]\n",
    );
    let path = path.to_str().expect("utf-8");
    for json in [true, false] {
        let mut cmd = env.bldr();
        cmd.env("BLDR_TEST_TOKEN", secret).arg("plan");
        if json {
            cmd.arg("--json");
        }
        let out = cmd.arg(path).output().expect("run bldr");
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let text = stdout(&out);
        assert!(!text.contains(secret), "the secret leaked:\n{text}");
        assert!(
            !stderr(&out).contains(secret),
            "the secret leaked on stderr"
        );
        // The variable itself is still part of the plan.
        assert!(text.contains("BLDR_TEST_TOKEN"), "{text}");
        if json {
            let plan: serde_json::Value = serde_json::from_str(&text).expect("JSON");
            let token = plan["env"]
                .as_array()
                .expect("env")
                .iter()
                .find(|v| v["name"] == "BLDR_TEST_TOKEN")
                .expect("the passed variable is in the plan");
            assert_eq!(token["from"], "host");
        }
    }
}

#[test]
fn every_shipped_profile_passes_check() {
    let env = TestEnv::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("profiles/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for file in &files {
        let out = env.output(&["check"], file);
        let err = stderr(&out);
        // Valid; it may warn that its chroot is not there on this machine.
        assert_eq!(out.status.code(), Some(0), "{}: {err}", file.display());
        assert!(err.contains(": valid"), "{}: {err}", file.display());
        assert!(
            !err.lines().any(|l| l.trim_start().starts_with("error: ")),
            "{}: {err}",
            file.display()
        );
    }
}

#[test]
fn check_with_no_arguments_checks_every_profile_found() {
    let env = TestEnv::new();
    let out = env.bldr().args(["check"]).output().expect("run bldr");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let names: Vec<String> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles"))
            .expect("profiles/")
            .filter_map(|e| {
                let name = e.expect("entry").file_name().into_string().ok()?;
                name.strip_suffix(".yaml").map(str::to_string)
            })
            .collect();
    assert!(names.iter().any(|n| n == "demo"), "{names:?}");
    for name in &names {
        assert!(
            err.lines()
                .any(|l| l.starts_with(&format!("{name} (")) && l.contains(": valid")),
            "{name}: {err}"
        );
    }
    // And it reports what the host supports.
    assert!(err.contains("host:"), "{err}");
}

#[test]
fn bind_tmpfs_and_setenv_overrides_appear_in_the_plan() {
    let env = TestEnv::new();
    let args = [
        "profiles/demo.yaml",
        "--bind",
        "/srv/cache:/var/cache/extra",
        "--bind-ro",
        "/srv/ro-tree",
        "--tmpfs",
        "/scratch:1G",
        "--setenv",
        "EXTRA_FLAG=on",
    ];
    let text = plan_text(&env, &args);
    let line = |target: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(&format!("{target} ")))
            .unwrap_or_else(|| panic!("no mount at {target}:\n{text}"))
            .to_string()
    };
    let extra = line("/var/cache/extra");
    assert!(
        extra.contains("bind /srv/cache") && extra.contains("[rw"),
        "{extra}"
    );
    let ro = line("/srv/ro-tree");
    assert!(
        ro.contains("bind /srv/ro-tree") && ro.contains("[ro"),
        "{ro}"
    );
    let scratch = line("/scratch");
    assert!(
        scratch.contains("tmpfs") && scratch.contains("size=1G"),
        "{scratch}"
    );
    assert!(text.contains("EXTRA_FLAG(--setenv)"), "{text}");

    let plan = plan_json(&env, &args);
    assert!(plan["env"]
        .as_array()
        .expect("env")
        .iter()
        .any(|v| v["name"] == "EXTRA_FLAG" && v["value"] == "on" && v["from"] == "command-line"));
    // The kernel trees still come first.
    assert_eq!(plan["mounts"][0]["target"], "/proc");
}

#[test]
fn an_override_is_validated_like_the_profile() {
    let env = TestEnv::new();
    for (args, says) in [
        (
            &["--setenv", "NOEQUALS"][..],
            "--setenv NOEQUALS: write it as NAME=VALUE",
        ),
        (&["--setenv", "1X=y"][..], "not a valid variable name"),
        (&["--bind", "/srv/x:relative"][..], "is relative"),
        (
            &["--bind", "/srv/x:/y:norbind"][..],
            "`norbind` after a second `:`",
        ),
        (
            &["--bind-ro", "/srv/x:/y:ro"][..],
            "`ro` after a second `:`",
        ),
        (&["--tmpfs", "/proc/x"][..], "under /proc"),
        (&["--tmpfs", "/t:lots"][..], "invalid size `lots`"),
        (&["--network", "nnone"][..], "did you mean `none`?"),
    ] {
        let out = env
            .bldr()
            .arg("plan")
            .arg("profiles/demo.yaml")
            .args(args)
            .output()
            .expect("run bldr");
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.lines()
                .any(|l| l.starts_with("bldr: error: command line: ") && l.contains(says)),
            "{args:?}: {err}"
        );
        assert!(out.stdout.is_empty(), "{args:?}: printed a plan");
    }
}

/// The hidden sandbox entry is the build's init, and its last act, `kill(-1)`, is only
/// safe in a PID namespace of its own: started any other way (here by hand, as PID
/// something-else) it refuses at once, before it reads a plan.
#[test]
fn the_sandbox_entry_refuses_to_run_unless_it_is_pid_1() {
    let env = TestEnv::new();
    let out = env
        .bldr()
        .args(["__sandbox", "--parent", "1"])
        .write_stdin("")
        .output()
        .expect("run bldr");
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("not PID 1"),
        "the refusal is a frame on stdout: {:?}",
        out.stdout
    );
}
