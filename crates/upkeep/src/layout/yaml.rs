//! YAML with positions: every node knows where it was written (line, column and byte range),
//! so that upkeep can say `file:line:column` about any field of any manifest, and change one
//! scalar in place, keeping the user's comments, quoting, key order and indentation byte for
//! byte.
//!
//! Built from granit-parser's events (the parser serde-saphyr uses). Aliases are resolved to a
//! copy of what they name, and both the anchored node and its copies are marked `shared`: an
//! edit there would change more than one value, so [`replace`] refuses it.

use std::collections::HashMap;

use granit_parser::{Event, Parser, ScalarStyle};

use crate::diag::Pos;

/// How a node was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Plain,
    SingleQuoted,
    DoubleQuoted,
    /// `|` or `>` block scalars.
    Block,
    /// A mapping or sequence.
    Collection,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// An empty value (`key:`), or `null`/`~` written plain.
    Null,
    /// Any other scalar, as written after YAML's escapes (numbers and booleans too: a version
    /// such as `1.10` must stay the text the user wrote).
    Str(String),
    Map(Vec<(Node, Node)>),
    Seq(Vec<Node>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    /// Where the node starts (1-based line and column, in characters).
    pub pos: Pos,
    /// Its bytes in the file: `text[start..end]` (quotes included for quoted scalars).
    pub start: usize,
    pub end: usize,
    pub style: Style,
    /// Anchored and aliased, or an alias's copy: one edit would change several values.
    pub shared: bool,
}

impl Node {
    fn null_at(pos: Pos, at: usize) -> Node {
        Node {
            value: Value::Null,
            pos,
            start: at,
            end: at,
            style: Style::Plain,
            shared: false,
        }
    }

    /// The value of `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The key node of `key` in a mapping (where it is written).
    pub fn key(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(k, _)| k),
            _ => None,
        }
    }

    /// The node at `path` (mapping keys; a number steps into a sequence).
    pub fn at(&self, path: &[&str]) -> Option<&Node> {
        let mut n = self;
        for p in path {
            n = match &n.value {
                Value::Seq(items) => items.get(p.parse::<usize>().ok()?)?,
                _ => n.get(p)?,
            };
        }
        Some(n)
    }

    /// A scalar's text (`None` for null, mappings and sequences).
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// [`at`](Self::at) as text, or "".
    pub fn str_at(&self, path: &[&str]) -> &str {
        self.at(path).and_then(Node::as_str).unwrap_or("")
    }

    pub fn entries(&self) -> &[(Node, Node)] {
        match &self.value {
            Value::Map(e) => e,
            _ => &[],
        }
    }

    pub fn items(&self) -> &[Node] {
        match &self.value {
            Value::Seq(i) => i,
            _ => &[],
        }
    }

    pub fn is_null(&self) -> bool {
        self.value == Value::Null
    }

    /// As JSON, with YAML's core schema for plain scalars (`true`, `3`, `null`); quoted
    /// scalars stay strings.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Str(s) if self.style == Style::Plain => match s.as_str() {
                "true" | "True" | "TRUE" => J::Bool(true),
                "false" | "False" | "FALSE" => J::Bool(false),
                _ => s
                    .parse::<i64>()
                    .map(J::from)
                    .or_else(|_| s.parse::<f64>().map(J::from))
                    .unwrap_or_else(|_| J::String(s.clone())),
            },
            Value::Str(s) => J::String(s.clone()),
            Value::Map(e) => J::Object(
                e.iter()
                    .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.to_json())))
                    .collect(),
            ),
            Value::Seq(i) => J::Array(i.iter().map(Node::to_json).collect()),
        }
    }
}

/// Why a stream cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub pos: Pos,
    pub message: String,
}

/// Nodes deeper than this are refused (a hostile file cannot exhaust the stack).
const MAX_DEPTH: usize = 64;
/// Alias expansions per stream (a billion-laughs file cannot exhaust memory).
const MAX_ALIAS_NODES: usize = 100_000;

enum Open {
    Map(Node, Vec<(Node, Node)>, Option<Node>, usize),
    Seq(Node, Vec<Node>, usize),
}

