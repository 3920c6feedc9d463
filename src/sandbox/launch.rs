//! The main process's side of the sandbox: start init as a fresh exec of bldr in a new
//! PID namespace, hand it its plan and then its go, read the frame stream, forward
//! signals, and keep the artifacts folder until init asks for it. The main process
//! itself never creates a namespace.

use super::proto::{read_frame, Frame};
use super::sys;
use crate::plan::Plan;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

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
    /// init, as this process sees it: bldr's child.
    init: Pid,
    frames: FrameSocket,
    /// bldr's end of init's fd 0: the plan, the go and the artifacts folder go out on
    /// it, and while it is open the build may live (the lifeline).
    lifeline: Option<UnixStream>,
    /// The artifacts folder on the host, kept here, outside the build's PID namespace,
    /// until init has killed every process of the build and asks for it: no command can
    /// reach it through /proc/1/fd.
    stage: Option<OwnedFd>,
}

/// The read end of the sandbox's stderr: its own messages, one per line.
pub type SandboxStderr = File;

/// Sends a signal to the sandbox's init, which handles it (see `init::handled_signals`).
#[derive(Debug, Clone, Copy)]
pub struct Forwarder(Pid);

impl Forwarder {
    pub fn send(&self, signal: i32) {
        if let Ok(s) = Signal::try_from(signal) {
            let _ = kill(self.0, s);
        }
    }
}

/// A sandbox started ahead of its plan: its exec and start-up (init's namespaces) run
/// while bldr prepares the run (profile, lock), on the other CPU when there is one.
/// Dropped without [`Starting::hand`], init sees its stdin end and exits, having done
/// nothing.
pub struct Starting {
    init: Pid,
    frames: FrameSocket,
    control: UnixStream,
    stderr: SandboxStderr,
}

/// Starts the sandbox: a fresh exec of bldr (`__sandbox --parent PID`) as PID 1 of a new
/// PID namespace. Must be called from the thread that stays alive until the run ends:
/// init's parent-death signal fires when *this thread* exits (prctl(2),
/// PR_SET_PDEATHSIG).
pub fn start() -> io::Result<Starting> {
    use std::os::fd::AsFd;
    let (ours, theirs) = UnixStream::pair()?;
    let (control, their_control) = UnixStream::pair()?;
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let exe = std::env::current_exe()?;
    let parent = std::process::id().to_string();
    let init = sys::spawn_sandbox(
        &exe,
        &["__sandbox", "--parent", &parent],
        [their_control.as_fd(), theirs.as_fd(), err_w.as_fd()],
    )
    .map_err(|e| {
        let hint = if super::is_root() {
            "the kernel refused; `bldr check` lists what this host supports"
        } else {
            "run as root: sudo bldr ..."
        };
        io::Error::other(format!(
            "cannot create the build's namespaces: {} ({hint})",
            e.desc()
        ))
    })?;
    Ok(Starting {
        init,
        frames: FrameSocket {
            sock: ours,
            fds: Vec::new(),
        },
        control,
        stderr: File::from(err_r),
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
    ) -> io::Result<(Launched, SandboxStderr)> {
        use std::os::fd::AsFd;
        let mut json = serde_json::to_vec(plan).map_err(io::Error::other)?;
        json.push(b'\n');
        match sys::send_with_fd(self.control.as_fd(), &json, lock.map(|l| l.as_fd())) {
            Ok(()) | Err(nix::errno::Errno::EPIPE | nix::errno::Errno::ECONNRESET) => {}
            Err(e) => return Err(e.into()),
        }
        Ok((
            Launched {
                init: self.init,
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
pub fn launch(plan: &Plan, lock: Option<&std::fs::File>) -> io::Result<(Launched, SandboxStderr)> {
    let (mut launched, stderr) = start()?.hand(plan, lock)?;
    launched.go(None);
    Ok((launched, stderr))
}

impl Launched {
    pub fn forwarder(&self) -> Forwarder {
        Forwarder(self.init)
    }

    /// init's pid, as the host sees it.
    pub fn pid(&self) -> u32 {
        self.init.as_raw() as u32
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
            // Without a folder (a byte alone), init's receive fails and it reports the
            // collection as failed; so it does if bldr's end is gone.
            if let Some(l) = &self.lifeline {
                let stage = self.stage.take();
                let _ = sys::send_with_fd(l.as_fd(), b"F", stage.as_ref().map(|f| f.as_fd()));
            }
        }
    }

    /// A descriptor that came with a frame (the pty master after `Event::Terminal`).
    pub fn take_fd(&mut self) -> Option<OwnedFd> {
        self.frames.fds.pop()
    }

    /// Gives up on a sandbox that has its plan but no go: init sees its stdin end,
    /// removes the mount points it made and exits, having run nothing. Returns once init
    /// has exited, so that nothing of it outlives the call.
    pub fn abandon(mut self) {
        drop(self.lifeline.take());
        while self.next_frame().is_some() {}
        let _ = self.wait();
    }

    /// Waits for init and returns its exit code: once it is gone, so is its PID
    /// namespace, and with the last process of its mount namespace every mount in it.
    pub fn wait(mut self) -> i32 {
        use nix::sys::wait::{waitpid, WaitStatus};
        let status = loop {
            match waitpid(self.init, None) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => break other,
            }
        };
        drop(self.lifeline.take());
        match status {
            Ok(WaitStatus::Exited(_, code)) => code,
            Ok(WaitStatus::Signaled(_, s, _)) => crate::exit::signal(s as i32),
            _ => crate::exit::SETUP,
        }
    }
}
