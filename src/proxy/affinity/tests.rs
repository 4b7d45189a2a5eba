//! A browser-like client (a cookie jar that stores what `Set-Cookie` says and sends it back)
//! against a route's weights and affinity, through rollouts and weight changes; the `Cookie`
//! parser; the exact `Set-Cookie` values; the config errors.

use super::*;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

const BACKENDS: [&str; 2] = ["app-stable", "app-canary"];

fn affinity(spec: &AffinitySpec, generation: &str) -> Affinity {
    Affinity::new(spec, "app", generation.as_bytes(), &BACKENDS, Some(1)).unwrap()
}

/// One browser: the cookie it holds, if any.
#[derive(Default)]
struct Browser {
    cookie: Option<(String, String)>,
}

impl Browser {
    fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        // Other cookies around ours, as a real browser sends them.
        let line = match &self.cookie {
            Some((n, v)) => format!("theme=dark; {n}={v}; lang=en"),
            None => "theme=dark".into(),
        };
        h.insert(header::COOKIE, HeaderValue::from_str(&line).unwrap());
        h
    }

    fn store(&mut self, set_cookie: &HeaderValue) {
        let s = set_cookie.to_str().unwrap();
        let (pair, attributes) = s.split_once(';').unwrap();
        let (n, v) = pair.split_once('=').unwrap();
        if attributes.contains("Max-Age=0") {
            self.cookie = None;
        } else {
            self.cookie = Some((n.into(), v.into()));
        }
    }
}

