//! `bldr run` and `bldr shell`: load, plan, check readiness, start the sandbox, stream its
//! output to the terminal and the log, and write the run record. The sandbox does the
//! work; this module only watches it and writes down what happened.

use crate::exit;
use crate::plan::{self, Plan, PlanInputs};
use crate::profile::{Profile, ProfileErrors};
use crate::readiness::{self, LiveHost};
use crate::record::{self, BuildLog, CommandRecord, Outcome, Report};
use crate::reporter::Reporter;
use crate::sandbox::launch;
use crate::sandbox::proto::{Event, Frame};
use crate::units::format_duration;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Options of `run` that are not profile settings.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub out: Option<PathBuf>,
    pub json: bool,
    pub keep: bool,
    pub no_wait: bool,
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
pub fn ensure_ready(rep: &Reporter, profile: &Profile, plan: &Plan, out: &Path) -> bool {
    let problems = readiness::check(profile, plan, out, &LiveHost);
    for p in &problems {
        rep.error(&format!("not ready: {p}"));
    }
    problems.is_empty()
}

/// Runs the profile; returns bldr's exit code.
pub fn run(rep: &Reporter, profile: &Profile, opts: &RunOptions) -> i32 {
    let state = crate::state::state_dir();
    let out = out_root(profile, opts, &state);
    let started_at = SystemTime::now();
    let inputs = PlanInputs {
        host_env: host_env(),
        scratch: state.join("scratch"),
    };
    let plan = plan::build(profile, &inputs);
    if !ensure_ready(rep, profile, &plan, &out) {
        return exit::USAGE;
    }
    let (run_id, run_dir) = match record::create_run_dir(&out, &profile.name) {
        Ok(x) => x,
        Err(e) => {
            rep.error(&format!(
                "cannot create the run directory under {}: {e}",
                out.join(&profile.name).display()
            ));
            return exit::SETUP;
        }
    };
    let mut log = match BuildLog::create(&run_dir) {
        Ok(l) => l,
        Err(e) => {
            rep.error(&format!(
                "cannot create {}: {e}",
                run_dir.join("build.log").display()
            ));
            return exit::SETUP;
        }
    };
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
    rep.info(&format!(
        "run {run_id} of {} in {}",
        profile.name,
        profile.chroot.display()
    ));

    let watch = watch(rep, &plan, &mut log);
    let ended_at = SystemTime::now();
    let mounts_after = record::host_mounts();
    let host_clean = record::compare_mounts(&watch.mounts_before, &mounts_after);

    let (outcome, code) = watch.outcome();
    let message = watch.message.clone();
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
    log.sync();

    let report = Report {
        schema_version: record::SCHEMA_VERSION,
        bldr_version: env!("CARGO_PKG_VERSION").into(),
        run_id: run_id.clone(),
        run_dir: run_dir.clone(),
        profile: record::ProfileInfo {
            name: profile.name.clone(),
            path: profile.file.clone(),
            sha256: record::sha256_file(&profile.file).unwrap_or_default(),
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
        artifacts: vec![],
        refused: vec![],
        host_clean,
    };
    finish(rep, &state, &run_dir, &report, opts.json);
    code
}

/// Writes report.json, the `latest` link and the index entry, and prints the summary.
fn finish(rep: &Reporter, state: &Path, run_dir: &Path, report: &Report, json: bool) {
    let text = serde_json::to_string_pretty(report).expect("reports serialize");
    if let Err(e) =
        record::write_atomically(&run_dir.join("report.json"), format!("{text}\n").as_bytes())
    {
        rep.error(&format!(
            "cannot write {}: {e}",
            run_dir.join("report.json").display()
        ));
    }
    if let Some(parent) = run_dir.parent() {
        if let Err(e) = record::set_latest(parent, &report.run_id) {
            rep.warn(&format!("cannot update {}/latest: {e}", parent.display()));
        }
    }
    let entry = record::IndexEntry {
        run_id: report.run_id.clone(),
        profile: report.profile.name.clone(),
        run_dir: run_dir.to_path_buf(),
        outcome: report.outcome,
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
        println!("{text}");
    }
    let took = format_duration(Duration::from_millis(report.duration_ms));
    let summary = match report.outcome {
        Outcome::Success => format!("{} succeeded in {took}", report.profile.name),
        o => format!(
            "{} {} in {took} (exit {})",
            report.profile.name,
            o.as_str(),
            report.exit_code
        ),
    };
    rep.info(&format!("{summary}; record in {}", run_dir.display()));
    if !report.host_clean.clean {
        rep.warn("the host's mount table changed during the run; see host_clean in report.json");
    }
}

/// What the watch over a running sandbox saw.
pub struct Watch {
    pub mounts_before: Vec<String>,
    pub pid_ns: u64,
    pub mnt_ns: u64,
    pub setup_failed: Option<String>,
    pub message: Option<String>,
    pub finished: BTreeMap<usize, (Option<i32>, Option<i32>, u64, bool)>,
    pub started: Vec<usize>,
    pub interrupted_by: Option<i32>,
    pub monitor_code: i32,
}

impl Watch {
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
        if self.finished.values().any(|f| f.3) || self.monitor_code == exit::TIMEOUT {
            return (Outcome::Timeout, exit::TIMEOUT);
        }
        match self.monitor_code {
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

/// Starts the sandbox and follows it to the end: output to the terminal and the log,
/// signals forwarded. Used by `run` and by `shell` in its non-interactive form.
pub fn watch(rep: &Reporter, plan: &Plan, log: &mut BuildLog) -> Watch {
    let mut w = Watch {
        mounts_before: record::host_mounts(),
        pid_ns: 0,
        mnt_ns: 0,
        setup_failed: None,
        message: None,
        finished: BTreeMap::new(),
        started: vec![],
        interrupted_by: None,
        monitor_code: exit::SETUP,
    };
    let (mut sandbox, stderr) = match launch::launch(plan) {
        Ok(x) => x,
        Err(e) => {
            let m = format!("cannot start the sandbox: {e}");
            rep.error(&m);
            log.note(&m);
            w.setup_failed = Some(m.clone());
            w.message = Some(m);
            return w;
        }
    };
    let got_signal = Arc::new(AtomicI32::new(0));
    let fwd = sandbox.forwarder();
    {
        let got = got_signal.clone();
        let rep = rep.clone();
        if let Ok(mut signals) = signal_hook::iterator::Signals::new([
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGQUIT,
        ]) {
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
    let mut cmd_started = Instant::now();
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
                Event::Ready => log.note("sandbox ready: mounts in place, root pivoted"),
                Event::SetupFailed { message } => {
                    rep.error(&format!("sandbox setup failed: {message}"));
                    log.note(&format!("sandbox setup failed: {message}"));
                    w.setup_failed = Some(message.clone());
                    w.message = Some(message);
                }
                Event::CommandStarted { number } => {
                    let c = &plan.commands[number - 1];
                    w.started.push(number);
                    cmd_started = Instant::now();
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
                        rep.info(&format!("{line}"));
                    } else {
                        rep.error(&line);
                        if w.message.is_none() {
                            w.message = Some(line.clone());
                        }
                    }
                    w.finished
                        .insert(number, (exit_code, signal, duration_ms, timed_out));
                    let _ = cmd_started;
                }
                Event::Terminal => {}
                Event::Interrupted { signal } => {
                    log.note(&format!("signal {signal} forwarded to the build"))
                }
                Event::Cleaned {
                    killed,
                    leftover_mount_points,
                } => {
                    if killed > 0 {
                        log.note(&format!(
                            "killed {killed} leftover process(es) of the build"
                        ));
                    }
                    for l in leftover_mount_points {
                        log.note(&format!("warning: could not remove mount point {l}"));
                        rep.warn(&format!("could not remove mount point {l}"));
                    }
                }
                Event::Note { message } => {
                    log.note(&message);
                    rep.warn(&message);
                }
            },
        }
    }
    rep.command_finished();
    w.monitor_code = sandbox.wait();
    let _ = stderr_thread.join();
    let sig = got_signal.load(Ordering::SeqCst);
    if sig != 0 {
        w.interrupted_by = Some(sig);
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
