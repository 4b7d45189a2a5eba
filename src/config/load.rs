//! From text to a validated [`Config`], keeping the line and column of every value so that each
//! error reads `FILE:LINE:COL: routes[0].backends[1].weight: message`.
//!
//! Two parsers read the text: `serde_yaml` produces the values, and `yaml-rust2`'s event stream
//! gives the position of every field path (serde values carry no positions). Each list element
//! and each top-level section is decoded on its own, so one bad route does not hide the errors
//! of the next: all errors are collected, as the spec asks.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use serde_yaml::Value;
use yaml_rust2::parser::{Event, Parser};

use super::files::{Input, Reads};
use super::schema::*;
use super::validate::{Config, validate};

/// One problem in a config file, located.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Field path such as `routes[0].backends[1].weight`; empty for the whole file.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in one config file, in file order where positions are known.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// The largest config file weir reads: a bigger one is refused before it is parsed.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// How deep YAML collections may nest. weir's own schema needs 6 levels; the YAML parsers
/// behind serde recurse once per level, so a hostile file must be stopped before they run.
pub const MAX_DEPTH: usize = 64;
/// How many YAML nodes (scalars, aliases, sequences, mappings) a file may hold: a 100,000-route
/// config holds about 1.6 million.
pub const MAX_NODES: usize = 4_000_000;

/// Reads and validates the file at `path`. A missing or unreadable file is an error too.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let bytes =
        super::files::read_limited(path, MAX_FILE_BYTES).map_err(|e| unreadable(path, &e))?;
    let text = std::str::from_utf8(&bytes).map_err(|e| not_utf8(&file, &e))?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    load_str(text, &file, base_dir)
}

/// The error for a config file that cannot be read.
pub fn unreadable(path: &Path, e: &std::io::Error) -> ConfigErrors {
    ConfigErrors(vec![ConfigError {
        file: path.display().to_string(),
        line: 1,
        column: 1,
        path: String::new(),
        message: format!("cannot read the config file: {e}"),
    }])
}

/// The error for a config file whose bytes are not UTF-8, at the first bad byte.
pub fn not_utf8(file: &str, e: &std::str::Utf8Error) -> ConfigErrors {
    ConfigErrors(vec![ConfigError {
        file: file.to_owned(),
        line: 1,
        column: 1,
        path: String::new(),
        message: format!("the file is not UTF-8: {e}"),
    }])
}

/// Parses and validates `text`. `file` names it in errors; relative paths inside it (certificates,
/// policies) are resolved against `base_dir`.
pub fn load_str(text: &str, file: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    load_text(text, file, base_dir).result
}

/// A config file's text, loaded, with what it read besides itself (also when it is refused:
/// its inputs decide whether a later try is a new attempt).
pub struct Loaded {
    pub result: Result<Config, ConfigErrors>,
    pub inputs: Vec<Input>,
}

/// [`load_str`], keeping the inputs.
pub fn load_text(text: &str, file: &str, base_dir: &Path) -> Loaded {
    let mut diag = Diagnostics::new(file);
    let config = match scan(text) {
        Ok(positions) => {
            diag.positions = positions;
            parse(text, &mut diag)
                .and_then(|(spec, parsed)| validate(spec, &parsed, base_dir, &mut diag))
        }
        Err(limit) => {
            diag.errors.push(ConfigError {
                file: file.to_owned(),
                line: limit.line,
                column: limit.column,
                path: String::new(),
                message: limit.message,
            });
            None
        }
    };
    let result = match config {
        Some(c) if diag.errors.is_empty() => Ok(c),
        _ => {
            let mut errors = diag.errors;
            for e in errors.iter_mut().filter(|e| e.file == file) {
                (e.line, e.column) = within_text(text, e.line, e.column);
            }
            errors.sort_by_key(|e| (e.line, e.column));
            Err(ConfigErrors(errors))
        }
    };
    Loaded {
        result,
        inputs: diag.reads.inputs,
    }
}

/// Collects located errors for one file, and what it read besides itself.
pub(super) struct Diagnostics {
    file: String,
    positions: Positions,
    pub(super) errors: Vec<ConfigError>,
    pub(super) reads: Reads,
}

impl Diagnostics {
    pub(super) fn file(&self) -> &str {
        &self.file
    }

