//! The main process's side of the sandbox: start the monitor as a fresh exec of bldr
//! with the plan on its stdin, hand back the frame stream, forward signals. The main
//! process itself never creates a namespace.

use super::proto::{read_frame, Frame};
use super::sys;
use crate::plan::Plan;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Child, ChildStderr, Command, Stdio};

/// The frame socket, read with recvmsg(2) so that a descriptor sent along with a frame
/// (the pty master of `shell`) is kept, not lost.
struct FrameSocket {
    sock: UnixStream,
    fds: Vec<OwnedFd>,
}

impl io::Read for FrameSocket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::fd::AsFd;
        sys::recv_with_fds(self.sock.as_fd(), buf, &mut self.fds).map_err(io::Error::from)
    }
}

/// A started sandbox.
pub struct Launched {
    child: Child,
    frames: FrameSocket,
    /// bldr's end of the lifeline: while it is open, the build may live.
    lifeline: Option<UnixStream>,
}

/// Sends a signal to the sandbox's monitor, which forwards it to init.
#[derive(Debug, Clone, Copy)]
pub struct Forwarder(Pid);

impl Forwarder {
    pub fn send(&self, signal: i32) {
        if let Ok(s) = Signal::try_from(signal) {
            let _ = kill(self.0, s);
        }
    }
}

/// A monitor started ahead of its plan: its exec and start-up run while bldr prepares
/// the run (lock, run directory, log), on the other CPU when there is one. Dropped
/// without [`Starting::hand`], it sees its stdin end and exits, having done nothing.
pub struct Starting {
    child: Child,
    frames: FrameSocket,
    control: UnixStream,
    stderr: ChildStderr,
}

/// Starts the monitor. Must be called from the thread that stays alive until the run
/// ends: the monitor's parent-death signal fires when *this thread* exits (prctl(2),
/// PR_SET_PDEATHSIG).
pub fn start() -> io::Result<Starting> {
    let (ours, theirs) = UnixStream::pair()?;
    let (control, their_control) = UnixStream::pair()?;
    let exe = std::env::current_exe()?;
    // No pre_exec hook, so that std starts the monitor with posix_spawn(3): a vfork that
    // copies no page tables, where fork would copy bldr's and then fault on every page
    // either side writes.
    let mut child = Command::new(exe)
        .arg("__sandbox")
        .arg("--parent")
        .arg(std::process::id().to_string())
        // The environment of the build is built from the plan; nothing from ours leaks.
        .env_clear()
        .stdin(Stdio::from(OwnedFd::from(their_control)))
        .stdout(Stdio::from(OwnedFd::from(theirs)))
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().expect("stderr is piped");
    Ok(Starting {
        child,
        frames: FrameSocket {
            sock: ours,
            fds: Vec::new(),
        },
        control,
        stderr,
    })
}

impl Starting {
    /// Hands the monitor its plan, and `lock`, the chroot's lock, which the sandbox keeps
    /// until the last process of the build is gone, not merely until bldr exits.
    pub fn hand(
        self,
        plan: &Plan,
        lock: Option<&std::fs::File>,
    ) -> io::Result<(Launched, ChildStderr)> {
        use std::os::fd::AsFd;
        let mut json = serde_json::to_vec(plan).map_err(io::Error::other)?;
        json.push(b'\n');
        sys::send_with_fd(self.control.as_fd(), &json, lock.map(|l| l.as_fd()))?;
        Ok((
            Launched {
                child: self.child,
                frames: self.frames,
                lifeline: Some(self.control),
            },
            self.stderr,
        ))
    }
}

/// Starts the sandbox for `plan` at once: [`start`], then [`Starting::hand`].
pub fn launch(plan: &Plan, lock: Option<&std::fs::File>) -> io::Result<(Launched, ChildStderr)> {
    start()?.hand(plan, lock)
}

impl Launched {
    pub fn forwarder(&self) -> Forwarder {
        Forwarder(Pid::from_raw(self.child.id() as i32))
    }

    /// The monitor's pid, as the host sees it.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads the next frame; `None` when the sandbox closed the stream.
    pub fn next_frame(&mut self) -> Option<Frame> {
        read_frame(&mut self.frames).ok().flatten()
    }

    /// A descriptor that came with a frame (the pty master after `Event::Terminal`).
    pub fn take_fd(&mut self) -> Option<OwnedFd> {
        self.frames.fds.pop()
    }

    /// Waits for the monitor and returns its exit code.
    pub fn wait(mut self) -> i32 {
        let status = self.child.wait();
        drop(self.lifeline.take());
        match status {
            Ok(s) => {
                use std::os::unix::process::ExitStatusExt;
                s.code()
                    .or(s.signal().map(crate::exit::signal))
                    .unwrap_or(crate::exit::SETUP)
            }
            Err(_) => crate::exit::SETUP,
        }
    }
}
