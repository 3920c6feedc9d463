//! The command line: clap definitions and the small glue that turns each subcommand into
//! calls on the library. Output conventions: data on stdout, messages on stderr.

use crate::exit;
use crate::plan::{self, MountKind, Plan, PlanInputs, Root};
use crate::profile::{self, Overrides, SearchPath};
use crate::reporter::{ProgressMode, Reporter};
use crate::run::{self, RunOptions};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

const ABOUT: &str = "Run distro package builds in private namespaces: the host's mount table, and so its backups, never see a bind mount or tmpfs, and nothing is left mounted or running afterwards.";

#[derive(Parser, Debug)]
#[command(name = "bldr", version, about = ABOUT, after_help = exit::TABLE)]
pub struct Cli {
    /// Look for profiles in DIR first (then $BLDR_PROFILE_PATH, ./profiles, ~/.config/bldr/profiles, /etc/bldr/profiles).
    #[arg(long, global = true, value_name = "DIR")]
    pub profiles: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Cmd,
}

/// Settings that override the profile, in systemd-nspawn's vocabulary.
#[derive(Args, Debug, Clone, Default)]
pub struct OverrideArgs {
    /// Bind a host path into the build, read-write (repeatable). DST defaults to SRC.
    #[arg(long, value_name = "SRC[:DST]")]
    pub bind: Vec<String>,
    /// Bind a host path into the build, read-only recursively (repeatable).
    #[arg(long = "bind-ro", value_name = "SRC[:DST]")]
    pub bind_ro: Vec<String>,
    /// Mount a tmpfs inside the build (repeatable), e.g. /var/tmp/portage:8G.
    #[arg(long, value_name = "DST[:SIZE]")]
    pub tmpfs: Vec<String>,
    /// Set a variable in the build's environment (repeatable).
    #[arg(long, value_name = "NAME=VALUE")]
    pub setenv: Vec<String>,
    /// The working directory inside the chroot for every command.
    #[arg(long, value_name = "DIR")]
    pub chdir: Option<String>,
    /// Share the host's network, or give the build only a loopback device.
    #[arg(long, value_name = "host|none")]
    pub network: Option<String>,
    /// Run on a throwaway overlay: the chroot is not changed.
    #[arg(long)]
    pub ephemeral: bool,
}

