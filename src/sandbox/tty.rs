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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

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
    // When the build's side last wrote, in ms since `start`: its quiet tells when the
    // shell waits for input.
    let start = Instant::now();
    let last_output = Arc::new(AtomicU64::new(0));
    // stdin → pty. At end of input, the terminal's end-of-file character.
    if let Ok(m) = master.try_clone() {
        let last_output = last_output.clone();
        std::thread::spawn(move || {
            let mut to = std::fs::File::from(m);
            let mut buf = [0u8; 4096];
            let mut stdin = std::io::stdin().lock();
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
            send_end_of_input(&mut to, start, &last_output);
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
                last_output.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
                if n == 0 || out.write_all(&buf[..n]).is_err() {
                    break;
                }
                let _ = out.flush();
            }
        })
    };
    let mut status = exit::SETUP;
    let mut timed_out = false;
    while let Some(frame) = sandbox.next_frame() {
        if let Frame::Event(Event::CommandFinished {
            exit_code,
            signal,
            timed_out: t,
            ..
        }) = frame
        {
            timed_out = t;
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
    if timed_out {
        // As `run` says it; the terminal is restored by now.
        let limit = plan
            .timeout_ms
            .or(plan.commands.first().and_then(|c| c.timeout_ms))
            .map(|ms| crate::units::format_duration(std::time::Duration::from_millis(ms)))
            .unwrap_or_default();
        rep.error(&format!(
            "the session ran out of time ({limit}) and was stopped"
        ));
        return exit::TIMEOUT;
    }
    if status == exit::SETUP && init != exit::SUCCESS && init != exit::COMMAND_FAILED {
        return init;
    }
    status
}

/// Once the user's input has ended: the pty's end-of-file character (VEOF, ^D), each
/// time the build's side is ready for it, until the pty is gone. Ready is: quiet for a
/// moment, everything sent before read, and the session leader's own process group in
/// the foreground (a shell at its prompt, or a `-- CMD` reading), not a job it runs.
/// Sent while nobody reads, it waits in the pty; a line editor that then switches the
/// terminal to raw mode gets a stray byte, not the end, and the shell waits for ever
/// (`bldr shell PROFILE </dev/null`, `printf 'sleep 1\n' | bldr shell PROFILE`). Sent
/// again after each ready spell, as every read of a finished input gives end-of-file.
fn send_end_of_input(to: &mut std::fs::File, start: Instant, last_output: &AtomicU64) {
    const QUIET_MS: u64 = 100;
    const AGAIN_MS: u64 = 500;
    let veof = termios::tcgetattr(to.as_fd())
        .map(|t| t.control_chars[termios::SpecialCharacterIndices::VEOF as usize])
        .ok()
        .filter(|c| *c != 0)
        .unwrap_or(4);
    let mut sent_at: Option<u64> = None;
    loop {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let now = start.elapsed().as_millis() as u64;
        let quiet = now.saturating_sub(last_output.load(Ordering::Relaxed)) >= QUIET_MS;
        let due = sent_at.is_none_or(|at| now.saturating_sub(at) >= AGAIN_MS);
        if quiet && due && leader_reads(to.as_fd()) {
            if to.write_all(&[veof]).is_err() {
                return;
            }
            sent_at = Some(now);
        }
    }
}

/// True when the pty behind `master` has its session leader's process group in the
/// foreground and no input waiting: the leader (or a reader in its group) is the one to
/// read what comes next. The waiting input is counted on the pty's other side, opened
/// for that moment only (TIOCGPTPEER, Linux 4.13).
fn leader_reads(master: BorrowedFd<'_>) -> bool {
    let fd = master.as_raw_fd();
    // SAFETY: ioctls that return a pid, a new descriptor and a count; each is checked,
    // and the descriptor is closed before returning.
    unsafe {
        let sid = libc::tcgetsid(fd);
        let fg = libc::tcgetpgrp(fd);
        if sid <= 0 || fg != sid {
            return false;
        }
        let peer = libc::ioctl(
            fd,
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if peer < 0 {
            return true;
        }
        let mut waiting: libc::c_int = 0;
        let counted = libc::ioctl(peer, libc::FIONREAD, &mut waiting);
        libc::close(peer);
        counted == 0 && waiting == 0
    }
}
