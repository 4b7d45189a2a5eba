//! The split on arbitrary weights, pick modes, sticky keys, cookies, queries and draws
//! (`proxy::split`): never a panic; the index names a backend; a backend of weight 0 gets a
//! request only by an override; the same sticky key always lands on the same backend.
#![no_main]

use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use weir::config::{Condition, Expect, Pick, StickyKey};
use weir::proxy::split::{Override, Table, choose, sticky_draw, sticky_hash};

fuzz_target!(|data: &[u8]| {
    let Some((&shape, rest)) = data.split_first() else {
        return;
    };
    // Up to 8 weights of 0 to 65,535 (4 bytes each would mostly make huge sums; 2 are enough to
    // reach every cycle rule), then the strings.
    let n = usize::from(shape % 8) + 1;
    if rest.len() < 2 * n {
        return;
    }
    let (w, rest) = rest.split_at(2 * n);
    let weights: Vec<u32> = w
        .chunks(2)
        .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])))
        .collect();
    let pick = if shape & 8 != 0 { Pick::RoundRobin } else { Pick::Random };
    let sticky = match shape >> 4 & 3 {
        0 => None,
        1 => Some(StickyKey::Header(HeaderName::from_static("x-user"))),
        _ => Some(StickyKey::Cookie("session".into())),
    };
    let overrides = vec![Override {
        conditions: vec![Condition::Header(
            HeaderName::from_static("x-canary"),
            Expect::Equals("always".into()),
        )]
        .into(),
        backend: n - 1,
    }];
    let Some(table) = Table::new(&weights, overrides, sticky, pick) else {
        assert!(weights.iter().all(|&w| w == 0));
        return;
    };
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();

    let mut parts = rest.split(|&b| b == b'\n');
    let mut headers = HeaderMap::new();
    for name in ["x-user", "cookie", "x-canary"] {
        if let Some(Ok(v)) = parts.next().map(HeaderValue::from_bytes) {
            headers.insert(HeaderName::from_static(name), v);
        }
    }
    let query = parts.next().and_then(|q| std::str::from_utf8(q).ok());
    let draw = parts.next().map_or(0, |d| d.iter().fold(0u64, |a, &b| a.rotate_left(8) ^ u64::from(b)));
    let random = |n: u64| {
        assert_eq!(n, total);
        draw % n
    };

    let first = choose(&table, &headers, query, random);
    assert!(first < weights.len());
    let overridden = headers.get("x-canary").is_some_and(|v| v == "always");
    assert!(weights[first] > 0 || overridden, "weight 0 picked: {weights:?}");
    let keyed = match &headers.get("x-user") {
        Some(k) => Some(k.as_bytes()),
        None => None,
    };
    if let Some(key) = keyed {
        assert!(sticky_draw(sticky_hash(key), total) < total);
    }
    let sticky_header = shape >> 4 & 3 == 1 && headers.contains_key("x-user");
    let sticky_cookie = shape >> 4 & 3 >= 2 && headers.contains_key(header::COOKIE);
    if sticky_header || sticky_cookie || overridden {
        // Another draw must not move a keyed request (a cookie without `session=` is unkeyed,
        // so only the header case and overrides are asserted exactly).
        let again = choose(&table, &headers, query, |n| (draw / 7) % n);
        if sticky_header || overridden {
            assert_eq!(first, again, "the same key moved");
        }
    }
});
