//! Finding and reading profile files: the search path of SPEC §1, `extends` chains with
//! cycle detection. This is the only part of `profile` that touches the filesystem, and it
//! only reads.

use super::layer::{parse_layer, Layer, Origin, Overrides};
use super::validate::{validate, Context};
use super::{did_you_mean, Profile, ProfileError, ProfileErrors};
use std::path::{Path, PathBuf};

/// The folders profiles are looked up in, highest priority first.
#[derive(Debug, Clone, Default)]
pub struct SearchPath {
    pub dirs: Vec<PathBuf>,
}

impl SearchPath {
    /// `--profiles DIR`, `$BLDR_PROFILE_PATH`, `./profiles`, `$XDG_CONFIG_HOME/bldr/profiles`
    /// (or `~/.config/bldr/profiles`), `/etc/bldr/profiles`. Pure: the caller passes the
    /// values of the variables.
    pub fn new(
        flag: Option<&Path>,
        profile_path: Option<&str>,
        cwd: &Path,
        xdg_config_home: Option<&Path>,
        home: Option<&Path>,
    ) -> SearchPath {
        let mut dirs = Vec::new();
        if let Some(f) = flag {
            dirs.push(cwd.join(f));
        }
        for d in profile_path
            .unwrap_or("")
            .split(':')
            .filter(|d| !d.is_empty())
        {
            dirs.push(cwd.join(d));
        }
        dirs.push(cwd.join("profiles"));
        match (xdg_config_home, home) {
            (Some(x), _) if x.is_absolute() => dirs.push(x.join("bldr/profiles")),
            (_, Some(h)) => dirs.push(h.join(".config/bldr/profiles")),
            _ => {}
        }
        dirs.push(PathBuf::from("/etc/bldr/profiles"));
        dirs.dedup();
        SearchPath { dirs }
    }

    /// The search path from this process's environment.
    pub fn from_env(flag: Option<&Path>) -> SearchPath {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let var = |n| std::env::var_os(n).map(PathBuf::from);
        SearchPath::new(
            flag,
            std::env::var("BLDR_PROFILE_PATH").ok().as_deref(),
            &cwd,
            var("XDG_CONFIG_HOME").as_deref(),
            var("HOME").as_deref(),
        )
    }

    /// Every profile found, by name, the first occurrence of each name winning.
    pub fn list(&self) -> Vec<(String, PathBuf)> {
        let mut found: Vec<(String, PathBuf)> = Vec::new();
        for dir in &self.dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut here: Vec<(String, PathBuf)> = entries
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let path = e.path();
                    let name = profile_name(&path)?;
                    path.is_file().then_some((name, path))
                })
                .collect();
            here.sort();
            for (name, path) in here {
                if !found.iter().any(|(n, _)| *n == name) {
                    found.push((name, path));
                }
            }
        }
        found
    }

    /// Finds the file for `spec`: a path if it contains `/` or ends in `.yaml`/`.yml`,
    /// otherwise a name looked up in each folder.
    pub fn resolve(&self, spec: &str, relative_to: &Path) -> Result<PathBuf, ProfileError> {
        if is_path(spec) {
            return Ok(super::validate::normalize(&relative_to.join(spec)));
        }
        for dir in &self.dirs {
            for ext in ["yaml", "yml"] {
                let candidate = dir.join(format!("{spec}.{ext}"));
                if candidate.is_file() {
                    return Ok(candidate);
                }
            }
        }
        let names: Vec<String> = self.list().into_iter().map(|(n, _)| n).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let hint = match did_you_mean(spec, &refs) {
            Some(s) => format!(" (did you mean `{s}`?)"),
            None => String::new(),
        };
        let searched: Vec<String> = self.dirs.iter().map(|d| d.display().to_string()).collect();
        Err(ProfileError::new(
            &Origin::command_line(format!("profile `{spec}`")),
            format!(
                "no profile named `{spec}`{hint}; looked in {}; `bldr list` shows what is there",
                searched.join(", ")
            ),
        ))
    }
}

/// True when a profile argument is a path rather than a name.
pub fn is_path(spec: &str) -> bool {
    spec.contains('/') || spec.ends_with(".yaml") || spec.ends_with(".yml")
}

/// The profile name of a file: its name without `.yaml`/`.yml`.
pub fn profile_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let stem = name
        .strip_suffix(".yaml")
        .or_else(|| name.strip_suffix(".yml"))?;
    (!stem.is_empty() && !stem.starts_with('.')).then(|| stem.to_string())
}

/// The deepest `extends` chain followed before giving up.
const MAX_EXTENDS_DEPTH: usize = 16;

fn read_layer(path: &Path) -> Result<Layer, ProfileError> {
    let bytes = std::fs::read(path).map_err(|e| {
        ProfileError::new(
            &Origin::file_only(path),
            format!("cannot read the profile: {e}"),
        )
    })?;
    parse_layer(&bytes, path)
}

