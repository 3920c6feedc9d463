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
    let Some(e) = found else {
        crate::errln!("bldr: error: no run `{run}`; `bldr runs` lists them");
        return exit::USAGE;
    };
    let path = e.run_dir.join("build.log");
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
