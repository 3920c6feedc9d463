//! bldr's init: PID 1 of the build's PID namespace. It sets up the mounts, runs the
//! commands in order with `/bin/sh -c`, relays their output as frames, reaps orphans,
//! forwards signals, enforces timeouts, kills whatever is left after the last command,
//! and removes the mount points it created. It never returns to Rust's runtime with
//! threads: this process is single-threaded from fork to exit.

use super::collect::Cut;
use super::mounts::{self, LiveMounts};
use super::proto::{write_frame, Event, Frame};
use super::sys;
use crate::exit;
use crate::plan::{CommandPlan, Namespace, Plan};
use crate::profile::Network;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, killpg, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Capabilities no command of the build gets (see `spawn`).
const DROPPED_CAPABILITIES: &[i32] = &[
    19, // CAP_SYS_PTRACE
    16, // CAP_SYS_MODULE
    17, // CAP_SYS_RAWIO
    25, // CAP_SYS_TIME
    32, // CAP_MAC_OVERRIDE
    33, // CAP_MAC_ADMIN
    34, // CAP_SYSLOG
    35, // CAP_WAKE_ALARM
    36, // CAP_BLOCK_SUSPEND
    37, // CAP_AUDIT_READ
    38, // CAP_PERFMON
    39, // CAP_BPF
];

/// The signals that stop a build: bldr passes them on to init, and init to the command.
pub const STOP_SIGNALS: [Signal; 4] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// The signals the init handles through its signalfd.
pub fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    for s in STOP_SIGNALS {
        set.add(s);
    }
    set
}

/// The frame stream to bldr's main process (fd 1 of the sandbox).
pub struct Wire(File);

impl Wire {
    pub fn from_stdout() -> Wire {
        // SAFETY: fd 1 is the frame socket handed to this process; from here on only
        // this `Wire` uses it.
        Wire(File::from(unsafe { OwnedFd::from_raw_fd(1) }))
    }

    pub fn send(&mut self, e: Event) {
        // A failed write means bldr's main process is gone; the lifeline check ends us.
        let _ = write_frame(&mut self.0, &Frame::Event(e));
    }

    /// Sends the `Terminal` event with `fd` attached (unix(7), SCM_RIGHTS).
    fn send_fd(&mut self, fd: BorrowedFd<'_>) -> Result<(), Errno> {
        let bytes = super::proto::encode(&Frame::Event(Event::Terminal));
        sys::send_with_fd(self.0.as_fd(), &bytes, Some(fd))
    }

    fn output(&mut self, bytes: &[u8]) {
        let _ = write_frame(&mut self.0, &Frame::Output(bytes.to_vec()));
    }
}

struct Running {
    pid: Pid,
    started: Instant,
    deadline: Option<Instant>,
    kill_at: Option<Instant>,
    timed_out: bool,
    status: Option<WaitStatus>,
}

struct Init<'a> {
    plan: &'a Plan,
    wire: Wire,
    sigfd: SignalFd,
    lifeline: BorrowedFd<'a>,
    out_r: File,
    /// The commands' end of the output pipe; dropped once they are all dead.
    out_w: Option<OwnedFd>,
    devnull: OwnedFd,
    interrupted: Option<Signal>,
    run_deadline: Option<Instant>,
    /// The relay's buffer, on the heap: 64 KiB on the stack was sixteen pages faulted
    /// in (and zeroed) on every run, even one that prints nothing.
    buf: Vec<u8>,
}

/// The namespaces every plan has; they exist before the plan arrives.
const ALWAYS: [Namespace; 4] = [
    Namespace::Mount,
    Namespace::Pid,
    Namespace::Uts,
    Namespace::Ipc,
];

/// The socket to bldr's main process, init's fd 0: plan, lock and go byte come on it,
/// and the artifacts folder when init asks. bldr's end staying open is the lifeline.
fn control() -> BorrowedFd<'static> {
    // SAFETY: fd 0 is the socket bldr started init with; init never closes it.
    unsafe { BorrowedFd::borrow_raw(0) }
}

