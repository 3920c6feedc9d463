//! A [`Layer`] is one source of profile settings (a file, or the command line) with every
//! value tagged by its [`Origin`], so that an error found after `extends` merged several
//! files still points at the file, line and key that caused it. Pure.

use super::locate::{KeyIndex, Pos};
use super::raw::{self, RawProfile, Scalar, StringOr};
use super::{did_you_mean, ProfileError};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a value was written: a file (with its key index) or a command-line option.
#[derive(Clone)]
pub struct Origin {
    file: Option<Arc<PathBuf>>,
    index: Option<Arc<KeyIndex>>,
    /// The key path (`shared[2].target`) or the option (`--bind`).
    pub key: String,
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Origin({self})")
    }
}

impl Origin {
    /// A value written in `file` at `key`.
    pub fn in_file(file: &Arc<PathBuf>, index: &Arc<KeyIndex>, key: impl Into<String>) -> Self {
        Origin {
            file: Some(file.clone()),
            index: Some(index.clone()),
            key: key.into(),
        }
    }

    /// A value given on the command line with `option`.
    pub fn command_line(option: impl Into<String>) -> Self {
        Origin {
            file: None,
            index: None,
            key: option.into(),
        }
    }

    /// A whole file, before any key is known.
    pub fn file_only(file: &Path) -> Self {
        Origin {
            file: Some(Arc::new(file.to_path_buf())),
            index: None,
            key: String::new(),
        }
    }

    /// The origin of a sub-key (`target` below `shared[2]`).
    pub fn child(&self, key: &str) -> Self {
        let mut o = self.clone();
        if self.file.is_some() {
            o.key = if self.key.is_empty() {
                key.to_string()
            } else {
                format!("{}.{key}", self.key)
            };
        }
        o
    }

    /// The file the value came from, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref().map(|p| p.as_path())
    }

    /// The folder relative paths in this value resolve against (`None` for the command
    /// line, where the caller's working directory applies).
    pub fn base_dir(&self) -> Option<&Path> {
        self.file().and_then(Path::parent)
    }

    /// `value` as the file writes it: a number keeps its digits (`0o644`, `3.10`, `007`)
    /// and a boolean its spelling (`True`), not what YAML reads them as. A string is its
    /// text already. `Err` with a message for a number or boolean whose writing is not
    /// known (the strict event parser stopped before it, or it came through more
    /// aliases than the index follows): what YAML made of it may not be what was meant.
    pub fn as_written(&self, value: &Scalar) -> Result<String, String> {
        if !value.typed {
            return Ok(value.text.clone());
        }
        match &self.index {
            None => Ok(value.text.clone()),
            Some(index) => index.written(&self.key).map(str::to_string).ok_or_else(|| {
                let kind = match value.text.as_str() {
                    "true" | "false" => "boolean",
                    _ => "number",
                };
                // A layout the strict event parser could not read leaves nothing known
                // as written in the whole file.
                let why = match &index.unreadable {
                    Some((why, pos)) => format!(
                        ", since its strict reading stops at line {} ({why})",
                        pos.line
                    ),
                    None => String::new(),
                };
                format!(
                    "YAML reads this as the {kind} {} and bldr cannot tell how it was written{why}; put it in quotes",
                    value.text
                )
            }),
        }
    }

    /// Line and column, where the file's index knows them.
    pub fn pos(&self) -> Option<Pos> {
        self.index.as_ref()?.find(&self.key)
    }

    pub(super) fn with_pos(&self, pos: Option<Pos>) -> OriginAt<'_> {
        OriginAt { origin: self, pos }
    }
}

pub(super) struct OriginAt<'a> {
    origin: &'a Origin,
    pos: Option<Pos>,
}

impl fmt::Display for OriginAt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.origin;
        match &o.file {
            Some(file) => {
                write!(f, "{}", file.display())?;
                if let Some(p) = self.pos {
                    write!(f, ":{}:{}", p.line, p.col)?;
                }
                write!(f, ": ")?;
                if !o.key.is_empty() {
                    write!(f, "{}: ", o.key)?;
                }
                Ok(())
            }
            None => write!(f, "command line: {}: ", o.key),
        }
    }
}

