//! The plan: exactly what the sandbox will do, as plain data. Built from a validated
//! [`Profile`] by a pure function; `bldr plan` prints it and the sandbox executes it
//! without deciding anything on its own. Invariants established here: targets are
//! normalized [`ChrootPath`]s, no two mounts share a target, parents come before children.

use crate::chroot_path::ChrootPath;
use crate::profile::{Network, Profile};
use crate::units::Size;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The grace period between SIGTERM and SIGKILL when a build is stopped.
pub const GRACE_MS: u64 = 10_000;

/// A Linux namespace the build gets a private copy of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Namespace {
    Mount,
    Pid,
    Uts,
    Ipc,
    Net,
}

/// What becomes the build's `/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Root {
    /// The chroot itself, bound onto itself; writes land in it.
    Bind { path: PathBuf },
    /// The chroot as the read-only lower layer of an overlay: the build's writes go to
    /// `upper`, and `work` is overlayfs's own, both in the scratch space
    /// ([`crate::scratch::Layer`]). `volatile`: the layer is thrown away after the run,
    /// so overlayfs need not sync it to disk (its `volatile` option, Linux 5.10): the
    /// sync on unmount cost more than the rest of an ephemeral run's overhead.
    Overlay {
        lower: PathBuf,
        upper: PathBuf,
        work: PathBuf,
        #[serde(default)]
        volatile: bool,
    },
}

impl Root {
    /// `lower` under the overlay layer `layer`.
    pub fn overlay(lower: &Path, layer: &crate::scratch::Layer, volatile: bool) -> Root {
        Root::Overlay {
            lower: lower.to_path_buf(),
            upper: layer.upper.clone(),
            work: layer.work.clone(),
            volatile,
        }
    }
}

/// A device node created in the fresh /dev.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceNode {
    pub name: String,
    pub major: u32,
    pub minor: u32,
    pub mode: u32,
}

/// A symlink created in the fresh /dev (`fd` → `/proc/self/fd`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevLink {
    pub name: String,
    pub to: String,
}

/// The kind of filesystem a mount operation puts at its target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum MountKind {
    /// A fresh procfs of the build's PID namespace.
    Proc,
    /// sysfs, always read-only.
    Sysfs,
    /// A fresh tmpfs for /dev, populated with `nodes` and `links`.
    Dev {
        nodes: Vec<DeviceNode>,
        links: Vec<DevLink>,
    },
    /// A new devpts instance (its own ptmx), so the build never sees the host's ptys.
    Devpts,
    Tmpfs {
        size: Option<Size>,
        mode: u32,
    },
    /// A host path bound in, recursively (its sub-mounts come along).
    Bind {
        source: PathBuf,
    },
}

/// One mount, in the order the sandbox performs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountOp {
    pub target: ChrootPath,
    #[serde(flatten)]
    pub kind: MountKind,
    /// Read-only, recursively (sub-mounts included).
    pub readonly: bool,
    pub nosuid: bool,
    pub nodev: bool,
    pub noexec: bool,
    /// Mount only when the target already exists in the root; never create it.
    /// (The host's resolv.conf goes over the chroot's only if it has one.)
    pub only_if_target_exists: bool,
}

/// Where a variable of the build's environment comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnvSource {
    Default,
    Profile,
    Host,
    /// `--setenv`.
    #[serde(rename = "command-line")]
    CommandLine,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
    pub from: EnvSource,
}

/// One command as the sandbox's init runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandPlan {
    /// 1-based, as shown to the user.
    pub number: usize,
    /// The display name: the profile's `name`, or the first line of `run`.
    pub name: String,
    pub run: String,
    pub network: Network,
    pub workdir: ChrootPath,
    /// Variables for this command only, over the build's environment.
    pub env: BTreeMap<String, String>,
    pub timeout_ms: Option<u64>,
}

/// Which files become artifacts, and where they live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactPlan {
    pub from: ChrootPath,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub required: bool,
    pub copy: bool,
    /// When `from` lies in a shared tree, the same folder on the host.
    pub host_path: Option<PathBuf>,
    /// That shared tree's source on the host: `host_path` must resolve inside it.
    #[serde(default)]
    pub share_source: Option<PathBuf>,
}

