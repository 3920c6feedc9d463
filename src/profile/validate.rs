//! Merged [`Layer`] → [`Profile`]: every check of SPEC §1 that needs no host facts.
//! Collects every mistake it finds rather than stopping at the first. Pure.

use super::layer::{Item, Layer, Origin};
use super::raw::{Scalar, StringOr};
use super::{
    did_you_mean, ArtifactRule, Command, Network, Profile, ProfileError, ProfileErrors, Share,
    Tmpfs,
};
use crate::chroot_path::ChrootPath;
use crate::units;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// What validation needs to know besides the layers: pure values, no I/O.
#[derive(Debug, Clone)]
pub struct Context {
    /// The profile's name (its file stem).
    pub name: String,
    /// The file named by the user, and every file read for it.
    pub file: PathBuf,
    pub files: Vec<PathBuf>,
    /// `$HOME`, for `~` expansion.
    pub home: Option<PathBuf>,
    /// The caller's working directory, for relative paths given on the command line.
    pub cwd: PathBuf,
}

/// Targets that bldr itself provides; nothing may be mounted at or below them.
const RESERVED: &[&str] = &["/proc", "/sys", "/dev"];

struct Checker<'a> {
    ctx: &'a Context,
    errors: Vec<ProfileError>,
}

impl Checker<'_> {
    fn err(&mut self, origin: &Origin, msg: impl Into<String>) {
        self.errors.push(ProfileError::new(origin, msg));
    }

    /// Expands `~` and makes a host path absolute against the folder of the file it was
    /// written in (or the working directory for the command line), lexically.
    fn host_path(&mut self, text: &str, origin: &Origin) -> Option<PathBuf> {
        if text.is_empty() {
            self.err(origin, "the path is empty");
            return None;
        }
        let expanded = if text == "~" || text.starts_with("~/") {
            match &self.ctx.home {
                Some(home) => home.join(text.trim_start_matches('~').trim_start_matches('/')),
                None => {
                    self.err(origin, "`~` cannot be expanded: HOME is not set");
                    return None;
                }
            }
        } else if text.starts_with('~') {
            self.err(
                origin,
                format!("`{text}`: only `~/` (your own home) is expanded"),
            );
            return None;
        } else {
            PathBuf::from(text)
        };
        let base = origin.base_dir().unwrap_or(&self.ctx.cwd);
        Some(normalize(&base.join(expanded)))
    }

    fn chroot_path(&mut self, text: &str, origin: &Origin) -> Option<ChrootPath> {
        match ChrootPath::parse(text) {
            Ok(p) => Some(p),
            Err(e) => {
                self.err(origin, e);
                None
            }
        }
    }

    /// A mount target: a valid chroot path, not `/`, not in the trees bldr provides.
    fn target(&mut self, text: &str, origin: &Origin) -> Option<ChrootPath> {
        let p = self.chroot_path(text, origin)?;
        if p.depth() == 0 {
            self.err(origin, "cannot mount over the chroot's `/` itself");
            return None;
        }
        for reserved in RESERVED {
            let r = ChrootPath::parse(reserved).expect("constant path");
            if p.is_within(&r) {
                let place = if p == r {
                    format!("`{p}`")
                } else {
                    format!("`{p}` is under {r}, which")
                };
                self.err(
                    origin,
                    format!("{place} is set up by bldr itself (a fresh, private one); choose another target"),
                );
                return None;
            }
        }
        Some(p)
    }

    fn network(&mut self, item: &Item<String>) -> Option<Network> {
        match item.value.as_str() {
            "host" => Some(Network::Host),
            "none" => Some(Network::None),
            other => {
                let hint = did_you_mean(other, &["host", "none"])
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                self.err(
                    &item.origin,
                    format!("unknown network `{other}`{hint}; use `host` or `none`"),
                );
                None
            }
        }
    }

    fn duration(&mut self, item: &Item<Scalar>) -> Option<std::time::Duration> {
        match units::parse_duration(&item.value.text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.err(&item.origin, e);
                None
            }
        }
    }

    fn env(&mut self, env: &BTreeMap<String, Item<Scalar>>) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (name, item) in env {
            if !valid_env_name(name) {
                self.err(
                    &item.origin,
                    format!("`{name}` is not a valid variable name (letters, digits, `_`; not starting with a digit)"),
                );
                continue;
            }
            let value = match item.origin.as_written(&item.value) {
                Ok(v) => v,
                Err(e) => {
                    self.err(&item.origin, e);
                    continue;
                }
            };
            if value.contains('\0') {
                self.err(&item.origin, "the value contains a NUL byte");
                continue;
            }
            out.insert(name.clone(), value);
        }
        out
    }

    /// A command's shell text: not empty, and no NUL byte, which no `sh -c` can be
    /// handed.
    fn command_text(&mut self, run: &str, origin: &Origin) {
        if run.trim().is_empty() {
            self.err(origin, "the command is empty");
        } else if run.contains('\0') {
            self.err(origin, "the command contains a NUL byte");
        }
    }

    fn glob(&mut self, pattern: &str, origin: &Origin) -> Option<String> {
        if pattern.is_empty() {
            self.err(origin, "the glob is empty");
            return None;
        }
        // Globs are matched against paths relative to `from`, which never start with
        // `./` and never end with `/`: such a glob would match nothing, silently.
        if pattern.starts_with("./") || pattern.ends_with('/') {
            let fixed = pattern.trim_start_matches("./").trim_end_matches('/');
            self.err(
                origin,
                format!("`{pattern}` can never match: paths are matched relative to `from`, without `./` or a trailing `/`; write `{fixed}` (a folder's files: `{fixed}/**`)"),
            );
            return None;
        }
        if pattern.starts_with('/') {
            self.err(
                origin,
                format!("`{pattern}` is absolute; globs are relative to the rule's `from`"),
            );
            return None;
        }
        if pattern.split('/').any(|c| c == "..") {
            self.err(
                origin,
                format!("`{pattern}` climbs out with `..`; globs stay inside `from`"),
            );
            return None;
        }
        if let Err(e) = globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
        {
            self.err(origin, format!("invalid glob `{pattern}`: {}", e.kind()));
            return None;
        }
        Some(pattern.to_string())
    }
}

