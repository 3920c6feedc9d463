//! The sandbox: the only code in bldr that makes syscalls beyond plain file I/O, and the
//! only code allowed `unsafe`. It executes a [`Plan`](crate::plan::Plan) and decides
//! nothing on its own.
//!
//! Process model (see docs/design.md):
//!
//! ```text
//! bldr (main, threads for output and signals)
//!  └─ bldr __sandbox      "monitor": fresh exec, started before bldr has its plan; new
//!      │                  session, unshare(mnt,pid,uts,ipc), fork, then waits for the plan
//!      └─ init (PID 1)    [unshare(net)], mounts, pivot_root, runs each command, reaps,
//!          │              kills the rest
//!          └─ /bin/sh -c  one command at a time, in its own session
//! ```
//!
//! The plan arrives on the monitor's stdin, with the chroot's lock, and goes on to init.
//! stdin stays open as a lifeline: when bldr's main process dies, even by SIGKILL, the
//! monitor dies by its parent-death signal, init dies by its own, and the kernel tears
//! down the PID namespace and with it every mount.

#![allow(unsafe_code)]

pub mod collect;
pub mod init;
pub mod launch;
pub mod mounts;
pub mod probe;
pub mod proto;
pub mod sys;
pub mod tty;

use crate::plan::Namespace;
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use proto::Event;

/// True when bldr runs with effective uid 0.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Restores SIGPIPE's default action (Rust ignores it), so that a command printing data
/// ends quietly when its reader is gone instead of failing on every write.
pub fn default_sigpipe() {
    // SAFETY: setting a disposition, no handler code.
    let _ =
        unsafe { nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl) };
}

/// The two things of the plan the monitor acts on; init reads the whole of it.
#[derive(serde::Deserialize)]
struct MonitorView {
    namespaces: Vec<Namespace>,
    artifacts_dir: Option<std::path::PathBuf>,
}

/// The namespaces every plan has; the monitor creates them before its plan arrives.
const ALWAYS: [Namespace; 4] = [
    Namespace::Mount,
    Namespace::Pid,
    Namespace::Uts,
    Namespace::Ipc,
];