/// Everything a run will do, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub profile: String,
    pub profile_file: PathBuf,
    pub chroot: PathBuf,
    pub ephemeral: bool,
    pub hostname: String,
    pub network: Network,
    pub namespaces: Vec<Namespace>,
    pub root: Root,
    pub mounts: Vec<MountOp>,
    pub env: Vec<EnvVar>,
    pub workdir: ChrootPath,
    pub commands: Vec<CommandPlan>,
    pub artifacts: Vec<ArtifactPlan>,
    pub timeout_ms: Option<u64>,
    pub grace_ms: u64,
    /// Give the command a new pty (relayed to the user's terminal) instead of pipes:
    /// `bldr shell`.
    #[serde(default)]
    pub tty: bool,
    /// Where copied artifacts go on the host (the run's staging folder), opened by the
    /// sandbox before it leaves the host's root. Set by `run`, not by the profile.
    #[serde(default)]
    pub artifacts_dir: Option<PathBuf>,
    /// Where init journals each mount point it creates in a chroot used in place, so
    /// that the next run removes what a killed one left (`sandbox::mounts::JournalEntry`).
    /// Set by `run`, not by the profile.
    #[serde(default)]
    pub mount_journal: Option<PathBuf>,
}

/// Facts from outside the profile that a plan needs. Pure values.
#[derive(Debug, Clone, Default)]
pub struct PlanInputs {
    /// The caller's environment (for `pass_env` and TERM).
    pub host_env: BTreeMap<String, String>,
    /// Where an ephemeral run keeps its overlay layers.
    pub scratch: PathBuf,
}

fn p(s: &str) -> ChrootPath {
    ChrootPath::parse(s).expect("constant path is valid")
}

fn op(target: &str, kind: MountKind) -> MountOp {
    MountOp {
        target: p(target),
        kind,
        readonly: false,
        nosuid: true,
        nodev: true,
        noexec: true,
        only_if_target_exists: false,
    }
}

/// The device nodes of SPEC §4.2, with their numbers from devices.txt.
fn dev_nodes() -> Vec<DeviceNode> {
    [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ]
    .into_iter()
    .map(|(name, major, minor)| DeviceNode {
        name: name.into(),
        major,
        minor,
        mode: 0o666,
    })
    .collect()
}

fn dev_links() -> Vec<DevLink> {
    [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
        ("core", "/proc/kcore"),
    ]
    .into_iter()
    .filter(|(n, _)| *n != "core")
    .map(|(name, to)| DevLink {
        name: name.into(),
        to: to.into(),
    })
    .collect()
}

/// The display name of a command: its `name`, or the first line of its script.
fn display_name(name: Option<&str>, run: &str) -> String {
    if let Some(n) = name {
        return n.to_string();
    }
    let first = run
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    let mut out: String = first.chars().take(60).collect();
    if first.chars().count() > 60 || run.trim().lines().count() > 1 {
        out.push('…');
    }
    out
}