/// The one helper every client case goes through: `requests` requests of `browser` to a route
/// with these weights and this affinity; returns the backend of each. A request without a pin is
/// drawn by weight from `rng`, as the route's random pick does.
fn check(
    browser: &mut Browser,
    affinity: &Affinity,
    weights: [u32; 2],
    requests: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<usize> {
    let total: u32 = weights.iter().sum();
    (0..requests)
        .map(|_| {
            let decision = affinity.decide(&browser.headers(), |b| weights[b] > 0);
            let chosen = match decision {
                Decision::Pinned(b) => b,
                Decision::Unpinned { .. } => usize::from(rng.random_range(0..total) >= weights[0]),
            };
            if let Some(set) = affinity.set_cookie(decision, chosen) {
                browser.store(set);
            }
            chosen
        })
        .collect()
}

const STABLE: usize = 0;
const CANARY: usize = 1;

/// Requests until the weights send this browser to `backend`.
fn until(
    backend: usize,
    browser: &mut Browser,
    a: &Affinity,
    weights: [u32; 2],
    rng: &mut ChaCha8Rng,
) {
    for _ in 0..10_000 {
        if check(browser, a, weights, 1, rng) == [backend] {
            return;
        }
    }
    panic!("never drawn to backend {backend}");
}

fn until_canary(browser: &mut Browser, a: &Affinity, weights: [u32; 2], rng: &mut ChaCha8Rng) {
    until(CANARY, browser, a, weights, rng);
}

#[test]
fn a_browser_keeps_its_canary_cookie_across_100_requests_and_a_weight_change() {
    let spec = AffinitySpec::default();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut browser = Browser::default();
    let first = affinity(&spec, "rollout-1");
    until_canary(&mut browser, &first, [90, 10], &mut rng);
    assert!(browser.cookie.is_some());
    assert_eq!(
        check(&mut browser, &first, [90, 10], 100, &mut rng),
        [CANARY; 100]
    );
    // The next step: a new snapshot with new weights, the same rollout.
    let next_step = affinity(&spec, "rollout-1");
    assert_eq!(
        check(&mut browser, &next_step, [75, 25], 100, &mut rng),
        [CANARY; 100]
    );
    assert_eq!(
        check(&mut browser, &next_step, [1, 99], 100, &mut rng),
        [CANARY; 100]
    );
}

#[test]
fn a_new_rollout_never_honours_an_old_cookie() {
    let spec = AffinitySpec::default();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let mut browser = Browser::default();
    let old = affinity(&spec, "rollout-1");
    until_canary(&mut browser, &old, [50, 50], &mut rng);
    let old_cookie = browser.cookie.clone().unwrap();
    let new = affinity(&spec, "rollout-2");
    assert_eq!(
        new.decide(&browser.headers(), |_| true),
        Decision::Unpinned { stale: true }
    );
    // The first request of the new rollout draws by weight: with the canary at 0 the client
    // lands on stable and its stale cookie is expired.
    assert_eq!(check(&mut browser, &new, [100, 0], 1, &mut rng), [STABLE]);
    assert_eq!(browser.cookie, None);
    // Drawn to the new canary later, it gets a new value.
    until_canary(&mut browser, &new, [50, 50], &mut rng);
    let new_cookie = browser.cookie.clone().unwrap();
    assert_eq!(new_cookie.0, old_cookie.0);
    assert_ne!(new_cookie.1, old_cookie.1);
}

#[test]
fn a_rollback_sends_pinned_clients_to_stable_and_expires_their_cookie() {
    let spec = AffinitySpec::default();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut browser = Browser::default();
    let a = affinity(&spec, "rollout-1");
    until_canary(&mut browser, &a, [90, 10], &mut rng);
    // rolled_back: canary weight 0.
    assert_eq!(check(&mut browser, &a, [100, 0], 1, &mut rng), [STABLE]);
    assert_eq!(browser.cookie, None);
    assert_eq!(
        check(&mut browser, &a, [100, 0], 50, &mut rng),
        [STABLE; 50]
    );
}

#[test]
fn with_pin_all_stable_clients_stay_on_stable_until_it_is_retired() {
    let spec = AffinitySpec {
        pin: Pin::All,
        ..AffinitySpec::default()
    };
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let a = affinity(&spec, "rollout-1");
    // A client whose first request the weights send to stable is pinned there (one drawn to
    // the canary first would be pinned to the canary: take the next client).
    let mut browser = Browser::default();
    while check(&mut browser, &a, [90, 10], 1, &mut rng) != [STABLE] {
        browser = Browser::default();
    }
    assert!(browser.cookie.is_some());
    // The canary grows; the stable client stays.
    assert_eq!(
        check(&mut browser, &a, [10, 90], 100, &mut rng),
        [STABLE; 100]
    );
    // promoted: stable weight 0. The client moves to the canary and is pinned there.
    assert_eq!(check(&mut browser, &a, [0, 100], 1, &mut rng), [CANARY]);
    let pinned = browser.cookie.clone().unwrap();
    assert_eq!(
        pinned.1.as_bytes(),
        cookie_value("app", b"rollout-1", "app-canary")
    );
    assert_eq!(
        check(&mut browser, &a, [0, 100], 20, &mut rng),
        [CANARY; 20]
    );
}

#[test]
fn fresh_clients_are_pinned_to_the_canary_at_its_weight() {
    // 10,000 first requests at 90/10: the canary count is binomial, sd = sqrt(10000 * 0.1 *
    // 0.9) = 30; allow 5 sd = 150. Each pinned client then stays.
    let a = affinity(&AffinitySpec::default(), "rollout-1");
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut pinned = 0;
    for _ in 0..10_000 {
        let mut browser = Browser::default();
        if check(&mut browser, &a, [90, 10], 1, &mut rng) == [CANARY] {
            pinned += 1;
            assert!(browser.cookie.is_some());
            assert_eq!(check(&mut browser, &a, [90, 10], 2, &mut rng), [CANARY; 2]);
        } else {
            assert!(
                browser.cookie.is_none(),
                "pin: canary gives stable clients no cookie"
            );
        }
    }
    assert!((pinned as i64 - 1_000).abs() <= 150, "{pinned}");
}

#[test]
fn the_cookie_header_is_read_as_browsers_send_it() {
    let a = affinity(&AffinitySpec::default(), "g");
    let canary = String::from_utf8(cookie_value("app", b"g", "app-canary").to_vec()).unwrap();
    let stable = String::from_utf8(cookie_value("app", b"g", "app-stable").to_vec()).unwrap();
    let pinned = Decision::Pinned(CANARY);
    let stale = Decision::Unpinned { stale: true };
    let none = Decision::Unpinned { stale: false };
    let cases: Vec<(Vec<String>, Decision)> = vec![
        (vec![], none),
        (vec![format!("weir-affinity={canary}")], pinned),
        (vec![format!("a=1;weir-affinity={canary};b=2")], pinned),
        (vec![format!("a=1; \tweir-affinity = {canary} ; b")], pinned),
        (vec![format!("weir-affinity=\"{canary}\"")], pinned),
        (
            vec!["a=1".into(), format!("weir-affinity={canary}")],
            pinned,
        ),
        // An older cookie at another path comes first; the current one still counts.
        (
            vec![format!("weir-affinity=0123; weir-affinity={canary}")],
            pinned,
        ),
        (vec!["weir-affinity=0123".into()], stale),
        (vec!["weir-affinity=".into()], stale),
        // pin: canary gives stable no value, so a stable value pins nothing.
        (vec![format!("weir-affinity={stable}")], stale),
        (
            vec![format!("weir-affinity2={canary}; xweir-affinity={canary}")],
            none,
        ),
        (vec![format!("WEIR-AFFINITY={canary}")], none),
        (vec!["garbage;;;=;==".into()], none),
    ];
    for (lines, want) in cases {
        let mut h = HeaderMap::new();
        for l in &lines {
            h.append(header::COOKIE, HeaderValue::from_str(l).unwrap());
        }
        assert_eq!(a.decide(&h, |_| true), want, "{lines:?}");
    }
    // Bytes that are not UTF-8 are just bytes.
    let mut h = HeaderMap::new();
    h.insert(
        header::COOKIE,
        HeaderValue::from_bytes(b"x=\xff\xfe; weir-affinity=\xff").unwrap(),
    );
    assert_eq!(a.decide(&h, |_| true), stale);
    // A pinned backend that may not take traffic pins nothing.
    let mut h = HeaderMap::new();
    h.insert(
        header::COOKIE,
        HeaderValue::from_str(&format!("weir-affinity={canary}")).unwrap(),
    );
    assert_eq!(a.decide(&h, |b| b != CANARY), stale);
}

#[test]
fn set_cookie_values_are_built_once_with_every_attribute() {
    let value = "f64e2a9966767224f7d48a22";
    // Pinned value, computed independently: SHA-256 over the length-prefixed route, generation
    // and backend (Python hashlib), first 12 bytes in hex. A change here would unpin every
    // client in the middle of a rollout.
    let generation = "app-canary 127.0.0.1:9101@1700000000";
    assert_eq!(
        &cookie_value("app", generation.as_bytes(), "app-canary"),
        value.as_bytes()
    );
    let defaults = Affinity::new(
        &AffinitySpec::default(),
        "app",
        generation.as_bytes(),
        &BACKENDS,
        Some(1),
    )
    .unwrap();
    let fresh = Decision::Unpinned { stale: false };
    let stale = Decision::Unpinned { stale: true };
    assert_eq!(
        defaults.set_cookie(fresh, CANARY).unwrap(),
        &format!("weir-affinity={value}; Max-Age=86400; Path=/; HttpOnly; SameSite=Lax")
    );
    assert_eq!(defaults.set_cookie(fresh, STABLE), None);
    assert_eq!(
        defaults.set_cookie(stale, STABLE).unwrap(),
        "weir-affinity=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax"
    );
    assert_eq!(defaults.set_cookie(Decision::Pinned(CANARY), CANARY), None);
    assert!(defaults.pins(CANARY) && !defaults.pins(STABLE) && !defaults.pins(7));
    let spec = AffinitySpec {
        name: "canary".into(),
        max_age: Duration::from_secs(6 * 3600),
        domain: Some(".example.com".into()),
        path: "/app".into(),
        secure: true,
        http_only: false,
        same_site: SameSite::None,
        pin: Pin::All,
    };
    let all = Affinity::new(&spec, "app", generation.as_bytes(), &BACKENDS, None).unwrap();
    let stable =
        String::from_utf8(cookie_value("app", generation.as_bytes(), "app-stable").to_vec())
            .unwrap();
    assert_eq!(
        all.set_cookie(fresh, STABLE).unwrap(),
        &format!(
            "canary={stable}; Max-Age=21600; Path=/app; Domain=.example.com; Secure; SameSite=None"
        )
    );
    assert_eq!(
        all.set_cookie(stale, 5).unwrap(),
        "canary=; Max-Age=0; Path=/app; Domain=.example.com; Secure; SameSite=None"
    );
}

#[test]
fn bad_affinity_settings_are_refused_with_every_error() {
    let errors = |spec: AffinitySpec, canary: Option<usize>| -> Vec<String> {
        Affinity::new(&spec, "app", b"g", &BACKENDS, canary)
            .unwrap_err()
            .iter()
            .map(|e| format!("{}: {e}", e.field()))
            .collect()
    };
    assert_eq!(
        errors(
            AffinitySpec {
                name: "bad name".into(),
                max_age: Duration::from_millis(500),
                domain: Some("exa mple.com".into()),
                path: "app;x".into(),
                same_site: SameSite::None,
                ..AffinitySpec::default()
            },
            Some(1)
        ),
        [
            "name: `bad name` is not a valid cookie name (letters, digits and !#$%&'*+-.^_`|~)",
            "max_age: max_age must be at least 1s",
            "domain: `exa mple.com` is not a valid cookie domain",
            "path: `app;x` is not a valid cookie path: it must start with `/` and hold no `;` or control characters",
            "same_site: same_site: none needs secure: true (browsers drop the cookie otherwise)",
        ]
    );
    assert_eq!(
        errors(AffinitySpec::default(), None),
        ["canary: pin: canary needs a canary: name one, or give the route a rollout"]
    );
    assert_eq!(
        errors(AffinitySpec::default(), Some(2)),
        ["canary: pin: canary needs a canary: name one, or give the route a rollout"]
    );
}