/// The monitor: `bldr __sandbox --parent PID`. Returns its exit code.
///
/// bldr starts it ahead of the plan, so that its exec, the namespaces every plan has
/// and init's fork all happen while bldr prepares the run. The plan then comes on stdin
/// (a socket) as one line, with the chroot's lock riding along as a descriptor; the
/// monitor opens the artifacts folder and passes plan and lock on to init, which keeps
/// the lock (as fd 3) for as long as the build lives.
pub fn monitor_main(parent: i32) -> i32 {
    // Die with bldr. The getppid check closes the race of bldr dying before the prctl.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    if nix::unistd::getppid().as_raw() != parent {
        return crate::exit::SETUP;
    }
    // Nothing of bldr's caller beyond stdin, stdout and stderr may reach the build, nor
    // any signal action it or posix_spawn left.
    sys::close_from(3);
    sys::reset_signal_actions();
    // A new session: the terminal's Ctrl-C reaches bldr only, which forwards it.
    let _ = nix::unistd::setsid();
    // SAFETY: setting a disposition, no handler code.
    let _ =
        unsafe { nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigIgn) };
    let signals = init::handled_signals();
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&signals), None);

    // A failure here is reported once the plan has come: bldr reads frames only then.
    let unshared = nix::sched::unshare(
        CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC,
    );
    let forked = unshared.and_then(|()| {
        let (handoff, init_end) =
            std::os::unix::net::UnixStream::pair().map_err(|_| nix::errno::Errno::last())?;
        // SAFETY: the monitor is single-threaded (a fresh exec that started no thread).
        match unsafe { nix::unistd::fork() }? {
            ForkResult::Child => {
                drop(handoff);
                let code = init::main(init::Wire::from_stdout(), init_end);
                // SAFETY: leaving PID 1 without unwinding; the namespace dies with it.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => Ok((child, handoff)),
        }
    });

    let mut wire = init::Wire::from_stdout();
    // SAFETY: fd 0 is the socket bldr handed this process; it stays open for its life.
    let control = unsafe { std::os::fd::BorrowedFd::borrow_raw(0) };
    // End of stream before a plan: bldr decided not to run (a stop signal, a lock it
    // could not have); nothing to report. Init, if forked, dies with us.
    let Ok(Some((line, mut fds))) = sys::recv_line_with_fds(control) else {
        return crate::exit::SETUP;
    };
    let lock = fds.pop();
    drop(fds);
    let (child, handoff) = match forked {
        Ok(f) => f,
        Err(e) => {
            let message = if unshared.is_err() {
                let hint = if is_root() {
                    "the kernel refused; `bldr check` lists what this host supports"
                } else {
                    "run as root (sudo bldr ...)"
                };
                format!(
                    "cannot create the build's namespaces: {} ({hint})",
                    e.desc()
                )
            } else {
                format!("cannot start the build's init: {}", e.desc())
            };
            wire.send(Event::SetupFailed { message });
            return crate::exit::SETUP;
        }
    };
    let fail = |wire: &mut init::Wire, message: String| {
        wire.send(Event::SetupFailed { message });
        let _ = kill(child, Signal::SIGKILL);
        crate::exit::SETUP
    };
    let plan: MonitorView = match serde_json::from_slice(&line) {
        Ok(p) => p,
        Err(e) => {
            return fail(
                &mut wire,
                format!("the plan handed to the sandbox is not valid: {e}"),
            )
        }
    };
    if let Some(ns) = ALWAYS.iter().find(|ns| !plan.namespaces.contains(ns)) {
        return fail(
            &mut wire,
            format!("the plan leaves out the {ns:?} namespace, which every build has"),
        );
    }
    // The artifacts folder on the host is opened here and stays with the monitor, which
    // the build cannot see (it is outside the build's PID namespace): init gets it only
    // after every process of the build is dead, so no command can reach the host
    // through /proc/1/fd. Opened before init has the plan, so before its pivot_root.
    let stage = match plan.artifacts_dir.as_deref().map(sys::open_dir).transpose() {
        Ok(s) => s,
        Err(e) => return fail(&mut wire, e.to_string()),
    };
    {
        use std::os::fd::AsFd;
        let mut l = line;
        l.push(b'\n');
        if let Err(e) = sys::send_with_fd(handoff.as_fd(), &l, lock.as_ref().map(|f| f.as_fd())) {
            return fail(
                &mut wire,
                format!("cannot hand the plan to init: {}", e.desc()),
            );
        }
    }
    // Init has the lock now, and is the last process of the build to die, so the lock
    // outlives the build even when bldr and the monitor are SIGKILLed first.
    drop(lock);
    drop(wire);
    relay_until_exit(child, &signals, handoff, stage)
}

/// Forwards SIGINT/SIGTERM/SIGHUP/SIGQUIT to init, hands init the artifacts folder when
/// it asks (once), and returns init's exit status.
fn relay_until_exit(
    child: Pid,
    signals: &nix::sys::signal::SigSet,
    handoff: std::os::unix::net::UnixStream,
    mut stage: Option<std::os::fd::OwnedFd>,
) -> i32 {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    use std::io::Read;
    use std::os::fd::AsFd;
    let Ok(sigfd) = SignalFd::with_flags(signals, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
    else {
        let _ = kill(child, Signal::SIGKILL);
        return crate::exit::SETUP;
    };
    let mut handoff = Some(handoff);
    loop {
        let (sig_ready, ask_ready) = {
            let mut fds = vec![PollFd::new(sigfd.as_fd(), PollFlags::POLLIN)];
            if let Some(h) = &handoff {
                fds.push(PollFd::new(h.as_fd(), PollFlags::POLLIN));
            }
            if poll(&mut fds, PollTimeout::NONE).is_err() {
                (false, false)
            } else {
                let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
                (ready(&fds[0]), fds.get(1).is_some_and(ready))
            }
        };
        if ask_ready {
            if let Some(mut h) = handoff.take() {
                let mut byte = [0u8; 1];
                if matches!(h.read(&mut byte), Ok(1)) {
                    if let Some(fd) = stage.take() {
                        let _ = sys::send_fd(h.as_fd(), fd.as_fd());
                    }
                }
            }
        }
        if !sig_ready {
            continue;
        }
        while let Ok(Some(info)) = sigfd.read_signal() {
            let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                continue;
            };
            if sig != Signal::SIGCHLD {
                let _ = kill(child, sig);
                continue;
            }
            match waitpid(child, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => return code,
                Ok(WaitStatus::Signaled(_, s, _)) => return crate::exit::signal(s as i32),
                _ => {}
            }
        }
    }
}
