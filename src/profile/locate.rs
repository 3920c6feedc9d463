//! Where each key of a YAML document stands: a map from key paths (`shared[2].target`) to
//! line and column, built from the parser's marked events. serde's derive does not carry
//! positions, so this index is what lets a validation error point at `file:line:col`.
//! It also finds what serde silently accepts: duplicate keys and extra documents.
//! Pure: text in, index out.

use std::collections::{BTreeMap, HashMap, HashSet};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// Key paths and their positions, plus what the structure check found.
#[derive(Debug, Default)]
pub struct KeyIndex {
    positions: HashMap<String, Pos>,
    /// The first duplicate key: its path and where the second occurrence stands.
    pub duplicate: Option<(String, Pos)>,
    /// Where a second document starts, if there is one.
    pub second_document: Option<Pos>,
    /// Where the nesting first goes deeper than [`MAX_DEPTH`], if it does.
    pub too_deep: Option<Pos>,
    /// Each scalar value as written, by key path: YAML reads `0o644` and `3.10` as the
    /// numbers 420 and 3.1, and a mode or a variable's value wants the text.
    written: BTreeMap<String, String>,
    /// The values written as nothing or as null (`key:`, `key: ~`, `key: null`), by key
    /// path, in order: YAML reads them all as null, which an optional key takes as unset.
    pub nulls: Vec<(String, Pos)>,
    /// Why the event parser could not read the document, and where: a layout that
    /// lenient parsers take and this one does not (see `layer::parse_layer`).
    pub unreadable: Option<(String, Pos)>,
}

/// The deepest nesting of maps and lists accepted. A profile needs four levels
/// (`commands[0].env.NAME`); the limit is far above that and far below the depth at
/// which the YAML deserializer becomes slow (it is quadratic in the nesting).
pub const MAX_DEPTH: usize = 32;

impl KeyIndex {
    /// Indexes `text`. A document the event parser cannot read gives an empty index:
    /// positions are a courtesy, and the serde parse reports the syntax error itself.
    pub fn build(text: &str) -> KeyIndex {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        if let Err(e) = parser.load(&mut builder, true) {
            let mut partial = builder.index;
            partial.positions.clear();
            // The scanner refuses very deep nesting before it reports a single event
            // of it; that is the case the depth check exists for.
            if e.info().contains("recursion limit") && partial.too_deep.is_none() {
                partial.too_deep = Some(pos(e.marker()));
            } else {
                partial.unreadable = Some((e.info().to_string(), pos(e.marker())));
            }
            partial.written.clear();
            partial.nulls.clear();
            return partial;
        }
        builder.index
    }

    /// The scalar value at `path` exactly as the file writes it, if it is one.
    pub fn written(&self, path: &str) -> Option<&str> {
        self.written.get(path).map(String::as_str)
    }

