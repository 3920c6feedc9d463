//! Profiles: the YAML file a user writes, turned into a validated [`Profile`].
//!
//! The flow is text → [`raw::RawProfile`] (serde, one file) → [`Layer`] (values tagged with
//! where they were written) → merged layers (`extends`, command-line overrides) →
//! [`Profile`]. Everything here except [`load`] is pure: no filesystem, no environment.
//! Facts about the host (does the chroot exist?) are the business of `readiness`.

pub mod layer;
pub mod load;
pub mod locate;
pub mod raw;
pub mod validate;

pub use layer::{Layer, Origin, Overrides};
pub use load::{load, SearchPath};
pub use validate::{validate, Context};

use crate::chroot_path::ChrootPath;
use crate::units::Size;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Whether the build shares the host's network or gets only a loopback device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    Host,
    None,
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Network::Host => "host",
            Network::None => "none",
        })
    }
}

/// A validated profile: every path normalized, every duration and size parsed, every
/// default filled in. Building a plan from it cannot fail on the profile's account.
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    /// The file named on the command line (the child, when `extends` is used).
    pub file: PathBuf,
    /// Every file read, the named one first, then its bases.
    pub files: Vec<PathBuf>,
    pub description: Option<String>,
    pub chroot: PathBuf,
    pub hostname: String,
    pub network: Network,
    pub ephemeral: bool,
    pub workdir: ChrootPath,
    pub timeout: Option<Duration>,
    pub env: BTreeMap<String, String>,
    /// The names in `env` set on the command line (`--setenv`), not by a profile file.
    pub env_from_command_line: std::collections::BTreeSet<String>,
    pub pass_env: Vec<String>,
    pub out: Option<PathBuf>,
    /// Where `out` was written, for readiness messages.
    pub out_origin: Option<Origin>,
    pub shared: Vec<Share>,
    pub tmpfs: Vec<Tmpfs>,
    pub commands: Vec<Command>,
    pub artifacts: Vec<ArtifactRule>,
    /// Where `chroot` was written, for readiness messages.
    pub chroot_origin: Origin,
}

/// A host tree bound into the chroot.
#[derive(Debug, Clone)]
pub struct Share {
    pub source: PathBuf,
    pub target: ChrootPath,
    pub readonly: bool,
    pub origin: Origin,
}

/// A tmpfs mounted inside the chroot.
#[derive(Debug, Clone)]
pub struct Tmpfs {
    pub target: ChrootPath,
    pub size: Option<Size>,
    pub mode: Option<u32>,
    pub origin: Origin,
}

/// One command of the build, run with `/bin/sh -c`.
#[derive(Debug, Clone)]
pub struct Command {
    pub name: Option<String>,
    pub run: String,
    pub network: Option<Network>,
    pub workdir: Option<ChrootPath>,
    pub env: BTreeMap<String, String>,
    pub timeout: Option<Duration>,
    pub origin: Origin,
}

/// Which files of a folder inside the chroot become artifacts.
#[derive(Debug, Clone)]
pub struct ArtifactRule {
    pub from: ChrootPath,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub required: bool,
    pub copy: bool,
    pub origin: Origin,
}

/// The shared tree that holds an artifact rule's `from` on the host: the deepest share
/// containing it, unless a tmpfs deeper still covers it (then its files exist only
/// inside the build). Pure.
pub fn share_holding<'a>(
    from: &ChrootPath,
    shared: &'a [Share],
    tmpfs: &[Tmpfs],
) -> Option<&'a Share> {
    let share = shared
        .iter()
        .filter(|s| from.is_within(&s.target))
        .max_by_key(|s| s.target.depth())?;
    let covered = tmpfs
        .iter()
        .any(|t| from.is_within(&t.target) && t.target.depth() > share.target.depth());
    (!covered).then_some(share)
}

