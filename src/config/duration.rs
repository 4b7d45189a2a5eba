//! Time as weir writes it: durations in the config (`250ms`, `15s`, `2m`, `1h`), and instants as
//! RFC 3339 (`/config`, `/history`, webhook bodies).
//!
//! The duration grammar is weir's own on purpose, one integer and one unit: humantime's parser
//! would also take `10 days`, `1h 30m` or a bare `15`, and what a config accepts is a contract.
//! humantime formats the instants.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A duration read from the config. Serializes back to the canonical text form, so `/config`
/// shows what a user would write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DurationSpec(pub Duration);

impl DurationSpec {
    pub const fn from_secs(secs: u64) -> Self {
        DurationSpec(Duration::from_secs(secs))
    }

    pub fn get(self) -> Duration {
        self.0
    }
}

/// Parses `<non-negative integer><unit>` with unit `ms`, `s`, `m` or `h`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let millis = match unit {
        "ms" => n,
        "s" => n.checked_mul(1_000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(millis))
}

/// `t` as RFC 3339 in UTC with milliseconds, as `2026-11-22T10:00:00.000Z`.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl fmt::Display for DurationSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms % 3_600_000 == 0 && ms > 0 {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms % 60_000 == 0 && ms > 0 {
            write!(f, "{}m", ms / 60_000)
        } else if ms % 1_000 == 0 {
            write!(f, "{}s", ms / 1_000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl Serialize for DurationSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DurationSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DurationSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as 250ms, 15s or 2m")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DurationSpec, E> {
                parse_duration(v)
                    .map(DurationSpec)
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
        deserializer.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_the_documented_units() {
        for (text, ms, canonical) in [
            ("250ms", 250, "250ms"),
            ("15s", 15_000, "15s"),
            ("2m", 120_000, "2m"),
            ("1h", 3_600_000, "1h"),
            ("1500ms", 1_500, "1500ms"),
            ("60s", 60_000, "1m"),
        ] {
            let d = parse_duration(text).unwrap();
            assert_eq!(d.as_millis(), ms, "{text}");
            assert_eq!(DurationSpec(d).to_string(), canonical);
        }
        for bad in ["", "15", "s", "1.5s", "-1s", "10 days", "5x"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
