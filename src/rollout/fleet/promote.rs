//! The promotion commit's edit of the config: the stable's upstream takes the canary's endpoints
//! and the canary's weight returns to 0, so that Git says what runs. The YAML text is edited in
//! place, at the positions the parser reports, so comments, order and layout survive and the
//! commit is a small, reviewable diff (a re-serialized file would lose the comments and reorder
//! everything).

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::TScalarStyle;

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum PromoteError {
    #[error("the config does not parse as YAML")]
    Unparsable,
    #[error("`{0}` is not in the config's text")]
    Missing(String),
}

/// What the promotion changes, by index in the file.
#[derive(Clone, Debug, PartialEq)]
pub struct Promotion {
    /// `upstreams[stable_upstream].endpoints` becomes `endpoints`.
    pub stable_upstream: usize,
    pub endpoints: Vec<String>,
    /// `routes[route].backends[canary_backend].weight` becomes 0.
    pub route: usize,
    pub canary_backend: usize,
}

/// One step of a field path.
#[derive(Clone, Debug, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

enum Frame {
    Map { key: Option<String> },
    Seq { next: usize },
}

/// A scalar of the text: where it starts (char index), its value and style.
#[derive(Clone, Debug)]
struct Scalar {
    start: usize,
    value: String,
    style: TScalarStyle,
}

/// What the walk found: the endpoints sequence (start mark and items) and the weight scalar.
#[derive(Default)]
struct Found {
    endpoints: Option<(usize, Vec<Scalar>)>,
    weight: Option<Scalar>,
}

/// Applies `p` to `text`.
pub fn promote(text: &str, p: &Promotion) -> Result<String, PromoteError> {
    let endpoints_path = [
        Step::Key("upstreams".into()),
        Step::Index(p.stable_upstream),
        Step::Key("endpoints".into()),
    ];
    let weight_path = [
        Step::Key("routes".into()),
        Step::Index(p.route),
        Step::Key("backends".into()),
        Step::Index(p.canary_backend),
        Step::Key("weight".into()),
    ];
    let found = walk(text, &endpoints_path, &weight_path)?;
    let chars: Vec<usize> = text
        .char_indices()
        .map(|(b, _)| b)
        .chain([text.len()])
        .collect();
    let byte = |i: usize| chars.get(i).copied().unwrap_or(text.len());
    let (seq_start, items) = found.endpoints.ok_or_else(|| {
        PromoteError::Missing(format!("upstreams[{}].endpoints", p.stable_upstream))
    })?;
    let weight = found.weight.ok_or_else(|| {
        PromoteError::Missing(format!(
            "routes[{}].backends[{}].weight",
            p.route, p.canary_backend
        ))
    })?;
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    // The weight: its scalar's text becomes 0.
    let (ws, we) = span(text, &weight, &byte);
    edits.push((ws, we, "0".to_owned()));
    // The endpoints, in the style they were written.
    let seq_byte = byte(seq_start);
    let flow = text[seq_byte..].trim_start().starts_with('[');
    if flow {
        let open = seq_byte + text[seq_byte..].find('[').ok_or(PromoteError::Unparsable)?;
        let after = items.last().map_or(open + 1, |s| span(text, s, &byte).1);
        let close = after + text[after..].find(']').ok_or(PromoteError::Unparsable)?;
        edits.push((open, close + 1, format!("[{}]", p.endpoints.join(", "))));
    } else {
        let first = items.first().ok_or(PromoteError::Unparsable)?;
        let (fs, _) = span(text, first, &byte);
        let (_, le) = span(text, items.last().expect("not empty"), &byte);
        let line_start = text[..fs].rfind('\n').map_or(0, |i| i + 1);
        let prefix = &text[line_start..fs];
        let indent: String = prefix.chars().take_while(|c| *c == ' ').collect();
        let joined = p.endpoints.join(&format!("\n{indent}- "));
        edits.push((fs, le, joined));
    }
    edits.sort_by_key(|e| std::cmp::Reverse(e.0));
    let mut out = text.to_owned();
    for (s, e, new) in edits {
        out.replace_range(s..e, &new);
    }
    Ok(out)
}

/// The byte span of a scalar's text, quotes included.
fn span(text: &str, s: &Scalar, byte: &impl Fn(usize) -> usize) -> (usize, usize) {
    let start = byte(s.start);
    let end = match s.style {
        TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted => {
            let quote = if s.style == TScalarStyle::SingleQuoted {
                '\''
            } else {
                '"'
            };
            let rest = &text[start + 1..];
            let mut escaped = false;
            let mut close = rest.len();
            for (i, c) in rest.char_indices() {
                match c {
                    '\\' if quote == '"' && !escaped => escaped = true,
                    c if c == quote && !escaped => {
                        close = i;
                        break;
                    }
                    _ => escaped = false,
                }
            }
            start + 1 + close + 1
        }
        _ => byte(s.start + s.value.chars().count()),
    };
    (start, end.min(text.len()))
}

