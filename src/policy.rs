//! Policies: the team's Rego rules (Open Policy Agent's language, run by regorus) that every
//! candidate config must pass before it serves, on reload and in `weir check`.
//!
//! Each file of `policies:` is compiled when the config is validated (so a broken policy is a
//! config error at its own file and line, and a changed policy is a changed config); the
//! candidate is then evaluated with `input = {"config": <the effective config>, "previous":
//! <the running one, or null>}`, and every string in `data.weir.deny` refuses it. Evaluation runs
//! off the request path, under a time limit; an evaluation that fails refuses the candidate
//! (never "fail open").

use std::num::NonZeroU32;
use std::time::Duration;

use regorus::utils::limits::ExecutionTimerConfig;

use crate::config::{ConfigError, ConfigErrors, ConfigSpec};

/// An evaluation that runs longer is stopped and the candidate refused.
pub const TIME_LIMIT: Duration = Duration::from_secs(1);

/// The compiled policies of one config.
#[derive(Clone, Debug)]
pub struct Policies {
    engine: regorus::Engine,
    /// Where refusals are reported: the config file and its `policies` field.
    file: String,
    line: usize,
    column: usize,
}

/// A policy file that did not compile: its location and what is wrong.
#[derive(Debug, PartialEq, Eq)]
pub struct CompileError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl Policies {
    /// Compiles `(name, source)` pairs; `origin` is the config file and the position of its
    /// `policies` field.
    pub fn compile(
        sources: Vec<(String, String)>,
        origin: (String, usize, usize),
    ) -> Result<Policies, Vec<CompileError>> {
        let mut engine = regorus::Engine::new();
        engine.set_execution_timer_config(ExecutionTimerConfig {
            limit: TIME_LIMIT,
            check_interval: NonZeroU32::new(64).expect("64 is not zero"),
        });
        let mut errors = Vec::new();
        for (name, text) in sources {
            // Rego v1 first; a file in the older v0 syntax (`deny[msg] { ... }`) is accepted
            // too. When neither parses, the v1 error is the one to show.
            if let Err(e) = engine.add_policy(name.clone(), text.clone()) {
                engine.set_rego_v0(true);
                let v0 = engine.add_policy(name.clone(), text);
                engine.set_rego_v0(false);
                if v0.is_err() {
                    errors.push(compile_error(&name, &e.to_string()));
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let (file, line, column) = origin;
        Ok(Policies {
            engine,
            file,
            line,
            column,
        })
    }

    /// Evaluates the policies on `config`, with `previous` the config it would replace. Each deny
    /// message, or the evaluation's failure, is one error.
    pub fn check(
        &self,
        config: &ConfigSpec,
        previous: Option<&ConfigSpec>,
    ) -> Result<(), ConfigErrors> {
        let input = serde_json::json!({ "config": config, "previous": previous });
        let denials = self
            .deny(&input.to_string())
            .unwrap_or_else(|e| vec![format!("the policies could not be evaluated: {e}")]);
        if denials.is_empty() {
            return Ok(());
        }
        Err(ConfigErrors(
            denials
                .into_iter()
                .map(|message| ConfigError {
                    file: self.file.clone(),
                    line: self.line,
                    column: self.column,
                    path: "policies".to_owned(),
                    message: format!("denied: {message}"),
                })
                .collect(),
        ))
    }

    /// The strings of `data.weir.deny`, sorted (a Rego set has no order); none when no policy
    /// defines it.
    fn deny(&self, input: &str) -> Result<Vec<String>, String> {
        // Each evaluation gets its own copy: the compiled modules are shared, the input is not.
        let mut engine = self.engine.clone();
        engine.set_input_json(input).map_err(|e| e.to_string())?;
        let results = engine
            .eval_query("data.weir.deny".to_owned(), false)
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for result in &results.result {
            for expr in &result.expressions {
                let items = match &expr.value {
                    regorus::Value::Set(s) => s.iter().cloned().collect(),
                    regorus::Value::Array(a) => a.iter().cloned().collect(),
                    regorus::Value::Undefined => Vec::new(),
                    other => {
                        return Err(format!(
                            "data.weir.deny must be a set of strings, found {other}"
                        ));
                    }
                };
                for item in items {
                    out.push(match item {
                        regorus::Value::String(s) => s.to_string(),
                        other => other.to_string(),
                    });
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

/// regorus reports `--> FILE:LINE:COL`, the source line, and `error: MESSAGE`.
fn compile_error(file: &str, text: &str) -> CompileError {
    let location = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("--> "))
        .and_then(|loc| {
            let mut parts = loc.rsplitn(3, ':');
            let column = parts.next()?.trim().parse().ok()?;
            let line = parts.next()?.trim().parse().ok()?;
            Some((line, column))
        });
    let message = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .unwrap_or(text.trim())
        .to_owned();
    let (line, column) = location.unwrap_or((1, 1));
    CompileError {
        file: file.to_owned(),
        line,
        column,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled(rego: &str) -> Result<Policies, Vec<CompileError>> {
        Policies::compile(
            vec![("p.rego".into(), rego.into())],
            ("weir.yaml".into(), 9, 1),
        )
    }

    #[test]
    fn a_syntax_error_is_located_in_the_policy_file() {
        let err =
            compiled("package weir\n\ndeny contains msg if {\n  msg := 1 +\n}\n").unwrap_err();
        assert_eq!(
            err,
            [CompileError {
                file: "p.rego".into(),
                line: 4,
                column: 7,
                message: "expecting `}` while parsing set".into()
            }]
        );
    }

    #[test]
    fn v0_and_v1_syntax_both_deny() {
        let p = Policies::compile(
            vec![
                (
                    "v0.rego".into(),
                    "package weir\n\ndeny[msg] {\n  input.config.a > 1\n  msg := \"a too big\"\n}\n".into(),
                ),
                (
                    "v1.rego".into(),
                    "package weir\n\nimport rego.v1\n\ndeny contains \"b too big\" if input.config.b > 1\n".into(),
                ),
            ],
            ("weir.yaml".into(), 1, 1),
        )
        .unwrap();
        assert_eq!(
            p.deny(r#"{"config": {"a": 2, "b": 2}}"#),
            Ok(vec!["a too big".to_owned(), "b too big".to_owned()])
        );
        assert_eq!(p.deny(r#"{"config": {"a": 0, "b": 0}}"#), Ok(vec![]));
    }

    #[test]
    fn no_deny_rule_means_no_denial() {
        let p = compiled("package other\n\nallow := true\n").unwrap();
        assert_eq!(p.deny("{}"), Ok(vec![]));
    }
}
