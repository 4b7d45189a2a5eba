//! Canary session affinity, Flagger style: a client the weights send to the canary gets a cookie
//! that keeps it on the canary for the rest of the rollout (and, with `pin: all`, a client sent
//! to stable is kept on stable too). Without any key of the user's, a browser sees one version
//! for the whole rollout instead of flipping between versions request by request.
//!
//! The cookie's value names a backend *of one rollout*: it is derived from the route, the
//! rollout's generation (what identifies this canary: its definition and when its rollout
//! started) and the backend's name, so a cookie from an earlier rollout never matches and never
//! pins a new canary (flagger#1198). A stale cookie is expired on the next response that does
//! not set a new one.
//!
//! Built once per snapshot ([`Affinity::new`]): the values and the whole `Set-Cookie` header of
//! each backend. Per request: one pass over the `Cookie` header without allocating, a comparison
//! with a handful of values, and at most one pre-built header to clone.
//!
//! A pin holds only while its backend may take traffic (`eligible`: a weight above 0 and an
//! endpoint to send to), so a rollback (canary weight 0) or a promotion (stable weight 0) moves
//! pinned clients at once. The weights apply to clients without a pin: while a rollout runs, the
//! canary's real share is its weight plus the clients it already holds, as with Flagger.

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};

// === spec ===

/// `SameSite` of the cookie.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    #[default]
    Lax,
    /// Needs `secure` (browsers drop `SameSite=None` cookies without it).
    None,
}

/// Which clients get a cookie.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pin {
    /// Only those sent to the canary (Flagger's `cookieName`).
    #[default]
    Canary,
    /// Those sent to any backend (Flagger's `cookieName` plus `primaryCookieName`).
    All,
}

/// The cookie and who gets it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AffinitySpec {
    /// Default `weir-affinity`.
    pub name: String,
    /// Default 24 h: a pin lasts at most this long, even if the rollout goes on.
    pub max_age: Duration,
    pub domain: Option<String>,
    /// Default `/`.
    pub path: String,
    /// Default `false`; set it on TLS listeners.
    pub secure: bool,
    /// Default `true`: scripts cannot read the cookie.
    pub http_only: bool,
    pub same_site: SameSite,
    pub pin: Pin,
}

impl Default for AffinitySpec {
    fn default() -> Self {
        AffinitySpec {
            name: "weir-affinity".into(),
            max_age: Duration::from_secs(24 * 3600),
            domain: None,
            path: "/".into(),
            secure: false,
            http_only: true,
            same_site: SameSite::Lax,
            pin: Pin::Canary,
        }
    }
}

/// What is wrong with an [`AffinitySpec`]; `field` names the field relative to the block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AffinityError {
    #[error("`{0}` is not a valid cookie name (letters, digits and !#$%&'*+-.^_`|~)")]
    Name(String),
    #[error("max_age must be at least 1s")]
    MaxAge,
    #[error("`{0}` is not a valid cookie domain")]
    Domain(String),
    #[error(
        "`{0}` is not a valid cookie path: it must start with `/` and hold no `;` or control characters"
    )]
    Path(String),
    #[error("same_site: none needs secure: true (browsers drop the cookie otherwise)")]
    SameSiteNone,
    #[error("pin: canary needs a canary: name one, or give the route a rollout")]
    NoCanary,
}

impl AffinityError {
    pub fn field(&self) -> &'static str {
        match self {
            AffinityError::Name(_) => "name",
            AffinityError::MaxAge => "max_age",
            AffinityError::Domain(_) => "domain",
            AffinityError::Path(_) => "path",
            AffinityError::SameSiteNone => "same_site",
            AffinityError::NoCanary => "canary",
        }
    }
}

/// RFC 6265 cookie-name: an RFC 7230 token.
fn token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn valid_domain(d: &str) -> bool {
    let d = d.strip_prefix('.').unwrap_or(d);
    !d.is_empty()
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn valid_path(p: &str) -> bool {
    p.starts_with('/') && p.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b';')
}

// === the compiled form ===

/// Length of a cookie value: 24 hex digits, 96 bits of SHA-256.
const VALUE_LEN: usize = 24;

/// A route's affinity for one snapshot.
#[derive(Clone, Debug)]
pub struct Affinity {
    name: Box<[u8]>,
    /// Per backend, in the route's order: the value that pins to it, when it pins.
    values: Box<[Option<[u8; VALUE_LEN]>]>,
    /// Per backend: the whole `Set-Cookie` that gives a client its pin.
    set_cookie: Box<[Option<HeaderValue>]>,
    /// `Set-Cookie` that removes a stale cookie (same name, path and domain, `Max-Age=0`).
    expire: HeaderValue,
}

/// What the `Cookie` header says about this route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The client holds this rollout's cookie for this backend, and the backend may take it.
    Pinned(usize),
    /// No pin: the weights decide. `stale` when the client sent the cookie with a value that
    /// pins nothing now (an earlier rollout, or a backend that may not take traffic).
    Unpinned { stale: bool },
}

