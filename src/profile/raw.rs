//! The serde shape of a profile file, exactly as written: every field optional where the
//! file may leave it out, strings where the file holds text that validation will parse.
//! Unknown keys are refused here (`deny_unknown_fields`). No I/O, no validation.

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

/// Every key a profile may have at its top level, for "did you mean" suggestions.
pub const PROFILE_KEYS: &[&str] = &[
    "description",
    "extends",
    "chroot",
    "hostname",
    "network",
    "ephemeral",
    "workdir",
    "timeout",
    "env",
    "pass_env",
    "out",
    "shared",
    "tmpfs",
    "commands",
    "artifacts",
];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProfile {
    pub description: Option<String>,
    #[serde(default, deserialize_with = "opt_text")]
    pub extends: Option<String>,
    #[serde(default, deserialize_with = "opt_text")]
    pub chroot: Option<String>,
    pub hostname: Option<String>,
    pub network: Option<String>,
    pub ephemeral: Option<bool>,
    #[serde(default, deserialize_with = "opt_text")]
    pub workdir: Option<String>,
    pub timeout: Option<Scalar>,
    pub env: Option<BTreeMap<String, Scalar>>,
    pub pass_env: Option<Vec<String>>,
    #[serde(default, deserialize_with = "opt_text")]
    pub out: Option<String>,
    pub shared: Option<Vec<StringOr<RawShare>>>,
    pub tmpfs: Option<Vec<StringOr<RawTmpfs>>>,
    pub commands: Option<Vec<StringOr<RawCommand>>>,
    pub artifacts: Option<Vec<RawArtifact>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShare {
    #[serde(deserialize_with = "text")]
    pub source: String,
    #[serde(default, deserialize_with = "opt_text")]
    pub target: Option<String>,
    pub readonly: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTmpfs {
    #[serde(deserialize_with = "text")]
    pub target: String,
    pub size: Option<Scalar>,
    pub mode: Option<Scalar>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCommand {
    pub name: Option<String>,
    pub run: String,
    pub network: Option<String>,
    #[serde(default, deserialize_with = "opt_text")]
    pub workdir: Option<String>,
    pub env: Option<BTreeMap<String, Scalar>>,
    pub timeout: Option<Scalar>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawArtifact {
    #[serde(deserialize_with = "text")]
    pub from: String,
    pub include: Option<OneOrMany>,
    pub exclude: Option<OneOrMany>,
    pub required: Option<bool>,
    pub copy: Option<bool>,
}

/// A path or name that must be written as text: `chroot: 42` is refused rather than
/// silently read as the relative path `42`, and `target: true` rather than `/true`.
fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
    }
    d.deserialize_any(V)
}

/// [`text`] for an optional key; a key with no value (`chroot:`) reads as unset.
fn opt_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct Text(String);
    impl<'de> Deserialize<'de> for Text {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            text(d).map(Text)
        }
    }
    Option::<Text>::deserialize(d).map(|t| t.map(|t| t.0))
}

/// Either the short form of an entry, one scalar, or its map form. The scalar is kept as
/// a [`Scalar`]: `- true` in a command list is the shell's `true`, and `- 0x10` must run
/// `0x10` as written, not YAML's `16` (`layer::Origin::as_written`).
#[derive(Debug, Clone)]
pub enum StringOr<T> {
    Short(Scalar),
    Full(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for StringOr<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = StringOr<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a map")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                ScalarVisitor.visit_str(v).map(StringOr::Short)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                ScalarVisitor.visit_bool(v).map(StringOr::Short)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                ScalarVisitor.visit_i64(v).map(StringOr::Short)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                ScalarVisitor.visit_u64(v).map(StringOr::Short)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                ScalarVisitor.visit_f64(v).map(StringOr::Short)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(StringOr::Full)
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// A list of globs, or a single glob written as a string.
#[derive(Debug, Clone)]
pub struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a glob or a list of globs")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(OneOrMany(vec![v.to_string()]))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(OneOrMany(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A scalar kept as text, so that `JOBS: 8` works in `env`, remembering whether YAML read
/// it as a number or a boolean (`typed`): its text is then YAML's (`3.1` for `3.10`,
/// `true` for `True`), and the file's own writing is taken instead
/// (`layer::Origin::as_written`).
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    pub text: String,
    pub typed: bool,
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;
impl Visitor<'_> for ScalarVisitor {
    type Value = Scalar;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or a number")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar {
            text: v.into(),
            typed: false,
        })
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar {
            text: v.to_string(),
            typed: true,
        })
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar {
            text: v.to_string(),
            typed: true,
        })
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar {
            text: v.to_string(),
            typed: true,
        })
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar {
            text: v.to_string(),
            typed: true,
        })
    }
}
