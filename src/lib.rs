//! bldr: a backup-friendly build environment runner for distro packaging.
//!
//! Data flows one way: YAML text → [`profile`] → [`plan`] → `sandbox` → run record.
//! Every syscall and every `unsafe` block lives under `sandbox`; elsewhere `unsafe` is
//! denied.

#![deny(unsafe_code)]

pub mod artifact;
pub mod check;
pub mod chroot_path;
pub mod cli;
pub mod exit;
pub mod history;
pub mod lock;
pub mod out;
pub mod plan;
pub mod profile;
pub mod readiness;
pub mod record;
pub mod reporter;
pub mod rootfs;
pub mod run;
pub mod sandbox;
pub mod scratch;
pub mod shell;
pub mod state;
pub mod units;
