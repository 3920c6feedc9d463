//! `bldr run` and `bldr shell`: load, plan, check readiness, start the sandbox, stream its
//! output to the terminal and the log, and write the run record. The sandbox does the
//! work; this module only watches it and writes down what happened.

use crate::artifact;
use crate::exit;
use crate::lock;
use crate::plan::{self, Plan, PlanInputs};
use crate::profile::{Profile, ProfileErrors};
use crate::readiness::{self, LiveHost};
use crate::record::{
    self, ArtifactList, ArtifactRecord, BuildLog, CommandRecord, Outcome, Refusal, Report,
};
use crate::reporter::Reporter;
use crate::sandbox::launch;
use crate::sandbox::proto::{Event, Frame};
use crate::scratch;
use crate::units::format_duration;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Options of `run` that are not profile settings.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub out: Option<PathBuf>,
    pub json: bool,
    pub keep: Keep,
    pub no_wait: bool,
}

/// When an ephemeral run's overlay layer is kept (`--keep`, `--keep=failure`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Keep {
    #[default]
    Never,
    Always,
    Failure,
}

/// The caller's environment, for `pass_env` and TERM.
pub fn host_env() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// Prints a profile error the way every command does, and returns exit code 2.
pub fn report_profile_errors(rep: &Reporter, e: &ProfileErrors) -> i32 {
    for err in &e.0 {
        rep.error(&err.to_string());
    }
    exit::USAGE
}

/// Where this profile's run records go: `--out`, the profile's `out:`, or the state dir.
pub fn out_root(profile: &Profile, opts: &RunOptions, state: &Path) -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    opts.out
        .as_ref()
        .map(|o| crate::profile::validate::normalize(&cwd.join(o)))
        .or_else(|| profile.out.clone())
        .unwrap_or_else(|| state.join("runs"))
}

/// Checks readiness; prints every problem and returns false if there is any.
pub fn ensure_ready(rep: &Reporter, profile: &Profile, out: &Path) -> bool {
    let problems = readiness::check(profile, out, &LiveHost);
    for p in &problems {
        rep.error(&format!("not ready: {p}"));
    }
    problems.is_empty()
}

/// Receives artifact records as they arrive and writes them to the run's JSON-lines list,
/// keeping only counts in memory.
pub struct ArtifactSink {
    list: Option<std::io::BufWriter<std::fs::File>>,
    pub list_path: PathBuf,
    pub count: usize,
    pub bytes: u64,
    pub matched: Vec<usize>,
    pub refused: Vec<Refusal>,
    pub failed: Option<String>,
    bar: Option<indicatif::ProgressBar>,
}

impl ArtifactSink {
    fn new(run_dir: &Path, rules: usize) -> ArtifactSink {
        ArtifactSink {
            // Made with the first record: most runs of a profile without artifact rules
            // never need it.
            list: None,
            list_path: run_dir.join(".artifacts.jsonl"),
            count: 0,
            bytes: 0,
            matched: vec![0; rules],
            refused: vec![],
            failed: None,
            bar: None,
        }
    }

    fn add(&mut self, rep: &Reporter, rec: &ArtifactRecord) {
        use std::io::Write;
        if self.bar.is_none() {
            self.bar = rep.progress_bar("collecting artifacts");
        }
        self.count += 1;
        self.bytes += rec.size;
        if let Some(m) = self.matched.get_mut(rec.rule) {
            *m += 1;
        }
        if let Some(b) = &self.bar {
            b.set_position(self.count as u64);
            b.set_message(format!(
                "collecting artifacts: {} files, {}",
                self.count,
                indicatif::HumanBytes(self.bytes)
            ));
        }
        if self.list.is_none() && self.count == 1 {
            self.list = std::fs::File::create(&self.list_path)
                .ok()
                .map(std::io::BufWriter::new);
        }
        let ok = self.list.as_mut().is_some_and(|f| {
            serde_json::to_writer(&mut *f, rec).is_ok() && f.write_all(b"\n").is_ok()
        });
        if !ok && self.failed.is_none() {
            self.failed = Some(format!("cannot write {}", self.list_path.display()));
        }
    }

    fn refuse(&mut self, rule: usize, path: String, path_hex: Option<String>, reason: String) {
        self.refused.push(Refusal {
            rule,
            path,
            path_hex,
            reason,
        });
    }

    fn close(&mut self) {
        use std::io::Write;
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        if let Some(mut f) = self.list.take() {
            if f.flush().is_err() && self.failed.is_none() {
                self.failed = Some(format!("cannot write {}", self.list_path.display()));
            }
        }
    }

    pub fn list(&self) -> ArtifactList {
        ArtifactList::Streamed {
            file: self.list_path.clone(),
            count: self.count,
        }
    }
}

