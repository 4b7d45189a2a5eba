//! Located errors: [`ConfigError`] (`FILE:LINE:COL: path: message`), the list of them, and the
//! [`Diagnostics`] that collects them while a file is decoded and validated.

use std::fmt;

use super::scan::Positions;

/// One problem in a config file, located.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Field path such as `routes[0].backends[1].weight`; empty for the whole file.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in one config file, in file order where positions are known.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Collects located errors for one file. Errors are located through the file's [`Positions`]:
/// a path such as `routes[0].backends[1].weight` at the nearest enclosing field that has one.
pub(super) struct Diagnostics {
    file: String,
    positions: Positions,
    pub(super) errors: Vec<ConfigError>,
}

impl Diagnostics {
    pub(super) fn file(&self) -> &str {
        &self.file
    }

    pub(super) fn new(file: &str, positions: Positions) -> Self {
        Diagnostics {
            file: file.to_owned(),
            positions,
            errors: Vec::new(),
        }
    }

    /// Records `message` at `path`, located at the nearest enclosing field that has a position.
    pub(super) fn error(&mut self, path: &str, message: impl Into<String>) {
        let (line, column) = self.locate(path);
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line,
            column,
            path: path.to_owned(),
            message: message.into(),
        });
    }

    pub(super) fn locate(&self, path: &str) -> (usize, usize) {
        self.positions.locate(path)
    }
}

pub(super) fn join_path(prefix: &str, rest: &str) -> String {
    if prefix.is_empty() {
        rest.to_owned()
    } else if rest.is_empty() {
        prefix.to_owned()
    } else if rest.starts_with('[') {
        format!("{prefix}{rest}")
    } else {
        format!("{prefix}.{rest}")
    }
}

/// `(line, column)`, or the end of the text's last line when a parser places an error (at the
/// end of the stream) on a line past it, which no editor can jump to.
pub(super) fn within_text(text: &str, line: usize, column: usize) -> (usize, usize) {
    let breaks = |c: char| matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}');
    let normalized = text.replace("\r\n", "\n");
    let lines: Vec<&str> = normalized.split(breaks).collect();
    if line <= lines.len() {
        return (line, column);
    }
    let last = lines.last().map_or(0, |l| l.chars().count());
    (lines.len(), last + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parse_error_at_the_end_of_the_stream_stays_inside_the_text() {
        assert_eq!(within_text("\nam: x\nT", 4, 1), (3, 2));
        assert_eq!(within_text("a\r\nb\rc", 3, 1), (3, 1));
        assert_eq!(within_text("a\r\nb\rc", 4, 1), (3, 2));
    }
}