/// The cookie value of `backend` in one rollout of `route`: the first 96 bits of
/// SHA-256(route, generation, backend), in hex. Not a secret: a client that forges it only
/// chooses its own version, as an override header lets it.
pub fn cookie_value(route: &str, generation: &[u8], backend: &str) -> [u8; VALUE_LEN] {
    let mut h = Sha256::new();
    for part in [route.as_bytes(), generation, backend.as_bytes()] {
        // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    let digest = h.finalize();
    let mut out = [0u8; VALUE_LEN];
    for (i, b) in digest[..VALUE_LEN / 2].iter().enumerate() {
        out[2 * i] = b"0123456789abcdef"[usize::from(b >> 4)];
        out[2 * i + 1] = b"0123456789abcdef"[usize::from(b & 15)];
    }
    out
}

impl Affinity {
    /// Builds a route's affinity. `generation` identifies the rollout (phase 2 passes the
    /// canary's definition and the rollout's start); `backends` are the route's backend names in
    /// order; `canary` is the index of the canary (needed with `pin: canary`).
    pub fn new(
        spec: &AffinitySpec,
        route: &str,
        generation: &[u8],
        backends: &[&str],
        canary: Option<usize>,
    ) -> Result<Affinity, Vec<AffinityError>> {
        let mut errors = Vec::new();
        if !token(&spec.name) {
            errors.push(AffinityError::Name(spec.name.clone()));
        }
        if spec.max_age < Duration::from_secs(1) {
            errors.push(AffinityError::MaxAge);
        }
        if let Some(d) = spec.domain.as_ref().filter(|d| !valid_domain(d)) {
            errors.push(AffinityError::Domain(d.clone()));
        }
        if !valid_path(&spec.path) {
            errors.push(AffinityError::Path(spec.path.clone()));
        }
        if spec.same_site == SameSite::None && !spec.secure {
            errors.push(AffinityError::SameSiteNone);
        }
        let canary = canary.filter(|&c| c < backends.len());
        if spec.pin == Pin::Canary && canary.is_none() {
            errors.push(AffinityError::NoCanary);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let attributes = attributes(spec);
        let values: Box<[Option<[u8; VALUE_LEN]>]> = backends
            .iter()
            .enumerate()
            .map(|(i, b)| {
                (spec.pin == Pin::All || Some(i) == canary)
                    .then(|| cookie_value(route, generation, b))
            })
            .collect();
        let header = |value: &[u8], max_age: u64| {
            let mut s = Vec::with_capacity(spec.name.len() + value.len() + attributes.len() + 24);
            s.extend_from_slice(spec.name.as_bytes());
            s.push(b'=');
            s.extend_from_slice(value);
            s.extend_from_slice(b"; Max-Age=");
            s.extend_from_slice(max_age.to_string().as_bytes());
            s.extend_from_slice(attributes.as_bytes());
            HeaderValue::from_bytes(&s).expect("validated name, domain and path")
        };
        Ok(Affinity {
            name: spec.name.as_bytes().into(),
            set_cookie: values
                .iter()
                .map(|v| v.map(|v| header(&v, spec.max_age.as_secs())))
                .collect(),
            values,
            expire: header(b"", 0),
        })
    }

    /// Reads the client's pin. `eligible(b)` says whether backend `b` may take traffic now.
    pub fn decide(&self, headers: &HeaderMap, eligible: impl Fn(usize) -> bool) -> Decision {
        let mut seen = false;
        for value in cookie_values(headers, &self.name) {
            seen = true;
            let pinned = self
                .values
                .iter()
                .position(|v| v.as_ref().is_some_and(|v| v[..] == *value))
                .filter(|&b| eligible(b));
            if let Some(b) = pinned {
                return Decision::Pinned(b);
            }
        }
        Decision::Unpinned { stale: seen }
    }

    /// The `Set-Cookie` for the response, once the request went to `chosen`: the pin of
    /// `chosen` for a client without one (when `chosen` pins), the expiry of a stale cookie, or
    /// nothing.
    pub fn set_cookie(&self, decision: Decision, chosen: usize) -> Option<&HeaderValue> {
        match decision {
            Decision::Pinned(_) => None,
            Decision::Unpinned { stale } => self
                .set_cookie
                .get(chosen)
                .and_then(Option::as_ref)
                .or(stale.then_some(&self.expire)),
        }
    }

    /// Whether requests sent to `backend` get a pin.
    pub fn pins(&self, backend: usize) -> bool {
        self.values.get(backend).is_some_and(Option::is_some)
    }
}

fn attributes(spec: &AffinitySpec) -> String {
    let mut a = format!("; Path={}", spec.path);
    if let Some(d) = &spec.domain {
        a.push_str("; Domain=");
        a.push_str(d);
    }
    if spec.secure {
        a.push_str("; Secure");
    }
    if spec.http_only {
        a.push_str("; HttpOnly");
    }
    a.push_str(match spec.same_site {
        SameSite::Strict => "; SameSite=Strict",
        SameSite::Lax => "; SameSite=Lax",
        SameSite::None => "; SameSite=None",
    });
    a
}

/// The values of every cookie called `name` in the request's `Cookie` headers, in order, double
/// quotes removed (RFC 6265 allows `name="value"`). Slices of the header: no allocation.
pub fn cookie_values<'a>(headers: &'a HeaderMap, name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .filter_map(move |pair| {
            let pair = trim(pair);
            let eq = pair.iter().position(|&b| b == b'=')?;
            (trim(&pair[..eq]) == name).then(|| {
                let v = trim(&pair[eq + 1..]);
                match v {
                    [b'"', inner @ .., b'"'] => inner,
                    v => v,
                }
            })
        })
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |e| e + 1);
    &s[start..end]
}

#[cfg(test)]
mod tests;