/// Records the files of shared-tree rules that are new or changed since the run began.
fn record_in_place(
    rep: &Reporter,
    plan: &Plan,
    before: &[Option<artifact::Snapshot>],
    sink: &mut ArtifactSink,
    stopped: &dyn Fn() -> bool,
) {
    for (i, rule) in plan.artifacts.iter().enumerate() {
        let (Some(dir), Some(Some(snap))) = (&rule.host_path, before.get(i)) else {
            continue;
        };
        if let Some(share) = &rule.share_source {
            if let Err(why) = artifact::inside_share(dir, share) {
                sink.refuse(i, rule.from.to_string(), None, why);
                continue;
            }
        }
        let Ok(sel) = artifact::Selector::new(rule) else {
            continue;
        };
        let (found, refused) = artifact::changed_in_place(dir, &sel, snap);
        for (rel, why) in refused {
            let (path, path_hex) = artifact::display_path(artifact::bytes_of(&rel));
            sink.refuse(i, path, path_hex, why);
        }
        for f in found {
            if stopped() {
                sink.failed
                    .get_or_insert(crate::sandbox::collect::STOPPED.into());
                return;
            }
            match record::sha256_file(&f.host_path) {
                Ok(sha256) => {
                    let (path, path_hex) = artifact::display_path(artifact::bytes_of(&f.rel));
                    sink.add(
                        rep,
                        &ArtifactRecord {
                            rule: i,
                            path,
                            path_hex,
                            size: f.size,
                            sha256,
                            source: format!(
                                "{}/{}",
                                rule.from.as_str().trim_end_matches('/'),
                                f.rel.display()
                            ),
                            stored: "in-place".into(),
                            host_path: Some(f.host_path.clone()),
                        },
                    );
                }
                Err(e) => sink.refuse(
                    i,
                    f.rel.display().to_string(),
                    None,
                    format!("cannot be read: {e}"),
                ),
            }
        }
    }
}

/// Writes `SHA256SUMS` for the copied artifacts, in the format `sha256sum -c` checks.
fn write_sha256sums(dir: &Path, list: &ArtifactList) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dir.join("SHA256SUMS"))?,
    );
    let mut result = Ok(());
    list.for_each(|rec| {
        if rec.stored != "copied" || result.is_err() {
            return;
        }
        let bytes = match &rec.path_hex {
            Some(h) => record::unhex(h),
            None => rec.path.as_bytes().to_vec(),
        };
        result = out.write_all(&artifact::sha256sums_line(&rec.sha256, &bytes));
    })?;
    result?;
    out.flush()
}

/// The journal of mount points a run made in a chroot used in place, kept beside the
/// chroot's lock while the run goes on. Init writes it as it makes them, an entry before
/// and after each is made (`sandbox::mounts::JournalEntry`): if bldr and init are killed
/// before init removed them, the next run on that chroot removes them (SPEC §4.3),
/// holding the exclusive lock.
pub struct MountJournal {
    path: Option<PathBuf>,
}

impl MountJournal {
    /// The journal of `profile`'s chroot; none for an ephemeral run (its mount points go
    /// with the overlay layer).
    pub fn for_run(state: &Path, profile: &Profile) -> MountJournal {
        let path = (!profile.ephemeral)
            .then(|| lock::journal_path(state, &profile.chroot).ok())
            .flatten();
        MountJournal { path }
    }

    /// Where init is to write the journal (`Plan::mount_journal`).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Removes what an earlier, killed run left. Returns the lines for the log, which
    /// does not exist yet: the sandbox must not create a mount point before this.
    pub fn replay(&self, rep: &Reporter, chroot: &Path) -> Vec<String> {
        let mut notes = Vec::new();
        let Some(path) = &self.path else {
            return notes;
        };
        let Ok(text) = std::fs::read_to_string(path) else {
            return notes;
        };
        let made: Vec<crate::sandbox::mounts::JournalEntry> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let (removed, left) = crate::sandbox::mounts::remove_journaled(chroot, &made);
        if removed > 0 {
            let m = format!(
                "removed {removed} mount point(s) left in the chroot by a run that was killed"
            );
            rep.info(&m);
            notes.push(m);
        }
        for l in left {
            notes.push(format!("warning: mount point left by an earlier run: {l}"));
        }
        let _ = std::fs::remove_file(path);
        notes
    }