/// Entry point of PID 1, exec'd by bldr's main process into a new PID namespace before
/// the plan exists: makes the rest of the build's namespaces, waits for the plan and the
/// chroot's lock on fd 0, then runs it. Returns the exit code for the sandbox process.
pub fn main(mut wire: Wire) -> i32 {
    // Die with bldr. A bldr that died before this shows as the end of fd 0.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    // PID 1 or nothing: `kill(-1)` at the end must reach the build's processes only, and
    // that holds in a PID namespace of our own alone (pid_namespaces(7)).
    if nix::unistd::getpid().as_raw() != 1 {
        wire.send(Event::SetupFailed {
            message: "the sandbox is not PID 1 of a PID namespace of its own".into(),
        });
        return exit::SETUP;
    }
    // Nothing of bldr's caller beyond stdin, stdout and stderr may reach the build, nor
    // any signal action it left (an ignored signal stays ignored across exec).
    sys::close_from(3);
    sys::reset_signal_actions();
    // A new session: the terminal's Ctrl-C reaches bldr only, which forwards it.
    let _ = nix::unistd::setsid();
    // A write to a bldr that is gone fails; it does not kill init before its cleanup.
    // SAFETY: setting a disposition, no handler code.
    let _ =
        unsafe { nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigIgn) };
    // The signals init reads from its signalfd stay blocked; bldr started us with every
    // signal blocked, so none came before this.
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&handled_signals()),
        None,
    );
    // The mount, UTS and IPC namespaces are made here, by init itself, so that its mounts
    // and its hostname can never land in a namespace it shares with anyone.
    if let Err(e) = nix::sched::unshare(
        nix::sched::CloneFlags::CLONE_NEWNS
            | nix::sched::CloneFlags::CLONE_NEWUTS
            | nix::sched::CloneFlags::CLONE_NEWIPC,
    ) {
        wire.send(Event::SetupFailed {
            message: format!("cannot create the build's namespaces: {}", e.desc()),
        });
        return exit::SETUP;
    }
    // What needs no plan is done, and reported, while bldr still prepares the run; bldr
    // reads the frames once it has handed over the plan.
    wire.send(Event::Namespaces {
        pid_ns: sys::namespace_inode("pid"),
        mnt_ns: sys::namespace_inode("mnt"),
    });
    // The build keeps root's powers that builds use (mounts and namespaces for portage's
    // sandboxes, chown, mknod) but not those that reach past it: ptrace (PID 1's
    // descriptors), kernel modules, raw I/O, the clock, MAC policy. Dropped from init's
    // bounding set, which every command inherits, root's exec cannot regain them
    // (capabilities(7), "Transformation of capabilities during execve"). Init itself
    // never execs, so its own effective set is untouched.
    let dropped = sys::drop_from_bounding_set(DROPPED_CAPABILITIES);
    // End of stream before a plan: bldr decided not to run (a stop signal, a lock it
    // could not have), or is gone.
    let Ok(Some(received)) = sys::recv_line_with_fds(control()) else {
        return exit::SETUP;
    };
    let sys::LineWithFds {
        line,
        mut fds,
        rest,
    } = received;
    // The lock stays with init, as fd 3, never passed to a command (they get 0-2 only).
    if let Some(lock) = fds.pop() {
        use std::os::fd::IntoRawFd;
        let kept = if lock.as_raw_fd() == 3 {
            sys::set_cloexec(lock.into_raw_fd(), false)
        } else {
            sys::dup_onto(lock.as_raw_fd(), 3)
        };
        if kept.is_err() {
            return exit::SETUP;
        }
    }
    drop(fds);
    let plan: Plan = match serde_json::from_slice(&line) {
        Ok(p) => p,
        Err(e) => {
            wire.send(Event::SetupFailed {
                message: format!("the plan handed to init is not valid: {e}"),
            });
            return exit::SETUP;
        }
    };
    if let Some(ns) = ALWAYS.iter().find(|ns| !plan.namespaces.contains(ns)) {
        wire.send(Event::SetupFailed {
            message: format!("the plan leaves out the {ns:?} namespace, which every build has"),
        });
        return exit::SETUP;
    }
    // The namespaces beyond the four every build has: only the network, which init
    // takes for itself and its commands.
    if plan.namespaces.contains(&Namespace::Net) {
        if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
            wire.send(Event::SetupFailed {
                message: format!("cannot create the build's network namespace: {}", e.desc()),
            });
            return exit::SETUP;
        }
    }
    if let Err(e) = dropped {
        wire.send(Event::SetupFailed {
            message: format!(
                "cannot drop capabilities from the bounding set: {}",
                e.desc()
            ),
        });
        return exit::SETUP;
    }
    run(&plan, wire, rest)
}

