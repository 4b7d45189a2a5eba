//! Log text a person can read at 3 a.m.: durations as `495µs`, `1.2ms`, `3.4s`, `2m5s`; ratios
//! as `99.5%`; and what a config change changed (`route app: app-stable 90 -> 75, app-canary 10
//! -> 25; upstream app-canary: endpoints added 10.0.0.3:8080`).
//!
//! The change summary works on plain data ([`ConfigShape`]: routes with their backends' weights,
//! upstreams with their endpoints), which the caller builds from whatever config type it holds, so
//! this module depends on no config type. Pure: no I/O, no clock.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::time::Duration;

/// A duration for a log line: three significant digits in the largest unit that keeps it at
/// least 1 (`850ns`, `495µs`, `49.5µs`, `1.2ms`, `120ms`, `3.4s`), then minutes and seconds from a
/// minute on (`2m5s`, `1h2m`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

/// Shorthand for `HumanDuration(d)`.
pub fn duration(d: Duration) -> HumanDuration {
    HumanDuration(d)
}

/// `v` (at least 1) with three significant digits, trailing zeros dropped: `1.2`, `49.5`, `495`.
fn three_significant(v: f64) -> String {
    let text = if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.0.as_nanos();
        if ns < 1_000 {
            return write!(f, "{ns}ns");
        }
        for (unit, suffix, next) in [(1e3, "µs", 1_000.0), (1e6, "ms", 1_000.0), (1e9, "s", 60.0)]
        {
            let v = ns as f64 / unit;
            if v < next {
                let text = three_significant(v);
                // 999.7µs rounds to 1000µs: that is 1ms, printed by the next unit.
                if text.parse::<f64>().is_ok_and(|r| r < next) {
                    return write!(f, "{text}{suffix}");
                }
            }
        }
        let secs = (ns + 500_000_000) / 1_000_000_000;
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        match (h, m, s) {
            (0, m, 0) => write!(f, "{m}m"),
            (0, m, s) => write!(f, "{m}m{s}s"),
            (h, 0, _) => write!(f, "{h}h"),
            (h, m, _) => write!(f, "{h}h{m}m"),
        }
    }
}

impl fmt::Debug for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// An optional duration: the duration, or `none`.
pub struct MaybeDuration(pub Option<Duration>);

impl fmt::Display for MaybeDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(d) => fmt::Display::fmt(&HumanDuration(d), f),
            None => f.write_str("none"),
        }
    }
}

/// A ratio as a percentage with up to one decimal: `99.5%`, `100%`, `0%`; `none` for NaN.
pub struct Percent(pub f64);

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_nan() {
            return f.write_str("none");
        }
        let text = format!("{:.1}", self.0 * 100.0);
        write!(f, "{}%", text.strip_suffix(".0").unwrap_or(&text))
    }
}

// === what a config change changed ===

/// The parts of a config a change summary speaks of, as plain data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigShape {
    pub routes: Vec<RouteShape>,
    pub upstreams: Vec<UpstreamShape>,
}

/// A route: its backends (upstream names) and their weights, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteShape {
    pub name: String,
    pub backends: Vec<(String, u32)>,
}

/// An upstream and its endpoints (as written: `10.0.0.3:8080`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamShape {
    pub name: String,
    pub endpoints: Vec<String>,
}

/// One backend's weight before and after; `None` when it was not in the route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightChange {
    pub backend: String,
    pub from: Option<u32>,
    pub to: Option<u32>,
}

/// One thing a config change changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    RouteAdded {
        route: String,
        backends: Vec<(String, u32)>,
    },
    RouteRemoved {
        route: String,
    },
    Weights {
        route: String,
        changes: Vec<WeightChange>,
    },
    UpstreamAdded {
        upstream: String,
        endpoints: Vec<String>,
    },
    UpstreamRemoved {
        upstream: String,
    },
    Endpoints {
        upstream: String,
        added: Vec<String>,
        removed: Vec<String>,
    },
}