/// Every document of a YAML stream, empty ones included as [`Value::Null`] roots.
pub fn parse_stream(text: &str) -> Result<Vec<Node>, ParseError> {
    let bytes = ByteIndex::new(text);
    let mut docs = Vec::new();
    let mut stack: Vec<Open> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut expanded = 0usize;
    let mut root: Option<Node> = None;
    let mut in_doc = false;
    for item in Parser::new_from_str(text) {
        let (event, span) = item.map_err(|e| ParseError {
            pos: Pos {
                line: e.marker().line() as u64,
                column: e.marker().col() as u64 + 1,
            },
            message: e.info().to_string(),
        })?;
        let pos = Pos {
            line: span.start.line() as u64,
            column: span.start.col() as u64 + 1,
        };
        let start = bytes.at(span.start.byte_offset(), span.start.index());
        let end = bytes.at(span.end.byte_offset(), span.end.index());
        let node = match event {
            Event::StreamEnd => break,
            Event::DocumentStart(..) => {
                in_doc = true;
                root = None;
                continue;
            }
            Event::DocumentEnd => {
                if in_doc {
                    docs.push(root.take().unwrap_or_else(|| Node::null_at(pos, start)));
                }
                in_doc = false;
                anchors.clear();
                continue;
            }
            Event::Scalar(v, style, anchor, _) => {
                let (value, style) = match style {
                    ScalarStyle::Plain => {
                        if matches!(v.as_ref(), "" | "~" | "null" | "Null" | "NULL") {
                            (Value::Null, Style::Plain)
                        } else {
                            (Value::Str(v.into_owned()), Style::Plain)
                        }
                    }
                    ScalarStyle::SingleQuoted => (Value::Str(v.into_owned()), Style::SingleQuoted),
                    ScalarStyle::DoubleQuoted => (Value::Str(v.into_owned()), Style::DoubleQuoted),
                    _ => (Value::Str(v.into_owned()), Style::Block),
                };
                let n = Node {
                    value,
                    pos,
                    start,
                    end,
                    style,
                    // Anchored: an alias may copy it, so one edit could change several values.
                    shared: anchor > 0,
                };
                if anchor > 0 {
                    anchors.insert(anchor, n.clone());
                }
                n
            }
            Event::Alias(id) => {
                let mut n = anchors
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| Node::null_at(pos, start));
                expanded += count(&n);
                if expanded > MAX_ALIAS_NODES {
                    return Err(ParseError {
                        pos,
                        message: "too many aliases expanded".into(),
                    });
                }
                mark_shared(&mut n);
                n
            }
            Event::MappingStart(_, anchor, _) | Event::SequenceStart(_, anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(ParseError {
                        pos,
                        message: format!("nested deeper than {MAX_DEPTH} levels"),
                    });
                }
                let shell = Node {
                    value: Value::Null,
                    pos,
                    start,
                    end,
                    style: Style::Collection,
                    shared: false,
                };
                if matches!(event, Event::MappingStart(..)) {
                    stack.push(Open::Map(shell, Vec::new(), None, anchor));
                } else {
                    stack.push(Open::Seq(shell, Vec::new(), anchor));
                }
                continue;
            }
            Event::MappingEnd | Event::SequenceEnd => {
                let (mut shell, value, anchor) = match stack.pop() {
                    Some(Open::Map(s, e, _, a)) => (s, Value::Map(merge_keys(e)), a),
                    Some(Open::Seq(s, i, a)) => (s, Value::Seq(i), a),
                    None => continue,
                };
                shell.value = value;
                shell.end = end.max(shell.start);
                if anchor > 0 {
                    mark_shared(&mut shell);
                    anchors.insert(anchor, shell.clone());
                }
                shell
            }
            _ => continue,
        };
        match stack.last_mut() {
            Some(Open::Map(shell, entries, key, _)) => match key.take() {
                None => *key = Some(node),
                Some(k) => {
                    shell.end = node.end.max(shell.end);
                    entries.push((k, node));
                }
            },
            Some(Open::Seq(shell, items, _)) => {
                shell.end = node.end.max(shell.end);
                items.push(node);
            }
            None => root = Some(node),
        }
    }
    Ok(docs)
}

