//! `bldr shell` on the main side: relay the user's terminal to the build's new pty.
//! The user's terminal is put in raw mode (and always restored), its window size follows
//! SIGWINCH, Ctrl-C travels as a byte to the build's own terminal, and the exit status of
//! the command becomes bldr's.

use super::launch;
use super::proto::{Event, Frame};
use crate::exit;
use crate::plan::Plan;
use crate::reporter::Reporter;
use nix::sys::termios::{self, SetArg, Termios};
use std::io::{IsTerminal, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// Restores the terminal's mode when dropped, on every way out.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enter() -> Option<RawMode> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return None;
        }
        let saved = termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

fn copy_window_size(from: BorrowedFd<'_>, to: BorrowedFd<'_>) {
    // SAFETY: winsize is plain data; TIOCGWINSZ/TIOCSWINSZ read and write exactly it.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(from.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(to.as_raw_fd(), libc::TIOCSWINSZ, &ws);
        }
    }
}

/// Runs the plan's single command on a new pty; returns its exit status.
pub fn run_interactive(rep: &Reporter, plan: &Plan, lock: Option<&std::fs::File>) -> i32 {
    let (mut sandbox, stderr) = match launch::launch(plan, lock) {
        Ok(x) => x,
        Err(e) => {
            rep.error(&format!("cannot start the sandbox: {e}"));
            return exit::SETUP;
        }
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut { stderr }, &mut std::io::stderr());
    });
    let fwd = sandbox.forwarder();
    if let Ok(mut signals) = signal_hook::iterator::Signals::new([libc::SIGTERM, libc::SIGHUP]) {
        std::thread::spawn(move || {
            for sig in signals.forever() {
                fwd.send(sig);
            }
        });
    }
    // Until the pty arrives, only setup events come.
    let master: OwnedFd = loop {
        match sandbox.next_frame() {
            Some(Frame::Event(Event::Terminal)) => match sandbox.take_fd() {
                Some(fd) => break fd,
                None => {
                    rep.error("the sandbox announced a terminal but sent none");
                    return exit::SETUP;
                }
            },
            Some(Frame::Event(Event::SetupFailed { message })) => {
                rep.error(&format!("sandbox setup failed: {message}"));
                sandbox.wait();
                return exit::SETUP;
            }
            Some(Frame::Event(Event::Note { message })) => rep.warn(&message),
            Some(_) => {}
            None => {
                let code = sandbox.wait();
                rep.error("the sandbox ended before the shell started");
                return if code == 0 { exit::SETUP } else { code };
            }
        }
    };
    let stdout_tty = std::io::stdout().is_terminal();
    if !stdout_tty {
        // Output goes to a file or pipe: keep `\n` as it is instead of the terminal's `\r\n`.
        if let Ok(mut t) = termios::tcgetattr(master.as_fd()) {
            t.output_flags.remove(termios::OutputFlags::ONLCR);
            let _ = termios::tcsetattr(master.as_fd(), SetArg::TCSANOW, &t);
        }
    }
    let raw = RawMode::enter();
    if raw.is_some() {
        copy_window_size(std::io::stdin().as_fd(), master.as_fd());
        if let (Ok(mut winch), Ok(m)) = (
            signal_hook::iterator::Signals::new([libc::SIGWINCH]),
            master.try_clone(),
        ) {
            std::thread::spawn(move || {
                for _ in winch.forever() {
                    copy_window_size(std::io::stdin().as_fd(), m.as_fd());
                }
            });
        }
    }
    // stdin → pty. At end of input, send the terminal's EOF character.
    if let Ok(m) = master.try_clone() {
        std::thread::spawn(move || {
            let mut to = std::fs::File::from(m);
            let mut buf = [0u8; 4096];
            let mut stdin = std::io::stdin().lock();
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = to.write_all(&[4]);
                        break;
                    }
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }
    // pty → stdout, until the last holder of the other side is gone (EIO).
    let out_thread = {
        let m = master.try_clone();
        std::thread::spawn(move || {
            let Ok(m) = m else { return };
            let mut from = std::fs::File::from(m);
            let mut buf = [0u8; 8192];
            let mut out = std::io::stdout().lock();
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 || out.write_all(&buf[..n]).is_err() {
                    break;
                }
                let _ = out.flush();
            }
        })
    };
    let mut status = exit::SETUP;
    while let Some(frame) = sandbox.next_frame() {
        if let Frame::Event(Event::CommandFinished {
            exit_code, signal, ..
        }) = frame
        {
            status = match (exit_code, signal) {
                (Some(c), _) => c,
                (None, Some(s)) => exit::signal(s),
                _ => exit::SETUP,
            };
        }
    }
    let _ = out_thread.join();
    drop(master);
    drop(raw);
    let init = sandbox.wait();
    if status == exit::SETUP && init != exit::SUCCESS && init != exit::COMMAND_FAILED {
        return init;
    }
    status
}