/// Why a short `shared` or `tmpfs` entry that YAML read as a number or a boolean is
/// refused: a path is text, as the map form's `source` and `target` are.
fn not_a_path(value: &Scalar) -> String {
    let kind = match value.text.as_str() {
        "true" | "false" => "boolean",
        _ => "number",
    };
    format!(
        "expected a path, found the {kind} {}; put it in quotes",
        value.text
    )
}

fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks a hostname against RFC 1123 and the kernel's 64-byte limit.
pub fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// A hostname derived from a profile name: invalid characters become `-`.
fn hostname_from_name(name: &str) -> String {
    let mut h: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(63)
        .collect();
    h = h.trim_matches('-').to_string();
    if h.is_empty() {
        "bldr".into()
    } else {
        h
    }
}

/// The host trees bldr never binds in (SPEC §4.2): the kernel's own trees and /run are
/// set up fresh or not at all, and binding `/` would hand the build the whole host.
pub fn host_tree_refused(source: &Path) -> Option<String> {
    if source == Path::new("/") {
        return Some("the source is the host's `/`; share the folders the build needs".into());
    }
    for tree in ["/proc", "/sys", "/dev"] {
        if source.starts_with(tree) {
            return Some(format!(
                "`{}` is in the host's {tree}; bldr never binds the host's /proc, /sys or /dev (the build gets fresh ones)",
                source.display()
            ));
        }
    }
    if source == Path::new("/run") {
        return Some("bldr never binds the host's whole /run; share the one folder or socket the build needs".into());
    }
    None
}

/// Removes `.` and resolves `..` lexically; the path must already be absolute.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
        }
    }
    out
}