/// Builds the plan. Cannot fail: the profile is valid, and host state is checked by
/// `readiness` before a run.
pub fn build(profile: &Profile, inputs: &PlanInputs) -> Plan {
    let mut namespaces = vec![
        Namespace::Mount,
        Namespace::Pid,
        Namespace::Uts,
        Namespace::Ipc,
    ];
    if profile.network == Network::None {
        namespaces.push(Namespace::Net);
    }

    let mut system = vec![
        op("/proc", MountKind::Proc),
        MountOp {
            readonly: true,
            ..op("/sys", MountKind::Sysfs)
        },
        MountOp {
            noexec: false,
            nodev: false,
            ..op(
                "/dev",
                MountKind::Dev {
                    nodes: dev_nodes(),
                    links: dev_links(),
                },
            )
        },
        // Not nodev: /dev/ptmx and the ptys are device nodes on this mount.
        MountOp {
            nodev: false,
            ..op("/dev/pts", MountKind::Devpts)
        },
        op(
            "/dev/shm",
            MountKind::Tmpfs {
                size: None,
                mode: 0o1777,
            },
        ),
    ];

    let mut user: Vec<MountOp> = Vec::new();
    for s in &profile.shared {
        user.push(MountOp {
            readonly: s.readonly,
            noexec: false,
            ..op(
                s.target.as_str(),
                MountKind::Bind {
                    source: s.source.clone(),
                },
            )
        });
    }
    for t in &profile.tmpfs {
        user.push(MountOp {
            noexec: false,
            nodev: true,
            ..op(
                t.target.as_str(),
                MountKind::Tmpfs {
                    size: t.size,
                    mode: t.mode.unwrap_or(0o1777),
                },
            )
        });
    }
    let resolv = p("/etc/resolv.conf");
    if profile.network == Network::Host && !user.iter().any(|m| m.target == resolv) {
        user.push(MountOp {
            readonly: true,
            noexec: true,
            only_if_target_exists: true,
            ..op(
                resolv.as_str(),
                MountKind::Bind {
                    source: PathBuf::from("/etc/resolv.conf"),
                },
            )
        });
    }
    // Parents before children: a stable sort by depth keeps the profile's order among
    // equals and makes sure /var is mounted before /var/tmp/portage, never over it.
    user.sort_by_key(|m| m.target.depth());
    system.extend(user);

    // Later sources win: defaults, then pass_env, then the profile's env.
    let mut env: BTreeMap<String, (String, EnvSource)> = BTreeMap::new();
    let path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    env.insert("PATH".into(), (path.into(), EnvSource::Default));
    env.insert("HOME".into(), ("/root".into(), EnvSource::Default));
    let term = inputs
        .host_env
        .get("TERM")
        .cloned()
        .unwrap_or_else(|| "dumb".into());
    env.insert("TERM".into(), (term, EnvSource::Default));
    env.insert("LANG".into(), ("C.UTF-8".into(), EnvSource::Default));
    for name in &profile.pass_env {
        if let Some(v) = inputs.host_env.get(name) {
            env.insert(name.clone(), (v.clone(), EnvSource::Host));
        }
    }
    for (k, v) in &profile.env {
        let from = if profile.env_from_command_line.contains(k) {
            EnvSource::CommandLine
        } else {
            EnvSource::Profile
        };
        env.insert(k.clone(), (v.clone(), from));
    }
    let env: Vec<EnvVar> = env
        .into_iter()
        .map(|(name, (value, from))| EnvVar { name, value, from })
        .collect();

    let commands = profile
        .commands
        .iter()
        .enumerate()
        .map(|(i, c)| CommandPlan {
            number: i + 1,
            name: display_name(c.name.as_deref(), &c.run),
            run: c.run.clone(),
            network: c.network.unwrap_or(profile.network),
            workdir: c.workdir.clone().unwrap_or_else(|| profile.workdir.clone()),
            env: c.env.clone(),
            timeout_ms: c.timeout.map(|d| d.as_millis() as u64),
        })
        .collect();

    let artifacts = profile
        .artifacts
        .iter()
        .map(|a| {
            // The deepest share containing `from` is the one its files are really in,
            // unless a tmpfs below that share covers it.
            let share = crate::profile::share_holding(&a.from, &profile.shared, &profile.tmpfs);
            let host_path = share.map(|s| {
                let rest = a.from.as_str()[s.target.as_str().len()..].trim_start_matches('/');
                if rest.is_empty() {
                    s.source.clone()
                } else {
                    s.source.join(rest)
                }
            });
            ArtifactPlan {
                share_source: share.map(|s| s.source.clone()),
                from: a.from.clone(),
                include: a.include.clone(),
                exclude: a.exclude.clone(),
                required: a.required,
                copy: a.copy,
                host_path,
            }
        })
        .collect();

    let root = if profile.ephemeral {
        let layer = crate::scratch::Layer::throwaway(&inputs.scratch, "<run-id>");
        Root::overlay(&profile.chroot, &layer, false)
    } else {
        Root::Bind {
            path: profile.chroot.clone(),
        }
    };

    Plan {
        profile: profile.name.clone(),
        profile_file: profile.file.clone(),
        chroot: profile.chroot.clone(),
        ephemeral: profile.ephemeral,
        hostname: profile.hostname.clone(),
        network: profile.network,
        namespaces,
        root,
        mounts: system,
        env,
        workdir: profile.workdir.clone(),
        commands,
        artifacts,
        timeout_ms: profile.timeout.map(|d| d.as_millis() as u64),
        grace_ms: GRACE_MS,
        tty: false,
        artifacts_dir: None,
        mount_journal: None,
    }
}

