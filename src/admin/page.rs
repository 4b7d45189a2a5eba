//! The live page at the admin root: one self-contained HTML file (`page.html`: inline CSS and
//! script, no outside script, style or font) that polls `stats` and `history` every second and
//! draws each route's backends (weight bar, share, requests, req/s, success rate, p50, p99),
//! the rollout's state and step, and the last reloads.
//!
//! Its Content-Security-Policy allows exactly the page's own inline style and script (by their
//! SHA-256) and fetches from the admin origin: nothing else loads, even if a name in the config
//! held markup (the script also builds every element with `textContent`, never `innerHTML`).

use std::sync::OnceLock;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;
use sha2::{Digest, Sha256};

/// The page, as served.
pub const HTML: &str = include_str!("page.html");

/// The text between `open` and `close` in the page (its one `<style>` or `<script>`).
fn inline(open: &str, close: &str) -> &'static str {
    let start = HTML.find(open).expect("the page has the element") + open.len();
    let end = start + HTML[start..].find(close).expect("the element is closed");
    &HTML[start..end]
}

fn csp_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    // Base64 by hand (standard alphabet, padded): the one place weir needs it.
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::from("'sha256-");
    for chunk in digest.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out.push('\'');
    out
}

/// The page's Content-Security-Policy.
pub fn content_security_policy() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        format!(
            "default-src 'none'; connect-src 'self'; style-src {}; script-src {}; \
             img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            csp_hash(inline("<style>", "</style>")),
            csp_hash(inline("<script>", "</script>")),
        )
    })
}

pub fn response() -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(HTML.as_bytes())));
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_str(content_security_policy())
            .expect("the policy is ASCII without control characters"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csp_hashes_are_base64_of_sha256() {
        // sha256("") in base64, as browsers compute it for an empty element.
        assert_eq!(
            csp_hash(""),
            "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='"
        );
        assert_eq!(
            csp_hash("abc"),
            "'sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0='"
        );
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for outside in ["http://", "https://", "src=", "@import", "url("] {
            assert!(!HTML.contains(outside), "the page mentions {outside}");
        }
        assert!(HTML.len() < 16 * 1024, "{} bytes", HTML.len());
        assert!(content_security_policy().contains("script-src 'sha256-"));
    }
}
