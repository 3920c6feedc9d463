//! The sandbox: the only code in bldr that makes syscalls beyond plain file I/O, and the
//! only code allowed `unsafe`. It executes a [`Plan`](crate::plan::Plan) and decides
//! nothing on its own.
//!
//! Process model (see docs/design.md):
//!
//! ```text
//! bldr (main, threads for output and signals)
//!  └─ bldr __sandbox      init, PID 1 of a new PID namespace (clone, then exec, started
//!      │                  before bldr has its plan): new session, unshare(mnt,uts,ipc),
//!      │                  waits for the plan, [unshare(net)], mounts, pivot_root, waits
//!      │                  for bldr's go, runs each command, reaps, kills the rest
//!      └─ /bin/sh -c      one command at a time, in its own session
//! ```
//!
//! The plan comes from bldr's main process on init's stdin, a socket, with the chroot's
//! lock; then, once bldr has made the run directory, a go byte. The socket stays open as
//! a lifeline: when bldr's main process dies, even by SIGKILL, init dies by its
//! parent-death signal or sees the socket end, and the kernel tears down the PID
//! namespace and with it every mount.

#![allow(unsafe_code)]

pub mod collect;
pub mod init;
pub mod launch;
pub mod mounts;
pub mod probe;
pub mod proto;
pub mod sys;
pub mod tty;

use nix::sys::signal::Signal;

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

/// The sandbox process, `bldr __sandbox --parent PID`: the build's init, started by
/// `launch::start` as PID 1 of a new PID namespace. `--parent` names the bldr it belongs
/// to, for `ps` and the tests; init cannot check it, since its parent is outside its
/// PID namespace (getppid() reads 0). Returns its exit code.
pub fn sandbox_main() -> i32 {
    init::main(init::Wire::from_stdout())
}
