//! `bldr shell`: the build's environment, for a person. One command (`-- CMD...`) or a
//! login shell on a fresh pty; bldr exits with the command's own status.

use crate::exit;
use crate::plan::{self, PlanInputs};
use crate::profile::{self, Overrides, SearchPath};
use crate::reporter::Reporter;
use crate::run;

/// Quotes an argument for `/bin/sh -c`.
fn sh_quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        return arg.to_string();
    }
    format!("'{}'", arg.replace('\'', "'\\''"))
}

/// The script that runs `argv` exactly, or a login shell when it is empty.
pub fn script_for(argv: &[String]) -> String {
    if argv.is_empty() {
        "if [ -x /bin/bash ]; then exec /bin/bash -l; else exec /bin/sh -l; fi".into()
    } else {
        format!(
            "exec {}",
            argv.iter()
                .map(|a| sh_quote(a))
                .collect::<Vec<_>>()
                .join(" ")
        )
    }
}

/// Where `shell` takes its environment from.
pub enum Source<'a> {
    Profile(&'a str),
    Directory(String),
    /// A kept overlay layer of an earlier ephemeral run (`--run RUN`).
    KeptRun(&'a str),
}

pub fn shell(
    rep: &Reporter,
    search: &SearchPath,
    source: Source<'_>,
    overrides: &Overrides,
    argv: Vec<String>,
) -> i32 {
    let script = script_for(&argv);
    let mut kept_scratch = None;
    let (directory, profile_spec) = match source {
        Source::Profile(p) => (None, Some(p.to_string())),
        Source::Directory(d) => (Some(d), None),
        Source::KeptRun(run) => match kept_layer(run) {
            Ok((profile_file, scratch)) => {
                kept_scratch = Some(scratch);
                (None, Some(profile_file.display().to_string()))
            }
            Err(m) => {
                rep.error(&m);
                return exit::USAGE;
            }
        },
    };
    let profile_spec = profile_spec.as_deref();
    let loaded = match (&directory, profile_spec) {
        (Some(d), _) => {
            let mut o = overrides.clone();
            o.directory = Some(d.clone());
            profile::load::ad_hoc(&o, vec![script])
        }
        (None, Some(spec)) => profile::load(spec, search, overrides).map(|mut p| {
            let first = p.commands.first().cloned();
            if let Some(mut c) = first {
                c.name = Some(if argv.is_empty() {
                    "shell".into()
                } else {
                    argv.join(" ")
                });
                c.run = script;
                c.network = None;
                c.workdir = None;
                c.timeout = None;
                c.env.clear();
                p.commands = vec![c];
            }
            p
        }),
        (None, None) => return exit::USAGE,
    };
    let p = match loaded {
        Ok(p) => p,
        Err(e) => return run::report_profile_errors(rep, &e),
    };
    let state = crate::state::state_dir();
    let mut plan = plan::build(
        &p,
        &PlanInputs {
            host_env: run::host_env(),
            scratch: state.join("scratch"),
        },
    );
    plan.tty = true;
    let out = run::out_root(&p, &run::RunOptions::default(), &state);
    if !run::ensure_ready(rep, &p, &out) {
        return exit::USAGE;
    }
    let id = crate::record::new_run_id(std::time::SystemTime::now());
    let shared = p.ephemeral || kept_scratch.is_some();
    let mut lockable = p.clone();
    lockable.ephemeral = shared;
    let lock = match run::lock_chroot(rep, &state, &lockable, &format!("shell-{id}"), true) {
        Ok(l) => l,
        Err(code) => return code,
    };
    // An ephemeral shell gets a throwaway layer; `--run` re-enters a kept one as it is.
    let mut throwaway = None;
    if let Some(dir) = kept_scratch {
        plan.root = plan::Root::overlay(&p.chroot, &crate::scratch::Layer::kept(&dir), false);
    } else if p.ephemeral {
        match crate::scratch::create(&state, &format!("shell-{id}"), false) {
            Ok(layer) => {
                plan.root = plan::Root::overlay(&p.chroot, &layer, true);
                throwaway = Some(layer);
            }
            Err(e) => {
                rep.error(&format!("cannot create the overlay layer: {e}"));
                return exit::SETUP;
            }
        }
    }
    // On a chroot used in place, the mount points init makes are journaled as for `run`,
    // so that a session killed before its init removed them is cleaned up after.
    let mut journal = run::MountJournal::for_run(&state, &lockable);
    journal.replay(rep, &p.chroot);
    plan.mount_journal = journal.path().map(std::path::Path::to_path_buf);
    let code = crate::sandbox::tty::run_interactive(rep, &plan, Some(&lock.file));
    // Init has ended, and with it its mount points, unless it was killed: then the journal
    // stays for whoever comes next.
    if code != exit::signal(9) {
        journal.close();
    }
    if let Some(layer) = throwaway {
        let _ = crate::scratch::remove(&layer);
    }
    code
}

/// The profile file and kept overlay layer of run `run`.
fn kept_layer(run: &str) -> Result<(std::path::PathBuf, std::path::PathBuf), String> {
    let state = crate::state::state_dir();
    let entry = crate::record::read_index(&state)
        .into_iter()
        .rev()
        .find(|e| e.run_id == run || e.profile == run)
        .ok_or_else(|| format!("no run `{run}`; `bldr runs` lists them"))?;
    let text = std::fs::read_to_string(entry.run_dir.join("report.json"))
        .map_err(|e| format!("cannot read the report of {}: {e}", entry.run_id))?;
    let report: crate::record::Report = serde_json::from_str(&text)
        .map_err(|e| format!("the report of {} is not readable: {e}", entry.run_id))?;
    let scratch = report.scratch.filter(|s| s.is_dir()).ok_or_else(|| {
        format!(
            "run {} kept no overlay layer (run it with --ephemeral --keep)",
            entry.run_id
        )
    })?;
    Ok((report.profile.path, scratch))
}