    /// The run removed its mount points itself: nothing is left to journal.
    pub fn close(&mut self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The stop signals (INT, TERM, HUP, QUIT), caught from the moment a run directory may
/// exist; forwarded to the build once it runs.
pub struct StopSignals(Option<signal_hook::iterator::Signals>);

impl StopSignals {
    pub fn install() -> StopSignals {
        StopSignals(
            signal_hook::iterator::Signals::new(
                crate::sandbox::init::STOP_SIGNALS.map(|s| s as libc::c_int),
            )
            .ok(),
        )
    }
}

/// Takes the chroot's lock (shared for an ephemeral run), saying who holds it while
/// waiting; `Err` is the exit code when it cannot be had.
pub fn lock_chroot(
    rep: &Reporter,
    state: &Path,
    profile: &Profile,
    run_id: &str,
    wait: bool,
) -> Result<lock::ChrootLock, i32> {
    let holder = lock::Holder {
        pid: std::process::id(),
        run_id: run_id.to_string(),
        profile: profile.name.clone(),
        since: record::timestamp(SystemTime::now()),
        shared: profile.ephemeral,
    };
    let describe = |who: &[lock::Holder]| {
        let names: Vec<String> = who.iter().map(|h| h.to_string()).collect();
        if names.is_empty() {
            "another run".to_string()
        } else {
            names.join(", ")
        }
    };
    match lock::acquire(state, &profile.chroot, holder, wait, |who| {
        rep.info(&format!(
            "waiting for the lock on {} held by {}",
            profile.chroot.display(),
            describe(who)
        ));
    }) {
        Ok(l) => Ok(l),
        Err(lock::LockError::Busy(who)) => {
            rep.error(&format!(
                "{} is locked by {}; retry later, or leave out --no-wait to wait",
                profile.chroot.display(),
                describe(&who)
            ));
            Err(exit::LOCKED)
        }
        Err(lock::LockError::Io(e, path)) => {
            // Without root the lock lives under the state directory, in the home folder;
            // what fails there is most often the first sign that bldr is not root.
            let hint = if crate::sandbox::is_root() {
                ""
            } else {
                "; bldr needs root (run as root: sudo bldr ...)"
            };
            rep.error(&format!(
                "cannot lock {}: {e} ({}){hint}",
                profile.chroot.display(),
                path.display()
            ));
            Err(exit::SETUP)
        }
    }
}

/// Runs `profile`; returns bldr's exit code. `sandbox` is the build's init, started by the
/// caller before it even read the profile ([`launch::start`]): it waits for its plan
/// while bldr takes the lock, so that its exec and its namespaces cost no time.
pub fn run(
    rep: &Reporter,
    profile: &Profile,
    opts: &RunOptions,
    sandbox: std::io::Result<launch::Starting>,
) -> i32 {
    let state = crate::state::state_dir();
    let out = out_root(profile, opts, &state);
    let inputs = PlanInputs {
        host_env: host_env(),
        scratch: state.join("scratch"),
    };
    let mut plan = plan::build(profile, &inputs);
    if !ensure_ready(rep, profile, &out) {
        return exit::USAGE;
    }
    let run_id = record::new_run_id(SystemTime::now());
    let chroot_lock = match lock_chroot(rep, &state, profile, &run_id, !opts.no_wait) {
        Ok(l) => l,
        Err(code) => return code,
    };
    // The run starts once it holds the lock: waiting is not part of its duration.
    let started_at = SystemTime::now();
    // From here on a stop signal is bldr's to handle: the run directory it is about to
    // create must end with a report, never be left half-made by a default action.
    let mut stop = StopSignals::install();
    let run_dir = record::RunDir::new(&out, &profile.name, &run_id);
    let scratch = if profile.ephemeral {
        match scratch::create(&state, &run_id, opts.keep != Keep::Never) {
            Ok(layer) => {
                // A layer that may be kept is synced like any other file system.
                plan.root = plan::Root::overlay(&profile.chroot, &layer, opts.keep == Keep::Never);
                Some(layer)
            }
            Err(e) => {
                rep.error(&format!(
                    "cannot create the overlay layer under {}: {e}",
                    state.join("scratch").display()
                ));
                return exit::SETUP;
            }
        }
    } else {
        None
    };
    if !plan.artifacts.is_empty() {
        plan.artifacts_dir = Some(run_dir.work.join("artifacts"));
    }
    // Before init has its plan: the watch on the host's mount table, and what a killed
    // run left in the chroot cleaned up before init makes mount points of its own.
    let mut mounts = record::MountWatch::start();
    let mut journal = MountJournal::for_run(&state, profile);
    let replayed = journal.replay(rep, &profile.chroot);
    plan.mount_journal = journal.path().map(Path::to_path_buf);
    // Init gets its plan now and sets up the mounts while the run directory is made; it
    // runs no command before the go, which comes once the log exists. A stop signal that
    // came first starts nothing: init, dropped, sees its stdin end and exits.
    let mut sandbox = match stop.0.as_mut().and_then(|s| s.pending().next()) {
        Some(sig) => Err(Unstarted::Stopped(sig)),
        None => sandbox
            .and_then(|m| m.hand(&plan, Some(&chroot_lock.file)))
            .map_err(Unstarted::Failed),
    };
    // The table itself is read while init sets up its mounts (they are its own).
    mounts.read_table();
    let abandon = |sandbox: Result<(launch::Launched, launch::SandboxStderr), Unstarted>| {
        // Init sees the end of its stdin instead of the go, removes its mount points and
        // exits; the overlay layer goes once it has.
        if let Ok((launched, _)) = sandbox {
            launched.abandon();
        }
        if let Some(layer) = &scratch {
            let _ = scratch::remove(layer);
        }
        exit::SETUP
    };
    if let Err(e) = run_dir.create() {
        rep.error(&format!(
            "cannot create the run directory under {}: {e}",
            out.join(&profile.name).display()
        ));
        return abandon(sandbox);
    }
    let run_id = run_dir.id.clone();
    let work = run_dir.work.clone();
    let mut log = match BuildLog::create(&work) {
        Ok(l) => l,
        Err(e) => {
            rep.error(&format!(
                "cannot create {}: {e}",
                work.join("build.log").display()
            ));
            return abandon(sandbox);
        }
    };
    let mut stage = None;
    if let Some(dir) = &plan.artifacts_dir {
        // Opened here, on the host, and kept by bldr until init has killed every process
        // of the build (launch::Launched::go).
        let opened = std::fs::create_dir(dir)
            .and_then(|()| crate::sandbox::sys::open_dir(dir).map_err(std::io::Error::other));
        match opened {
            Ok(fd) => stage = Some(fd),
            Err(e) => {
                rep.error(&format!("cannot create {}: {e}", dir.display()));
                return abandon(sandbox);
            }
        }
    }
    log.note(&format!(
        "bldr {} run {run_id} of profile {} ({})",
        env!("CARGO_PKG_VERSION"),
        profile.name,
        profile.file.display()
    ));
    log.note(&format!(
        "chroot {}{}",
        profile.chroot.display(),
        if profile.ephemeral {
            " (ephemeral)"
        } else {
            ""
        }
    ));
    for note in &replayed {
        log.note(note);
    }
    rep.info(&format!(
        "run {run_id} of {} in {}",
        profile.name,
        profile.chroot.display()
    ));

    // Shared-tree rules: what is there before the run is not the run's.
    let snapshots: Vec<Option<artifact::Snapshot>> = plan
        .artifacts
        .iter()
        .map(|a| {
            let host = a.host_path.as_ref().filter(|_| !a.copy)?;
            let safe = a
                .share_source
                .as_ref()
                .is_none_or(|s| artifact::inside_share(host, s).is_ok());
            Some(if safe {
                artifact::snapshot(host)
            } else {
                artifact::Snapshot::new()
            })
        })
        .collect();
    let mut sink = ArtifactSink::new(&work, plan.artifacts.len());
    if let Ok((launched, _)) = &mut sandbox {
        launched.go(stage);
    }
    let mut watch = watch(rep, sandbox, &plan, &mut log, &mut sink, stop, &mut journal);
    if watch.init_killed {
        // Init died before removing its mount points, and is reaped, with every process
        // and mount of the build: they can go now, under the lock this run still holds,
        // rather than at the next run.
        for note in journal.replay(rep, &profile.chroot) {
            log.note(&note);
        }
    }
    let setup_ok = watch.setup_failed.is_none() && watch.interrupted_by.is_none();
    if setup_ok {
        let stop = watch.stop_signal.clone();
        record_in_place(rep, &plan, &snapshots, &mut sink, &|| {
            stop.load(Ordering::SeqCst) != 0
        });
        // A stop signal after the build ended, while bldr hashed what it records in
        // place, stops the run as one during the build would.
        let sig = watch.stop_signal.load(Ordering::SeqCst);
        if sig != 0 && watch.interrupted_by.is_none() {
            watch.interrupted_by = Some(sig);
        }
    }
    sink.close();
    let ended_at = SystemTime::now();
    let host_clean = mounts.finish();

    let (mut outcome, mut code) = watch.outcome();
    let mut message = watch.message.clone();
    // Init killed from outside may have been collecting: what is staged is not the whole
    // collection, so it is neither summed nor published.
    if watch.init_killed && plan.artifacts_dir.is_some() && sink.failed.is_none() {
        sink.failed = Some("the build's init was killed before collection was complete".into());
    }
    for r in &sink.refused {
        log.note(&format!("artifact refused: {}: {}", r.path, r.reason));
    }
    if let Some(dir) = &plan.artifacts_dir {
        if sink.failed.is_none() {
            if let Err(e) = write_sha256sums(dir, &sink.list()) {
                sink.failed = Some(format!(
                    "cannot write {}: {e}",
                    dir.join("SHA256SUMS").display()
                ));
            }
        }
    }
    // A collection cut short says nothing of the rules it never reached.
    let cut_short = sink.failed.is_some() || watch.interrupted_by.is_some();
    let missing: Vec<String> = plan
        .artifacts
        .iter()
        .enumerate()
        .filter(|_| !cut_short)
        .filter(|(i, a)| a.required && sink.matched.get(*i) == Some(&0))
        .map(|(i, a)| {
            format!(
                "artifacts[{i}] (from {}) is required and matched no file",
                a.from
            )
        })
        .collect();
    let build_succeeded = outcome == Outcome::Success;
    if outcome == Outcome::Success {
        if let Some(f) = &sink.failed {
            (outcome, code) = (Outcome::ArtifactsFailed, exit::ARTIFACTS);
            message = Some(f.clone());
        } else if !missing.is_empty() {
            (outcome, code) = (Outcome::ArtifactsFailed, exit::ARTIFACTS);
            message = Some(missing.join("; "));
        }
    }
    if let Some(f) = &sink.failed {
        rep.error(f);
        log.note(&format!("artifact collection failed: {f}"));
    }
    for m in &missing {
        log.note(m);
        if outcome == Outcome::ArtifactsFailed {
            rep.error(m);
        }
    }
    if !plan.artifacts.is_empty() {
        log.note(&format!(
            "artifacts: {} files, {} bytes",
            sink.count, sink.bytes
        ));
    }
    match outcome {
        Outcome::Success => log.note("outcome: success"),
        o => log.note(&format!(
            "outcome: {} (exit {code}){}",
            o.as_str(),
            message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        )),
    }
    if !host_clean.clean {
        log.note(
            "warning: the host's mount table changed during the run (see report.json host_clean)",
        );
    }
    // The log is part of the record: one cut off by a full disk, also among the notes
    // above (its last lines), is a run whose record failed, and that says so before any
    // other reason. A log writes nothing after its first failure, so no note above told
    // another outcome.
    if let Some(lost) = &log.lost {
        rep.error(lost);
        if build_succeeded {
            (outcome, code) = (Outcome::ArtifactsFailed, exit::ARTIFACTS);
            message = Some(lost.clone());
        }
    }
    // A collection that failed part-way stays `<run-id>.incomplete`, as does a run whose
    // log is cut off; everything else is published under its id.
    let publish = sink.failed.is_none() && log.lost.is_none();
    let keep = match opts.keep {
        Keep::Always => true,
        Keep::Failure => outcome != Outcome::Success,
        Keep::Never => false,
    };
    let mut kept_scratch = None;
    let mut discard = None;
    if let Some(layer) = &scratch {
        let dir = layer.path();
        if keep {
            log.note(&format!(
                "overlay layer kept in {} (bldr shell --run {run_id})",
                dir.display()
            ));
            rep.info(&format!(
                "kept the overlay layer in {}; `bldr shell --run {run_id}` enters it",
                dir.display()
            ));
            kept_scratch = Some(dir.to_path_buf());
        } else {
            discard = Some(layer);
        }
    }
    let report = Report {
        schema_version: record::SCHEMA_VERSION,
        bldr_version: env!("CARGO_PKG_VERSION").into(),
        run_id: run_id.clone(),
        run_dir: if publish {
            run_dir.done.clone()
        } else {
            run_dir.work.clone()
        },
        profile: record::ProfileInfo {
            name: profile.name.clone(),
            path: profile.file.clone(),
            sha256: record::sha256_small_file(&profile.file).unwrap_or_default(),
        },
        chroot: profile.chroot.clone(),
        ephemeral: profile.ephemeral,
        started: record::timestamp(started_at),
        ended: record::timestamp(ended_at),
        duration_ms: ended_at
            .duration_since(started_at)
            .unwrap_or_default()
            .as_millis() as u64,
        outcome,
        exit_code: code,
        signal: watch.signal(),
        message,
        namespaces: record::Namespaces {
            pid: watch.pid_ns,
            mnt: watch.mnt_ns,
        },
        commands: watch.commands(&plan),
        artifacts: sink.list(),
        refused: sink.refused.clone(),
        host_clean,
        scratch: kept_scratch,
    };
    let code = finish(rep, &state, &run_dir, publish, &report, opts.json);
    // The layer goes once no mount holds it, before the lock goes, and after the record is
    // written.
    if let Some(layer) = discard {
        watch.wait_until_root_free();
        let dir = layer.path();
        match scratch::remove(layer) {
            Ok(left) if left.is_empty() => {}
            Ok(left) => rep.warn(&format!(
                "left {} entries on other filesystems in {}",
                left.len(),
                dir.display()
            )),
            Err(e) => rep.warn(&format!(
                "cannot remove the overlay layer {}: {e}",
                dir.display()
            )),
        }
    }
    watch.reap();
    code
}

/// Writes report.json, publishes the run directory, switches `latest`, appends the index
/// entry and prints the summary. Returns bldr's exit code: the report's, unless
/// report.json could not be written. The run directory then stays `<run-id>.incomplete`,
/// since a published run always has its report, and a run that had succeeded is
/// `artifacts-failed`, exit 3, in the index and the summary.
fn finish(
    rep: &Reporter,
    state: &Path,
    run_dir: &record::RunDir,
    publish: bool,
    report: &Report,
    json: bool,
) -> i32 {
    let work = &run_dir.work;
    let report_path = work.join("report.json");
    let written = record::write_atomically_with(&report_path, |w| {
        serde_json::to_writer_pretty(&mut *w, report).map_err(std::io::Error::other)?;
        w.write_all(b"\n")
    });
    let mut outcome = report.outcome;
    let mut exit_code = report.exit_code;
    if let Err(e) = &written {
        rep.error(&format!("cannot write {}: {e}", report_path.display()));
        if outcome == Outcome::Success {
            (outcome, exit_code) = (Outcome::ArtifactsFailed, exit::ARTIFACTS);
        }
    }
    let _ = std::fs::remove_file(work.join(".artifacts.jsonl"));
    let mut final_dir = work.clone();
    if publish && written.is_ok() {
        match run_dir.publish() {
            Ok(()) => {
                final_dir = run_dir.done.clone();
                if let Some(parent) = final_dir.parent() {
                    if let Err(e) = record::set_latest(parent, &report.run_id) {
                        rep.warn(&format!("cannot update {}/latest: {e}", parent.display()));
                    }
                }
            }
            Err(e) => rep.error(&format!(
                "cannot publish {} as {}: {e}",
                work.display(),
                run_dir.done.display()
            )),
        }
    }
    let entry = record::IndexEntry {
        run_id: report.run_id.clone(),
        profile: report.profile.name.clone(),
        run_dir: final_dir.clone(),
        outcome,
        started: report.started.clone(),
        duration_ms: report.duration_ms,
        artifacts: report.artifacts.len(),
    };
    if let Err(e) = record::append_index(state, &entry) {
        rep.warn(&format!(
            "cannot update the run index in {}: {e}",
            state.display()
        ));
    }
    if json {
        if let Ok(mut f) = std::fs::File::open(final_dir.join("report.json")) {
            let _ = std::io::copy(&mut f, &mut std::io::stdout().lock());
        }
    }
    let took = format_duration(Duration::from_millis(report.duration_ms));
    let artifacts = if report.artifacts.is_empty() {
        String::new()
    } else {
        match report.artifacts.len() {
            1 => ", 1 artifact".to_string(),
            n => format!(", {n} artifacts"),
        }
    };
    let summary = match outcome {
        Outcome::Success => format!("{} succeeded in {took}{artifacts}", report.profile.name),
        o => format!(
            "{} {} in {took} (exit {exit_code}){artifacts}",
            report.profile.name,
            o.as_str(),
        ),
    };
    rep.info(&format!("{summary}; record in {}", final_dir.display()));
    if !report.host_clean.clean {
        rep.warn("the host's mount table changed during the run; see host_clean in report.json");
    }
    exit_code
}

/// What the watch over a running sandbox saw.
pub struct Watch {
    pub pid_ns: u64,
    pub mnt_ns: u64,
    pub setup_failed: Option<String>,
    pub message: Option<String>,
    pub finished: BTreeMap<usize, (Option<i32>, Option<i32>, u64, bool)>,
    pub started: Vec<usize>,
    pub interrupted_by: Option<i32>,
    pub init_code: i32,
    /// Init died of a signal that did not come through bldr.
    pub init_killed: bool,
    /// The first stop signal bldr got, also after the build ended (0: none), for the
    /// work bldr does after it: recording artifacts in place.
    pub stop_signal: Arc<AtomicI32>,
    /// init and the thread reading its stderr, not yet waited for: once init has
    /// said `cleaned` (with its exit code), every process of the build is dead, and init's
    /// exit with the kernel's teardown of the namespaces (a few hundred microseconds)
    /// runs while bldr writes the record. [`Watch::reap`] waits for them.
    pending: Option<(launch::Launched, std::thread::JoinHandle<Vec<String>>)>,
}

impl Watch {
    /// Waits for init and its stderr reader, if that is still to do. Init's word
    /// on the outcome stands: the build was over when it spoke.
    pub fn reap(&mut self) {
        if let Some((sandbox, stderr)) = self.pending.take() {
            let _ = sandbox.wait();
            let _ = stderr.join();
        }
    }

    /// Returns once no mount holds the build's root any more: as soon as init, still
    /// exiting, says it has let go of it (`root-released`), or else once init is reaped.
    pub fn wait_until_root_free(&mut self) {
        if let Some((sandbox, _)) = self.pending.as_mut() {
            while let Some(frame) = sandbox.next_frame() {
                if frame == Frame::Event(Event::RootReleased) {
                    return;
                }
            }
        }
        self.reap();
    }

    fn signal(&self) -> Option<i32> {
        self.interrupted_by
    }

    /// The outcome and bldr's exit code, by SPEC §2.
    pub fn outcome(&self) -> (Outcome, i32) {
        if let Some(sig) = self.interrupted_by {
            return (Outcome::Interrupted, exit::signal(sig));
        }
        if self.setup_failed.is_some() {
            return (Outcome::SetupFailed, exit::SETUP);
        }
        if self.init_killed {
            return (Outcome::CommandFailed, exit::COMMAND_FAILED);
        }
        if self.finished.values().any(|f| f.3) || self.init_code == exit::TIMEOUT {
            return (Outcome::Timeout, exit::TIMEOUT);
        }
        match self.init_code {
            exit::SUCCESS => (Outcome::Success, exit::SUCCESS),
            exit::COMMAND_FAILED => (Outcome::CommandFailed, exit::COMMAND_FAILED),
            c if c > 128 => (Outcome::Interrupted, c),
            _ => (Outcome::SetupFailed, exit::SETUP),
        }
    }

    fn commands(&self, plan: &Plan) -> Vec<CommandRecord> {
        plan.commands
            .iter()
            .map(|c| {
                let f = self.finished.get(&c.number);
                let status = match f {
                    None if self.started.contains(&c.number) && self.init_killed => "failed",
                    None if self.started.contains(&c.number) => "interrupted",
                    None => "not-run",
                    Some((_, _, _, true)) => "timeout",
                    Some((Some(0), _, _, _)) => "success",
                    Some(_) if self.interrupted_by.is_some() => "interrupted",
                    Some(_) => "failed",
                };
                CommandRecord {
                    number: c.number,
                    name: c.name.clone(),
                    run: c.run.clone(),
                    status: status.into(),
                    exit_code: f.and_then(|f| f.0),
                    signal: f.and_then(|f| f.1),
                    duration_ms: f.map(|f| f.2),
                }
            })
            .collect()
    }
}

/// Why there is no sandbox to watch.
pub enum Unstarted {
    /// A stop signal came before the plan was handed over.
    Stopped(i32),
    /// The sandbox could not be started or given its plan.
    Failed(std::io::Error),
}

/// Follows a sandbox that has had its plan and its go to the end of its frames: output
/// to the terminal and the log, signals forwarded.
pub fn watch(
    rep: &Reporter,
    sandbox: Result<(launch::Launched, launch::SandboxStderr), Unstarted>,
    plan: &Plan,
    log: &mut BuildLog,
    sink: &mut ArtifactSink,
    stop: StopSignals,
    journal: &mut MountJournal,
) -> Watch {
    let mut w = Watch {
        pid_ns: 0,
        mnt_ns: 0,
        setup_failed: None,
        message: None,
        finished: BTreeMap::new(),
        started: vec![],
        interrupted_by: None,
        init_code: exit::SETUP,
        init_killed: false,
        stop_signal: Arc::new(AtomicI32::new(0)),
        pending: None,
    };
    let (mut sandbox, stderr) = match sandbox {
        Ok(x) => x,
        Err(Unstarted::Stopped(sig)) => {
            let m = format!("stopped by signal {sig} before the build started");
            rep.warn(&m);
            log.note(&m);
            w.interrupted_by = Some(sig);
            w.message = Some(m);
            return w;
        }
        Err(Unstarted::Failed(e)) => {
            let m = format!("cannot start the sandbox: {e}");
            rep.error(&m);
            log.note(&m);
            w.setup_failed = Some(m.clone());
            w.message = Some(m);
            return w;
        }
    };
    let got_signal = w.stop_signal.clone();
    let fwd = sandbox.forwarder();
    if let Some(mut signals) = stop.0 {
        let got = got_signal.clone();
        let rep = rep.clone();
        std::thread::spawn(move || {
            for sig in signals.forever() {
                if got
                    .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    rep.warn(&format!(
                        "stopping the build (signal {sig}); again to kill it at once"
                    ));
                }
                fwd.send(sig);
            }
        });
    }
    let stderr_thread = {
        let rep = rep.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut lines = Vec::new();
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                rep.warn(&format!("sandbox: {line}"));
                lines.push(line);
            }
            lines
        })
    };
    let total = plan.commands.len();
    let mut cleaned = None;
    while let Some(frame) = sandbox.next_frame() {
        match frame {
            Frame::Output(bytes) => {
                log.output(&bytes);
                rep.output(&bytes);
            }
            Frame::Event(ev) => match ev {
                Event::Namespaces { pid_ns, mnt_ns } => {
                    w.pid_ns = pid_ns;
                    w.mnt_ns = mnt_ns;
                    log.note(&format!(
                        "sandbox pid namespace pid:[{pid_ns}], mount namespace mnt:[{mnt_ns}]"
                    ));
                }
                Event::Ready => {
                    log.note("sandbox ready: mounts in place, root pivoted");
                    // The overlay is mounted: the mark of a volatile mount has done its
                    // part, and removing it now spares the run's end that much.
                    if let plan::Root::Overlay {
                        work,
                        volatile: true,
                        ..
                    } = &plan.root
                    {
                        scratch::remove_volatile_mark(work);
                    }
                }
                Event::SetupFailed { message } => {
                    rep.error(&format!("sandbox setup failed: {message}"));
                    log.note(&format!("sandbox setup failed: {message}"));
                    w.setup_failed = Some(message.clone());
                    w.message = Some(message);
                }
                Event::CommandStarted { number } => {
                    let c = &plan.commands[number - 1];
                    w.started.push(number);
                    log.note(&format!("==> [{number}/{total}] {}", c.name));
                    if c.name != c.run {
                        log.note(&format!("    $ {}", c.run.replace('\n', "\n    ")));
                    }
                    rep.command_started(number, total, &c.name);
                }
                Event::CommandFinished {
                    number,
                    exit_code,
                    signal,
                    duration_ms,
                    timed_out,
                } => {
                    rep.command_finished();
                    let c = &plan.commands[number - 1];
                    let took = format_duration(Duration::from_millis(duration_ms));
                    let how = describe_status(exit_code, signal);
                    let line = if timed_out {
                        let limit = c
                            .timeout_ms
                            .or(plan.timeout_ms)
                            .map(|ms| format_duration(Duration::from_millis(ms)))
                            .unwrap_or_default();
                        format!("[{number}/{total}] {} ran out of time after {took} (timeout {limit}); {how}", c.name)
                    } else {
                        format!("[{number}/{total}] {}: {how} after {took}", c.name)
                    };
                    log.note(&format!("<== {line}"));
                    if exit_code == Some(0) {
                        rep.info(&line);
                    } else {
                        rep.error(&line);
                        if w.message.is_none() {
                            w.message = Some(line.clone());
                        }
                    }
                    w.finished
                        .insert(number, (exit_code, signal, duration_ms, timed_out));
                }
                Event::Terminal | Event::ArtifactsFolderWanted => {}
                Event::ArtifactCopied {
                    rule,
                    path,
                    path_hex,
                    size,
                    sha256,
                    source,
                } => sink.add(
                    rep,
                    &ArtifactRecord {
                        rule,
                        path,
                        path_hex,
                        size,
                        sha256,
                        source,
                        stored: "copied".into(),
                        host_path: None,
                    },
                ),
                Event::ArtifactRefused {
                    rule,
                    path,
                    path_hex,
                    reason,
                } => sink.refuse(rule, path, path_hex, reason),
                Event::ArtifactRuleDone { .. } => {}
                Event::ArtifactsFailed { message } => {
                    if sink.failed.is_none() {
                        sink.failed = Some(message);
                    }
                }
                Event::Interrupted { signal } => {
                    log.note(&format!("signal {signal} forwarded to the build"))
                }
                Event::Cleaned {
                    killed,
                    leftover_mount_points,
                    code,
                } => {
                    cleaned = Some(code);
                    journal.close();
                    if killed > 0 {
                        log.note(&format!(
                            "killed {killed} leftover process(es) of the build"
                        ));
                    }
                    for l in leftover_mount_points {
                        log.note(&format!("warning: could not remove mount point {l}"));
                        rep.warn(&format!("could not remove mount point {l}"));
                    }
                    // The build is over and init said all it had to say about it; the
                    // record need not wait for init's exit.
                    break;
                }
                // Only ever after `Cleaned`, which ends this loop; see
                // `Watch::wait_until_root_free`.
                Event::RootReleased => {}
                Event::Note { message } => {
                    log.note(&message);
                    rep.warn(&message);
                }
            },
        }
    }
    rep.command_finished();
    match cleaned {
        Some(code) => {
            w.init_code = code;
            w.pending = Some((sandbox, stderr_thread));
        }
        None => {
            w.init_code = sandbox.wait();
            let _ = stderr_thread.join();
        }
    }
    let sig = got_signal.load(Ordering::SeqCst);
    if sig != 0 {
        w.interrupted_by = Some(sig);
    } else if cleaned.is_none() && w.setup_failed.is_none() && w.init_code > 128 {
        // Init died of a signal bldr never got, before its cleanup: something outside
        // the build killed it (the OOM killer, a `kill` of its pid). The build failed;
        // bldr was not stopped.
        let m = format!(
            "the build's init (its PID 1) died of signal {} that did not come through bldr (the OOM killer, a kill of its pid, a crash); the build's processes died with it",
            w.init_code - 128
        );
        rep.error(&m);
        log.note(&m);
        w.init_killed = true;
        w.message = Some(m);
    }
    w
}

fn describe_status(exit_code: Option<i32>, signal: Option<i32>) -> String {
    match (exit_code, signal) {
        (Some(0), _) => "ok".into(),
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "unknown status".into(),
    }
}
