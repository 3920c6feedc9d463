//! The one owner of the terminal. Progress (a status line with the current command, its
//! number and elapsed time), messages and the build's own output all go through here, so
//! they never tear each other. On a terminal it draws an indicatif status line; otherwise
//! (CI, cron, a pipe) it prints plain lines; `--progress none` prints only the build's
//! output and errors.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How progress is shown, as chosen by `--progress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// A live status line on a terminal, plain lines otherwise.
    Auto,
    /// Plain lines, even on a terminal.
    Plain,
    /// No progress at all (cron); errors and the build's output still show.
    None,
}

struct Inner {
    bar: Option<ProgressBar>,
    /// A partial line of build output not yet shown (the status line would tear it).
    pending: Vec<u8>,
    plain: bool,
    quiet: bool,
    color: bool,
}

/// How much of a line the build has not finished is held back while a status line is
/// drawn, so that the line is not torn by a redraw; a longer one is passed on in pieces.
const PENDING_MAX: usize = 64 * 1024;

/// Cheap to clone; every clone draws on the same terminal.
#[derive(Clone)]
pub struct Reporter(Arc<Mutex<Inner>>);

/// Whether messages on stderr may use colour: a terminal, and NO_COLOR/CLICOLOR agree.
fn color_wanted(is_tty: bool) -> bool {
    if std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()) {
        return false;
    }
    if std::env::var_os("CLICOLOR_FORCE").is_some_and(|v| !v.is_empty() && v != "0") {
        return true;
    }
    if std::env::var("CLICOLOR").is_ok_and(|v| v == "0") {
        return false;
    }
    is_tty
}

impl Reporter {
    pub fn new(mode: ProgressMode) -> Reporter {
        let tty = std::io::stderr().is_terminal();
        let live = mode == ProgressMode::Auto && tty;
        Reporter(Arc::new(Mutex::new(Inner {
            bar: None,
            pending: Vec::new(),
            plain: !live,
            quiet: mode == ProgressMode::None,
            color: color_wanted(tty),
        })))
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    fn paint(color: bool, code: &str, text: &str) -> String {
        if color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    /// A progress message (`bldr: ...`), suppressed with `--progress none`.
    pub fn info(&self, msg: &str) {
        self.with(|i| {
            if i.quiet {
                return;
            }
            let line = format!("{} {msg}", Self::paint(i.color, "1", "bldr:"));
            print_line(i, &line);
        })
    }

    /// A warning, always shown.
    pub fn warn(&self, msg: &str) {
        self.with(|i| {
            let line = format!("{} {msg}", Self::paint(i.color, "1;33", "bldr: warning:"));
            print_line(i, &line);
        })
    }

    /// An error, always shown.
    pub fn error(&self, msg: &str) {
        self.with(|i| {
            let line = format!("{} {msg}", Self::paint(i.color, "1;31", "bldr: error:"));
            print_line(i, &line);
        })
    }

    /// Starts the status line for a command (a terminal only; plain mode prints a line).
    pub fn command_started(&self, number: usize, total: usize, name: &str) {
        self.with(|i| {
            if i.quiet {
                return;
            }
            if i.plain {
                let line = format!(
                    "{} [{number}/{total}] {name}",
                    Self::paint(i.color, "1", "bldr:")
                );
                print_line(i, &line);
                return;
            }
            // Drawn only once it has its prefix and message: a first frame without the
            // command's name would flash `[1/2]  (0s)`.
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{prefix}] {msg} ({elapsed})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(format!("{number}/{total}"));
            bar.set_message(name.to_string());
            bar.set_draw_target(ProgressDrawTarget::stderr());
            bar.enable_steady_tick(Duration::from_millis(200));
            i.bar = Some(bar);
        })
    }

    /// Ends the status line of the current command.
    pub fn command_finished(&self) {
        self.with(|i| {
            flush_pending(i);
            if let Some(bar) = i.bar.take() {
                bar.finish_and_clear();
            }
        })
    }

    /// The build's own output, passed on as it arrives (whole lines while a status line
    /// is drawn).
    pub fn output(&self, bytes: &[u8]) {
        self.with(|i| {
            if i.bar.is_none() {
                let mut err = std::io::stderr().lock();
                let _ = err.write_all(bytes);
                let _ = err.flush();
                return;
            }
            if let Some(whole) = whole_lines(&mut i.pending, bytes) {
                let bar = i.bar.clone();
                let write = || {
                    let mut err = std::io::stderr().lock();
                    let _ = err.write_all(&whole);
                    let _ = err.flush();
                };
                match bar {
                    Some(b) => b.suspend(write),
                    None => write(),
                }
            }
        })
    }

    /// A live counter for artifact collection (files and bytes so far), on a terminal only;
    /// plain mode gets the totals in a line when collection ends.
    pub fn progress_bar(&self, what: &str) -> Option<ProgressBar> {
        self.with(|i| {
            if i.plain || i.quiet {
                return None;
            }
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_message(what.to_string());
            bar.set_draw_target(ProgressDrawTarget::stderr());
            bar.enable_steady_tick(Duration::from_millis(100));
            Some(bar)
        })
    }
}

/// Adds `bytes` to the held-back `pending` output and takes what may be shown now: up to
/// the last newline, or all of it once PENDING_MAX is held without one. Only the new
/// bytes are searched, so output that redraws with `\r` and never ends a line (wget,
/// curl, cmake) costs what any other output does, and is held back at most PENDING_MAX
/// plus the tail of one chunk.
fn whole_lines(pending: &mut Vec<u8>, bytes: &[u8]) -> Option<Vec<u8>> {
    let cut = match bytes.iter().rposition(|b| *b == b'\n') {
        Some(at) => pending.len() + at + 1,
        None if pending.len() + bytes.len() >= PENDING_MAX => pending.len() + bytes.len(),
        None => {
            pending.extend_from_slice(bytes);
            return None;
        }
    };
    pending.extend_from_slice(bytes);
    Some(pending.drain(..cut).collect())
}

fn flush_pending(i: &mut Inner) {
    if i.pending.is_empty() {
        return;
    }
    let rest = std::mem::take(&mut i.pending);
    let write = || {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(&rest);
        let _ = err.write_all(b"\n");
    };
    match &i.bar {
        Some(b) => b.suspend(write),
        None => write(),
    }
}

fn print_line(i: &mut Inner, line: &str) {
    flush_pending(i);
    match &i.bar {
        Some(b) => b.suspend(|| crate::errln!("{line}")),
        None => crate::errln!("{line}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_shown_in_whole_lines_and_held_back_at_most_pending_max() {
        let mut pending = Vec::new();
        assert_eq!(
            whole_lines(&mut pending, b"one\ntw"),
            Some(b"one\n".to_vec())
        );
        assert_eq!(whole_lines(&mut pending, b"o"), None);
        assert_eq!(
            whole_lines(&mut pending, b"\nthree\nfo"),
            Some(b"two\nthree\n".to_vec())
        );
        assert_eq!(pending, b"fo");
        // A line that never ends, a progress meter redrawing with `\r`.
        let mut shown = 0;
        for _ in 0..PENDING_MAX {
            if let Some(out) = whole_lines(&mut pending, b"\r") {
                shown += out.len();
            }
            assert!(pending.len() < PENDING_MAX);
        }
        assert_eq!(shown + pending.len(), PENDING_MAX + 2);
    }
}
