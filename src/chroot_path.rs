//! `ChrootPath`: an absolute, normalized path inside the build root. The type holds the
//! invariant the sandbox relies on: no relative path, no `..`, no `.`, no empty or repeated
//! separators. It says nothing about what exists on disk.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An absolute path inside the chroot, normalized (`/var/tmp/portage`), never containing `..`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ChrootPath(String);

impl ChrootPath {
    /// The root of the chroot.
    pub fn root() -> Self {
        ChrootPath("/".into())
    }

    /// Parses and normalizes `text`; refuses relative paths and any `..` component.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("the path is empty".into());
        }
        if !text.starts_with('/') {
            return Err(format!(
                "`{text}` is relative; paths inside the chroot are absolute (like `/{}`)",
                text.trim_start_matches("./")
            ));
        }
        if text.contains('\0') {
            return Err(format!("`{}` contains a NUL byte", text.escape_debug()));
        }
        let mut parts = Vec::new();
        for part in text.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    return Err(format!(
                        "`{text}` contains `..`; name the path inside the chroot directly"
                    ))
                }
                p => parts.push(p),
            }
        }
        Ok(ChrootPath(format!("/{}", parts.join("/"))))
    }

    /// The path as written, always starting with `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path without its leading `/` (empty for the root), for `openat`-style calls
    /// relative to a directory descriptor of the chroot.
    pub fn relative(&self) -> &str {
        &self.0[1..]
    }

    /// The components, outermost first.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.relative().split('/').filter(|p| !p.is_empty())
    }

    /// How many components deep the path is (`/` is 0).
    pub fn depth(&self) -> usize {
        self.components().count()
    }

    /// True when `self` is `other` or lies below it.
    pub fn is_within(&self, other: &ChrootPath) -> bool {
        other.0 == "/"
            || self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }

    /// Appends a relative path given as components.
    pub fn join(&self, name: &str) -> Result<Self, String> {
        ChrootPath::parse(&format!("{}/{}", self.0.trim_end_matches('/'), name))
    }
}

impl fmt::Display for ChrootPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ChrootPath {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        ChrootPath::parse(&value)
    }
}

impl From<ChrootPath> for String {
    fn from(p: ChrootPath) -> String {
        p.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized() {
        assert_eq!(
            ChrootPath::parse("/var//tmp/./portage/").unwrap().as_str(),
            "/var/tmp/portage"
        );
        assert_eq!(ChrootPath::parse("/").unwrap().as_str(), "/");
        assert_eq!(ChrootPath::parse("//").unwrap().relative(), "");
    }

    #[test]
    fn relative_and_dotdot_paths_are_refused() {
        assert!(ChrootPath::parse("var/tmp")
            .unwrap_err()
            .contains("relative"));
        assert!(ChrootPath::parse("/var/../etc").unwrap_err().contains(".."));
        assert!(ChrootPath::parse("").is_err());
    }

    #[test]
    fn deserializing_keeps_the_invariant() {
        let bad: Result<ChrootPath, _> = serde_json::from_str("\"/a/../b\"");
        assert!(bad.is_err());
    }

    #[test]
    fn within_respects_component_boundaries() {
        let dev = ChrootPath::parse("/dev").unwrap();
        assert!(ChrootPath::parse("/dev/shm").unwrap().is_within(&dev));
        assert!(ChrootPath::parse("/dev").unwrap().is_within(&dev));
        assert!(!ChrootPath::parse("/devices").unwrap().is_within(&dev));
        assert!(dev.is_within(&ChrootPath::root()));
        assert_eq!(ChrootPath::parse("/a/b/c").unwrap().depth(), 3);
    }
}