impl OverrideArgs {
    fn to_overrides(&self, directory: Option<String>) -> Overrides {
        let mut binds: Vec<(String, bool)> = self.bind.iter().map(|b| (b.clone(), false)).collect();
        binds.extend(self.bind_ro.iter().map(|b| (b.clone(), true)));
        Overrides {
            binds,
            tmpfs: self.tmpfs.clone(),
            setenv: self.setenv.clone(),
            chdir: self.chdir.clone(),
            network: self.network.clone(),
            ephemeral: self.ephemeral,
            directory,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run a profile's commands in a private sandbox, then write the run record.
    #[command(after_help = exit::TABLE)]
    Run {
        /// A profile name (looked up in the profile path) or a path to a .yaml file.
        profile: String,
        #[command(flatten)]
        overrides: OverrideArgs,
        /// Where run records go (default: the profile's `out:`, else <state>/runs).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Keep the ephemeral overlay layer after the run (always, or only on failure);
        /// `bldr shell --run RUN` enters it.
        #[arg(long, value_enum, num_args = 0..=1,
            require_equals = true, default_missing_value = "always", value_name = "WHEN")]
        keep: Option<run::Keep>,
        /// If another run holds the chroot's lock, exit 75 at once instead of waiting.
        #[arg(long)]
        no_wait: bool,
        /// Print report.json on stdout when the run ends.
        #[arg(long)]
        json: bool,
        /// How to show progress on stderr.
        #[arg(long, value_enum, default_value = "auto")]
        progress: ProgressMode,
    },
    /// Open the profile's environment interactively, or run one command in it.
    ///
    /// `bldr shell PROFILE` gives a login shell on a fresh pty; `bldr shell PROFILE -- CMD...`
    /// runs CMD and returns its exit status. `bldr shell -D DIR [--bind ...]` is the
    /// profile-less form, like `systemd-nspawn -D DIR`.
    Shell {
        /// A profile name or path (not with -D or --run).
        #[arg(required_unless_present_any = ["directory", "run"], conflicts_with_all = ["directory", "run"])]
        profile: Option<String>,
        /// Re-enter the kept overlay layer of an ephemeral run (`run --ephemeral --keep`),
        /// for a post-mortem.
        #[arg(long, value_name = "RUN", conflicts_with = "directory")]
        run: Option<String>,
        /// Use DIR as the root directly, without a profile.
        #[arg(short = 'D', long = "directory", value_name = "DIR")]
        directory: Option<String>,
        #[command(flatten)]
        overrides: OverrideArgs,
        /// The command to run instead of a shell.
        #[arg(last = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Print the resolved plan: every mount, namespace, variable, command and artifact rule.
    Plan {
        profile: String,
        #[command(flatten)]
        overrides: OverrideArgs,
        /// Print the plan as JSON (host-provided values redacted).
        #[arg(long)]
        json: bool,
    },
    /// Validate profiles, say whether each is ready to run here, and what this host supports.
    ///
    /// With no PROFILE, checks every profile found. Exit 2 if any profile is invalid; a
    /// profile that is valid but not ready (a missing chroot or shared source) is a warning.
    Check {
        /// Profile names or paths (default: every profile found).
        #[arg(value_name = "PROFILE")]
        names: Vec<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the profiles found, with their description and file.
    List {
        #[arg(long)]
        json: bool,
    },
    /// List past runs (all, or of one profile).
    Runs {
        profile: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Print the build log of a run (a run id, or a profile name for its latest run).
    Logs { run: String },
    /// Make roots for profiles to run in.
    Root {
        #[command(subcommand)]
        command: RootCmd,
    },
    /// Internal: the sandbox process, the build's init.
    #[command(name = "__sandbox", hide = true)]
    Sandbox {
        /// The bldr this sandbox belongs to, for `ps` and the tests; not checked.
        #[arg(long)]
        parent: Option<i32>,
        #[arg(long)]
        probe: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum RootCmd {
    /// Make a root: `debian`/`ubuntu` (debootstrap, variant buildd), `gentoo` (a stage3
    /// tarball), or `busybox` (for demos and tests). Refuses a non-empty directory.
    ///
    /// Examples:
    ///   bldr root create debian /var/lib/bldr/roots/debian-bookworm --suite bookworm
    ///   bldr root create ubuntu /var/lib/bldr/roots/ubuntu-noble --suite noble
    ///   bldr root create gentoo /var/lib/bldr/roots/gentoo-amd64 --stage3 stage3-amd64-openrc.tar.xz
    ///   bldr root create busybox /tmp/root
    #[command(verbatim_doc_comment)]
    Create {
        /// debian, ubuntu, gentoo or busybox.
        #[arg(value_parser = ["debian", "ubuntu", "gentoo", "busybox"])]
        kind: String,
        /// The directory to make (must not exist, or be empty).
        dir: PathBuf,
        /// The suite for debian/ubuntu (default: bookworm for debian, noble for ubuntu).
        #[arg(long)]
        suite: Option<String>,
        /// The archive mirror for debian/ubuntu.
        #[arg(long)]
        mirror: Option<String>,
        /// Extra packages for debian/ubuntu (comma-separated).
        #[arg(long, value_delimiter = ',')]
        include: Vec<String>,
        /// The stage3 tarball for gentoo: a path or an http(s) URL.
        #[arg(long, required_if_eq("kind", "gentoo"))]
        stage3: Option<String>,
        /// The static busybox to use for busybox roots.
        #[arg(long, default_value = "/bin/busybox")]
        busybox: PathBuf,
    },
}

/// The sandbox's own arguments, `__sandbox --parent PID`, read without clap: every run
/// starts a sandbox, and building clap's whole command tree costs about as much as init's
/// real work before it unshares (docs/benchmarks.md). Anything else, `--probe` included,
/// is left to clap.
fn sandbox_args(args: &[std::ffi::OsString]) -> Option<i32> {
    let words: Vec<&str> = args.iter().map(|a| a.to_str()).collect::<Option<_>>()?;
    match words.as_slice() {
        [_, "__sandbox", "--parent", pid] => pid.parse().ok(),
        _ => None,
    }
}

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if sandbox_args(&args).is_some() {
        return crate::sandbox::sandbox_main();
    }
    // `bldr run`: the sandbox starts before anything else, so that its exec
    // overlaps parsing the profile and preparing the run (run::run). Any other spelling
    // of the command line starts it later, in the same way; `bldr run --help` not at all.
    let wants_help = args.iter().skip(2).any(|a| a == "--help" || a == "-h");
    let early_sandbox = (args.get(1).and_then(|a| a.to_str()) == Some("run") && !wants_help)
        .then(crate::sandbox::launch::start);
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                exit::USAGE
            } else {
                exit::SUCCESS
            };
        }
    };
    if matches!(
        cli.command,
        Cmd::Plan { .. }
            | Cmd::List { .. }
            | Cmd::Runs { .. }
            | Cmd::Logs { .. }
            | Cmd::Check { .. }
    ) {
        // Data commands end quietly when their reader goes away (`bldr list | head`).
        crate::sandbox::default_sigpipe();
    }
    let search = SearchPath::from_env(cli.profiles.as_deref());
    match cli.command {
        Cmd::Sandbox { probe, .. } => {
            if probe {
                crate::sandbox::probe::probe_namespaces_main()
            } else {
                crate::sandbox::sandbox_main()
            }
        }
        Cmd::Run {
            profile,
            overrides,
            out,
            keep,
            no_wait,
            json,
            progress,
        } => {
            let rep = Reporter::new(progress);
            let p = match profile::load(&profile, &search, &overrides.to_overrides(None)) {
                Ok(p) => p,
                Err(e) => return run::report_profile_errors(&rep, &e),
            };
            if keep.is_some_and(|k| k != run::Keep::Never) && !p.ephemeral {
                rep.warn(
                    "--keep keeps an ephemeral run's overlay layer; this run is on the chroot itself, which keeps what the build writes anyway",
                );
            }
            run::run(
                &rep,
                &p,
                &RunOptions {
                    out,
                    json,
                    keep: keep.unwrap_or_default(),
                    no_wait,
                },
                early_sandbox.unwrap_or_else(crate::sandbox::launch::start),
            )
        }
        Cmd::Shell {
            profile,
            run,
            directory,
            overrides,
            command,
        } => {
            let rep = Reporter::new(ProgressMode::Auto);
            let source = match (&profile, &run, directory) {
                (_, Some(r), _) => crate::shell::Source::KeptRun(r),
                (_, _, Some(d)) => crate::shell::Source::Directory(d),
                (Some(p), _, _) => crate::shell::Source::Profile(p),
                _ => return exit::USAGE,
            };
            crate::shell::shell(
                &rep,
                &search,
                source,
                &overrides.to_overrides(None),
                command,
            )
        }
        Cmd::Plan {
            profile,
            overrides,
            json,
        } => {
            let rep = Reporter::new(ProgressMode::Auto);
            let p = match profile::load(&profile, &search, &overrides.to_overrides(None)) {
                Ok(p) => p,
                Err(e) => return run::report_profile_errors(&rep, &e),
            };
            let state = crate::state::state_dir();
            let inputs = PlanInputs {
                host_env: run::host_env(),
                scratch: state.join("scratch"),
            };
            let plan = plan::build(&p, &inputs).redacted();
            if json {
                crate::outln!(
                    "{}",
                    serde_json::to_string_pretty(&plan).expect("plans serialize")
                );
            } else {
                crate::out!("{}", render_plan(&plan));
            }
            exit::SUCCESS
        }
        Cmd::Check { names, json } => crate::check::check(&search, &names, json),
        Cmd::List { json } => list(&search, json),
        Cmd::Root {
            command:
                RootCmd::Create {
                    kind,
                    dir,
                    suite,
                    mirror,
                    include,
                    stage3,
                    busybox,
                },
        } => {
            let rep = Reporter::new(ProgressMode::Auto);
            let suite = suite.unwrap_or_else(|| {
                if kind == "ubuntu" {
                    "noble"
                } else {
                    "bookworm"
                }
                .to_string()
            });
            let kind = match kind.as_str() {
                "gentoo" => crate::rootfs::RootKind::Gentoo {
                    stage3: stage3.unwrap_or_default(),
                },
                "busybox" => crate::rootfs::RootKind::Busybox { busybox },
                _ => crate::rootfs::RootKind::Debian {
                    mirror: mirror
                        .unwrap_or_else(|| crate::rootfs::default_mirror(&suite).to_string()),
                    suite,
                    include,
                },
            };
            match crate::rootfs::create(&rep, &kind, &dir) {
                Ok(()) => exit::SUCCESS,
                Err(crate::rootfs::RootError::Refused(e)) => {
                    rep.error(&e);
                    exit::USAGE
                }
                Err(crate::rootfs::RootError::Failed(e)) => {
                    rep.error(&e);
                    exit::SETUP
                }
            }
        }
        Cmd::Runs { profile, json } => crate::history::runs(profile.as_deref(), json),
        Cmd::Logs { run } => crate::history::logs(&run),
    }
}

fn list(search: &SearchPath, json: bool) -> i32 {
    let mut rows = Vec::new();
    for (name, path) in search.list() {
        // Through `extends`, as the profile runs: a child takes its base's description.
        let description = profile::load::read_chain(&path, search)
            .map(|(layer, _)| layer)
            .ok()
            .or_else(|| {
                let bytes = std::fs::read(&path).ok()?;
                profile::layer::parse_layer(&bytes, &path).ok()
            })
            .and_then(|l| l.description.map(|d| d.value));
        rows.push(serde_json::json!({"name": name, "description": description, "file": path}));
    }
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(&rows).expect("json"));
        return exit::SUCCESS;
    }
    if rows.is_empty() {
        crate::errln!(
            "bldr: no profiles found; looked in {}",
            search
                .dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return exit::SUCCESS;
    }
    let width = rows
        .iter()
        .map(|r| r["name"].as_str().unwrap_or("").len())
        .max()
        .unwrap_or(4)
        .max(4);
    let fwidth = rows
        .iter()
        .map(|r| r["file"].as_str().unwrap_or("").len())
        .max()
        .unwrap_or(4)
        .max(4);
    crate::outln!("{:width$}  {:fwidth$}  DESCRIPTION", "NAME", "FILE");
    for r in &rows {
        crate::outln!(
            "{:width$}  {:fwidth$}  {}",
            r["name"].as_str().unwrap_or(""),
            r["file"].as_str().unwrap_or(""),
            r["description"].as_str().unwrap_or("-")
        );
    }
    exit::SUCCESS
}

