//! Config text -> load + validate: never a panic, a hang or unbounded memory (libFuzzer's
//! `-timeout` and `-rss_limit_mb` watch those), and every refusal names its place: the file,
//! a line and column inside the text, and at least one error.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Relative file names (certificates, policies) resolve under a directory that does not
    // exist, so the target reads nothing but the text.
    let base = Path::new("/nonexistent/weir-fuzz");
    match weir::config::load_str(text, "fuzz.yaml", base) {
        Ok(config) => {
            // What /config shows and policies read.
            serde_json::to_string(&config.spec).expect("a valid config serializes");
            for r in &config.routes {
                assert!(r.backends.iter().any(|b| b.weight > 0), "a route's weights sum to 0");
            }
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "refused without an error");
            let lines = yaml_lines(text);
            for e in &errors.0 {
                assert!(e.line >= 1 && e.column >= 1, "{e}");
                if e.file == "fuzz.yaml" {
                    assert!(e.line <= lines, "{e} is past the end of the text");
                }
                assert!(!e.message.is_empty(), "{e}");
            }
        }
    }
});

/// The lines of `text` as YAML counts them: `\r\n`, `\r`, `\n`, and (YAML 1.1, libyaml)
/// U+0085, U+2028 and U+2029 each end one; the position after the last break is a line too.
fn yaml_lines(text: &str) -> usize {
    let text = text.replace("\r\n", "\n");
    1 + text
        .chars()
        .filter(|c| matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}'))
        .count()
}
