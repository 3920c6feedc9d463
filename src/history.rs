//! `bldr runs` and `bldr logs`: past runs, found through the index in the state
//! directory (so runs written to any `--out` are found too).

use crate::exit;
use crate::record::{self, IndexEntry};
use crate::units::format_duration;
use std::time::Duration;

fn entries(profile: Option<&str>) -> Vec<IndexEntry> {
    let state = crate::state::state_dir();
    record::read_index(&state)
        .into_iter()
        .filter(|e| profile.is_none_or(|p| e.profile == p))
        .collect()
}

pub fn runs(profile: Option<&str>, json: bool) -> i32 {
    let list = entries(profile);
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(&list).expect("json"));
        return exit::SUCCESS;
    }
    if list.is_empty() {
        match profile {
            Some(p) => crate::errln!("bldr: no runs of {p} recorded"),
            None => crate::errln!("bldr: no runs recorded yet"),
        }
        return exit::SUCCESS;
    }
    crate::outln!(
        "{:<24}  {:<16}  {:<16}  {:>9}  {:>9}  DIR",
        "RUN",
        "PROFILE",
        "OUTCOME",
        "DURATION",
        "ARTIFACTS"
    );
    for e in &list {
        crate::outln!(
            "{:<24}  {:<16}  {:<16}  {:>9}  {:>9}  {}",
            e.run_id,
            e.profile,
            e.outcome.as_str(),
            format_duration(Duration::from_millis(e.duration_ms)),
            e.artifacts,
            e.run_dir.display()
        );
    }
    exit::SUCCESS
}

pub fn logs(run: &str) -> i32 {
    let all = entries(None);
    let found = all
        .iter()
        .rev()
        .find(|e| e.run_id == run)
        .or_else(|| all.iter().rev().find(|e| e.profile == run));
    let path = match found {
        Some(e) => e.run_dir.join("build.log"),
        None => match unindexed_log(run) {
            Some(path) => {
                crate::errln!(
                    "bldr: {run} is not in the run index (a run still going, or one whose bldr was killed); its log is {}",
                    path.display()
                );
                path
            }
            None => {
                crate::errln!(
                    "bldr: error: no run `{run}`; `bldr runs` lists them (a run whose bldr was killed is not listed, but its log stays in <out>/<profile>/<run-id>.incomplete/build.log)"
                );
                return exit::USAGE;
            }
        },
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            use std::io::Write;
            let _ = std::io::stdout().write_all(&bytes);
            exit::SUCCESS
        }
        Err(err) => {
            crate::errln!("bldr: error: cannot read {}: {err}", path.display());
            exit::USAGE
        }
    }
}

/// The log of run `run` in the state directory's own run folders, for a run the index
/// does not have: one whose bldr was killed (SIGKILL) before it could write its record,
/// left as `<state>/runs/<profile>/<run-id>.incomplete`.
fn unindexed_log(run: &str) -> Option<std::path::PathBuf> {
    if !record::is_run_id(run) {
        return None;
    }
    let runs = crate::state::state_dir().join("runs");
    std::fs::read_dir(runs).ok()?.flatten().find_map(|profile| {
        [format!("{run}.incomplete"), run.to_string()]
            .iter()
            .map(|name| profile.path().join(name).join("build.log"))
            .find(|log| log.is_file())
    })
}