impl Plan {
    /// A copy safe to print: values passed through from the host are replaced by a marker,
    /// since they may be secrets (tokens, keys).
    pub fn redacted(&self) -> Plan {
        let mut p = self.clone();
        for v in &mut p.env {
            if v.from == EnvSource::Host {
                v.value = "<from host>".into();
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::layer::parse_layer;
    use crate::profile::{validate, Context};
    use std::path::Path;

    fn profile(yaml: &str) -> Profile {
        let layer = parse_layer(yaml.as_bytes(), Path::new("/p/test.yaml")).unwrap();
        let ctx = Context {
            name: "test".into(),
            file: "/p/test.yaml".into(),
            files: vec!["/p/test.yaml".into()],
            home: Some("/home/u".into()),
            cwd: "/".into(),
        };
        validate(&layer, &ctx).unwrap()
    }

    fn plan(yaml: &str) -> Plan {
        build(&profile(yaml), &PlanInputs::default())
    }

    #[test]
    fn system_mounts_come_first_in_a_fixed_order() {
        let pl = plan("chroot: /r\ncommands: [true]\n");
        let targets: Vec<&str> = pl.mounts.iter().map(|m| m.target.as_str()).collect();
        assert_eq!(
            targets,
            [
                "/proc",
                "/sys",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/etc/resolv.conf"
            ]
        );
        assert!(pl.mounts[1].readonly, "sysfs is read-only");
    }

    #[test]
    fn parents_are_mounted_before_children() {
        let pl = plan("chroot: /r\ncommands: [true]\ntmpfs: [/var/tmp/portage, /var/tmp]\nshared: [/var/db/repos/gentoo, {source: /x, target: /var}]\n");
        for (i, a) in pl.mounts.iter().enumerate() {
            for b in &pl.mounts[i + 1..] {
                assert!(
                    !(a.target.is_within(&b.target) && a.target != b.target),
                    "{} is mounted before its parent {}",
                    a.target,
                    b.target
                );
            }
        }
        let user: Vec<&str> = pl.mounts[5..].iter().map(|m| m.target.as_str()).collect();
        assert_eq!(
            user,
            [
                "/var",
                "/var/tmp",
                "/etc/resolv.conf",
                "/var/tmp/portage",
                "/var/db/repos/gentoo"
            ]
        );
    }

    #[test]
    fn network_none_adds_a_net_namespace_and_skips_resolv_conf() {
        let pl = plan("chroot: /r\nnetwork: none\ncommands: [true]\n");
        assert!(pl.namespaces.contains(&Namespace::Net));
        assert!(!pl
            .mounts
            .iter()
            .any(|m| m.target.as_str() == "/etc/resolv.conf"));
    }

    #[test]
    fn environment_is_built_from_scratch() {
        let mut inputs = PlanInputs::default();
        inputs.host_env.insert("SECRET".into(), "x".into());
        inputs.host_env.insert("TOKEN".into(), "t".into());
        let pl = build(
            &profile("chroot: /r\npass_env: [TOKEN]\nenv: {MAKEOPTS: -j8}\ncommands: [true]\n"),
            &inputs,
        );
        let names: Vec<&str> = pl.env.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["HOME", "LANG", "MAKEOPTS", "PATH", "TERM", "TOKEN"]);
        assert_eq!(
            pl.redacted()
                .env
                .iter()
                .find(|v| v.name == "TOKEN")
                .unwrap()
                .value,
            "<from host>"
        );
    }

    #[test]
    fn artifacts_in_a_shared_tree_know_their_host_path() {
        let pl = plan("chroot: /r\ncommands: [true]\nshared: [{source: /srv/binpkgs, target: /var/cache/binpkgs}]\nartifacts: [{from: /var/cache/binpkgs/app-misc}, {from: /out}]\n");
        assert_eq!(
            pl.artifacts[0].host_path,
            Some(PathBuf::from("/srv/binpkgs/app-misc"))
        );
        assert_eq!(pl.artifacts[1].host_path, None);
        // Below a tmpfs inside the share, the files exist only inside the build.
        let pl = plan("chroot: /r\ncommands: [true]\nshared: [{source: /srv/cache, target: /var/cache}]\ntmpfs: [/var/cache/binpkgs]\nartifacts: [{from: /var/cache/binpkgs/app-misc}, {from: /var/cache/distfiles}]\n");
        assert_eq!(pl.artifacts[0].host_path, None);
        assert_eq!(
            pl.artifacts[1].host_path,
            Some(PathBuf::from("/srv/cache/distfiles"))
        );
    }

    #[test]
    fn a_plan_survives_the_trip_through_json() {
        let pl = plan("chroot: /r\ncommands: [true, {run: make, network: none, timeout: 10m}]\ntmpfs: [{target: /tmp, size: 4G}]\n");
        let back: Plan = serde_json::from_str(&serde_json::to_string(&pl).unwrap()).unwrap();
        assert_eq!(back, pl);
        assert_eq!(back.commands[1].network, Network::None);
        assert_eq!(back.commands[1].timeout_ms, Some(600_000));
    }
}
