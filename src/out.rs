//! Lines for the user on stdout and stderr that never take bldr down. `println!` and
//! `eprintln!` panic when the write fails: a closed pipe (`bldr runs | head`, a dead
//! `tee`), a terminal that hung up, a full disk behind `2>log`. In the middle of a run
//! that panic would lose the record, and in the thread that forwards signals it would
//! leave the build unstoppable; what cannot be shown is dropped instead.

/// `println!` that ignores a failed write.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `print!` that ignores a failed write.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `eprintln!` that ignores a failed write.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}