impl fmt::Display for Origin {
    /// `file:line:col: key: ` — the prefix of an error message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.with_pos(self.pos()).fmt(f)
    }
}

/// A value and where it was written.
#[derive(Debug, Clone)]
pub struct Item<T> {
    pub value: T,
    pub origin: Origin,
}

/// One source of settings. `None`/empty means "not set here".
#[derive(Debug, Clone, Default)]
pub struct Layer {
    pub description: Option<Item<String>>,
    pub extends: Option<Item<String>>,
    pub chroot: Option<Item<String>>,
    pub hostname: Option<Item<String>>,
    pub network: Option<Item<String>>,
    pub ephemeral: Option<Item<bool>>,
    pub workdir: Option<Item<String>>,
    pub timeout: Option<Item<Scalar>>,
    pub env: BTreeMap<String, Item<Scalar>>,
    pub pass_env: Vec<Item<String>>,
    pub out: Option<Item<String>>,
    pub shared: Vec<Item<StringOr<raw::RawShare>>>,
    pub tmpfs: Vec<Item<StringOr<raw::RawTmpfs>>>,
    pub commands: Option<Vec<Item<StringOr<raw::RawCommand>>>>,
    pub artifacts: Vec<Item<raw::RawArtifact>>,
    /// Where `commands` was set, for "missing commands" and "empty commands" messages.
    pub commands_origin: Option<Origin>,
}

/// The largest profile file bldr reads; a bigger one is surely not a profile.
pub const MAX_PROFILE_BYTES: usize = 1 << 20;