/// Waits for bldr's go: one byte, sent once the run directory and its log exist, so that
/// no command runs without its record. `early` is what came after the plan in its read.
/// False when bldr closed the socket instead (it could not make the run directory, or is
/// gone), or sent anything else.
fn wait_for_go(early: &[u8]) -> bool {
    if let Some(&b) = early.first() {
        return b == GO && early.len() == 1;
    }
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(control(), &mut byte) {
            Ok(1) => return byte[0] == GO,
            Err(Errno::EINTR) => continue,
            _ => return false,
        }
    }
}

/// The go byte (see [`wait_for_go`]).
pub const GO: u8 = b'G';

/// Runs the plan as PID 1.
fn run(plan: &Plan, mut wire: Wire, early: Vec<u8>) -> i32 {
    let lifeline = control();
    // Not dumpable: the build's processes, root as they are, need CAP_SYS_PTRACE to look
    // into PID 1's descriptors and memory (proc(5), /proc/pid/fd access mode).
    let _ = nix::sys::prctl::set_dumpable(false);
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let created = match mounts::apply(plan, &mut LiveMounts::journaled(plan.mount_journal.clone()))
    {
        Ok(c) => c,
        Err(e) => {
            wire.send(Event::SetupFailed {
                message: e.to_string(),
            });
            return exit::SETUP;
        }
    };
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    if plan.namespaces.contains(&Namespace::Net) {
        if let Err(e) = sys::loopback_up() {
            wire.send(Event::SetupFailed {
                message: e.to_string(),
            });
            mounts::remove_created(&created);
            return exit::SETUP;
        }
    }
    let parts = (|| -> Result<_, String> {
        let sigfd = SignalFd::with_flags(
            &handled_signals(),
            SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK,
        )
        .map_err(|e| format!("signalfd: {e}"))?;
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
        // Only our read end is non-blocking: a full pipe should slow the commands down,
        // not fail their writes.
        nix::fcntl::fcntl(&r, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
            .map_err(|e| format!("fcntl: {e}"))?;
        let devnull = nix::fcntl::open(
            "/dev/null",
            OFlag::O_RDWR | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| format!("open /dev/null inside the chroot: {e}"))?;
        Ok((sigfd, r, w, devnull))
    })();
    let (sigfd, r, w, devnull) = match parts {
        Ok(p) => p,
        Err(message) => {
            wire.send(Event::SetupFailed { message });
            mounts::remove_created(&created);
            return exit::SETUP;
        }
    };
    let mut init = Init {
        plan,
        wire,
        sigfd,
        lifeline,
        out_r: File::from(r),
        out_w: Some(w),
        devnull,
        interrupted: None,
        run_deadline: plan
            .timeout_ms
            .map(|ms| Instant::now() + Duration::from_millis(ms)),
        buf: vec![0; 1 << 16],
    };
    if !wait_for_go(&early) {
        // No command has run; the mount points go, and nothing else happened.
        mounts::remove_created(&created);
        return exit::SETUP;
    }
    init.wire.send(Event::Ready);
    let mut code = init.run_commands();
    let killed = init.kill_everything();
    // Collect only once nothing of the build can change the files any more, and not
    // when the user asked the build to stop. A stop signal during collection ends it
    // there: what was copied stays, in a run left incomplete.
    if plan.artifacts_dir.is_some() && init.interrupted.is_none() {
        let cut = match fetch_stage(&mut init.wire) {
            Ok(stage) => super::collect::collect(plan, stage.as_fd(), &mut init.wire).err(),
            Err(message) => Some(Cut::Failed(message)),
        };
        let message = match cut {
            None => None,
            Some(Cut::Failed(message)) => Some(message),
            Some(Cut::Stopped) => {
                init.take_pending_signals();
                if let Some(sig) = init.interrupted {
                    code = exit::signal(sig as i32);
                }
                Some(super::collect::STOPPED.into())
            }
        };
        if let Some(message) = message {
            init.wire.send(Event::ArtifactsFailed { message });
        }
    }
    let leftover = mounts::remove_created(&created);
    init.wire.send(Event::Cleaned {
        killed,
        leftover_mount_points: leftover,
        code,
    });
    // bldr writes the record now. An overlay's layer can go only once no mount holds
    // it; letting go of the root here, rather than at exit, lets bldr remove the layer
    // while the rest of init's exit runs. Failing that, the layer goes after init.
    if matches!(plan.root, crate::plan::Root::Overlay { .. }) && sys::release_root().is_ok() {
        init.wire.send(Event::RootReleased);
    }
    code
}

/// Asks bldr's main process for the artifacts folder, which it kept outside the build
/// until now (see `launch::Launched::next_frame`).
fn fetch_stage(wire: &mut Wire) -> Result<OwnedFd, String> {
    wire.send(Event::ArtifactsFolderWanted);
    sys::recv_fd(control()).map_err(|e| format!("cannot receive the artifacts folder: {e}"))
}

impl Init<'_> {
    fn run_commands(&mut self) -> i32 {
        for cmd in &self.plan.commands {
            // A signal that came during setup or between commands stops the run here.
            self.take_pending_signals();
            if let Some(sig) = self.interrupted {
                return exit::signal(sig as i32);
            }
            if self.run_deadline.is_some_and(|d| Instant::now() >= d) {
                return exit::TIMEOUT;
            }
            self.wire.send(Event::CommandStarted { number: cmd.number });
            let started = Instant::now();
            let pid = match self.spawn(cmd) {
                Ok(pid) => pid,
                Err(e) => {
                    self.wire.send(Event::Note {
                        message: format!("cannot start command {}: {e}", cmd.number),
                    });
                    return exit::SETUP;
                }
            };
            let mut running = Running {
                pid,
                started,
                deadline: cmd.timeout_ms.map(|ms| started + Duration::from_millis(ms)),
                kill_at: None,
                timed_out: false,
                status: None,
            };
            let status = self.supervise(&mut running);
            let (exit_code, signal) = match status {
                WaitStatus::Exited(_, c) => (Some(c), None),
                WaitStatus::Signaled(_, s, _) => (None, Some(s as i32)),
                _ => (None, None),
            };
            self.wire.send(Event::CommandFinished {
                number: cmd.number,
                exit_code,
                signal,
                duration_ms: running.started.elapsed().as_millis() as u64,
                timed_out: running.timed_out,
            });
            if running.timed_out {
                return exit::TIMEOUT;
            }
            if let Some(sig) = self.interrupted {
                return exit::signal(sig as i32);
            }
            if exit_code != Some(0) {
                return exit::COMMAND_FAILED;
            }
        }
        exit::SUCCESS
    }

    /// Forks and execs one command: its own session, stdin from /dev/null, stdout and
    /// stderr into the output pipe, no other descriptor, the plan's environment only.
    fn spawn(&mut self, cmd: &CommandPlan) -> Result<Pid, String> {
        let cstr = |s: &str| CString::new(s).map_err(|_| format!("`{s}` contains a NUL byte"));
        let argv = [cstr("/bin/sh")?, cstr("-c")?, cstr(&cmd.run)?];
        let mut env: Vec<(String, String)> = self
            .plan
            .env
            .iter()
            .map(|v| (v.name.clone(), v.value.clone()))
            .collect();
        for (k, v) in &cmd.env {
            env.retain(|(n, _)| n != k);
            env.push((k.clone(), v.clone()));
        }
        let envp: Vec<CString> = env
            .iter()
            .map(|(k, v)| cstr(&format!("{k}={v}")))
            .collect::<Result<_, _>>()?;
        let workdir = cstr(cmd.workdir.as_str())?;
        let private_net = cmd.network == Network::None && self.plan.network == Network::Host;
        // `shell`: a new pty from the build's own devpts; its master goes to bldr.
        let slave = if self.plan.tty {
            let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
                .map_err(|e| format!("open /dev/ptmx: {e}"))?;
            nix::pty::grantpt(&master).map_err(|e| format!("grantpt: {e}"))?;
            nix::pty::unlockpt(&master).map_err(|e| format!("unlockpt: {e}"))?;
            let name = nix::pty::ptsname_r(&master).map_err(|e| format!("ptsname: {e}"))?;
            self.wire
                .send_fd(master.as_fd())
                .map_err(|e| format!("hand the pty to bldr: {e}"))?;
            Some(cstr(&name)?)
        } else {
            None
        };
        let (devnull, out) = (
            self.devnull.as_raw_fd(),
            self.out_w.as_ref().map_or(-1, |w| w.as_raw_fd()),
        );
        // The common case (no pty, no network namespace of its own) by posix_spawn; any
        // failure there falls through to fork, which repeats the step and reports it.
        #[cfg(target_env = "gnu")]
        if slave.is_none() && !private_net {
            if let Ok(pid) = sys::spawn_command(&argv, &envp, devnull, out, &workdir) {
                return Ok(pid);
            }
        }
        // SAFETY: this process is single-threaded (the sandbox never starts threads), so
        // the child may run arbitrary code; it only makes syscalls and then execs.
        match unsafe { nix::unistd::fork() } {
            Err(e) => Err(format!("fork: {e}")),
            Ok(ForkResult::Parent { child }) => Ok(child),
            Ok(ForkResult::Child) => {
                let fail = |what: &str, e: Errno| -> ! {
                    let msg = format!("bldr: {what}: {}\n", e.desc());
                    // SAFETY: writing a buffer we own to fd 2, then leaving without
                    // running any destructor of the parent's state.
                    unsafe {
                        libc::write(2, msg.as_ptr().cast(), msg.len());
                        libc::_exit(127)
                    }
                };
                if let Some(slave) = &slave {
                    if let Err(e) = nix::unistd::setsid() {
                        fail("setsid", e);
                    }
                    // SAFETY: open/ioctl/dup2 on a path and descriptors this process owns.
                    unsafe {
                        let fd = libc::open(slave.as_ptr(), libc::O_RDWR);
                        if fd < 0 {
                            fail("open the pty", Errno::last());
                        }
                        // Make it the controlling terminal (tty_ioctl(4), TIOCSCTTY).
                        libc::ioctl(fd, libc::TIOCSCTTY, 0);
                        libc::dup2(fd, 0);
                        libc::dup2(fd, 1);
                        libc::dup2(fd, 2);
                    }
                } else {
                    // SAFETY: dup2 on descriptors this process owns.
                    unsafe {
                        libc::dup2(devnull, 0);
                        libc::dup2(out, 1);
                        libc::dup2(out, 2);
                    }
                }
                sys::close_from(3);
                let _ = nix::sys::signal::sigprocmask(
                    nix::sys::signal::SigmaskHow::SIG_SETMASK,
                    Some(&SigSet::empty()),
                    None,
                );
                for s in std::iter::once(Signal::SIGPIPE).chain(STOP_SIGNALS) {
                    // SAFETY: restoring default dispositions; no handler code involved.
                    let _ = unsafe {
                        nix::sys::signal::signal(s, nix::sys::signal::SigHandler::SigDfl)
                    };
                }
                if slave.is_none() {
                    if let Err(e) = nix::unistd::setsid() {
                        fail("setsid", e);
                    }
                }
                if private_net {
                    if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
                        fail("unshare the network", e);
                    }
                    if let Err(e) = sys::loopback_up() {
                        fail("bring up lo", e.errno);
                    }
                }
                if let Err(e) = nix::unistd::chdir(workdir.as_c_str()) {
                    fail(&format!("enter workdir {}", cmd.workdir), e);
                }
                let e = nix::unistd::execve(&argv[0], &argv, &envp).unwrap_err();
                fail("exec /bin/sh", e)
            }
        }
    }

    /// Waits for the running command, relaying output and handling signals and timeouts.
    fn supervise(&mut self, r: &mut Running) -> WaitStatus {
        loop {
            let now = Instant::now();
            if r.status.is_none() {
                let expired = r.deadline.is_some_and(|d| now >= d)
                    || self.run_deadline.is_some_and(|d| now >= d);
                if expired && !r.timed_out {
                    r.timed_out = true;
                    let _ = killpg(r.pid, Signal::SIGTERM);
                    r.kill_at = Some(now + Duration::from_millis(self.plan.grace_ms));
                }
                if r.kill_at.is_some_and(|k| now >= k) {
                    let _ = killpg(r.pid, Signal::SIGKILL);
                    let _ = kill(r.pid, Signal::SIGKILL);
                    r.kill_at = None;
                }
            }
            if let Some(status) = r.status {
                self.drain();
                return status;
            }
            let wake = [r.deadline, self.run_deadline, r.kill_at]
                .into_iter()
                .flatten()
                .filter(|_| !r.timed_out || r.kill_at.is_some())
                .min();
            let timeout = match wake {
                Some(w) => PollTimeout::try_from(
                    w.saturating_duration_since(now).as_millis().min(60_000) as i32 + 1,
                )
                .unwrap_or(PollTimeout::MAX),
                None => PollTimeout::try_from(60_000).unwrap_or(PollTimeout::MAX),
            };
            let (sig_ready, out_ready, life_ready) = {
                let mut fds = [
                    PollFd::new(self.sigfd.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.out_r.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.lifeline, PollFlags::POLLIN),
                ];
                match poll(&mut fds, timeout) {
                    Err(Errno::EINTR) | Ok(0) => (false, false, false),
                    Err(_) => (false, false, false),
                    Ok(_) => {
                        let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
                        (ready(&fds[0]), ready(&fds[1]), ready(&fds[2]))
                    }
                }
            };
            if life_ready {
                // bldr's main process is gone: nobody will read the log, nothing may
                // survive. Killing -1 from PID 1 reaches every process of the namespace.
                let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
                // SAFETY: leaving at once; the namespace dies with us.
                unsafe { libc::_exit(exit::signal(9)) };
            }
            if out_ready {
                self.relay_some();
            }
            if sig_ready {
                self.handle_signals(r);
            }
        }
    }

    fn handle_signals(&mut self, r: &mut Running) {
        while let Ok(Some(info)) = self.sigfd.read_signal() {
            let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                continue;
            };
            if sig == Signal::SIGCHLD {
                self.reap(r);
                continue;
            }
            if self.interrupted.is_some() {
                // A second Ctrl-C means "now": no more grace.
                let _ = killpg(r.pid, Signal::SIGKILL);
                continue;
            }
            self.interrupted = Some(sig);
            self.wire.send(Event::Interrupted { signal: sig as i32 });
            if r.status.is_none() {
                // Right after fork the command may not lead its own group yet (setsid
                // comes first in the child): then signal the process itself; with the
                // signal blocked until just before exec, it still arrives.
                if killpg(r.pid, sig) == Err(Errno::ESRCH) {
                    let _ = kill(r.pid, sig);
                }
                r.kill_at = Some(Instant::now() + Duration::from_millis(self.plan.grace_ms));
            }
        }
    }

    /// Notes a stop signal that arrived while no command ran; reaps what exited.
    fn take_pending_signals(&mut self) {
        while let Ok(Some(info)) = self.sigfd.read_signal() {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGCHLD) => {
                    while let Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) =
                        waitpid(None, Some(WaitPidFlag::WNOHANG))
                    {}
                }
                Ok(sig) if self.interrupted.is_none() => {
                    self.interrupted = Some(sig);
                    self.wire.send(Event::Interrupted { signal: sig as i32 });
                }
                _ => {}
            }
        }
    }

    /// Reaps every exited child: the command, and orphans reparented to us.
    fn reap(&mut self, r: &mut Running) {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => {
                    if status.pid() == Some(r.pid) {
                        r.status = Some(status);
                    }
                }
            }
        }
    }

    /// Reads what the pipe holds right now and sends it on.
    fn relay_some(&mut self) -> usize {
        match self.out_r.read(&mut self.buf) {
            Ok(n) if n > 0 => {
                self.wire.output(&self.buf[..n]);
                n
            }
            _ => 0,
        }
    }

    fn drain(&mut self) {
        while self.relay_some() > 0 {}
    }

    /// Kills every process left in the namespace and reaps them all. Returns how many
    /// were still there.
    fn kill_everything(&mut self) -> usize {
        let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
        let mut killed = 0;
        loop {
            match waitpid(None, None) {
                Ok(_) => killed += 1,
                Err(Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
        // Every writer of the pipe is dead; what is left in it is the last output.
        self.out_w = None;
        self.drain();
        killed
    }
}