/// `<<: *base` merge keys: the aliased mapping's entries come first, the written ones win.
fn merge_keys(entries: Vec<(Node, Node)>) -> Vec<(Node, Node)> {
    if !entries.iter().any(|(k, _)| k.as_str() == Some("<<")) {
        return entries;
    }
    let mut out: Vec<(Node, Node)> = Vec::new();
    for (k, v) in entries {
        if k.as_str() == Some("<<") {
            let merged: Vec<(Node, Node)> = match &v.value {
                Value::Map(e) => e.clone(),
                Value::Seq(items) => items.iter().flat_map(|i| i.entries().to_vec()).collect(),
                _ => Vec::new(),
            };
            for (mk, mv) in merged {
                if !out.iter().any(|(ok, _)| ok.as_str() == mk.as_str()) {
                    out.push((mk, mv));
                }
            }
        } else {
            out.retain(|(ok, _)| ok.as_str() != k.as_str());
            out.push((k, v));
        }
    }
    out
}

fn count(n: &Node) -> usize {
    1 + match &n.value {
        Value::Map(e) => e.iter().map(|(k, v)| count(k) + count(v)).sum(),
        Value::Seq(i) => i.iter().map(count).sum(),
        _ => 0,
    }
}

fn mark_shared(n: &mut Node) {
    n.shared = true;
    match &mut n.value {
        Value::Map(e) => e.iter_mut().for_each(|(_, v)| mark_shared(v)),
        Value::Seq(i) => i.iter_mut().for_each(mark_shared),
        _ => {}
    }
}

/// Byte offsets from the parser's markers (which carry a byte offset for string input; a
/// character index otherwise).
struct ByteIndex<'a> {
    text: &'a str,
    chars: std::cell::OnceCell<Vec<usize>>,
}

impl<'a> ByteIndex<'a> {
    fn new(text: &'a str) -> ByteIndex<'a> {
        ByteIndex {
            text,
            chars: std::cell::OnceCell::new(),
        }
    }
    fn at(&self, byte: Option<usize>, char_index: usize) -> usize {
        if let Some(b) = byte {
            return b.min(self.text.len());
        }
        let table = self.chars.get_or_init(|| {
            self.text
                .char_indices()
                .map(|(i, _)| i)
                .chain([self.text.len()])
                .collect()
        });
        table.get(char_index).copied().unwrap_or(self.text.len())
    }
}

/// Why a scalar cannot be changed in place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    #[error("it is a block scalar (`|` or `>`); write it as a plain value")]
    Block,
    #[error("it is shared with another value through a YAML anchor and alias")]
    Shared,
    #[error("it is not a single value")]
    NotScalar,
    #[error("{0:?} cannot be written there without changing its quoting")]
    Unsafe(String),
    #[error("the file changed under the edit")]
    Moved,
}

