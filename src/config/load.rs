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
use serde_yaml::Value;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

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

/// Reads and validates the file at `path`. A missing or unreadable file is an error too.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| unreadable(path, &e))?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    load_str(&text, &file, base_dir)
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

/// Parses and validates `text`. `file` names it in errors; relative paths inside it (certificates,
/// policies) are resolved against `base_dir`.
pub fn load_str(text: &str, file: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let mut diag = Diagnostics::new(file, text);
    let spec = parse(text, &mut diag);
    let config = spec.and_then(|(spec, broken)| validate(spec, &broken, base_dir, &mut diag));
    match config {
        Some(c) if diag.errors.is_empty() => Ok(c),
        _ => {
            let mut errors = diag.errors;
            errors.sort_by_key(|e| (e.line, e.column));
            Err(ConfigErrors(errors))
        }
    }
}

/// Collects located errors for one file.
pub(super) struct Diagnostics {
    file: String,
    positions: HashMap<String, (usize, usize)>,
    pub(super) errors: Vec<ConfigError>,
}

impl Diagnostics {
    pub(super) fn file(&self) -> &str {
        &self.file
    }

    fn new(file: &str, text: &str) -> Self {
        Diagnostics {
            file: file.to_owned(),
            positions: positions(text),
            errors: Vec::new(),
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

    pub(super) fn locate(&self, mut path: &str) -> (usize, usize) {
        loop {
            if let Some(&pos) = self.positions.get(path) {
                return pos;
            }
            match path.rfind(['.', '[']) {
                Some(i) => path = &path[..i],
                None => return self.positions.get("").copied().unwrap_or((1, 1)),
            }
        }
    }

    /// Decodes one value into `T`, recording the first error inside it under `prefix`.
    fn decode<T: DeserializeOwned>(&mut self, value: Value, prefix: &str) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(v) => Some(v),
            Err(e) => {
                let inner = e.path().to_string();
                let mut path = join_path(prefix, if inner == "." { "" } else { &inner });
                let message = e.into_inner().to_string();
                // serde names an unknown field only in its message; point at the field itself.
                if let Some(field) = unknown_field_name(&message)
                    && !path.ends_with(field)
                {
                    path = join_path(&path, field);
                }
                self.error(&path, message);
                None
            }
        }
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

/// Upstream names whose definitions failed to decode: references to them are not reported again.
pub(super) type BrokenNames = HashSet<String>;

fn parse(text: &str, diag: &mut Diagnostics) -> Option<(ConfigSpec, BrokenNames)> {
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
    };
    let mut broken = BrokenNames::new();
    let mut seen_listeners = false;
    for (key, value) in mapping {
        let Some(key) = key.as_str().map(str::to_owned) else {
            diag.error("", "top-level keys must be strings");
            continue;
        };
        match key.as_str() {
            "listeners" => {
                seen_listeners = true;
                spec.listeners = decode_list(diag, value, "listeners", |_| {});
            }
            "admin" => {
                if let Some(a) = diag.decode(value, "admin") {
                    spec.admin = a;
                }
            }
            "upstreams" => {
                spec.upstreams = decode_list(diag, value, "upstreams", |v| {
                    if let Some(name) = v.get("name").and_then(Value::as_str) {
                        broken.insert(name.to_owned());
                    }
                });
            }
            "routes" => spec.routes = decode_list(diag, value, "routes", |_| {}),
            "policies" => spec.policies = diag.decode(value, "policies").unwrap_or_default(),
            "limits" => {
                if let Some(l) = diag.decode(value, "limits") {
                    spec.limits = l;
                }
            }
            "rollout_state" => spec.rollout_state = diag.decode(value, "rollout_state"),
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
    Some((spec, broken))
}

/// Decodes each element of a list on its own; `on_broken` sees the raw value of each element
/// that failed.
fn decode_list<T: DeserializeOwned>(
    diag: &mut Diagnostics,
    value: Value,
    path: &str,
    mut on_broken: impl FnMut(&Value),
) -> Vec<T> {
    let items = match value {
        Value::Sequence(items) => items,
        Value::Null => return Vec::new(),
        _ => {
            diag.error(path, "expected a list");
            return Vec::new();
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let item_path = format!("{path}[{i}]");
        match diag.decode::<T>(item.clone(), &item_path) {
            Some(v) => out.push(v),
            None => on_broken(&item),
        }
    }
    out
}

fn strip_location(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    }
}

/// Maps every field path in `text` to the (line, column) of its key, or of its value for list
/// elements and the root. Text that does not parse yields what was read before the error.
fn positions(text: &str) -> HashMap<String, (usize, usize)> {
    let mut recorder = PositionRecorder::default();
    let mut parser = Parser::new_from_str(text);
    let _ = parser.load(&mut recorder, false);
    recorder.map
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, next: usize },
}

#[derive(Default)]
struct PositionRecorder {
    stack: Vec<Frame>,
    map: HashMap<String, (usize, usize)>,
}

impl MarkedEventReceiver for PositionRecorder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = (mark.line(), mark.col() + 1);
        let is_value = matches!(
            ev,
            Event::Scalar(..)
                | Event::Alias(..)
                | Event::MappingStart(..)
                | Event::SequenceStart(..)
        );
        if !is_value {
            if matches!(ev, Event::MappingEnd | Event::SequenceEnd) {
                self.stack.pop();
            }
            return;
        }
        let path = match self.stack.last_mut() {
            None => String::new(),
            Some(Frame::Seq { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                p
            }
            Some(Frame::Map { path, key }) => match key.take() {
                Some(k) => join_path(path, &k),
                None => {
                    // A key. Only scalar keys name fields; a complex key is skipped as a unit.
                    let k = match &ev {
                        Event::Scalar(s, ..) => s.clone(),
                        _ => String::from("?"),
                    };
                    // A block mapping's start event is marked after its first key, so the
                    // mapping itself is located at that key.
                    self.map.entry(path.clone()).or_insert(pos);
                    self.map.entry(join_path(path, &k)).or_insert(pos);
                    *key = Some(k);
                    if let Event::MappingStart(..) | Event::SequenceStart(..) = ev {
                        self.stack.push(Frame::Seq {
                            path: String::from("?"),
                            next: 0,
                        });
                    }
                    return;
                }
            },
        };
        if !matches!(ev, Event::MappingStart(..)) {
            self.map.entry(path.clone()).or_insert(pos);
        }
        match ev {
            Event::MappingStart(..) => self.stack.push(Frame::Map { path, key: None }),
            Event::SequenceStart(..) => self.stack.push(Frame::Seq { path, next: 0 }),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_name_keys_and_list_elements() {
        let text = "listeners:\n  - name: a\n    address: x\nroutes:\n  - name: r\n    backends:\n      - { upstream: u, weight: 1 }\n";
        let p = positions(text);
        assert_eq!(p["listeners"], (1, 1));
        assert_eq!(p["listeners[0]"], (2, 5));
        assert_eq!(p["listeners[0].address"], (3, 5));
        assert_eq!(p["routes[0].backends[0].weight"], (7, 24));
    }
}
