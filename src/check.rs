//! `bldr check`: is each profile valid (exit 2 if not), is it ready to run here (a
//! warning if not: that is the host's state), and what does this host support.

use crate::exit;
use crate::profile::{self, Overrides, SearchPath};
use crate::readiness::{self, LiveHost};
use crate::run::{out_root, RunOptions};
use crate::sandbox::probe;
use serde_json::json;

pub fn check(search: &SearchPath, names: &[String], as_json: bool) -> i32 {
    let specs: Vec<String> = if names.is_empty() {
        search
            .list()
            .into_iter()
            .map(|(_, p)| p.display().to_string())
            .collect()
    } else {
        names.to_vec()
    };
    let state = crate::state::state_dir();
    let mut code = exit::SUCCESS;
    let mut results = Vec::new();
    for spec in &specs {
        match profile::load(spec, search, &Overrides::default()) {
            Err(e) => {
                code = exit::USAGE;
                let errors: Vec<String> = e.0.iter().map(|x| x.to_string()).collect();
                if !as_json {
                    crate::errln!("{spec}: invalid");
                    for x in &errors {
                        crate::errln!("  error: {x}");
                    }
                }
                results.push(json!({"profile": spec, "valid": false, "errors": errors}));
            }
            Ok(p) => {
                let out = out_root(&p, &RunOptions::default(), &state);
                let problems = readiness::check(&p, &out, &LiveHost);
                if !as_json {
                    let verdict = if problems.is_empty() {
                        "valid, ready to run"
                    } else {
                        "valid, not ready here"
                    };
                    crate::errln!("{} ({}): {verdict}", p.name, p.file.display());
                    for pr in &problems {
                        crate::errln!("  warning: {}{}", pr.origin, pr.message);
                        if let Some(f) = &pr.fix {
                            crate::errln!("    fix: {f}");
                        }
                    }
                }
                results.push(json!({
                    "profile": p.name,
                    "file": p.file,
                    "valid": true,
                    "ready": problems.is_empty(),
                    "warnings": problems.iter().map(|p| json!({"message": p.message, "fix": p.fix})).collect::<Vec<_>>(),
                }));
            }
        }
    }
    let host = probe::host_support();
    if as_json {
        crate::outln!(
            "{}",
            serde_json::to_string_pretty(&json!({"profiles": results, "host": host}))
                .expect("json")
        );
    } else {
        crate::errln!("host:");
        for s in &host {
            crate::errln!(
                "  {:<7} {:<14} {}",
                if s.ok { "ok" } else { "MISSING" },
                s.feature,
                s.detail
            );
            if let Some(f) = &s.fix {
                crate::errln!("          fix: {f}");
            }
        }
    }
    code
}