/// The readable form of a plan, for `bldr plan`.
pub fn render_plan(plan: &Plan) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "profile     {} ({})",
        plan.profile,
        plan.profile_file.display()
    );
    match &plan.root {
        Root::Bind { path } => {
            let _ = writeln!(
                s,
                "root        {} (bound onto itself; writes land in the chroot)",
                path.display()
            );
        }
        Root::Overlay { lower, upper, .. } => {
            let _ = writeln!(
                s,
                "root        overlay: {} read-only below, writes to {} (thrown away)",
                lower.display(),
                upper.display()
            );
        }
    }
    let _ = writeln!(s, "hostname    {}", plan.hostname);
    let _ = writeln!(s, "network     {}", plan.network);
    let ns: Vec<String> = plan
        .namespaces
        .iter()
        .map(|n| format!("{n:?}").to_lowercase())
        .collect();
    let _ = writeln!(
        s,
        "namespaces  {} (bldr's own init is PID 1)",
        ns.join(", ")
    );
    let _ = writeln!(
        s,
        "mounts      (in order; none of them is visible on the host)"
    );
    for m in &plan.mounts {
        let (what, extra) = match &m.kind {
            MountKind::Proc => ("proc".to_string(), String::new()),
            MountKind::Sysfs => ("sysfs".to_string(), String::new()),
            MountKind::Dev { nodes, links } => (
                "tmpfs".to_string(),
                format!(
                    " with {} and {}",
                    nodes
                        .iter()
                        .map(|n| n.name.as_str())
                        .collect::<Vec<_>>()
                        .join(" "),
                    links
                        .iter()
                        .map(|l| l.name.as_str())
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
            ),
            MountKind::Devpts => ("devpts".to_string(), " (new instance)".into()),
            MountKind::Tmpfs { size, mode } => (
                "tmpfs".to_string(),
                format!(
                    " mode={mode:o}{}",
                    size.map(|s| format!(" size={s}")).unwrap_or_default()
                ),
            ),
            MountKind::Bind { source } => {
                (format!("bind {}", source.display()), " (recursive)".into())
            }
        };
        let mut flags = vec![if m.readonly { "ro" } else { "rw" }];
        if m.nosuid {
            flags.push("nosuid");
        }
        if m.nodev {
            flags.push("nodev");
        }
        if m.noexec {
            flags.push("noexec");
        }
        if m.only_if_target_exists {
            flags.push("if-present");
        }
        let _ = writeln!(
            s,
            "  {:<24} {what}{extra} [{}]",
            m.target.as_str(),
            flags.join(",")
        );
    }
    let env: Vec<String> = plan
        .env
        .iter()
        .map(|v| match v.from {
            plan::EnvSource::Default => v.name.clone(),
            plan::EnvSource::Profile => format!("{}(profile)", v.name),
            plan::EnvSource::Host => format!("{}(host)", v.name),
            plan::EnvSource::CommandLine => format!("{}(--setenv)", v.name),
        })
        .collect();
    let _ = writeln!(s, "environment {}", env.join(" "));
    let _ = writeln!(s, "workdir     {}", plan.workdir);
    if let Some(t) = plan.timeout_ms {
        let _ = writeln!(
            s,
            "timeout     {} for the whole run, then SIGTERM and {} grace",
            crate::units::format_duration(std::time::Duration::from_millis(t)),
            crate::units::format_duration(std::time::Duration::from_millis(plan.grace_ms))
        );
    }
    let _ = writeln!(s, "commands    (in order; the first failure stops the run)");
    for c in &plan.commands {
        let mut notes = Vec::new();
        if c.network != plan.network {
            notes.push(format!("network {}", c.network));
        }
        if c.workdir != plan.workdir {
            notes.push(format!("in {}", c.workdir));
        }
        if let Some(t) = c.timeout_ms {
            notes.push(format!(
                "timeout {}",
                crate::units::format_duration(std::time::Duration::from_millis(t))
            ));
        }
        if !c.env.is_empty() {
            notes.push(format!(
                "env {}",
                c.env.keys().cloned().collect::<Vec<_>>().join(" ")
            ));
        }
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!(" [{}]", notes.join(", "))
        };
        let _ = writeln!(s, "  {}. {}{notes}", c.number, c.name);
        if c.name != c.run {
            for line in c.run.lines() {
                let _ = writeln!(s, "       $ {line}");
            }
        }
    }
    if plan.artifacts.is_empty() {
        let _ = writeln!(s, "artifacts   none");
    } else {
        let _ = writeln!(s, "artifacts");
        for a in &plan.artifacts {
            let mut line = format!("  {} include {}", a.from, a.include.join(" "));
            if !a.exclude.is_empty() {
                line.push_str(&format!(" exclude {}", a.exclude.join(" ")));
            }
            if a.required {
                line.push_str(" [required]");
            }
            if let Some(h) = &a.host_path {
                line.push_str(&format!(
                    " (shared tree: {}{})",
                    h.display(),
                    if a.copy {
                        ", copied"
                    } else {
                        ", recorded in place"
                    }
                ));
            }
            let _ = writeln!(s, "{line}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::sandbox_args;

    fn words(s: &str) -> Vec<std::ffi::OsString> {
        s.split(' ').map(Into::into).collect()
    }

    #[test]
    fn sandbox_args_take_the_launch_line_and_nothing_else() {
        assert_eq!(sandbox_args(&words("bldr __sandbox --parent 42")), Some(42));
        // Anything else goes to clap, which knows the rest of the grammar.
        for other in [
            "bldr __sandbox --probe",
            "bldr __sandbox --parent x",
            "bldr __sandbox --parent 42 --lock-fd 3",
            "bldr run __sandbox --parent 42",
            "bldr __sandbox --parent",
        ] {
            assert_eq!(sandbox_args(&words(other)), None, "{other}");
        }
    }
}