    fn new(file: &str) -> Self {
        Diagnostics {
            file: file.to_owned(),
            positions: Positions::default(),
            errors: Vec::new(),
            reads: Reads::default(),
        }
    }

    /// Records `message` at `path`, located at the nearest enclosing field that has a position.
    pub(super) fn error(&mut self, path: &str, message: impl Into<String>) {
        let (line, column) = self.locate(path);
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line,
            column,
            path: path.to_owned(),
            message: message.into(),
        });
    }

    pub(super) fn locate(&self, path: &str) -> (usize, usize) {
        self.positions.locate(path)
    }

    /// Decodes one value into `T`, recording every error inside it under `prefix`. serde stops
    /// at the first error, so after each one the value is repaired (an unknown field removed, a
    /// bad value replaced by one of the right type) and decoded again, until it decodes or
    /// cannot be repaired. A value with any error gives `None`: a repaired value is never used.
    fn decode<T: DeserializeOwned>(&mut self, mut value: Value, prefix: &str) -> Option<T> {
        let mut failed = false;
        for _ in 0..MAX_REPAIRS {
            let error = match serde_path_to_error::deserialize::<_, T>(&value) {
                Ok(v) if !failed => return Some(v),
                Ok(_) => return None,
                Err(e) => e,
            };
            failed = true;
            let segments: Vec<Segment> = error.path().iter().cloned().collect();
            let inner = error.path().to_string();
            let mut path = join_path(prefix, if inner == "." { "" } else { &inner });
            let message = error.into_inner().to_string();
            // serde names an unknown field only in its message; point at the field itself.
            if let Some(field) = unknown_field_name(&message)
                && !path.ends_with(field)
            {
                path = join_path(&path, field);
            }
            if self.errors.iter().any(|e| e.path == path) {
                // The repair did not get past this field: report no more from this value.
                return None;
            }
            // A field missing from a mapping that also has an unknown one is most likely that
            // one misspelled, and the unknown field's message lists the expected names already.
            let misspelled = missing_field_name(&message).is_some() && {
                let prefix = format!("{path}.");
                self.errors.iter().any(|e| {
                    e.path.starts_with(&prefix)
                        && !e.path[prefix.len()..].contains(['.', '['])
                        && unknown_field_name(&e.message).is_some()
                })
            };
            if !misspelled {
                self.error(&path, message.clone());
            }
            if !repair::<T>(&mut value, &segments, &message) {
                return None;
            }
        }
        None
    }
}

/// Errors reported from one list element or section at most (each costs one more decode).
const MAX_REPAIRS: usize = 32;

/// Makes the error at `segments` go away so the next decode can find the next error: removes an
/// unknown field; otherwise puts in the first stand-in value of the right type, one that moves
/// the error off this field. Returns whether it could.
fn repair<T: DeserializeOwned>(value: &mut Value, segments: &[Segment], message: &str) -> bool {
    if let Some(field) = unknown_field_name(message) {
        let (map_path, last) = match segments.last() {
            Some(Segment::Map { key }) if key == field => {
                (&segments[..segments.len() - 1], Some(key.as_str()))
            }
            _ => (segments, None),
        };
        let key = last.unwrap_or(field);
        return match at(value, map_path) {
            Some(Value::Mapping(m)) => m.remove(key).is_some(),
            _ => false,
        };
    }
    // A missing field is added; any other error is at the value itself.
    let target: Vec<Segment> = match missing_field_name(message) {
        Some(field) => {
            let mut t = segments.to_vec();
            t.push(Segment::Map {
                key: field.to_owned(),
            });
            t
        }
        None => segments.to_vec(),
    };
    let mut candidates = Vec::new();
    if let Some(variant) = first_expected_variant(message) {
        candidates.push(Value::String(variant.to_owned()));
    }
    candidates.extend([
        Value::Null,
        Value::Number(0.into()),
        Value::Bool(false),
        Value::String(String::new()),
        Value::Sequence(Vec::new()),
        Value::Mapping(serde_yaml::Mapping::new()),
        Value::String("1s".to_owned()),
    ]);
    for candidate in candidates {
        let mut trial = value.clone();
        if !put(&mut trial, &target, candidate) {
            return false;
        }
        let moved_on = match serde_path_to_error::deserialize::<_, T>(&trial) {
            Ok(_) => true,
            Err(e) => {
                let at: Vec<&Segment> = e.path().iter().collect();
                !(at.len() >= target.len() && same_path(&at[..target.len()], &target)
                    || at.len() + 1 == target.len() && same_path(&at, &target[..at.len()]))
            }
        };
        if moved_on {
            *value = trial;
            return true;
        }
    }
    false
}