/// Parses one profile file's bytes into a layer.
pub fn parse_layer(bytes: &[u8], file: &Path) -> Result<Layer, ProfileError> {
    let whole = Origin::file_only(file);
    if bytes.len() > MAX_PROFILE_BYTES {
        return Err(ProfileError::new(
            &whole,
            format!(
                "the file is {} bytes; a profile is at most {} bytes (is this the right file?)",
                bytes.len(),
                MAX_PROFILE_BYTES
            ),
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let upto = &bytes[..e.valid_up_to()];
        let line = upto.iter().filter(|b| **b == b'\n').count() + 1;
        let col = upto.iter().rev().take_while(|b| **b != b'\n').count() + 1;
        ProfileError::new(
            &whole,
            "the file is not valid UTF-8 at this point; save it as UTF-8",
        )
        .at(Pos { line, col })
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let file_arc = Arc::new(file.to_path_buf());
    let index = Arc::new(KeyIndex::build(text));
    let at = |pos: Pos, key: &str, msg: String| {
        ProfileError::new(&Origin::in_file(&file_arc, &index, key.to_string()), msg).at(pos)
    };

    if let Some(pos) = index.too_deep {
        return Err(at(
            pos,
            "",
            format!(
                "maps and lists are nested more than {} levels deep here; a profile needs at most 4",
                super::locate::MAX_DEPTH
            ),
        ));
    }
    if let Some(pos) = index.second_document {
        return Err(at(
            pos,
            "",
            "the file holds more than one YAML document (`---`); a profile is exactly one".into(),
        ));
    }
    if let Some((key, pos)) = &index.duplicate {
        return Err(at(
            *pos,
            key,
            "duplicate key: it is already set above in the same map; keep one".into(),
        ));
    }
    // One parse: an empty document (or only comments) is `None`.
    let raw: Option<RawProfile> =
        yaml_serde::from_str(text).map_err(|e| serde_error(e, &file_arc, text))?;
    // A key written with no value is null to YAML and unset to serde: refused, or an
    // empty `network:` would be the default host network, an empty `readonly:` a
    // writable tree. A list or map left empty (its entries commented out) is empty, and
    // `chroot:` and `commands:` have errors of their own (below).
    if let Some((key, pos)) = index.nulls.iter().find(|(key, _)| !may_be_null(key)) {
        // The parser places an empty value at the next token; the key is where it is.
        let at_key = index.find(key).unwrap_or(*pos);
        return Err(at(
            at_key,
            key,
            "the key has no value (YAML reads it as null); write one, or leave the key out for its default".into(),
        ));
    }
    let Some(raw) = raw else {
        return Err(ProfileError::new(
            &whole,
            "the profile is empty; it needs at least `chroot` and `commands`",
        ));
    };
    Ok(Layer::from_raw(raw, &file_arc, &index))
}

/// Turns a yaml_serde error into a located, human message: path split off, serde's
/// vocabulary ("field", "struct RawProfile") replaced by the profile's ("key", "a map"),
/// and a hint for the mistakes people make most.
fn serde_error(e: yaml_serde::Error, file: &Arc<PathBuf>, text: &str) -> ProfileError {
    let full = e.to_string();
    let mut msg = match full.find(" at line ") {
        Some(i) => full[..i].to_string(),
        None => full.clone(),
    };
    if let Some(i) = msg.find(", while ") {
        msg.truncate(i);
    }
    let mut key = String::new();
    if let Some((head, rest)) = msg.split_once(": ") {
        if !head.is_empty() && !head.contains(' ') && !head.contains('`') {
            key = head.to_string();
            msg = rest.to_string();
        }
    }
    let msg = explain(&msg, text, e.location().as_ref());
    let err = ProfileError::new(
        &Origin::in_file(file, &Arc::new(KeyIndex::default()), key),
        msg,
    );
    match e.location() {
        Some(l) => err.at(Pos {
            line: l.line(),
            col: l.column(),
        }),
        None => err,
    }
}

fn explain(msg: &str, text: &str, loc: Option<&yaml_serde::Location>) -> String {
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let (word, tail) = rest.split_once('`').unwrap_or((rest, ""));
        let expected: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
        return match did_you_mean(word, &expected) {
            Some(s) => format!("unknown key `{word}` (did you mean `{s}`?)"),
            None if expected.is_empty() => format!("unknown key `{word}`"),
            None => format!(
                "unknown key `{word}`; the keys here are: {}",
                expected.join(", ")
            ),
        };
    }
    if let Some(rest) = msg.strip_prefix("missing field `") {
        let word = rest.split('`').next().unwrap_or(rest);
        return format!("missing key `{word}`");
    }
    if let Some(out) = explain_invalid_type(msg) {
        return out;
    }
    // What is left comes from the YAML scanner and parser: syntax errors.
    let mut out = msg.to_string();
    let line_has_tab = loc
        .and_then(|l| text.lines().nth(l.line().saturating_sub(1)))
        .is_some_and(|line| line.starts_with(['\t', ' ']) && line.contains('\t'));
    if out.contains("tab") || line_has_tab {
        out.push_str("; YAML does not allow tabs for indentation, indent with spaces");
    }
    out
}

/// Names serde's shapes the way a profile's reader knows them.
fn shape(expected: &str) -> String {
    match expected {
        "struct RawProfile" => "a map of profile keys".into(),
        "struct RawShare" => "a map with `source`".into(),
        "struct RawTmpfs" => "a map with `target`".into(),
        "struct RawCommand" => "a map with `run`".into(),
        "struct RawArtifact" => "a map with `from`".into(),
        "a sequence" => "a list".into(),
        other => other.into(),
    }
}

/// serde's "invalid type: sequence, expected a map" as "expected a map, found a list",
/// with a hint for the shapes people confuse.
fn explain_invalid_type(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("invalid type: ")?;
    // The expectation is ours and never holds ", expected "; a quoted value might.
    let (found, expected) = rest.rsplit_once(", expected ")?;
    let number = found
        .strip_prefix("integer ")
        .or_else(|| found.strip_prefix("floating point "));
    let found_text = match found {
        "map" => "a map".to_string(),
        "sequence" => "a list".to_string(),
        "unit value" => "nothing (the value is empty)".to_string(),
        f if f.starts_with("string ") => format!("the string {}", &f["string ".len()..]),
        f if f.starts_with("boolean ") => format!("the boolean {}", &f["boolean ".len()..]),
        f => match number {
            Some(n) => format!("the number {}", n.trim_matches('`')),
            None => f.to_string(),
        },
    };
    let mut out = format!("expected {}, found {found_text}", shape(expected));
    let word = found
        .strip_prefix("string \"")
        .and_then(|w| w.strip_suffix('"'));
    if expected == "a boolean" {
        match word {
            Some(w) if ["yes", "no", "on", "off", "y", "n", "True", "False"].contains(&w) => out
                .push_str(&format!(
                    "; `{w}` is a string in YAML 1.2, write `true` or `false`"
                )),
            _ => out.push_str("; write `true` or `false`"),
        }
    } else if found == "sequence" && (expected.contains("map") || expected.starts_with("struct ")) {
        out.push_str("; write `KEY: value` lines, not a `- ` list");
    } else if expected == "a sequence" && found == "map" {
        out.push_str("; write one `- ` entry per line, not `KEY: value` lines");
    } else if expected == "a sequence" {
        out.push_str("; write a list: one `- ` entry per line, or `[a, b]`");
    } else if expected == "a string" && (number.is_some() || found.starts_with("boolean ")) {
        out.push_str("; put it in quotes if it is meant as text");
    }
    Some(out)
}

/// Keys a null may stand for: the lists and maps that, written with nothing (their
/// entries commented out), are empty; and `chroot` and `commands`, which say so
/// themselves. Any other key written with no value is refused (see `parse_layer`).
fn may_be_null(key: &str) -> bool {
    let per_command_env = key
        .strip_prefix("commands[")
        .and_then(|k| k.split_once("]."))
        .is_some_and(|(n, rest)| n.parse::<usize>().is_ok() && rest == "env");
    per_command_env
        || matches!(
            key,
            "chroot" | "commands" | "shared" | "tmpfs" | "artifacts" | "env" | "pass_env"
        )
}

impl Layer {
    fn from_raw(raw: RawProfile, file: &Arc<PathBuf>, index: &Arc<KeyIndex>) -> Layer {
        let o = |key: &str| Origin::in_file(file, index, key);
        fn item<T>(value: Option<T>, origin: Origin) -> Option<Item<T>> {
            value.map(|value| Item { value, origin })
        }
        fn list<T>(values: Option<Vec<T>>, key: &str, o: &dyn Fn(&str) -> Origin) -> Vec<Item<T>> {
            values
                .unwrap_or_default()
                .into_iter()
                .enumerate()
                .map(|(i, value)| Item {
                    value,
                    origin: o(&format!("{key}[{i}]")),
                })
                .collect()
        }
        // `chroot:` or `commands:` with nothing after it is a key left unfilled, not a
        // missing one: keep it, so the error points at the line.
        let written = |key: &str| index.find(key).is_some();
        let commands_set = raw.commands.is_some() || written("commands");
        let chroot = raw.chroot.or_else(|| written("chroot").then(String::new));
        Layer {
            description: item(raw.description, o("description")),
            extends: item(raw.extends, o("extends")),
            chroot: item(chroot, o("chroot")),
            hostname: item(raw.hostname, o("hostname")),
            network: item(raw.network, o("network")),
            ephemeral: item(raw.ephemeral, o("ephemeral")),
            workdir: item(raw.workdir, o("workdir")),
            timeout: item(raw.timeout, o("timeout")),
            env: raw
                .env
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| {
                    let origin = o(&format!("env.{k}"));
                    (k, Item { value: v, origin })
                })
                .collect(),
            pass_env: list(raw.pass_env, "pass_env", &o),
            out: item(raw.out, o("out")),
            shared: list(raw.shared, "shared", &o),
            tmpfs: list(raw.tmpfs, "tmpfs", &o),
            commands: commands_set.then(|| list(raw.commands, "commands", &o)),
            artifacts: list(raw.artifacts, "artifacts", &o),
            commands_origin: commands_set.then(|| o("commands")),
        }
    }

    /// Merges `child` over `self` (the base), by the rules of `extends`: scalars and maps
    /// take the child's value, `shared`/`tmpfs`/`artifacts`/`pass_env` concatenate base first,
    /// `commands` are replaced as a whole.
    pub fn merged_with(self, child: Layer) -> Layer {
        let mut env = self.env;
        env.extend(child.env);
        Layer {
            description: child.description.or(self.description),
            extends: child.extends,
            chroot: child.chroot.or(self.chroot),
            hostname: child.hostname.or(self.hostname),
            network: child.network.or(self.network),
            ephemeral: child.ephemeral.or(self.ephemeral),
            workdir: child.workdir.or(self.workdir),
            timeout: child.timeout.or(self.timeout),
            env,
            pass_env: [self.pass_env, child.pass_env].concat(),
            out: child.out.or(self.out),
            shared: [self.shared, child.shared].concat(),
            tmpfs: [self.tmpfs, child.tmpfs].concat(),
            commands_origin: if child.commands.is_some() {
                child.commands_origin
            } else {
                self.commands_origin
            },
            commands: child.commands.or(self.commands),
            artifacts: [self.artifacts, child.artifacts].concat(),
        }
    }
}

/// Settings given on the command line of `run` and `shell`, nspawn's vocabulary.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--bind SRC[:DST]` and `--bind-ro SRC[:DST]`, in order, with the read-only flag.
    pub binds: Vec<(String, bool)>,
    /// `--tmpfs DST[:SIZE]`.
    pub tmpfs: Vec<String>,
    /// `--setenv K=V`.
    pub setenv: Vec<String>,
    pub chdir: Option<String>,
    pub network: Option<String>,
    pub ephemeral: bool,
    /// `shell -D DIR`: the chroot itself comes from the command line.
    pub directory: Option<String>,
}