/// `text` with the scalar `node` (read from this same `text`) replaced by `new`, in place:
/// quotes are kept, nothing else changes.
pub fn replace(text: &str, node: &Node, new: &str) -> Result<String, EditError> {
    if node.shared {
        return Err(EditError::Shared);
    }
    let (from, to) = match node.style {
        Style::Plain => (node.start, node.end),
        Style::SingleQuoted | Style::DoubleQuoted => (
            node.start + 1,
            node.end.saturating_sub(1).max(node.start + 1),
        ),
        Style::Block => return Err(EditError::Block),
        Style::Collection => return Err(EditError::NotScalar),
    };
    if node.is_null() && node.style == Style::Plain {
        return Err(EditError::NotScalar);
    }
    let safe = match node.style {
        Style::Plain => {
            !new.is_empty()
                && new.chars().all(|c| {
                    c.is_ascii_alphanumeric()
                        || matches!(c, '.' | '-' | '+' | '_' | '/' | '@' | ':')
                })
                && !new.contains(": ")
                && !new.starts_with(['-', ':', '@'])
        }
        Style::SingleQuoted => !new.contains('\'') && !new.contains('\n'),
        _ => !new.contains(['"', '\\', '\n']),
    };
    if !safe {
        return Err(EditError::Unsafe(new.chars().take(80).collect()));
    }
    let old = text.get(from..to).ok_or(EditError::Moved)?;
    if node.as_str().is_some_and(|v| v != old) && node.style == Style::Plain {
        return Err(EditError::Moved);
    }
    Ok(format!("{}{new}{}", &text[..from], &text[to..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# a comment\napiVersion: v1\nkind: Thing\nmetadata:\n  name: one  # trailing\nspec:\n  version: \"1.9.1\"\n  plain: v2.6.4\n  single: 'x'\n  list:\n    - a\n    - {b: c}\n  empty:\n---\nkind: Other\nbase: &b {k: 1}\nuse: *b\n";

    #[test]
    fn nodes_know_where_they_are() {
        let docs = parse_stream(TEXT).expect("parse");
        assert_eq!(docs.len(), 2);
        let d = &docs[0];
        assert_eq!(d.str_at(&["metadata", "name"]), "one");
        let v = d.at(&["spec", "version"]).expect("version");
        assert_eq!(v.as_str(), Some("1.9.1"));
        assert_eq!(v.style, Style::DoubleQuoted);
        assert_eq!((v.pos.line, v.pos.column), (7, 12));
        assert_eq!(&TEXT[v.start..v.end], "\"1.9.1\"");
        assert_eq!(d.str_at(&["spec", "list", "1", "b"]), "c");
        assert!(d.at(&["spec", "empty"]).is_some_and(Node::is_null));
        assert_eq!(docs[1].str_at(&["use", "k"]), "1");
        assert!(docs[1].at(&["use", "k"]).is_some_and(|n| n.shared));
        assert!(docs[1].at(&["base", "k"]).is_some_and(|n| n.shared));
    }

    #[test]
    fn replace_changes_one_scalar_and_nothing_else() {
        let docs = parse_stream(TEXT).expect("parse");
        let v = docs[0].at(&["spec", "version"]).expect("v");
        let out = replace(TEXT, v, "1.10.2").expect("edit");
        assert_eq!(out, TEXT.replace("\"1.9.1\"", "\"1.10.2\""));
        let p = docs[0].at(&["spec", "plain"]).expect("p");
        let out = replace(TEXT, p, "v2.7.0").expect("edit");
        assert_eq!(out, TEXT.replace("plain: v2.6.4", "plain: v2.7.0"));
        let n = docs[0].at(&["metadata", "name"]).expect("n");
        assert_eq!(
            replace(TEXT, n, "two").expect("edit"),
            TEXT.replace("name: one  # trailing", "name: two  # trailing")
        );
        assert_eq!(
            replace(TEXT, docs[1].at(&["use", "k"]).expect("k"), "2"),
            Err(EditError::Shared)
        );
        assert!(matches!(
            replace(TEXT, p, "a: b"),
            Err(EditError::Unsafe(_))
        ));
    }

    #[test]
    fn merge_keys_and_hostile_input() {
        let docs = parse_stream("a: &a {x: 1, y: 2}\nb:\n  <<: *a\n  y: 3\n").expect("parse");
        assert_eq!(docs[0].str_at(&["b", "x"]), "1");
        assert_eq!(docs[0].str_at(&["b", "y"]), "3");
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(parse_stream(&deep).is_err());
        let e = parse_stream("a: [1, 2\nb: 3\n").expect_err("broken");
        assert!(e.pos.line >= 1);
    }

    #[test]
    fn json_follows_the_core_schema_for_plain_scalars() {
        let docs = parse_stream("a: true\nb: 3\nc: \"3\"\nd: 1.10\ne: ~\n").expect("parse");
        let j = docs[0].to_json();
        assert_eq!(j["a"], serde_json::json!(true));
        assert_eq!(j["b"], serde_json::json!(3));
        assert_eq!(j["c"], serde_json::json!("3"));
        assert!(j["e"].is_null());
        assert_eq!(docs[0].str_at(&["d"]), "1.10");
    }
}
