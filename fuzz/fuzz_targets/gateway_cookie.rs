//! `Cookie` header bytes -> the affinity cookie's values and the pin: never a panic, every value
//! is a slice of the header, and a pin names a backend that pins.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir::proxy::affinity::{Affinity, AffinitySpec, Decision, cookie_value, cookie_values};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = http::HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = http::HeaderMap::new();
    headers.append(http::header::COOKIE, value.clone());
    headers.append(http::header::COOKIE, value);
    for v in cookie_values(&headers, b"weir-affinity") {
        assert!(v.len() <= data.len());
    }
    let a = Affinity::new(
        &AffinitySpec::default(),
        "app",
        b"g",
        &["stable", "canary"],
        Some(1),
    )
    .unwrap();
    match a.decide(&headers, |_| true) {
        Decision::Pinned(b) => {
            assert_eq!(b, 1, "pin: canary pins only the canary");
            let want = cookie_value("app", b"g", "canary");
            assert!(data.windows(want.len()).any(|w| w == want));
        }
        Decision::Unpinned { .. } => {}
    }
});
