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

pub fn shell(
    rep: &Reporter,
    search: &SearchPath,
    profile_spec: Option<&str>,
    directory: Option<String>,
    overrides: &Overrides,
    argv: Vec<String>,
) -> i32 {
    let script = script_for(&argv);
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
    if !run::ensure_ready(rep, &p, &plan, &out) {
        return exit::USAGE;
    }
    crate::sandbox::tty::run_interactive(rep, &plan)
}
