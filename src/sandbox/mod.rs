//! The sandbox: the only code in bldr that makes syscalls beyond plain file I/O, and the
//! only code allowed `unsafe`. It executes a [`Plan`](crate::plan::Plan) and decides
//! nothing on its own.
//!
//! Process model (see docs/design.md):
//!
//! ```text
//! bldr (main, threads for output and signals)
//!  └─ bldr __sandbox      "monitor": fresh exec, started before bldr has its plan; new
//!      │                  session, unshare(mnt,pid,uts,ipc), fork; relays signals
//!      └─ init (PID 1)    waits for the plan, [unshare(net)], mounts, pivot_root, waits
//!          │              for bldr's go, runs each command, reaps, kills the rest
//!          └─ /bin/sh -c  one command at a time, in its own session
//! ```
//!
//! The plan comes from bldr's main process straight to init, on the socket that is the
//! monitor's stdin and init's fd 0, with the chroot's lock; then, once bldr has made the
//! run directory, a go byte. The socket stays open as a lifeline: when bldr's main
//! process dies, even by SIGKILL, the monitor dies by its parent-death signal, init dies
//! by its own, and the kernel tears down the PID namespace and with it every mount.

#![allow(unsafe_code)]

pub mod collect;
pub mod init;
pub mod launch;
pub mod mounts;
pub mod probe;
pub mod proto;
pub mod sys;
pub mod tty;

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

/// The monitor: `bldr __sandbox --parent PID`. Returns its exit code.
///
/// bldr starts it ahead of the plan, so that its exec, the namespaces every plan has
/// and init's fork all happen while bldr prepares the run. The monitor never sees the
/// plan: it comes on stdin (a socket from bldr's main process, which init inherits as
/// its fd 0), straight to init. The monitor only relays signals and init's exit status.
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

    let unshared = nix::sched::unshare(
        CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC,
    );
    // SAFETY: the monitor is single-threaded (a fresh exec that started no thread).
    let forked = unshared.and_then(|()| unsafe { nix::unistd::fork() });
    match forked {
        Ok(ForkResult::Child) => {
            let code = init::main(init::Wire::from_stdout());
            // SAFETY: leaving PID 1 without unwinding; the namespace dies with it.
            unsafe { libc::_exit(code) }
        }
        Ok(ForkResult::Parent { child }) => {
            // The control socket and the frame stream are init's. Let go of them, so
            // that bldr sees the stream end as soon as init is done, while the kernel
            // still tears the namespaces down.
            sys::close_fd(0);
            sys::close_fd(1);
            relay_until_exit(child, &signals)
        }
        Err(e) => {
            // No init, so the frame stream is the monitor's: bldr reads this once it has
            // handed over its plan (which then finds no reader).
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
            init::Wire::from_stdout().send(Event::SetupFailed { message });
            crate::exit::SETUP
        }
    }
}

/// Forwards SIGINT/SIGTERM/SIGHUP/SIGQUIT to init and returns init's exit status.
fn relay_until_exit(child: Pid, signals: &nix::sys::signal::SigSet) -> i32 {
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    let Ok(sigfd) = SignalFd::with_flags(signals, SfdFlags::SFD_CLOEXEC) else {
        let _ = kill(child, Signal::SIGKILL);
        return crate::exit::SETUP;
    };
    loop {
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
