//! The admin API's bearer token, read from the file or the environment variable that
//! `admin.token_file` / `admin.token_env` name. Like a certificate, the file is an input of the
//! config: a change of it is a reload, so a rotated Kubernetes Secret takes effect without a
//! restart. The token never appears in `/config`, in logs or in `Debug` output.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::files::Files;
use super::schema::{AdminReads, AdminSpec};

/// Shorter tokens are refused: they are too easy to guess.
pub const MIN_TOKEN_CHARS: usize = 16;

/// A bearer token. Compared in constant time, through SHA-256 digests so that neither the
/// content nor the length of the token shows in the comparison's timing.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken {
    digest: Arc<[u8; 32]>,
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(redacted)")
    }
}

impl AdminToken {
    pub fn new(token: &str) -> AdminToken {
        AdminToken {
            digest: Arc::new(Sha256::digest(token.as_bytes()).into()),
        }
    }

    /// Whether `presented` is this token, in time that does not depend on where they differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let other: [u8; 32] = Sha256::digest(presented).into();
        let difference = self
            .digest
            .iter()
            .zip(other.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        // `black_box` keeps the optimizer from turning the fold into an early exit.
        std::hint::black_box(difference) == 0
    }
}

/// What went wrong, at which field of `admin`.
#[derive(Debug, PartialEq, Eq)]
pub struct TokenError {
    pub field: &'static str,
    pub message: String,
}

/// The token the admin section names (`None` when none is configured). A `token_file` was read
/// with the config's other files (it is one of its inputs, so a rotated Secret is a reload);
/// `token_env` is read from the environment.
pub fn token(
    admin: &AdminSpec,
    files: &Files,
    base_dir: &Path,
) -> Result<Option<AdminToken>, TokenError> {
    let error = |field, message: String| TokenError { field, message };
    let (text, file) = match (&admin.token_file, &admin.token_env) {
        (Some(_), Some(_)) => {
            return Err(error(
                "admin.token_env",
                "set either token_file or token_env, not both".to_owned(),
            ));
        }
        (Some(name), None) => {
            let path = base_dir.join(name);
            let text = files
                .get(&path)
                .and_then(|b| String::from_utf8(b.to_vec()).map_err(std::io::Error::other))
                .map_err(|e| {
                    error(
                        "admin.token_file",
                        format!("cannot read the token file {}: {e}", path.display()),
                    )
                })?;
            (text, Some(path))
        }
        (None, Some(var)) => {
            let text = std::env::var(var).map_err(|e| {
                error(
                    "admin.token_env",
                    format!("the environment variable {var} holds no token: {e}"),
                )
            })?;
            (text, None)
        }
        (None, None) => {
            if admin.reads == AdminReads::Token {
                return Err(error(
                    "admin.reads",
                    "`token` needs a token: set admin.token_file or admin.token_env".to_owned(),
                ));
            }
            return Ok(None);
        }
    };
    let field = if file.is_some() {
        "admin.token_file"
    } else {
        "admin.token_env"
    };
    // A Secret written with `echo` ends in a newline; the token is the text without it.
    let token = text.trim();
    if token.chars().count() < MIN_TOKEN_CHARS {
        return Err(error(
            field,
            format!(
                "the token has {} characters, expected at least {MIN_TOKEN_CHARS}",
                token.chars().count()
            ),
        ));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(error(
            field,
            "the token must be printable ASCII without spaces (it travels in an HTTP header)"
                .to_owned(),
        ));
    }
    Ok(Some(AdminToken::new(token)))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::ConfigSpec;

    /// The token of `admin` with files under `dir`, and the file the config lists for it.
    fn read(
        admin: &AdminSpec,
        dir: &Path,
    ) -> Result<(Option<AdminToken>, Option<PathBuf>), TokenError> {
        let spec = ConfigSpec {
            listeners: Vec::new(),
            admin: admin.clone(),
            upstreams: Vec::new(),
            routes: Vec::new(),
            policies: Vec::new(),
            limits: Default::default(),
            rollout_state: None,
            access_log: None,
            tracing: None,
            reload: Default::default(),
            fleet: None,
        };
        let files = Files::read(&spec, dir);
        let listed = files
            .inputs()
            .iter()
            .find_map(|i| i.path().map(Path::to_path_buf));
        token(admin, &files, dir).map(|t| (t, listed))
    }

    fn admin(file: Option<&str>, env: Option<&str>, reads: AdminReads) -> AdminSpec {
        AdminSpec {
            token_file: file.map(str::to_owned),
            token_env: env.map(str::to_owned),
            reads,
            ..AdminSpec::default()
        }
    }

    #[test]
    fn a_token_matches_only_itself() {
        let t = AdminToken::new("s3cret-s3cret-s3cret");
        assert!(t.matches(b"s3cret-s3cret-s3cret"));
        assert!(!t.matches(b"s3cret-s3cret-s3creT"));
        assert!(!t.matches(b"s3cret-s3cret-s3cret "));
        assert!(!t.matches(b""));
        assert_eq!(format!("{t:?}"), "AdminToken(redacted)");
    }

    #[test]
    fn the_token_file_is_read_trimmed_and_listed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "0123456789abcdef-xyz\n").unwrap();
        let (token, file) =
            read(&admin(Some("token"), None, AdminReads::Open), dir.path()).unwrap();
        assert!(token.unwrap().matches(b"0123456789abcdef-xyz"));
        assert_eq!(file, Some(dir.path().join("token")));
    }

    #[test]
    fn bad_token_settings_name_the_field_and_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("short"), "abc\n").unwrap();
        std::fs::write(dir.path().join("spaced"), "0123456789 abcdefgh").unwrap();
        let cases = [
            (
                admin(Some("short"), None, AdminReads::Open),
                "admin.token_file",
                "the token has 3 characters, expected at least 16",
            ),
            (
                admin(Some("spaced"), None, AdminReads::Open),
                "admin.token_file",
                "the token must be printable ASCII without spaces",
            ),
            (
                admin(Some("missing"), None, AdminReads::Open),
                "admin.token_file",
                "cannot read the token file",
            ),
            (
                admin(Some("short"), Some("X"), AdminReads::Open),
                "admin.token_env",
                "set either token_file or token_env, not both",
            ),
            (
                admin(
                    None,
                    Some("WEIR_TEST_TOKEN_THAT_IS_NOT_SET"),
                    AdminReads::Open,
                ),
                "admin.token_env",
                "the environment variable WEIR_TEST_TOKEN_THAT_IS_NOT_SET holds no token",
            ),
            (
                admin(None, None, AdminReads::Token),
                "admin.reads",
                "`token` needs a token",
            ),
        ];
        for (spec, field, message) in cases {
            let e = read(&spec, dir.path()).unwrap_err();
            assert_eq!(e.field, field, "{e:?}");
            assert!(e.message.contains(message), "{e:?}");
        }
        assert_eq!(
            read(&admin(None, None, AdminReads::Open), dir.path()),
            Ok((None, None))
        );
    }
}
