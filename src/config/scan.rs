//! The first pass over a config's text: the YAML event stream, read without recursion, gives the
//! line and column of every field path (serde values carry no positions) and stops a hostile
//! file (nested too deep, too many nodes) before any recursive parser sees it.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser};

/// How deep YAML collections may nest. weir's own schema needs 6 levels; the YAML parsers
/// behind serde recurse once per level, so a hostile file must be stopped before they run.
pub const MAX_DEPTH: usize = 64;
/// How many YAML nodes (scalars, aliases, sequences, mappings) a file may hold: a 100,000-route
/// config holds about 1.6 million.
pub const MAX_NODES: usize = 4_000_000;

/// A limit of [`MAX_DEPTH`] or [`MAX_NODES`] crossed, where it was crossed.
#[derive(Debug, PartialEq)]
pub(super) struct LimitCrossed {
    pub(super) line: usize,
    pub(super) column: usize,
    pub(super) message: String,
}

/// Reads `text` as a stream of YAML events, without recursion, and maps every field path to
/// the (line, column) of its key (or of its value, for list elements and the root). Stops at the
/// first collection nested deeper than [`MAX_DEPTH`] or the node past [`MAX_NODES`], before any
/// recursive parser sees the text. Text that does not parse yields what was read before the
/// error (serde's parse then reports it).
pub(super) fn scan(text: &str) -> Result<Positions, LimitCrossed> {
    scan_within(text, MAX_DEPTH, MAX_NODES)
}

fn scan_within(text: &str, max_depth: usize, max_nodes: usize) -> Result<Positions, LimitCrossed> {
    let mut recorder = PositionRecorder::default();
    let mut parser = Parser::new_from_str(text);
    let mut nodes = 0usize;
    // A scan error stops the pass; serde's parse reports it.
    while let Ok((event, mark)) = parser.next_token() {
        let crossed = |message: String| LimitCrossed {
            line: mark.line(),
            column: mark.col() + 1,
            message,
        };
        match event {
            Event::StreamEnd => break,
            Event::MappingStart(..) | Event::SequenceStart(..)
                if recorder.stack.len() >= max_depth =>
            {
                return Err(crossed(format!(
                    "the YAML nests deeper than {max_depth} levels; weir refuses it unread"
                )));
            }
            Event::Scalar(..)
            | Event::Alias(..)
            | Event::MappingStart(..)
            | Event::SequenceStart(..) => {
                nodes += 1;
                if nodes > max_nodes {
                    return Err(crossed(format!(
                        "the YAML holds more than {max_nodes} nodes; weir refuses it unread"
                    )));
                }
            }
            _ => {}
        }
        recorder.on_event(event, mark.line(), mark.col() + 1);
    }
    Ok(recorder.positions)
}

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Step {
    Key(Box<str>),
    Index(usize),
}

/// The position of every field path of a file, as a tree: each node is one path, stored as its
/// parent and its last step, so memory grows with the number of nodes, not with the length of
/// their paths (a flat map of path strings grows with depth times nodes).
#[derive(Debug, Default)]
pub(super) struct Positions {
    /// Node 0 is the root; `None` until a position is known.
    nodes: Vec<Option<(usize, usize)>>,
    children: HashMap<(usize, Step), usize>,
}

impl Positions {
    fn child(&mut self, parent: usize, step: Step) -> usize {
        if self.nodes.is_empty() {
            self.nodes.push(None);
        }
        let next = self.nodes.len();
        let id = *self.children.entry((parent, step)).or_insert(next);
        if id == next {
            self.nodes.push(None);
        }
        id
    }

    fn root(&mut self) -> usize {
        if self.nodes.is_empty() {
            self.nodes.push(None);
        }
        0
    }

    fn mark(&mut self, node: usize, pos: (usize, usize)) {
        self.nodes[node].get_or_insert(pos);
    }

    fn get(&self, parent: usize, step: Step) -> Option<usize> {
        self.children.get(&(parent, step)).copied()
    }

    /// The position of `path` (`routes[0].backends[1].weight`), or of its nearest ancestor that
    /// has one. A key may itself hold dots (a header name such as `x.y`): the longest key that
    /// exists wins.
    pub(super) fn locate(&self, path: &str) -> (usize, usize) {
        let pos = |node: usize| self.nodes.get(node).copied().flatten();
        let mut best = pos(0).unwrap_or((1, 1));
        if self.nodes.is_empty() {
            return best;
        }
        let mut node = 0;
        let mut rest = path;
        while !rest.is_empty() {
            rest = rest.strip_prefix('.').unwrap_or(rest);
            let found = if let Some(r) = rest.strip_prefix('[') {
                let Some(close) = r.find(']') else { break };
                let Ok(index) = r[..close].parse() else { break };
                rest = &r[close + 1..];
                self.get(node, Step::Index(index))
            } else {
                let mut ends: Vec<usize> = rest
                    .char_indices()
                    .filter(|(_, c)| matches!(c, '.' | '['))
                    .map(|(i, _)| i)
                    .collect();
                ends.push(rest.len());
                let hit = ends
                    .iter()
                    .rev()
                    .find_map(|&end| Some((end, self.get(node, Step::Key(rest[..end].into()))?)));
                match hit {
                    Some((end, child)) => {
                        rest = &rest[end..];
                        Some(child)
                    }
                    None => None,
                }
            };
            let Some(child) = found else { break };
            node = child;
            if let Some(p) = pos(node) {
                best = p;
            }
        }
        best
    }
}