/// Reads `path` and its `extends` chain, merged base first. Returns the merged layer and
/// every file read, the named one first.
pub fn read_chain(path: &Path, search: &SearchPath) -> Result<(Layer, Vec<PathBuf>), ProfileError> {
    let mut chain: Vec<Layer> = Vec::new();
    let mut files: Vec<PathBuf> = Vec::new();
    let mut canon: Vec<PathBuf> = Vec::new();
    let mut current = path.to_path_buf();
    loop {
        let real = std::fs::canonicalize(&current).unwrap_or_else(|_| current.clone());
        if let Some(i) = canon.iter().position(|c| *c == real) {
            let cycle: Vec<String> = files[i..]
                .iter()
                .chain(std::iter::once(&current))
                .map(|f| f.display().to_string())
                .collect();
            let origin = chain
                .last()
                .and_then(|l| l.extends.as_ref())
                .map(|e| e.origin.clone())
                .unwrap_or_else(|| Origin::file_only(path));
            return Err(ProfileError::new(
                &origin,
                format!("`extends` forms a cycle: {}", cycle.join(" -> ")),
            ));
        }
        if chain.len() >= MAX_EXTENDS_DEPTH {
            return Err(ProfileError::new(
                &Origin::file_only(path),
                format!("`extends` is nested more than {MAX_EXTENDS_DEPTH} deep"),
            ));
        }
        let layer = read_layer(&current)?;
        canon.push(real);
        files.push(current.clone());
        let next = layer.extends.clone();
        chain.push(layer);
        let Some(ext) = next else { break };
        let dir = current.parent().unwrap_or(Path::new("/")).to_path_buf();
        // A base named by a child is looked for beside the child first, then on the
        // search path (and a base that is not found says it was looked for in both).
        let mut from_child = search.clone();
        from_child.dirs.insert(0, dir.clone());
        current = from_child
            .resolve(&ext.value, &dir)
            .map_err(|e| ProfileError::new(&ext.origin, e.message))?;
        if !current.is_file() {
            return Err(ProfileError::new(
                &ext.origin,
                format!("the base profile {} does not exist", current.display()),
            ));
        }
    }
    let merged = chain
        .into_iter()
        .rev()
        .reduce(|base, child| base.merged_with(child))
        .unwrap_or_default();
    Ok((merged, files))
}

/// Loads a profile by name or path, applies the command-line overrides and validates it.
pub fn load(
    spec: &str,
    search: &SearchPath,
    overrides: &Overrides,
) -> Result<Profile, ProfileErrors> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let path = search.resolve(spec, &cwd)?;
    let (layer, files) = read_chain(&path, search).map_err(|mut e| {
        // `bldr run demo.yaml` where `demo` is a profile on the search path.
        if !path.exists() {
            e.message.push_str(&named_instead(spec, search));
        }
        e
    })?;
    let layer = layer.merged_with(overrides.to_layer()?);
    let ctx = Context {
        name: profile_name(&path).unwrap_or_else(|| spec.to_string()),
        file: path,
        files,
        home: std::env::var_os("HOME").map(PathBuf::from),
        cwd,
    };
    validate(&layer, &ctx)
}

/// For a profile path that does not exist: the profile of that name on the search path,
/// if there is one, as a hint (`; did you mean the profile `demo` (...)?`).
fn named_instead(spec: &str, search: &SearchPath) -> String {
    let Some(name) = profile_name(Path::new(spec)).or_else(|| {
        Path::new(spec)
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
    }) else {
        return String::new();
    };
    match search.resolve(&name, Path::new("/")) {
        Ok(found) if !is_path(&name) => {
            format!("; did you mean the profile `{name}` ({})?", found.display())
        }
        _ => String::new(),
    }
}

/// The profile-less form, `bldr shell -D DIR`: everything comes from the command line.
pub fn ad_hoc(overrides: &Overrides, commands: Vec<String>) -> Result<Profile, ProfileErrors> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let mut layer = overrides.to_layer()?;
    layer.commands = Some(
        commands
            .into_iter()
            .map(|c| super::layer::Item {
                value: super::raw::StringOr::Short(super::raw::Scalar {
                    text: c,
                    typed: false,
                }),
                origin: Origin::command_line("command"),
            })
            .collect(),
    );
    let dir = overrides.directory.clone().unwrap_or_default();
    let name = Path::new(&dir)
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
        .map(str::to_string)
        .or_else(|| cwd.file_name().and_then(|n| n.to_str()).map(str::to_string))
        .unwrap_or_else(|| "adhoc".into());
    let ctx = Context {
        name: name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._+-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect(),
        file: PathBuf::from("command line"),
        files: vec![],
        home: std::env::var_os("HOME").map(PathBuf::from),
        cwd,
    };
    validate(&layer, &ctx)
}
