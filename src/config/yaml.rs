//! A small YAML tree that remembers where every node starts (line and column), built from
//! yaml-rust2's marked events, so that lowering can report every problem with its position.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A 1-based position in the source; `width` is how many characters the caret underlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub line: usize,
    pub column: usize,
    pub width: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// A scalar as written; `quoted` scalars are always strings.
    Scalar {
        value: String,
        quoted: bool,
    },
    Sequence(Vec<Node>),
    /// Entries in source order, duplicates kept (lowering reports them).
    Mapping(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: NodeKind,
    pub span: Span,
}

/// A YAML syntax error with the parser's position.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub message: String,
    pub span: Span,
}

impl Node {
    /// The YAML type name used in "expected X, found Y" messages.
    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            NodeKind::Sequence(_) => "a list",
            NodeKind::Mapping(_) => "a mapping",
            NodeKind::Scalar { .. } if self.is_null() => "nothing (null)",
            NodeKind::Scalar { .. } if self.as_bool().is_some() => "a boolean",
            NodeKind::Scalar { .. } if self.as_int().is_some() => "an integer",
            NodeKind::Scalar {
                value,
                quoted: false,
            } if value.parse::<f64>().is_ok() => "a number",
            NodeKind::Scalar { .. } => "a string",
        }
    }

    fn plain(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar {
                value,
                quoted: false,
            } => Some(value),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.plain(), Some("" | "~" | "null" | "Null" | "NULL"))
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self.plain()? {
            "true" | "True" | "TRUE" => Some(true),
            "false" | "False" | "FALSE" => Some(false),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        let text = self.plain()?;
        let digits = text.strip_prefix('+').unwrap_or(text);
        if digits.is_empty()
            || !digits
                .trim_start_matches('-')
                .bytes()
                .all(|b| b.is_ascii_digit())
        {
            return None;
        }
        digits.parse().ok()
    }

    /// A string scalar: quoted, or plain and not null, boolean or a number.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar {
                value,
                quoted: true,
            } => Some(value),
            NodeKind::Scalar { value, .. } if self.type_name() == "a string" => Some(value),
            _ => None,
        }
    }

    /// Any scalar's text (numbers included), for fields such as cron or durations where a user
    /// may write `5` unquoted.
    pub fn scalar_text(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { value, .. } if !self.is_null() => Some(value),
            _ => None,
        }
    }

    pub fn as_mapping(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            NodeKind::Mapping(entries) => Some(entries),
            _ => None,
        }
    }

    pub fn as_sequence(&self) -> Option<&[Node]> {
        match &self.kind {
            NodeKind::Sequence(items) => Some(items),
            _ => None,
        }
    }
}

enum Frame {
    Sequence {
        items: Vec<Node>,
        span: Span,
        anchor: usize,
    },
    Mapping {
        entries: Vec<(Node, Node)>,
        pending_key: Option<Node>,
        span: Span,
        anchor: usize,
    },
}

/// Most nodes that aliases may copy in one file: a pipeline needs a few hundred, and nested
/// aliases ("billion laughs") must not exhaust memory.
const MAX_ALIASED_NODES: usize = 100_000;

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    documents: Vec<Node>,
    /// Each anchored node with its size in nodes.
    anchors: HashMap<usize, (Node, usize)>,
    aliased_nodes: usize,
    too_many_aliased: Option<Span>,
}

fn size(node: &Node) -> usize {
    1 + match &node.kind {
        NodeKind::Scalar { .. } => 0,
        NodeKind::Sequence(items) => items.iter().map(size).sum(),
        NodeKind::Mapping(entries) => entries.iter().map(|(k, v)| size(k) + size(v)).sum(),
    }
}

fn span_at(mark: &Marker, width: usize) -> Span {
    Span {
        line: mark.line(),
        column: mark.col() + 1,
        width: width.max(1),
    }
}

impl Builder {
    fn finish(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, (node.clone(), size(&node)));
        }
        match self.stack.last_mut() {
            None => self.documents.push(node),
            Some(Frame::Sequence { items, .. }) => items.push(node),
            Some(Frame::Mapping {
                entries,
                pending_key,
                ..
            }) => match pending_key.take() {
                Some(key) => entries.push((key, node)),
                None => *pending_key = Some(node),
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::Scalar(value, style, anchor, _tag) => {
                let quoted = !matches!(style, TScalarStyle::Plain);
                let quote_width = usize::from(matches!(
                    style,
                    TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted
                )) * 2;
                let first_line = value.lines().next().unwrap_or("").chars().count();
                let span = span_at(&mark, first_line + quote_width);
                self.finish(
                    Node {
                        kind: NodeKind::Scalar { value, quoted },
                        span,
                    },
                    anchor,
                );
            }
            Event::Alias(anchor) => {
                let span = span_at(&mark, 1);
                let target = match self.anchors.get(&anchor) {
                    Some((node, n)) if self.aliased_nodes + n <= MAX_ALIASED_NODES => {
                        self.aliased_nodes += n;
                        Some(node.clone())
                    }
                    Some(_) => {
                        self.too_many_aliased.get_or_insert(span);
                        None
                    }
                    None => None,
                };
                let node = target.map_or(
                    Node {
                        kind: NodeKind::Scalar {
                            value: String::new(),
                            quoted: false,
                        },
                        span,
                    },
                    |node| Node { span, ..node },
                );
                self.finish(node, 0);
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Sequence {
                items: Vec::new(),
                span: span_at(&mark, 1),
                anchor,
            }),
            Event::MappingStart(anchor, _) => self.stack.push(Frame::Mapping {
                entries: Vec::new(),
                pending_key: None,
                span: span_at(&mark, 1),
                anchor,
            }),
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Frame::Sequence {
                        items,
                        span,
                        anchor,
                    }) => (
                        Node {
                            kind: NodeKind::Sequence(items),
                            span,
                        },
                        anchor,
                    ),
                    Some(Frame::Mapping {
                        entries,
                        span,
                        anchor,
                        ..
                    }) => (
                        Node {
                            kind: NodeKind::Mapping(entries),
                            span,
                        },
                        anchor,
                    ),
                    None => return,
                };
                self.finish(node, anchor);
            }
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

/// Parses `text` into its documents (an empty file has none).
pub fn parse(text: &str) -> Result<Vec<Node>, SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, true).map_err(|e| SyntaxError {
        message: e.info().to_string(),
        span: span_at(e.marker(), 1),
    })?;
    if let Some(span) = builder.too_many_aliased {
        return Err(SyntaxError {
            message: format!("aliases expand to more than {MAX_ALIASED_NODES} nodes"),
            span,
        });
    }
    Ok(builder.documents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let docs = parse("name: x\nsteps:\n  a:\n    job_id: 5\n").unwrap();
        let root = docs[0].as_mapping().unwrap();
        assert_eq!(
            root[0].0.span,
            Span {
                line: 1,
                column: 1,
                width: 4
            }
        );
        let steps = root[1].1.as_mapping().unwrap();
        let job = steps[0].1.as_mapping().unwrap();
        assert_eq!(
            job[0].1.span,
            Span {
                line: 4,
                column: 13,
                width: 1
            }
        );
        assert_eq!(job[0].1.as_int(), Some(5));
        assert_eq!(job[0].1.as_str(), None);
    }

    #[test]
    fn nested_aliases_are_bounded() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let prev = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let err = parse(&text).unwrap_err();
        assert!(err.message.contains("aliases expand"), "{err:?}");
    }

    #[test]
    fn syntax_error_has_a_position() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.span.line >= 1, "{err:?}");
    }
}