enum Frame {
    Map {
        node: usize,
        key: Option<usize>,
    },
    Seq {
        node: usize,
        next: usize,
    },
    /// Inside a complex (non-scalar) mapping key, whose content names no field.
    Skip,
}

#[derive(Default)]
struct PositionRecorder {
    stack: Vec<Frame>,
    positions: Positions,
}

impl PositionRecorder {
    fn on_event(&mut self, ev: Event, line: usize, column: usize) {
        let pos = (line, column);
        let is_start = matches!(ev, Event::MappingStart(..) | Event::SequenceStart(..));
        let is_value = is_start || matches!(ev, Event::Scalar(..) | Event::Alias(..));
        if !is_value {
            if matches!(ev, Event::MappingEnd | Event::SequenceEnd) {
                self.stack.pop();
            }
            return;
        }
        let p = &mut self.positions;
        let node = match self.stack.last_mut() {
            Some(Frame::Skip) => {
                if is_start {
                    self.stack.push(Frame::Skip);
                }
                return;
            }
            None => p.root(),
            Some(Frame::Seq { node, next }) => {
                let child = p.child(*node, Step::Index(*next));
                *next += 1;
                child
            }
            Some(Frame::Map { node, key }) => match key.take() {
                Some(child) => child,
                None => {
                    // A key. Only scalar keys name fields; a complex key is skipped as a unit.
                    let k: Box<str> = match &ev {
                        Event::Scalar(s, ..) => s.as_str().into(),
                        _ => "?".into(),
                    };
                    // A block mapping's start event is marked after its first key, so the
                    // mapping itself is located at that key.
                    let map = *node;
                    p.mark(map, pos);
                    let child = p.child(map, Step::Key(k));
                    p.mark(child, pos);
                    *key = Some(child);
                    if is_start {
                        self.stack.push(Frame::Skip);
                    }
                    return;
                }
            },
        };
        match ev {
            Event::MappingStart(..) => self.stack.push(Frame::Map { node, key: None }),
            Event::SequenceStart(..) => {
                p.mark(node, pos);
                self.stack.push(Frame::Seq { node, next: 0 });
            }
            _ => p.mark(node, pos),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_name_keys_and_list_elements() {
        let text = "listeners:\n  - name: a\n    address: x\nroutes:\n  - name: r\n    backends:\n      - { upstream: u, weight: 1 }\n    overrides: [{ match: { header: { x.y: a } } }]\n";
        let p = scan(text).unwrap();
        assert_eq!(p.locate("listeners"), (1, 1));
        assert_eq!(p.locate("listeners[0]"), (2, 5));
        assert_eq!(p.locate("listeners[0].address"), (3, 5));
        assert_eq!(p.locate("routes[0].backends[0].weight"), (7, 24));
        // An unknown field is located at its nearest known ancestor; a dotted key is one key.
        assert_eq!(p.locate("routes[0].backends[0].nope"), (7, 11));
        assert_eq!(p.locate("routes[0].overrides[0].match.header.x.y"), (8, 38));
    }

    #[test]
    fn deep_nesting_and_too_many_nodes_are_refused_where_they_start() {
        let deep = "- ".repeat(20_000) + "x\n";
        let crossed = scan(&deep).unwrap_err();
        assert_eq!((crossed.line, crossed.column), (1, 2 * MAX_DEPTH + 1));
        assert!(
            crossed.message.contains("deeper than 64 levels"),
            "{crossed:?}"
        );
        let flow = "[".repeat(100) + &"]".repeat(100);
        assert_eq!(scan(&flow).unwrap_err().column, MAX_DEPTH + 1);
        assert!(scan(&("- ".repeat(MAX_DEPTH) + "x\n")).is_ok());
        let wide = format!("[{}]", "1,".repeat(1_000));
        let crossed = scan_within(&wide, MAX_DEPTH, 1_000).unwrap_err();
        assert_eq!(crossed.column, 2_000);
        assert!(
            crossed.message.contains("more than 1000 nodes"),
            "{crossed:?}"
        );
    }
}