/// What changed from `old` to `new`: routes (in the new file's order, then the removed ones),
/// then upstreams likewise. A backend's weight change lists only the backends that changed.
pub fn changes(old: &ConfigShape, new: &ConfigShape) -> Vec<Change> {
    let mut out = Vec::new();
    let old_routes: HashMap<&str, &RouteShape> =
        old.routes.iter().map(|r| (r.name.as_str(), r)).collect();
    let new_routes: HashMap<&str, &RouteShape> =
        new.routes.iter().map(|r| (r.name.as_str(), r)).collect();
    for route in &new.routes {
        match old_routes.get(route.name.as_str()) {
            None => out.push(Change::RouteAdded {
                route: route.name.clone(),
                backends: route.backends.clone(),
            }),
            Some(before) => {
                let changes = weight_changes(&before.backends, &route.backends);
                if !changes.is_empty() {
                    out.push(Change::Weights {
                        route: route.name.clone(),
                        changes,
                    });
                }
            }
        }
    }
    for route in &old.routes {
        if !new_routes.contains_key(route.name.as_str()) {
            out.push(Change::RouteRemoved {
                route: route.name.clone(),
            });
        }
    }

    let old_upstreams: HashMap<&str, &UpstreamShape> =
        old.upstreams.iter().map(|u| (u.name.as_str(), u)).collect();
    let new_upstreams: HashMap<&str, &UpstreamShape> =
        new.upstreams.iter().map(|u| (u.name.as_str(), u)).collect();
    for upstream in &new.upstreams {
        match old_upstreams.get(upstream.name.as_str()) {
            None => out.push(Change::UpstreamAdded {
                upstream: upstream.name.clone(),
                endpoints: upstream.endpoints.clone(),
            }),
            Some(before) => {
                let was: BTreeSet<&str> = before.endpoints.iter().map(String::as_str).collect();
                let is: BTreeSet<&str> = upstream.endpoints.iter().map(String::as_str).collect();
                // In file order, each once.
                let mut added: Vec<String> = Vec::new();
                for e in &upstream.endpoints {
                    if !was.contains(e.as_str()) && !added.contains(e) {
                        added.push(e.clone());
                    }
                }
                let mut removed: Vec<String> = Vec::new();
                for e in &before.endpoints {
                    if !is.contains(e.as_str()) && !removed.contains(e) {
                        removed.push(e.clone());
                    }
                }
                if !added.is_empty() || !removed.is_empty() {
                    out.push(Change::Endpoints {
                        upstream: upstream.name.clone(),
                        added,
                        removed,
                    });
                }
            }
        }
    }
    for upstream in &old.upstreams {
        if !new_upstreams.contains_key(upstream.name.as_str()) {
            out.push(Change::UpstreamRemoved {
                upstream: upstream.name.clone(),
            });
        }
    }
    out
}

fn weight_changes(before: &[(String, u32)], after: &[(String, u32)]) -> Vec<WeightChange> {
    let find =
        |list: &[(String, u32)], name: &str| list.iter().find(|(n, _)| n == name).map(|(_, w)| *w);
    let mut out = Vec::new();
    for (name, w) in after {
        let from = find(before, name);
        if from != Some(*w) {
            out.push(WeightChange {
                backend: name.clone(),
                from,
                to: Some(*w),
            });
        }
    }
    for (name, w) in before {
        if find(after, name).is_none() {
            out.push(WeightChange {
                backend: name.clone(),
                from: Some(*w),
                to: None,
            });
        }
    }
    out
}

fn join(items: &[String]) -> String {
    items.join(", ")
}

impl fmt::Display for WeightChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.from, self.to) {
            (Some(a), Some(b)) => write!(f, "{} {a} -> {b}", self.backend),
            (None, Some(b)) => write!(f, "{} added at {b}", self.backend),
            (Some(a), None) => write!(f, "{} removed (was {a})", self.backend),
            (None, None) => write!(f, "{} unchanged", self.backend),
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::RouteAdded { route, backends } => {
                write!(f, "route {route} added: ")?;
                for (i, (b, w)) in backends.iter().enumerate() {
                    write!(f, "{}{b} {w}", if i > 0 { ", " } else { "" })?;
                }
                Ok(())
            }
            Change::RouteRemoved { route } => write!(f, "route {route} removed"),
            Change::Weights { route, changes } => {
                write!(f, "route {route}: ")?;
                for (i, c) in changes.iter().enumerate() {
                    write!(f, "{}{c}", if i > 0 { ", " } else { "" })?;
                }
                Ok(())
            }
            Change::UpstreamAdded {
                upstream,
                endpoints,
            } => write!(f, "upstream {upstream} added: {}", join(endpoints)),
            Change::UpstreamRemoved { upstream } => write!(f, "upstream {upstream} removed"),
            Change::Endpoints {
                upstream,
                added,
                removed,
            } => {
                write!(f, "upstream {upstream}: endpoints")?;
                if !added.is_empty() {
                    write!(f, " added {}", join(added))?;
                }
                if !added.is_empty() && !removed.is_empty() {
                    f.write_str(";")?;
                }
                if !removed.is_empty() {
                    write!(f, " removed {}", join(removed))?;
                }
                Ok(())
            }
        }
    }
}

