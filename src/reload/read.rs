//! Reading a config file for a reload: the file side of the pipeline. [`read_file`] reads and
//! validates it (through `config::read_file`, the one reader) and names the attempt; an attempt's
//! identity is the file's sha256 plus a digest of everything it read, so [`read_if_changed`]
//! can tell, without parsing anything, that the file is the attempt last made.

use std::path::Path;
use std::time::SystemTime;

use super::revision::{self, Revision};
use crate::config::{self, Config, ConfigErrors, Input};

/// The identity of one reload attempt: the same bytes, reading the same inputs, are the same
/// attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    Read {
        /// The file's sha256 and the fingerprint of its inputs.
        identity: String,
        /// What the file read besides itself, to fingerprint them again.
        inputs: Vec<Input>,
    },
    /// The file could not be read, for this reason.
    Unreadable(String),
}

/// The result of reading a config file.
pub type ReadResult = Result<Candidate, Box<Refused>>;

/// A config file that cannot serve: why, and (when its bytes could be read) what was refused.
#[derive(Debug)]
pub struct Refused {
    pub revision: Option<Revision>,
    pub errors: ConfigErrors,
}

/// Which attempt `result` would be.
pub fn attempt_of(result: &ReadResult) -> Attempt {
    match result {
        Ok(c) => Attempt::Read {
            identity: c.revision.identity.clone(),
            inputs: c.revision.inputs.clone(),
        },
        Err(refused) => match &refused.revision {
            Some(r) => Attempt::Read {
                identity: r.identity.clone(),
                inputs: r.inputs.clone(),
            },
            None => Attempt::Unreadable(refused.errors.to_string()),
        },
    }
}

/// The identity of a file with `sha256` reading `inputs` as they are now.
fn identity(sha256: &str, inputs: &[Input]) -> String {
    if inputs.is_empty() {
        return sha256.to_owned();
    }
    let mut all = Vec::with_capacity(32 * inputs.len());
    for input in inputs {
        all.extend_from_slice(&input.fingerprint());
    }
    format!("{sha256}+{}", config::sha256_hex(&all))
}

/// Reads the file at `path` unless it is `last` again (the same bytes, whose inputs have the
/// same content, or the same read error): then `None`, without parsing or validating anything.
/// This is what keeps the periodic poll cheap on a large config.
pub fn read_if_changed(path: &Path, last: &Attempt) -> Option<ReadResult> {
    let unchanged = match (config::read_bytes(path), last) {
        (
            Ok(bytes),
            Attempt::Read {
                identity: id,
                inputs,
            },
        ) => identity(&revision::sha256_hex(&bytes), inputs) == *id,
        (Err(e), Attempt::Unreadable(last)) => config::unreadable(path, &e).to_string() == *last,
        _ => false,
    };
    (!unchanged).then(|| read_file(path))
}

/// A config read from somewhere, with where it came from.
pub struct Candidate {
    pub config: Config,
    pub revision: Revision,
}

impl Candidate {
    /// A config from text that is not a file (the demo, benchmarks); its revision has no Git
    /// commit.
    pub fn from_str(text: &str, name: &str) -> Result<Candidate, ConfigErrors> {
        let loaded = config::load_text(text, name, Path::new("."));
        let sha256 = revision::sha256_hex(text.as_bytes());
        Ok(Candidate {
            config: loaded.result?,
            revision: Revision {
                identity: identity(&sha256, &loaded.inputs),
                inputs: loaded.inputs,
                sha256,
                git_commit: None,
                loaded_at: SystemTime::now(),
            },
        })
    }
}

/// Reads and validates the file at `path`. On failure the revision (when the bytes could be
/// read) still names what was refused.
pub fn read_file(path: &Path) -> ReadResult {
    let read = match config::read_file(path) {
        Ok(r) => r,
        Err(errors) => {
            return Err(Box::new(Refused {
                revision: None,
                errors,
            }));
        }
    };
    let revision = Revision {
        identity: identity(&read.sha256, &read.loaded.inputs),
        inputs: read.loaded.inputs,
        sha256: read.sha256,
        git_commit: revision::git_commit(path),
        loaded_at: SystemTime::now(),
    };
    match read.loaded.result {
        Ok(config) => Ok(Candidate { config, revision }),
        Err(errors) => Err(Box::new(Refused {
            revision: Some(revision),
            errors,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(path: &Path) -> Attempt {
        attempt_of(&read_file(path))
    }

    #[test]
    fn an_unchanged_file_and_unchanged_inputs_are_not_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.yaml");
        let policy = dir.path().join("p.rego");
        std::fs::write(&policy, "package weir\n").unwrap();
        std::fs::write(
            &path,
            "listeners: [{ name: main, address: 127.0.0.1:0 }]\npolicies: [p.rego]\n",
        )
        .unwrap();
        let last = attempt(&path);
        assert!(matches!(&last, Attempt::Read { inputs, .. } if inputs.len() == 1));
        assert!(read_if_changed(&path, &last).is_none());
        // A file it reads changed: a new attempt, the config file's bytes unchanged.
        std::fs::write(&policy, "package weir\n\nx := 1\n").unwrap();
        assert!(read_if_changed(&path, &last).is_some());
        let last = attempt(&path);
        assert!(read_if_changed(&path, &last).is_none());
        // The same read error twice is one attempt; another error is a new one.
        std::fs::remove_file(&path).unwrap();
        let gone = attempt(&path);
        assert!(matches!(&gone, Attempt::Unreadable(e) if e.contains("No such file")));
        assert!(read_if_changed(&path, &gone).is_none());
        std::fs::create_dir(&path).unwrap();
        let dir_error = read_if_changed(&path, &gone).expect("another error is a new attempt");
        assert!(attempt_of(&dir_error) != gone);
    }
}
