//! Property tests of the profile pipeline: whatever bytes a profile file holds, parsing,
//! validation, merging and planning either succeed or return an error; they never panic,
//! and every error prints. Inputs are random bytes, YAML-flavoured text, and mutations of
//! the shipped profiles (the closest thing to what people really feed bldr).

use bldr::profile::layer::parse_layer;
use bldr::profile::{validate, Context, Overrides};
use proptest::prelude::*;
use std::path::{Path, PathBuf};

const FILE: &str = "/x/p.yaml";

fn context() -> Context {
    Context {
        name: "p".into(),
        file: FILE.into(),
        files: vec![FILE.into()],
        home: Some("/home/u".into()),
        cwd: "/work".into(),
    }
}

/// The whole pure pipeline on one file's bytes, with optional command-line overrides.
/// Panics only if bldr does.
fn pipeline(bytes: &[u8], overrides: Option<&Overrides>) {
    let layer = match parse_layer(bytes, Path::new(FILE)) {
        Ok(layer) => layer,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    // Merging is part of every load: over an empty base, and under the overrides.
    let layer = bldr::profile::Layer::default().merged_with(layer);
    let layer = match overrides.map(Overrides::to_layer) {
        None => layer,
        Some(Ok(o)) => layer.merged_with(o),
        Some(Err(e)) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    match validate(&layer, &context()) {
        Ok(profile) => {
            let plan = bldr::plan::build(&profile, &bldr::plan::PlanInputs::default());
            let _ = bldr::cli::render_plan(&plan.redacted());
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "an error without a mistake");
            for e in &errors.0 {
                let text = e.to_string();
                assert!(text.starts_with(FILE) || text.starts_with("command line: "));
            }
        }
    }
}

/// The shipped profiles, plus small ones that use every form the big ones do not.
fn seeds() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("profiles/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut seeds: Vec<String> = files
        .iter()
        .map(|f| std::fs::read_to_string(f).expect("read a profile"))
        .collect();
    seeds.push(
        "extends: base\nchroot: ~/roots/x\nephemeral: true\npass_env: [http_proxy]\nout: ../runs\n\
         shared:\n  - ~/src\n  - {source: /a, target: /b, readonly: true}\n\
         tmpfs:\n  - {target: /t, size: 50%, mode: \"1777\"}\n\
         commands:\n  - true\n  - {name: n, run: make, network: none, workdir: /w, env: {A: 1}, timeout: 1h30m}\n\
         artifacts:\n  - {from: /o, include: \"*.deb\", exclude: [\"**/x\"], required: true, copy: true}\n"
            .into(),
    );
    seeds
}

/// One edit of a profile's text, with positions taken modulo its size.
#[derive(Debug, Clone)]
enum Edit {
    DeleteLine(usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    /// Replaces a byte with another printable one.
    FlipByte(usize, u8),
    Insert(usize, &'static str),
    Truncate(usize),
}

/// What people type by mistake, and what confuses YAML.
const INSERTS: &[&str] = &[
    "\t", ":", ": ", "- ", "  ", "\n", "#", "[", "]", "{", "}", ",", "\"", "'", "&a ", "*a",
    "!!str ", "? ", "|", ">", "---\n", "..", "/", "~", "%", "\r\n", "\u{feff}", "\0", "é", "no",
    "null", "-1", "1e999", "0x10",
];

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<usize>().prop_map(Edit::DeleteLine),
        any::<usize>().prop_map(Edit::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
        (any::<usize>(), 0x20u8..0x7f).prop_map(|(i, b)| Edit::FlipByte(i, b)),
        (any::<usize>(), prop::sample::select(INSERTS)).prop_map(|(i, s)| Edit::Insert(i, s)),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    for e in edits {
        let mut lines: Vec<Vec<u8>> = bytes.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
        let n = lines.len();
        match *e {
            Edit::DeleteLine(i) => {
                lines.remove(i % n);
            }
            Edit::DuplicateLine(i) => {
                let l = lines[i % n].clone();
                lines.insert(i % n, l);
            }
            Edit::SwapLines(a, b) => lines.swap(a % n, b % n),
            Edit::FlipByte(i, b) if !bytes.is_empty() => {
                let i = i % bytes.len();
                bytes[i] = b;
                continue;
            }
            Edit::Insert(i, s) => {
                let i = i % (bytes.len() + 1);
                bytes.splice(i..i, s.bytes());
                continue;
            }
            Edit::Truncate(i) => {
                bytes.truncate(i % (bytes.len() + 1));
                continue;
            }
            Edit::FlipByte(..) => continue,
        }
        bytes = lines.join(&b'\n');
    }
    bytes
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // A failure prints its shrunk input; no regression files in the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(600))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        pipeline(&bytes, None);
    }

    #[test]
    fn yaml_flavoured_text_never_panics(
        text in "([a-z_]{1,8}|[:\\-\\[\\]{},#&*!?|>'\"~/. \\t\\n]|[0-9]{1,3}|\\n  |\\n- ){0,80}"
    ) {
        pipeline(text.as_bytes(), None);
    }
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn mutated_profiles_never_panic(
        seed in prop::sample::select(seeds()),
        edits in prop::collection::vec(edit(), 1..8),
    ) {
        pipeline(&apply(&seed, &edits), None);
    }
}

proptest! {
    #![proptest_config(config(500))]

    #[test]
    fn command_line_overrides_never_panic(
        seed in prop::sample::select(seeds()),
        binds in prop::collection::vec((".{0,20}", any::<bool>()), 0..3),
        tmpfs in prop::collection::vec(".{0,20}", 0..3),
        setenv in prop::collection::vec(".{0,20}", 0..3),
        chdir in prop::option::of(".{0,12}"),
        network in prop::option::of("host|none|.{0,6}"),
        directory in prop::option::of(".{0,12}"),
        ephemeral in any::<bool>(),
    ) {
        let overrides = Overrides { binds, tmpfs, setenv, chdir, network, ephemeral, directory };
        pipeline(seed.as_bytes(), Some(&overrides));
    }
}

#[test]
fn the_mutations_reach_validation_not_only_the_parser() {
    // A fuzzer whose every input is a syntax error tests only the YAML library.
    let seeds = seeds();
    let mut valid = 0;
    let mut invalid = 0;
    for (i, seed) in seeds.iter().enumerate() {
        for j in 0..50usize {
            let bytes = apply(
                seed,
                &[Edit::DeleteLine(i * 7 + j), Edit::SwapLines(j, j * 3)],
            );
            match parse_layer(&bytes, Path::new(FILE)).map(|l| validate(&l, &context())) {
                Ok(Ok(_)) => valid += 1,
                Ok(Err(_)) => invalid += 1,
                Err(_) => {}
            }
        }
    }
    assert!(valid > 0 && invalid > 0, "valid {valid}, invalid {invalid}");
}

#[test]
fn pathological_nesting_and_aliases_fail_fast() {
    let start = std::time::Instant::now();
    let deep = format!(
        "chroot: /r\ncommands: [true]\nenv: {}{}\n",
        "[".repeat(400_000),
        "]".repeat(400_000)
    );
    let e = parse_layer(deep.as_bytes(), Path::new(FILE)).expect_err("too deep");
    assert!(e.to_string().contains("nested more than"), "{e}");
    let mut laughs = String::from("chroot: /r\nx0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        laughs.push_str(&format!("x{i}: &a{i} [{refs}]\n"));
    }
    laughs.push_str("commands: *a11\n");
    assert!(parse_layer(laughs.as_bytes(), Path::new(FILE)).is_err());
    // Seconds in a debug build; the quadratic deserializer took minutes.
    assert!(start.elapsed().as_secs() < 10, "took {:?}", start.elapsed());
}