fn walk(text: &str, endpoints: &[Step], weight: &[Step]) -> Result<Found, PromoteError> {
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut path: Vec<Step> = Vec::new();
    let mut found = Found::default();
    // The endpoints sequence being collected: its depth in `stack`.
    let mut collecting: Option<usize> = None;
    loop {
        let (event, mark) = parser.next_token().map_err(|_| PromoteError::Unparsable)?;
        // The path of the node this event starts (for a value) and whether it is a key.
        let mut is_key = false;
        if matches!(
            event,
            Event::Scalar(..)
                | Event::MappingStart(..)
                | Event::SequenceStart(..)
                | Event::Alias(..)
        ) {
            match stack.last_mut() {
                Some(Frame::Map { key }) if key.is_none() => is_key = true,
                Some(Frame::Map { key }) => path.push(Step::Key(key.clone().unwrap_or_default())),
                Some(Frame::Seq { next }) => {
                    path.push(Step::Index(*next));
                    *next += 1;
                }
                None => {}
            }
        }
        match event {
            Event::StreamEnd => break,
            Event::Scalar(value, style, ..) => {
                if is_key {
                    if let Some(Frame::Map { key }) = stack.last_mut() {
                        *key = Some(value);
                    }
                    continue;
                }
                let scalar = Scalar {
                    start: mark.index(),
                    value,
                    style,
                };
                if collecting.is_some_and(|d| d == stack.len())
                    && let Some((_, items)) = &mut found.endpoints
                {
                    items.push(scalar.clone());
                }
                if path == weight {
                    found.weight = Some(scalar);
                }
                end_value(&mut stack, &mut path);
            }
            Event::Alias(..) => end_value(&mut stack, &mut path),
            Event::MappingStart(..) => stack.push(Frame::Map { key: None }),
            Event::SequenceStart(..) => {
                if path == endpoints {
                    found.endpoints = Some((mark.index(), Vec::new()));
                    collecting = Some(stack.len() + 1);
                }
                stack.push(Frame::Seq { next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                if collecting == Some(stack.len()) {
                    collecting = None;
                }
                stack.pop();
                end_value(&mut stack, &mut path);
            }
            _ => {}
        }
    }
    Ok(found)
}

/// A value ended: its path step goes, and its mapping waits for the next key.
fn end_value(stack: &mut [Frame], path: &mut Vec<Step>) {
    match stack.last_mut() {
        Some(Frame::Map { key }) => {
            *key = None;
            path.pop();
        }
        Some(Frame::Seq { .. }) => {
            path.pop();
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, p: &Promotion, expected: &str) {
        assert_eq!(promote(text, p).unwrap(), expected);
    }

    #[test]
    fn a_promotion_edits_two_values_and_keeps_comments_and_layout() {
        let p = Promotion {
            stable_upstream: 0,
            endpoints: vec!["10.0.0.9:80".into()],
            route: 0,
            canary_backend: 1,
        };
        let text = "# the app\nupstreams:\n  - name: stable   # v1\n    endpoints: [10.0.0.1:80, \"10.0.0.2:80\"]\n  - name: canary\n    endpoints: [10.0.0.9:80]\nroutes:\n  - name: app\n    backends:\n      - { upstream: stable, weight: 90 }\n      - upstream: canary\n        weight: 10 # canary\n";
        let expected = "# the app\nupstreams:\n  - name: stable   # v1\n    endpoints: [10.0.0.9:80]\n  - name: canary\n    endpoints: [10.0.0.9:80]\nroutes:\n  - name: app\n    backends:\n      - { upstream: stable, weight: 90 }\n      - upstream: canary\n        weight: 0 # canary\n";
        check(text, &p, expected);
        // Block style keeps its dashes and indentation.
        let block = "upstreams:\n  - name: stable\n    endpoints:\n      - 'a:1'\n      - b:2 # old\n  - name: canary\n    endpoints: [c:3, d:4]\nroutes:\n  - { name: app, backends: [{ upstream: stable, weight: 5 }, { upstream: canary, weight: 95 }] }\n";
        let p2 = Promotion {
            endpoints: vec!["c:3".into(), "d:4".into()],
            ..p.clone()
        };
        let expected = "upstreams:\n  - name: stable\n    endpoints:\n      - c:3\n      - d:4 # old\n  - name: canary\n    endpoints: [c:3, d:4]\nroutes:\n  - { name: app, backends: [{ upstream: stable, weight: 5 }, { upstream: canary, weight: 0 }] }\n";
        check(block, &p2, expected);
        assert_eq!(
            promote("upstreams: []\n", &p),
            Err(PromoteError::Missing("upstreams[0].endpoints".into()))
        );
    }
}