/// Validates the merged layer. `layer` is the profile's files merged, with the
/// command-line overrides merged last.
pub fn validate(layer: &Layer, ctx: &Context) -> Result<Profile, ProfileErrors> {
    let mut c = Checker {
        ctx,
        errors: Vec::new(),
    };
    let top = Origin::file_only(&ctx.file);

    if !ctx
        .name
        .chars()
        .all(|ch| ch.is_ascii_alphanumeric() || "._+-".contains(ch))
        || ctx.name.starts_with('.')
    {
        c.err(
            &top,
            format!(
                "profile name `{}` becomes a directory name; use letters, digits and `._+-` in the file name",
                ctx.name
            ),
        );
    }

    let chroot = match &layer.chroot {
        None => {
            c.err(
                &top,
                "missing key `chroot`: name the root directory the build runs in",
            );
            None
        }
        Some(item) => c.host_path(&item.value, &item.origin).and_then(|p| {
            if p == Path::new("/") {
                c.err(
                    &item.origin,
                    "the chroot is the host's `/`; name a separate root directory",
                );
                None
            } else {
                Some(p)
            }
        }),
    };

    let hostname = match &layer.hostname {
        Some(item) if !valid_hostname(&item.value) => {
            c.err(
                &item.origin,
                format!("`{}` is not a valid hostname (letters, digits, `-`, dots between labels, at most 64 characters)", item.value),
            );
            String::new()
        }
        Some(item) => item.value.clone(),
        None => hostname_from_name(&ctx.name),
    };
    let profile_network = layer
        .network
        .as_ref()
        .map(|n| match n.value.as_str() {
            "none" => Network::None,
            _ => Network::Host,
        })
        .unwrap_or(Network::Host);
    let network = layer
        .network
        .as_ref()
        .and_then(|n| c.network(n))
        .unwrap_or(Network::Host);
    let ephemeral = layer.ephemeral.as_ref().is_some_and(|e| e.value);
    let workdir = match &layer.workdir {
        Some(item) => c.chroot_path(&item.value, &item.origin),
        None => Some(ChrootPath::root()),
    };
    let timeout = layer.timeout.as_ref().and_then(|t| c.duration(t));
    let env = c.env(&layer.env);
    let mut pass_env = Vec::new();
    for item in &layer.pass_env {
        if !valid_env_name(&item.value) {
            c.err(
                &item.origin,
                format!("`{}` is not a valid variable name", item.value),
            );
        } else if !pass_env.contains(&item.value) {
            pass_env.push(item.value.clone());
        }
    }
    let out = layer
        .out
        .as_ref()
        .and_then(|o| c.host_path(&o.value, &o.origin));

    let mut shared = Vec::new();
    for item in &layer.shared {
        let (source_text, target_text, readonly, target_origin) = match &item.value {
            StringOr::Short(s) if s.typed => {
                c.err(&item.origin, not_a_path(s));
                continue;
            }
            StringOr::Short(s) => (s.text.as_str(), None, false, item.origin.clone()),
            StringOr::Full(f) => (
                f.source.as_str(),
                f.target.as_deref(),
                f.readonly.unwrap_or(false),
                item.origin.child("target"),
            ),
        };
        let source_origin = match &item.value {
            StringOr::Short(_) => item.origin.clone(),
            StringOr::Full(_) => item.origin.child("source"),
        };
        let Some(source) = c.host_path(source_text, &source_origin) else {
            continue;
        };
        if let Some(why) = host_tree_refused(&source) {
            c.err(&source_origin, why);
            continue;
        }
        let target_text = match target_text {
            Some(t) => t.to_string(),
            None => match source.to_str() {
                Some(s) => s.to_string(),
                None => {
                    c.err(
                        &source_origin,
                        "the source path is not UTF-8; give a `target`",
                    );
                    continue;
                }
            },
        };
        if let Some(target) = c.target(&target_text, &target_origin) {
            shared.push(Share {
                source,
                target,
                readonly,
                origin: item.origin.clone(),
            });
        }
    }

    let mut tmpfs = Vec::new();
    for item in &layer.tmpfs {
        let (target_text, size, mode, target_origin) = match &item.value {
            StringOr::Short(s) if s.typed => {
                c.err(&item.origin, not_a_path(s));
                continue;
            }
            StringOr::Short(s) => (s.text.as_str(), None, None, item.origin.clone()),
            StringOr::Full(f) => (
                f.target.as_str(),
                f.size.as_ref(),
                f.mode.as_ref(),
                item.origin.child("target"),
            ),
        };
        let target = c.target(target_text, &target_origin);
        let (size_origin, mode_origin) = (item.origin.child("size"), item.origin.child("mode"));
        // A size takes YAML's number: `0x1000` and `1e9` are the bytes they say.
        let size = size.and_then(|s| match units::parse_size(&s.text) {
            Ok(v) => Some(v),
            Err(e) => {
                c.err(&size_origin, e);
                None
            }
        });
        let mode = mode.and_then(|m| {
            match mode_origin
                .as_written(m)
                .and_then(|t| units::parse_mode(&t))
            {
                Ok(v) => Some(v),
                Err(e) => {
                    c.err(&mode_origin, e);
                    None
                }
            }
        });
        if let Some(target) = target {
            tmpfs.push(Tmpfs {
                target,
                size,
                mode,
                origin: item.origin.clone(),
            });
        }
    }

    // Two mounts on one target: the second would hide the first.
    let mut seen: BTreeMap<&ChrootPath, &Origin> = BTreeMap::new();
    let targets = shared
        .iter()
        .map(|s| (&s.target, &s.origin))
        .chain(tmpfs.iter().map(|t| (&t.target, &t.origin)));
    let mut dups = Vec::new();
    for (target, origin) in targets {
        if let Some(first) = seen.insert(target, origin) {
            dups.push(ProfileError::new(
                origin,
                format!(
                    "duplicate target `{target}`: {}already mounts there",
                    describe_from(first, origin)
                ),
            ));
        }
    }
    c.errors.extend(dups);

    let mut commands = Vec::new();
    match &layer.commands {
        None => c.err(&top, "missing key `commands`: list what the build runs"),
        Some(list) if list.is_empty() => c.err(
            layer.commands_origin.as_ref().unwrap_or(&top),
            "`commands` is empty: list what the build runs",
        ),
        Some(list) => {
            for item in list {
                match &item.value {
                    StringOr::Short(scalar) => {
                        // `- 0x10` runs `0x10`; `- true` is the shell's `true`, also
                        // where the file's layout leaves nothing known as written.
                        let run = match item.origin.as_written(scalar) {
                            Ok(run) => run,
                            Err(_) if matches!(scalar.text.as_str(), "true" | "false") => {
                                scalar.text.clone()
                            }
                            Err(why) => {
                                c.err(&item.origin, why);
                                continue;
                            }
                        };
                        c.command_text(&run, &item.origin);
                        commands.push(Command {
                            name: None,
                            run,
                            network: None,
                            workdir: None,
                            env: BTreeMap::new(),
                            timeout: None,
                            origin: item.origin.clone(),
                        });
                    }
                    StringOr::Full(f) => {
                        c.command_text(&f.run, &item.origin.child("run"));
                        let network = f.network.as_ref().and_then(|n| {
                            c.network(&Item {
                                value: n.clone(),
                                origin: item.origin.child("network"),
                            })
                        });
                        if network == Some(Network::Host) && profile_network == Network::None {
                            c.err(
                                &item.origin.child("network"),
                                "the build has `network: none`; a command cannot have more network than its build (set `network: host` on the profile and `none` on the other commands)",
                            );
                        }
                        let workdir = f
                            .workdir
                            .as_ref()
                            .and_then(|w| c.chroot_path(w, &item.origin.child("workdir")));
                        let timeout = f.timeout.as_ref().and_then(|t| {
                            c.duration(&Item {
                                value: t.clone(),
                                origin: item.origin.child("timeout"),
                            })
                        });
                        let env_items: BTreeMap<String, Item<Scalar>> = f
                            .env
                            .iter()
                            .flatten()
                            .map(|(k, v)| {
                                (
                                    k.clone(),
                                    Item {
                                        value: v.clone(),
                                        origin: item.origin.child(&format!("env.{k}")),
                                    },
                                )
                            })
                            .collect();
                        let env = c.env(&env_items);
                        commands.push(Command {
                            name: f.name.clone(),
                            run: f.run.clone(),
                            network,
                            workdir,
                            env,
                            timeout,
                            origin: item.origin.clone(),
                        });
                    }
                }
            }
        }
    }

    let mut artifacts = Vec::new();
    for item in &layer.artifacts {
        let a = &item.value;
        let from = c.chroot_path(&a.from, &item.origin.child("from"));
        let mut globs =
            |list: &Option<super::raw::OneOrMany>, key: &str, default: &[&str]| -> Vec<String> {
                match list {
                    None => default.iter().map(|s| s.to_string()).collect(),
                    Some(l) => l
                        .0
                        .iter()
                        .enumerate()
                        .filter_map(|(i, g)| c.glob(g, &item.origin.child(&format!("{key}[{i}]"))))
                        .collect(),
                }
            };
        let include = globs(&a.include, "include", &["**"]);
        let exclude = globs(&a.exclude, "exclude", &[]);
        let copy = a.copy.unwrap_or(false);
        if let Some(from) = &from {
            let in_place = !copy && super::share_holding(from, &shared, &tmpfs).is_some();
            if let Some((mount, target)) = in_place
                .then(|| super::mount_below(from, &shared, &tmpfs))
                .flatten()
            {
                let here = item.origin.child("from");
                let by = describe_from(&mount, &here);
                c.err(
                    &here,
                    format!("`{from}` is in a shared tree, and {by}mounts `{target}` below it: the files there are not in the tree's folder on the host, so recording them in place would miss them; set `copy: true` to copy what the build sees, or narrow `from`"),
                );
            }
        }
        if let Some(from) = from {
            artifacts.push(ArtifactRule {
                from,
                include,
                exclude,
                required: a.required.unwrap_or(false),
                copy,
                origin: item.origin.clone(),
            });
        }
    }

    if !c.errors.is_empty() {
        // In the order of each file, so that a long list reads top to bottom: the
        // command line's first, then the files as `extends` chains them (the named one
        // first), and in each, errors with no position first.
        let mut errors = c.errors;
        errors.sort_by_key(|e| {
            let file = e.origin.file();
            let pos = e.pos.or_else(|| e.origin.pos());
            (
                file.map(|f| ctx.files.iter().position(|x| x == f)),
                pos.map(|p| (p.line, p.col)),
            )
        });
        return Err(ProfileErrors(errors));
    }
    let chroot_origin = layer
        .chroot
        .as_ref()
        .map(|i| i.origin.clone())
        .unwrap_or(top);
    Ok(Profile {
        name: ctx.name.clone(),
        file: ctx.file.clone(),
        files: ctx.files.clone(),
        description: layer.description.as_ref().map(|d| d.value.clone()),
        chroot: chroot.expect("no errors means chroot is set"),
        hostname,
        network,
        ephemeral,
        workdir: workdir.expect("no errors means workdir is valid"),
        timeout,
        env,
        pass_env,
        out,
        shared,
        tmpfs,
        commands,
        artifacts,
        chroot_origin,
        out_origin: layer.out.as_ref().map(|o| o.origin.clone()),
        env_from_command_line: layer
            .env
            .iter()
            .filter(|(_, item)| item.origin.file().is_none())
            .map(|(name, _)| name.clone())
            .collect(),
    })
}

/// Where `origin` is written, for a message about `here`: its key and line, and its file
/// when it is not `here`'s (after `extends`, `shared[0]` of the base is not `shared[0]`
/// of the child).
fn describe_from(origin: &Origin, here: &Origin) -> String {
    let line = origin.pos().map(|p| p.line);
    match (origin.file().filter(|_| origin.file() != here.file()), line) {
        (Some(f), Some(l)) => format!("{} ({}:{l}) ", origin.key, f.display()),
        (Some(f), None) => format!("{} ({}) ", origin.key, f.display()),
        (None, Some(l)) => format!("{} (line {l}) ", origin.key),
        (None, None) => format!("{} ", origin.key),
    }
}
