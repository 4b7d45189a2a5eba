//! The config pipeline, from a file to a validated [`Config`]: read the bytes (at most
//! [`MAX_FILE_BYTES`]), scan the text for positions and limits, decode it into a spec, read the
//! files the spec names, and validate. Only `files` reads anything; the other steps are pure.

use std::path::Path;

use super::decode::parse;
use super::diag::{ConfigError, ConfigErrors, Diagnostics, within_text};
use super::files::{self, Files, Input};
use super::model::Config;
use super::scan::scan;
use super::validate::validate;

/// The largest config file weir reads: a bigger one is refused before it is parsed.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// A config file read: the sha256 of its bytes and what loading them gave.
pub struct FileLoad {
    pub sha256: String,
    pub loaded: Loaded,
}

/// The one reader of config files (`weir check`, `weir run`, every reload): reads the file at
/// `path` (a regular file of at most [`MAX_FILE_BYTES`]) and loads it. `Err` when it cannot be
/// read.
pub fn read_file(path: &Path) -> Result<FileLoad, ConfigErrors> {
    let bytes = read_bytes(path).map_err(|e| unreadable(path, &e))?;
    let sha256 = files::sha256_hex(&bytes);
    let file = path.display().to_string();
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let loaded = match std::str::from_utf8(&bytes) {
        Ok(text) => load_text(text, &file, base_dir),
        Err(e) => Loaded {
            result: Err(not_utf8(&file, &e)),
            inputs: Vec::new(),
        },
    };
    Ok(FileLoad { sha256, loaded })
}

/// The bytes of the config file at `path`, with the guards of [`read_file`].
pub fn read_bytes(path: &Path) -> std::io::Result<Vec<u8>> {
    files::read_limited(path, MAX_FILE_BYTES)
}

/// Reads and validates the file at `path`. A missing or unreadable file is an error too.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    read_file(path)?.loaded.result
}

/// The error for a config file that cannot be read.
pub fn unreadable(path: &Path, e: &std::io::Error) -> ConfigErrors {
    ConfigErrors(vec![ConfigError {
        file: path.display().to_string(),
        line: 1,
        column: 1,
        path: String::new(),
        message: format!("cannot read the config file: {e}"),
    }])
}

/// The error for a config file whose bytes are not UTF-8.
fn not_utf8(file: &str, e: &std::str::Utf8Error) -> ConfigErrors {
    ConfigErrors(vec![ConfigError {
        file: file.to_owned(),
        line: 1,
        column: 1,
        path: String::new(),
        message: format!("the file is not UTF-8: {e}"),
    }])
}

/// Parses and validates `text`. `file` names it in errors; relative paths inside it (certificates,
/// policies) are resolved against `base_dir`.
pub fn load_str(text: &str, file: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    load_text(text, file, base_dir).result
}

/// A config's text, loaded, with what it read besides itself (also when it is refused: its
/// inputs decide whether a later try is a new attempt).
pub struct Loaded {
    pub result: Result<Config, ConfigErrors>,
    pub inputs: Vec<Input>,
}

/// [`load_str`], keeping the inputs: scan, decode, read the named files, validate.
pub fn load_text(text: &str, file: &str, base_dir: &Path) -> Loaded {
    let positions = match scan(text) {
        Ok(p) => p,
        Err(limit) => {
            let error = ConfigError {
                file: file.to_owned(),
                line: limit.line,
                column: limit.column,
                path: String::new(),
                message: limit.message,
            };
            return Loaded {
                result: Err(ConfigErrors(vec![error])),
                inputs: Vec::new(),
            };
        }
    };
    let mut diag = Diagnostics::new(file, positions);
    let mut inputs = Vec::new();
    let config = parse(text, &mut diag).and_then(|(spec, parsed)| {
        let files = Files::read(&spec, base_dir);
        inputs = files.inputs().to_vec();
        validate(spec, &parsed, &files, base_dir, &mut diag)
    });
    let result = match config {
        Some(c) if diag.errors.is_empty() => Ok(c),
        _ => {
            let mut errors = diag.errors;
            for e in errors.iter_mut().filter(|e| e.file == file) {
                (e.line, e.column) = within_text(text, e.line, e.column);
            }
            errors.sort_by_key(|e| (e.line, e.column));
            Err(ConfigErrors(errors))
        }
    };
    Loaded { result, inputs }
}