    /// The position of `path`, or of its nearest indexed ancestor.
    pub fn find(&self, path: &str) -> Option<Pos> {
        let mut p = path;
        loop {
            if let Some(pos) = self.positions.get(p) {
                return Some(*pos);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

enum Frame {
    Map {
        path: String,
        key: Option<String>,
        seen: HashSet<String>,
        /// A map that is a list item takes its position from its first key: the parser
        /// marks a block mapping's start at the first `:`, not where the item begins.
        locate_at_first_key: bool,
    },
    Seq {
        path: String,
        next: usize,
    },
}

#[derive(Default)]
struct Builder {
    index: KeyIndex,
    stack: Vec<Frame>,
    documents: usize,
    /// Depth of a complex (non-scalar) key being skipped.
    skipping: usize,
    /// What each anchor (`&a`) stands for, by the parser's anchor id: the scalars it
    /// holds as written, by their path below the anchored node (`""` for an anchored
    /// scalar itself).
    anchors: HashMap<usize, Vec<(String, String)>>,
    /// The anchored maps and lists still open: stack depth, anchor id and key path.
    anchored: Vec<(usize, usize, String)>,
    /// How many written values aliases have brought so far (see [`MAX_REPLAYED`]).
    replayed: usize,
}

/// At most this many values are indexed through aliases of maps and lists: a real
/// profile has a few dozen, and an alias bomb would grow without end.
const MAX_REPLAYED: usize = 10_000;

fn pos(mark: &Marker) -> Pos {
    Pos {
        line: mark.line(),
        col: mark.col() + 1,
    }
}

impl Builder {
    /// Called for every node that is a value (not a key); returns that value's path.
    /// A list item is located at `mark`, if given.
    fn value_path(&mut self, mark: Option<&Marker>) -> Option<String> {
        match self.stack.last_mut()? {
            Frame::Map { path, key, .. } => {
                let k = key.take()?;
                Some(join(path, &k))
            }
            Frame::Seq { path, next } => {
                let p = format!("{path}[{next}]");
                *next += 1;
                if let Some(mark) = mark {
                    self.index.positions.entry(p.clone()).or_insert(pos(mark));
                }
                Some(p)
            }
        }
    }

    fn in_key_position(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Map { key: None, .. }))
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if matches!(ev, Event::MappingStart(..) | Event::SequenceStart(..))
            && self.stack.len() + self.skipping >= MAX_DEPTH
            && self.index.too_deep.is_none()
        {
            self.index.too_deep = Some(pos(&mark));
        }
        if self.skipping > 0 {
            match ev {
                Event::MappingStart(..) | Event::SequenceStart(..) => self.skipping += 1,
                Event::MappingEnd | Event::SequenceEnd => self.skipping -= 1,
                _ => {}
            }
            if self.skipping == 0 {
                if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                    *key = Some("?".into());
                }
            }
            return;
        }
        match ev {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents == 2 && self.index.second_document.is_none() {
                    self.index.second_document = Some(pos(&mark));
                }
            }
            Event::Scalar(text, ..) if self.in_key_position() => {
                let p = pos(&mark);
                if let Some(Frame::Map {
                    path,
                    key,
                    seen,
                    locate_at_first_key,
                }) = self.stack.last_mut()
                {
                    if std::mem::take(locate_at_first_key) {
                        self.index.positions.entry(path.clone()).or_insert(p);
                    }
                    let full = join(path, &text);
                    if !seen.insert(text.clone()) && self.index.duplicate.is_none() {
                        self.index.duplicate = Some((full.clone(), p));
                    }
                    self.index.positions.entry(full).or_insert(p);
                    *key = Some(text);
                }
            }
            Event::Scalar(text, style, anchor, _) => {
                if anchor != 0 {
                    self.anchors
                        .insert(anchor, vec![(String::new(), text.clone())]);
                }
                if let Some(path) = self.value_path(Some(&mark)) {
                    let null = matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL");
                    if style == TScalarStyle::Plain && null {
                        self.index.nulls.push((path.clone(), pos(&mark)));
                    }
                    self.index.written.insert(path, text);
                }
            }
            // An alias is written as its anchor: a scalar's text, or every scalar of an
            // anchored map or list, under the alias's own path. A budget, not the whole
            // expansion: aliases of aliases grow exponentially (the "billion laughs"),
            // and the deserializer refuses such a file anyway.
            Event::Alias(anchor) => {
                if let (Some(path), Some(held)) =
                    (self.value_path(Some(&mark)), self.anchors.get(&anchor))
                {
                    let room = MAX_REPLAYED.saturating_sub(self.replayed);
                    let below: Vec<(String, String)> = held
                        .iter()
                        .take(room)
                        .map(|(rest, v)| (format!("{path}{rest}"), v.clone()))
                        .collect();
                    self.replayed += below.len();
                    self.index.written.extend(below);
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) if self.in_key_position() => {
                self.skipping = 1;
            }
            Event::MappingStart(anchor, _) => {
                let in_seq = matches!(self.stack.last(), Some(Frame::Seq { .. }));
                let path = if self.stack.is_empty() {
                    String::new()
                } else {
                    self.value_path((!in_seq).then_some(&mark))
                        .unwrap_or_default()
                };
                if anchor != 0 {
                    self.anchored
                        .push((self.stack.len() + 1, anchor, path.clone()));
                }
                self.stack.push(Frame::Map {
                    path,
                    key: None,
                    seen: HashSet::new(),
                    locate_at_first_key: in_seq,
                });
            }
            Event::SequenceStart(anchor, _) => {
                let path = if self.stack.is_empty() {
                    String::new()
                } else {
                    self.value_path(Some(&mark)).unwrap_or_default()
                };
                if anchor != 0 {
                    self.anchored
                        .push((self.stack.len() + 1, anchor, path.clone()));
                }
                self.stack.push(Frame::Seq { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                // An anchored map or list is complete: what it holds, as written, is
                // kept for its aliases, by the path below it.
                if self
                    .anchored
                    .last()
                    .is_some_and(|(depth, ..)| *depth == self.stack.len())
                {
                    let (_, anchor, from) = self.anchored.pop().expect("checked above");
                    // Below `from` are the keys that start `from.` or `from[`: two runs of
                    // the sorted map.
                    let mut held = Vec::new();
                    for sep in ['.', '['] {
                        let start = format!("{from}{sep}");
                        let run = self.index.written.range(start.clone()..);
                        for (k, v) in run.take_while(|(k, _)| k.starts_with(&start)) {
                            if held.len() == MAX_REPLAYED {
                                break;
                            }
                            held.push((k[from.len()..].to_string(), v.clone()));
                        }
                    }
                    self.anchors.insert(anchor, held);
                }
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "chroot: /x\nshared:\n  - /a\n  - source: b\n    target: /c\nenv:\n  A: 1\n";

    #[test]
    fn keys_and_items_are_located() {
        let idx = KeyIndex::build(DOC);
        assert_eq!(idx.find("chroot"), Some(Pos { line: 1, col: 1 }));
        assert_eq!(idx.find("shared[0]"), Some(Pos { line: 3, col: 5 }));
        assert_eq!(idx.find("shared[1].target"), Some(Pos { line: 5, col: 5 }));
        assert_eq!(idx.written("shared[1].target"), Some("/c"));
        assert_eq!(idx.written("shared[0]"), Some("/a"));
        assert_eq!(idx.find("env.A"), Some(Pos { line: 7, col: 3 }));
    }

    #[test]
    fn map_items_of_a_list_are_located_where_they_begin() {
        // Regression: the item was located at its first `:` (3:11), not at `source`.
        let idx = KeyIndex::build("shared:\n  - /a\n  - source: /b\n    target: /c\n");
        assert_eq!(idx.find("shared[1]"), Some(Pos { line: 3, col: 5 }));
        let idx = KeyIndex::build("tmpfs: [{target: /t}]\n");
        assert_eq!(idx.find("tmpfs[0]"), Some(Pos { line: 1, col: 10 }));
    }

    #[test]
    fn unknown_paths_fall_back_to_the_nearest_parent() {
        let idx = KeyIndex::build(DOC);
        assert_eq!(idx.find("shared[1].target.x"), idx.find("shared[1].target"));
        assert_eq!(idx.find("nothing"), None);
    }

    #[test]
    fn duplicate_keys_are_found_in_nested_maps() {
        let idx = KeyIndex::build("env:\n  A: x\n  A: y\n");
        assert_eq!(
            idx.duplicate,
            Some(("env.A".into(), Pos { line: 3, col: 3 }))
        );
    }

    #[test]
    fn a_second_document_is_found() {
        let idx = KeyIndex::build("a: 1\n---\nb: 2\n");
        assert_eq!(idx.second_document.map(|p| p.line), Some(2));
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_found() {
        let deep = |n: usize| format!("a: {}{}\n", "[".repeat(n), "]".repeat(n));
        assert_eq!(KeyIndex::build(&deep(MAX_DEPTH - 1)).too_deep, None);
        let idx = KeyIndex::build(&deep(MAX_DEPTH));
        assert_eq!(idx.too_deep.map(|p| p.line), Some(1));
        let idx = KeyIndex::build(&format!("? {}\n: 1\n", deep(MAX_DEPTH)));
        assert!(idx.too_deep.is_some());
        // Deeper than the scanner itself allows: it fails before any event.
        let idx = KeyIndex::build(&deep(100_000));
        assert_eq!(idx.too_deep.map(|p| p.line), Some(1));
    }

    #[test]
    fn complex_keys_do_not_confuse_the_index() {
        let idx = KeyIndex::build("? [a, b]\n: 1\nchroot: /x\n");
        assert_eq!(idx.find("chroot").map(|p| p.line), Some(3));
    }
}