impl Overrides {
    /// The overrides as a layer that merges over the profile like a child would, except
    /// that `commands` are never touched here. Malformed options are errors.
    pub fn to_layer(&self) -> Result<Layer, ProfileError> {
        let mut layer = Layer::default();
        for (spec, ro) in &self.binds {
            let flag = if *ro { "--bind-ro" } else { "--bind" };
            let origin = Origin::command_line(format!("{flag} {spec}"));
            let (source, target) = match spec.split_once(':') {
                Some((s, t)) => (s.to_string(), Some(t.to_string())),
                None => (spec.clone(), None),
            };
            if source.is_empty() {
                return Err(ProfileError::new(
                    &origin,
                    "the source is empty; write SRC[:DST]",
                ));
            }
            // nspawn's `SRC:DST:OPTIONS`, or a path with a `:`: either way, not a target
            // to mount at as it stands.
            if let Some((_, extra)) = target.as_deref().and_then(|t| t.split_once(':')) {
                return Err(ProfileError::new(
                    &origin,
                    format!("`{extra}` after a second `:`: {flag} takes SRC[:DST], with no options (`--bind-ro` binds read-only), and a path here cannot hold a `:`"),
                ));
            }
            layer.shared.push(Item {
                value: StringOr::Full(raw::RawShare {
                    source,
                    target,
                    readonly: Some(*ro),
                }),
                origin,
            });
        }
        for spec in &self.tmpfs {
            let origin = Origin::command_line(format!("--tmpfs {spec}"));
            let (target, size) = match spec.split_once(':') {
                Some((t, s)) => (t.to_string(), Some(s.to_string())),
                None => (spec.clone(), None),
            };
            layer.tmpfs.push(Item {
                value: StringOr::Full(raw::RawTmpfs {
                    target,
                    size: size.map(|s| Scalar {
                        text: s,
                        typed: false,
                    }),
                    mode: None,
                }),
                origin,
            });
        }
        for kv in &self.setenv {
            let origin = Origin::command_line(format!("--setenv {kv}"));
            let Some((k, v)) = kv.split_once('=') else {
                return Err(ProfileError::new(&origin, "write it as NAME=VALUE"));
            };
            layer.env.insert(
                k.to_string(),
                Item {
                    value: Scalar {
                        text: v.to_string(),
                        typed: false,
                    },
                    origin,
                },
            );
        }
        let opt = |v: &Option<String>, flag: &str| {
            v.as_ref().map(|value| Item {
                value: value.clone(),
                origin: Origin::command_line(format!("{flag} {value}")),
            })
        };
        layer.workdir = opt(&self.chdir, "--chdir");
        layer.network = opt(&self.network, "--network");
        layer.chroot = opt(&self.directory, "-D");
        if self.ephemeral {
            layer.ephemeral = Some(Item {
                value: true,
                origin: Origin::command_line("--ephemeral"),
            });
        }
        Ok(layer)
    }
}
