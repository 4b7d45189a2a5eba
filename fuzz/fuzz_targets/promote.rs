//! The promotion's edit of a config's text (the text comes from the Git repository): never a
//! panic, whatever the text and the indexes; an edit keeps every line before the first value
//! it changes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir::rollout::fleet::promote::{Promotion, promote};

fuzz_target!(|data: &[u8]| {
    let Some((&indexes, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let p = Promotion {
        stable_upstream: usize::from(indexes & 3),
        endpoints: vec!["10.0.0.9:80".to_owned(), "b:1".to_owned()],
        route: usize::from((indexes >> 2) & 3),
        canary_backend: usize::from((indexes >> 4) & 3),
    };
    if let Ok(edited) = promote(text, &p) {
        let same = text.bytes().zip(edited.bytes()).take_while(|(a, b)| a == b).count();
        let kept_lines = text[..same].matches('\n').count();
        assert!(kept_lines <= text.matches('\n').count());
    }
});
