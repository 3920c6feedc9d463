//! The main process's side of the sandbox: start the monitor as a fresh exec of bldr,
//! hand init its plan and then its go, read the frame stream, forward signals, and keep
//! the artifacts folder until init asks for it. The main process itself never creates a
//! namespace.

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
    /// bldr's end of init's fd 0: the plan, the go and the artifacts folder go out on
    /// it, and while it is open the build may live (the lifeline).
    lifeline: Option<UnixStream>,
    /// The artifacts folder on the host, kept here, outside the build's PID namespace,
    /// until init has killed every process of the build and asks for it: no command can
    /// reach it through /proc/1/fd.
    stage: Option<OwnedFd>,
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
    /// Hands init its plan, and `lock`, the chroot's lock, which the sandbox keeps until
    /// the last process of the build is gone, not merely until bldr exits. Init sets up
    /// the mounts and then waits for [`Launched::go`].
    ///
    /// A sandbox that could not start (its namespaces refused) has closed its end and
    /// said why on the frame stream: that is no error here, the frames tell it.
    pub fn hand(
        self,
        plan: &Plan,
        lock: Option<&std::fs::File>,
    ) -> io::Result<(Launched, ChildStderr)> {
        use std::os::fd::AsFd;
        let mut json = serde_json::to_vec(plan).map_err(io::Error::other)?;
        json.push(b'\n');
        match sys::send_with_fd(self.control.as_fd(), &json, lock.map(|l| l.as_fd())) {
            Ok(()) | Err(nix::errno::Errno::EPIPE | nix::errno::Errno::ECONNRESET) => {}
            Err(e) => return Err(e.into()),
        }
        Ok((
            Launched {
                child: self.child,
                frames: self.frames,
                lifeline: Some(self.control),
                stage: None,
            },
            self.stderr,
        ))
    }
}

/// Starts the sandbox for `plan` at once, with no artifacts folder: [`start`],
/// [`Starting::hand`], [`Launched::go`].
pub fn launch(plan: &Plan, lock: Option<&std::fs::File>) -> io::Result<(Launched, ChildStderr)> {
    let (mut launched, stderr) = start()?.hand(plan, lock)?;
    launched.go(None);
    Ok((launched, stderr))
}

impl Launched {
    pub fn forwarder(&self) -> Forwarder {
        Forwarder(Pid::from_raw(self.child.id() as i32))
    }

    /// The monitor's pid, as the host sees it.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets init run the commands, now that the run directory exists. `stage` is the
    /// artifacts folder, for init to have once the build's processes are dead. A sandbox
    /// that is already gone is no error here (see [`Starting::hand`]).
    pub fn go(&mut self, stage: Option<OwnedFd>) {
        use std::os::fd::AsFd;
        self.stage = stage;
        if let Some(l) = &self.lifeline {
            let _ = sys::send_with_fd(l.as_fd(), &[super::init::GO], None);
        }
    }

    /// Reads the next frame; `None` when the sandbox closed the stream. Init's request
    /// for the artifacts folder is answered here, and not passed on.
    pub fn next_frame(&mut self) -> Option<Frame> {
        use super::proto::Event;
        use std::os::fd::AsFd;
        loop {
            let frame = read_frame(&mut self.frames).ok().flatten()?;
            if frame != Frame::Event(Event::ArtifactsFolderWanted) {
                return Some(frame);
            }
            // Without a folder, init's receive fails and it reports the collection as
            // failed; so it does if bldr's end is gone.
            if let (Some(l), Some(stage)) = (&self.lifeline, self.stage.take()) {
                let _ = sys::send_fd(l.as_fd(), stage.as_fd());
            } else if let Some(l) = &self.lifeline {
                let _ = sys::send_with_fd(l.as_fd(), b"N", None);
            }
        }
    }

    /// A descriptor that came with a frame (the pty master after `Event::Terminal`).
    pub fn take_fd(&mut self) -> Option<OwnedFd> {
        self.frames.fds.pop()
    }

    /// Gives up on a sandbox that has its plan but no go: init sees its stdin end,
    /// removes the mount points it made and exits, having run nothing. Returns once the
    /// monitor has exited, so that nothing of it outlives the call.
    pub fn abandon(mut self) {
        drop(self.lifeline.take());
        while self.next_frame().is_some() {}
        let _ = self.wait();
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