fn same_path(a: &[&Segment], b: &[Segment]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| match (x, y) {
            (Segment::Seq { index: i }, Segment::Seq { index: j }) => i == j,
            (Segment::Map { key: k }, Segment::Map { key: l }) => k == l,
            _ => false,
        })
}

/// The value at `segments` inside `value`.
fn at<'a>(value: &'a mut Value, segments: &[Segment]) -> Option<&'a mut Value> {
    let mut v = value;
    for s in segments {
        v = match (s, v) {
            (Segment::Seq { index }, Value::Sequence(items)) => items.get_mut(*index)?,
            (Segment::Map { key }, Value::Mapping(m)) => m.get_mut(key.as_str())?,
            (Segment::Enum { .. }, v) => v,
            _ => return None,
        };
    }
    Some(v)
}

/// Sets the value at `segments` (the last segment may name a field not there yet).
fn put(value: &mut Value, segments: &[Segment], new: Value) -> bool {
    let Some((last, parent)) = segments.split_last() else {
        *value = new;
        return true;
    };
    match (last, at(value, parent)) {
        (Segment::Map { key }, Some(Value::Mapping(m))) => {
            m.insert(Value::String(key.clone()), new);
            true
        }
        (Segment::Seq { index }, Some(Value::Sequence(items))) if *index < items.len() => {
            items[*index] = new;
            true
        }
        (Segment::Enum { .. } | Segment::Unknown, Some(v)) => {
            *v = new;
            true
        }
        _ => false,
    }
}

fn join_path(prefix: &str, rest: &str) -> String {
    if prefix.is_empty() {
        rest.to_owned()
    } else if rest.is_empty() {
        prefix.to_owned()
    } else if rest.starts_with('[') {
        format!("{prefix}{rest}")
    } else {
        format!("{prefix}.{rest}")
    }
}

fn unknown_field_name(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(&rest[..rest.find('`')?])
}

fn missing_field_name(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `")?;
    Some(&rest[..rest.find('`')?])
}

/// For `unknown variant `x`, expected one of `a`, `b``: `a`.
fn first_expected_variant(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown variant `")?;
    let rest = &rest[rest.find("expected")?..];
    let rest = &rest[rest.find('`')? + 1..];
    Some(&rest[..rest.find('`')?])
}

/// Upstream names whose definitions failed to decode: references to them are not reported again.
pub(super) type BrokenNames = HashSet<String>;

/// What `parse` learned besides the spec: the position in the file of each list element that
/// decoded (an element that did not is left out of the spec, and the ones after it keep their
/// own index in errors), and the names of broken upstreams.
#[derive(Default)]
pub(super) struct Parsed {
    pub(super) broken_upstreams: BrokenNames,
    /// `listeners[i]` of the spec is `listeners[listeners[i]]` of the file; the same for the
    /// others.
    pub(super) listeners: Vec<usize>,
    pub(super) upstreams: Vec<usize>,
    pub(super) routes: Vec<usize>,
}