/// The changes as one log field, `; `-separated, the first `max` of them and then how many more;
/// `no route or upstream change` when there are none (a timeout or a policy may still differ).
pub fn summary(changes: &[Change], max: usize) -> String {
    if changes.is_empty() {
        return "no route or upstream change".to_owned();
    }
    let mut out = changes
        .iter()
        .take(max)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    if changes.len() > max {
        out.push_str(&format!("; and {} more", changes.len() - max));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_a_person_writes_them() {
        let cases = [
            (Duration::from_nanos(0), "0ns"),
            (Duration::from_nanos(850), "850ns"),
            (Duration::from_nanos(4_950), "4.95µs"),
            (Duration::from_nanos(49_500), "49.5µs"),
            (Duration::from_micros(495), "495µs"),
            (Duration::from_nanos(999_700), "1ms"),
            (Duration::from_micros(1_200), "1.2ms"),
            (Duration::from_micros(1_000), "1ms"),
            (Duration::from_micros(12_340), "12.3ms"),
            (Duration::from_millis(120), "120ms"),
            (Duration::from_micros(999_600), "1s"),
            (Duration::from_millis(3_400), "3.4s"),
            (Duration::from_millis(59_400), "59.4s"),
            (Duration::from_millis(59_990), "1m"),
            (Duration::from_secs(60), "1m"),
            (Duration::from_secs(125), "2m5s"),
            (Duration::from_secs(3_600), "1h"),
            (Duration::from_secs(3_720), "1h2m"),
        ];
        for (d, text) in cases {
            assert_eq!(duration(d).to_string(), text, "{d:?}");
        }
        assert_eq!(MaybeDuration(None).to_string(), "none");
        assert_eq!(
            MaybeDuration(Some(Duration::from_micros(495))).to_string(),
            "495µs"
        );
    }

    #[test]
    fn ratios_read_as_percentages() {
        assert_eq!(Percent(0.995).to_string(), "99.5%");
        assert_eq!(Percent(1.0).to_string(), "100%");
        assert_eq!(Percent(0.0).to_string(), "0%");
        assert_eq!(Percent(f64::NAN).to_string(), "none");
    }

    fn shape(routes: &[(&str, &[(&str, u32)])], upstreams: &[(&str, &[&str])]) -> ConfigShape {
        ConfigShape {
            routes: routes
                .iter()
                .map(|(name, backends)| RouteShape {
                    name: (*name).to_owned(),
                    backends: backends
                        .iter()
                        .map(|(b, w)| ((*b).to_owned(), *w))
                        .collect(),
                })
                .collect(),
            upstreams: upstreams
                .iter()
                .map(|(name, endpoints)| UpstreamShape {
                    name: (*name).to_owned(),
                    endpoints: endpoints.iter().map(|e| (*e).to_owned()).collect(),
                })
                .collect(),
        }
    }

    fn check(old: &ConfigShape, new: &ConfigShape, expected: &str) {
        assert_eq!(summary(&changes(old, new), 20), expected);
    }

    #[test]
    fn a_weight_change_names_each_backend_that_moved() {
        let ups: &[(&str, &[&str])] = &[("stable", &["10.0.0.1:80"]), ("canary", &["10.0.0.2:80"])];
        check(
            &shape(&[("app", &[("stable", 90), ("canary", 10)])], ups),
            &shape(&[("app", &[("stable", 75), ("canary", 25)])], ups),
            "route app: stable 90 -> 75, canary 10 -> 25",
        );
        check(
            &shape(&[("app", &[("stable", 90), ("canary", 10)])], ups),
            &shape(&[("app", &[("stable", 90), ("canary", 0)])], ups),
            "route app: canary 10 -> 0",
        );
    }

    #[test]
    fn nothing_changed_says_so() {
        let s = shape(&[("app", &[("stable", 100)])], &[("stable", &["a:1"])]);
        check(&s, &s, "no route or upstream change");
    }

    #[test]
    fn added_and_removed_routes_backends_upstreams_and_endpoints_are_named() {
        let old = shape(
            &[
                ("app", &[("stable", 100), ("old", 5)]),
                ("legacy", &[("stable", 1)]),
            ],
            &[
                ("stable", &["10.0.0.1:80", "10.0.0.2:80"]),
                ("old", &["10.0.9.9:80"]),
            ],
        );
        let new = shape(
            &[
                ("app", &[("stable", 100), ("canary", 10)]),
                ("api", &[("stable", 1)]),
            ],
            &[
                ("stable", &["10.0.0.1:80", "10.0.0.3:80"]),
                ("canary", &["10.0.1.1:80"]),
            ],
        );
        check(
            &old,
            &new,
            "route app: canary added at 10, old removed (was 5); route api added: stable 1; \
             route legacy removed; upstream stable: endpoints added 10.0.0.3:80; removed \
             10.0.0.2:80; upstream canary added: 10.0.1.1:80; upstream old removed",
        );
    }

    #[test]
    fn a_long_summary_is_cut_with_a_count_of_the_rest() {
        let old = ConfigShape::default();
        let routes: Vec<(String, Vec<(&str, u32)>)> =
            (0..5).map(|i| (format!("r{i}"), vec![("s", 1)])).collect();
        let new = ConfigShape {
            routes: routes
                .iter()
                .map(|(n, b)| RouteShape {
                    name: n.clone(),
                    backends: b.iter().map(|(x, w)| ((*x).to_owned(), *w)).collect(),
                })
                .collect(),
            upstreams: vec![],
        };
        assert_eq!(
            summary(&changes(&old, &new), 2),
            "route r0 added: s 1; route r1 added: s 1; and 3 more"
        );
    }
}
