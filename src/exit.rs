//! The exit codes of SPEC §2, in one place, so the docs, `--help` and the code agree.

/// Every command succeeded.
pub const SUCCESS: i32 = 0;
/// A command of the build failed; its own status is printed and recorded.
pub const COMMAND_FAILED: i32 = 1;
/// Usage error or invalid profile (or a profile not ready to run here).
pub const USAGE: i32 = 2;
/// Collecting artifacts or writing the run record failed, or a `required` rule matched nothing.
pub const ARTIFACTS: i32 = 3;
/// The sandbox could not be set up (privileges, kernel, chroot).
pub const SETUP: i32 = 4;
/// Another run holds the chroot's lock; retry later.
pub const LOCKED: i32 = 75;
/// A timeout expired.
pub const TIMEOUT: i32 = 124;

/// bldr itself was stopped by signal `n`.
pub fn signal(n: i32) -> i32 {
    128 + n
}

/// The table shown at the end of `bldr run --help` and in docs/cli.md.
pub const TABLE: &str = "\
Exit status:
  0        every command succeeded
  1        a command failed (its own status is printed and recorded)
  2        usage error, invalid profile, or a profile not ready to run here
  3        collecting artifacts or writing the record failed, or a `required` rule matched nothing
  4        the sandbox could not be set up (privileges, kernel, chroot)
  75       another run holds the chroot's lock (retry later; --no-wait)
  124      a timeout expired
  128+N    bldr was stopped by signal N (130 for Ctrl-C, 143 for SIGTERM)";