fn parse(text: &str, diag: &mut Diagnostics) -> Option<(ConfigSpec, Parsed)> {
    let root: Value = match serde_yaml::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
            diag.errors.push(ConfigError {
                file: diag.file.clone(),
                line,
                column,
                path: String::new(),
                message: format!("invalid YAML: {}", strip_location(&e.to_string())),
            });
            return None;
        }
    };
    let mapping = match root {
        Value::Mapping(m) => m,
        Value::Null => {
            diag.error(
                "",
                "the file is empty: expected a mapping with listeners, upstreams and routes",
            );
            return None;
        }
        _ => {
            diag.error(
                "",
                "expected a mapping with listeners, upstreams and routes at the top level",
            );
            return None;
        }
    };

    let mut spec = ConfigSpec {
        listeners: Vec::new(),
        admin: AdminSpec::default(),
        upstreams: Vec::new(),
        routes: Vec::new(),
        policies: Vec::new(),
        limits: LimitsSpec::default(),
        rollout_state: None,
        reload: ReloadSpec::default(),
    };
    let mut parsed = Parsed::default();
    let mut seen_listeners = false;
    for (key, value) in mapping {
        let Some(key) = key.as_str().map(str::to_owned) else {
            diag.error("", "top-level keys must be strings");
            continue;
        };
        match key.as_str() {
            "listeners" => {
                seen_listeners = true;
                (spec.listeners, parsed.listeners) = decode_list(diag, value, "listeners", |_| {});
            }
            "admin" => {
                if let Some(a) = diag.decode(value, "admin") {
                    spec.admin = a;
                }
            }
            "upstreams" => {
                let broken = &mut parsed.broken_upstreams;
                (spec.upstreams, parsed.upstreams) = decode_list(diag, value, "upstreams", |v| {
                    if let Some(name) = v.get("name").and_then(Value::as_str) {
                        broken.insert(name.to_owned());
                    }
                });
            }
            "routes" => (spec.routes, parsed.routes) = decode_list(diag, value, "routes", |_| {}),
            "policies" => spec.policies = diag.decode(value, "policies").unwrap_or_default(),
            "limits" => {
                if let Some(l) = diag.decode(value, "limits") {
                    spec.limits = l;
                }
            }
            "rollout_state" => spec.rollout_state = diag.decode(value, "rollout_state"),
            "reload" => {
                if let Some(r) = diag.decode(value, "reload") {
                    spec.reload = r;
                }
            }
            other => diag.error(
                other,
                format!(
                    "unknown field `{other}`, expected one of {}",
                    TOP_LEVEL_KEYS
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
        }
    }
    if !seen_listeners {
        diag.error(
            "",
            "missing field `listeners`: at least one listener is needed",
        );
    }
    Some((spec, parsed))
}

/// Decodes each element of a list on its own, and returns the elements that decoded with their
/// index in the file; `on_broken` sees the raw value of each element that failed.
fn decode_list<T: DeserializeOwned>(
    diag: &mut Diagnostics,
    value: Value,
    path: &str,
    mut on_broken: impl FnMut(&Value),
) -> (Vec<T>, Vec<usize>) {
    let items = match value {
        Value::Sequence(items) => items,
        Value::Null => return (Vec::new(), Vec::new()),
        _ => {
            diag.error(path, "expected a list");
            return (Vec::new(), Vec::new());
        }
    };
    let mut out = Vec::with_capacity(items.len());
    let mut indexes = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let item_path = format!("{path}[{i}]");
        match diag.decode::<T>(item.clone(), &item_path) {
            Some(v) => {
                out.push(v);
                indexes.push(i);
            }
            None => on_broken(&item),
        }
    }
    (out, indexes)
}

/// `(line, column)`, or the end of the text's last line when a parser places an error (at the
/// end of the stream) on a line past it, which no editor can jump to.
fn within_text(text: &str, line: usize, column: usize) -> (usize, usize) {
    let breaks = |c: char| matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}');
    let normalized = text.replace("\r\n", "\n");
    let lines: Vec<&str> = normalized.split(breaks).collect();
    if line <= lines.len() {
        return (line, column);
    }
    let last = lines.last().map_or(0, |l| l.chars().count());
    (lines.len(), last + 1)
}

fn strip_location(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    }
}

/// A limit of [`MAX_DEPTH`] or [`MAX_NODES`] crossed, where it was crossed.
#[derive(Debug, PartialEq)]
struct LimitCrossed {
    line: usize,
    column: usize,
    message: String,
}

/// Reads `text` as a stream of YAML events, without recursion, and maps every field path to
/// the (line, column) of its key (or of its value, for list elements and the root). Stops at the
/// first collection nested deeper than [`MAX_DEPTH`] or the node past [`MAX_NODES`], before any
/// recursive parser sees the text. Text that does not parse yields what was read before the
/// error (serde's parse then reports it).
fn scan(text: &str) -> Result<Positions, LimitCrossed> {
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
struct Positions {
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
    fn locate(&self, path: &str) -> (usize, usize) {
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
    fn a_parse_error_at_the_end_of_the_stream_stays_inside_the_text() {
        assert_eq!(within_text("\nam: x\nT", 4, 1), (3, 2));
        assert_eq!(within_text("a\r\nb\rc", 3, 1), (3, 1));
        assert_eq!(within_text("a\r\nb\rc", 4, 1), (3, 2));
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