/// A mount strictly below `from` (a tmpfs or another share), as where it is written and
/// its target: its files are not in the host folder of the tree that holds `from`. Pure.
pub fn mount_below(
    from: &ChrootPath,
    shared: &[Share],
    tmpfs: &[Tmpfs],
) -> Option<(Origin, ChrootPath)> {
    let below = |t: &ChrootPath| t.is_within(from) && t != from;
    shared
        .iter()
        .map(|s| (&s.target, &s.origin))
        .chain(tmpfs.iter().map(|t| (&t.target, &t.origin)))
        .find(|(t, _)| below(t))
        .map(|(t, o)| (o.clone(), t.clone()))
}

/// A mistake in a profile (or in a command-line override), located as precisely as known.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ProfileError {
    pub origin: Origin,
    /// A position the parser reported, overriding the one the key index knows.
    pub pos: Option<locate::Pos>,
    pub message: String,
}

impl ProfileError {
    pub fn new(origin: &Origin, message: impl Into<String>) -> Self {
        ProfileError {
            origin: origin.clone(),
            pos: None,
            message: message.into(),
        }
    }

    /// Pins the error to a position the parser reported.
    pub fn at(mut self, pos: locate::Pos) -> Self {
        self.pos = Some(pos);
        self
    }

    /// Line and column of the mistake, where known.
    pub fn position(&self) -> Option<locate::Pos> {
        self.pos.or_else(|| self.origin.pos())
    }
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}",
            self.origin.with_pos(self.position()),
            self.message
        )
    }
}

/// One or more mistakes; validation reports all it finds at once.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ProfileErrors(pub Vec<ProfileError>);

impl fmt::Display for ProfileErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl From<ProfileError> for ProfileErrors {
    fn from(e: ProfileError) -> Self {
        ProfileErrors(vec![e])
    }
}

/// Suggests the closest of `candidates` to a misspelled `word`, if one is close enough.
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    const ALIASES: &[(&str, &str)] = &[
        ("mounts", "shared"),
        ("binds", "shared"),
        ("bind", "shared"),
        ("volumes", "shared"),
        ("root", "chroot"),
        ("rootfs", "chroot"),
        ("directory", "chroot"),
        ("environment", "env"),
        ("cwd", "workdir"),
        ("chdir", "workdir"),
        ("script", "commands"),
        ("steps", "commands"),
        ("artefacts", "artifacts"),
        ("read_only", "readonly"),
        ("ro", "readonly"),
        ("dest", "target"),
        ("destination", "target"),
        ("src", "source"),
        ("cmd", "run"),
        ("command", "run"),
    ];
    let lower = word.to_ascii_lowercase();
    if let Some((_, to)) = ALIASES
        .iter()
        .find(|(from, to)| *from == lower && candidates.contains(to))
    {
        return candidates.iter().copied().find(|c| c == to);
    }
    let (best, dist) = candidates
        .iter()
        // Optimal string alignment: a swapped pair of letters (`dmeo`) is one edit.
        .map(|c| (*c, strsim::osa_distance(&lower, c)))
        .min_by_key(|(_, d)| *d)?;
    (dist <= (best.len() / 3).max(1) || best.starts_with(&lower) && lower.len() >= 3)
        .then_some(best)
}

#[cfg(test)]
mod tests {
    use super::did_you_mean;

    #[test]
    fn misspelled_keys_get_a_suggestion() {
        let keys = super::raw::PROFILE_KEYS;
        assert_eq!(did_you_mean("comands", keys), Some("commands"));
        assert_eq!(did_you_mean("chrot", keys), Some("chroot"));
        assert_eq!(did_you_mean("mounts", keys), Some("shared"));
        assert_eq!(did_you_mean("artefacts", keys), Some("artifacts"));
        assert_eq!(did_you_mean("zzzzzzz", keys), None);
        // Regression: a transposition counted as two edits, too many for a short word.
        assert_eq!(
            did_you_mean("dmeo", &["demo", "emerge-world"]),
            Some("demo")
        );
        assert_eq!(did_you_mean("nnoe", &["host", "none"]), Some("none"));
    }
}
