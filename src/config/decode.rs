//! From YAML values to the schema's [`ConfigSpec`], with every error found: each list element and
//! each top-level section is decoded on its own, and an element that fails is repaired and
//! decoded again until each of its errors is reported. An element that does not decode is left
//! out of the spec, and the ones after it keep their own index in errors.

use std::collections::HashSet;

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use serde_yaml::Value;

use super::diag::{ConfigError, Diagnostics, join_path};
use super::schema::*;

/// Decodes one value into `T`, recording every error inside it under `prefix`. serde stops
/// at the first error, so after each one the value is repaired (an unknown field removed, a
/// bad value replaced by one of the right type) and decoded again, until it decodes or
/// cannot be repaired. A value with any error gives `None`: a repaired value is never used.
pub(super) fn decode<T: DeserializeOwned>(
    diag: &mut Diagnostics,
    mut value: Value,
    prefix: &str,
) -> Option<T> {
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
        if diag.errors.iter().any(|e| e.path == path) {
            // The repair did not get past this field: report no more from this value.
            return None;
        }
        // A field missing from a mapping that also has an unknown one is most likely that
        // one misspelled, and the unknown field's message lists the expected names already.
        let misspelled = missing_field_name(&message).is_some() && {
            let prefix = format!("{path}.");
            diag.errors.iter().any(|e| {
                e.path.starts_with(&prefix)
                    && !e.path[prefix.len()..].contains(['.', '['])
                    && unknown_field_name(&e.message).is_some()
            })
        };
        if !misspelled {
            diag.error(&path, message.clone());
        }
        if !repair::<T>(&mut value, &segments, &message) {
            return None;
        }
    }
    None
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

pub(super) fn parse(text: &str, diag: &mut Diagnostics) -> Option<(ConfigSpec, Parsed)> {
    let root: Value = match serde_yaml::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
            diag.errors.push(ConfigError {
                file: diag.file().to_owned(),
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
        fleet: None,
        access_log: None,
        tracing: None,
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
                if let Some(a) = decode(diag, value, "admin") {
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
            "policies" => spec.policies = decode(diag, value, "policies").unwrap_or_default(),
            "limits" => {
                if let Some(l) = decode(diag, value, "limits") {
                    spec.limits = l;
                }
            }
            "rollout_state" => spec.rollout_state = decode(diag, value, "rollout_state"),
            "reload" => {
                if let Some(r) = decode(diag, value, "reload") {
                    spec.reload = r;
                }
            }
            "fleet" => spec.fleet = decode(diag, value, "fleet"),
            "access_log" => spec.access_log = decode(diag, value, "access_log"),
            "tracing" => spec.tracing = decode(diag, value, "tracing"),
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
        match decode::<T>(diag, item.clone(), &item_path) {
            Some(v) => {
                out.push(v);
                indexes.push(i);
            }
            None => on_broken(&item),
        }
    }
    (out, indexes)
}

fn strip_location(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    }
}
