//! Policies: the team's Rego rules (Open Policy Agent's language, run by regorus) that every
//! candidate config must pass before it serves, at start, on reload and in `weir check`.
//!
//! The policy files are read with the config (so a changed policy is a changed config); each
//! candidate is then checked with `input = {"config": <the effective config>, "previous": <the
//! running one, or null>}`, and every string in `data.weir.deny` refuses it. A file that does
//! not compile is refused at its own file and line. Nothing fails open: a policy that cannot be
//! compiled or evaluated refuses the candidate.
//!
//! A policy file is a program, and a hostile or careless one can run for minutes (regorus has
//! no time limit while compiling: 21-deep nested arrays took 71 s), allocate without bound
//! (`numbers.range(1, 3e8)` took 7 GB and aborted weir) or overflow a stack. So compiling and
//! evaluating run in a child process, the same binary started as `weir policy-sandbox`, with
//! its address space capped at [`MEMORY_LIMIT`] and killed after [`TIME_LIMIT`]; the child
//! reads the sources and the input as JSON on stdin and writes its [`Outcome`] on stdout.
//! regorus's own memory limit was not an option: it needs regorus's fork of mimalloc as the
//! global allocator and counts the whole process's allocations, traffic included.

use std::io::{Read, Write};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use regorus::utils::limits::ExecutionTimerConfig;
use serde::{Deserialize, Serialize};

use super::diag::{ConfigError, ConfigErrors};
use super::schema::ConfigSpec;

/// Compiling and evaluating the policies of one candidate, together, must end within this
/// (wall clock, the child's start included); the child is killed after it.
pub const TIME_LIMIT: Duration = Duration::from_secs(2);
/// Evaluation alone stops after this (regorus's own timer, which gives a clearer message).
pub const EVAL_TIME_LIMIT: Duration = Duration::from_secs(1);
/// The child's address space: allocations past it fail and the child ends.
pub const MEMORY_LIMIT: u64 = 1024 * 1024 * 1024;
/// The most the child may answer (denial messages included).
const MAX_ANSWER_BYTES: u64 = 4 * 1024 * 1024;
/// The subcommand that runs the child.
pub const SANDBOX_COMMAND: &str = "policy-sandbox";

/// The policy files of one config, read but not compiled (compiling runs in the sandbox).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policies {
    /// (file name as shown in errors, source text), in the order of `policies:`.
    sources: Vec<(String, String)>,
    /// Where refusals are reported: the config file and its `policies` field.
    file: String,
    line: usize,
    column: usize,
}

/// A policy file that did not compile: its location and what is wrong.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompileError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// What the sandbox answers.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The sorted strings of `data.weir.deny` (none: the candidate passes).
    Denied(Vec<String>),
    /// Some files did not compile.
    Invalid(Vec<CompileError>),
    /// Evaluation failed (its time limit, a runtime error).
    Failed(String),
}

#[derive(Serialize, Deserialize)]
struct Request {
    sources: Vec<(String, String)>,
    input: String,
}

/// Why the sandbox gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot start the policy sandbox {}: {source}", program.display())]
    Start {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("compiling and evaluating the policies took longer than {TIME_LIMIT:?}")]
    Timeout,
    #[error("the policies needed more than the sandbox's {} MiB of memory", MEMORY_LIMIT >> 20)]
    Memory,
    #[error("the policy sandbox failed ({status}){}", if detail.is_empty() { String::new() } else { format!(": {detail}") })]
    Crashed { status: String, detail: String },
}

impl Policies {
    /// The policy `sources` of a config; `origin` is the config file and the position of its
    /// `policies` field.
    pub fn new(sources: Vec<(String, String)>, origin: (String, usize, usize)) -> Policies {
        let (file, line, column) = origin;
        Policies {
            sources,
            file,
            line,
            column,
        }
    }

    /// Checks `config`, with `previous` the config it would replace, in the sandbox. Each deny
    /// message, each compile error, or the failure, is one error. Blocks up to [`TIME_LIMIT`]:
    /// call it off the async runtime's worker threads.
    pub fn check(
        &self,
        config: &ConfigSpec,
        previous: Option<&ConfigSpec>,
    ) -> Result<(), ConfigErrors> {
        let input = serde_json::json!({ "config": config, "previous": previous }).to_string();
        let outcome = run_sandbox(&Request {
            sources: self.sources.clone(),
            input,
        })
        .unwrap_or_else(|e| Outcome::Failed(e.to_string()));
        let denials = match outcome {
            Outcome::Denied(d) if d.is_empty() => return Ok(()),
            Outcome::Denied(d) => d,
            Outcome::Failed(e) => vec![format!("the policies could not be evaluated: {e}")],
            Outcome::Invalid(errors) => {
                return Err(ConfigErrors(
                    errors
                        .into_iter()
                        .map(|e| {
                            let i = self.sources.iter().position(|(n, _)| *n == e.file);
                            ConfigError {
                                path: format!("policies[{}]", i.unwrap_or(0)),
                                message: format!("invalid Rego: {}", e.message),
                                file: e.file,
                                line: e.line,
                                column: e.column,
                            }
                        })
                        .collect(),
                ));
            }
        };
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

    /// The outcome of [`check`](Policies::check) computed in this process, without the
    /// sandbox's limits: to measure what the sandbox costs, never for an untrusted policy.
    pub fn in_process(&self, config: &ConfigSpec, previous: Option<&ConfigSpec>) -> Outcome {
        let input = serde_json::json!({ "config": config, "previous": previous }).to_string();
        evaluate(self.sources.clone(), &input)
    }
}

// === the parent's side ===

static PROGRAM: OnceLock<PathBuf> = OnceLock::new();

/// Runs the sandbox as `program` instead of this executable: for a test binary that embeds weir,
/// whose own executable is not weir. The first call wins.
pub fn use_sandbox_program(program: &Path) {
    let _ = PROGRAM.set(program.to_path_buf());
}

fn program() -> PathBuf {
    PROGRAM
        .get()
        .cloned()
        // /proc/self/exe still runs after the binary on disk was replaced by an upgrade.
        .unwrap_or_else(|| PathBuf::from("/proc/self/exe"))
}

fn run_sandbox(request: &Request) -> Result<Outcome, SandboxError> {
    use std::os::unix::process::CommandExt;
    let program = program();
    let mut command = Command::new(&program);
    // SAFETY: between fork and exec only setrlimit runs, which is async-signal-safe. The limits
    // are set before exec, not by the child itself: a process capped after it started has
    // already reserved address space (mimalloc's arena), and its stack then cannot grow.
    unsafe {
        command.pre_exec(|| {
            let memory = libc::rlimit {
                rlim_cur: MEMORY_LIMIT,
                rlim_max: MEMORY_LIMIT,
            };
            let cpu = libc::rlimit {
                rlim_cur: TIME_LIMIT.as_secs() + 1,
                rlim_max: TIME_LIMIT.as_secs() + 2,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &memory) != 0
                || libc::setrlimit(libc::RLIMIT_CPU, &cpu) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .arg(SANDBOX_COMMAND)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("RUST_LOG")
        .spawn()
        .map_err(|source| SandboxError::Start {
            program: program.clone(),
            source,
        })?;
    let body = serde_json::to_vec(request).expect("a request always serializes");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    // The child reads all of its input before it works; a writer thread keeps a child that
    // never reads (or dies) from blocking this one.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = (&mut stdout).take(MAX_ANSWER_BYTES).read_to_end(&mut out);
        let mut err = Vec::new();
        let _ = (&mut stderr).take(4096).read_to_end(&mut err);
        let _ = tx.send((out, err));
    });
    // The reader ends when the child closes its pipes, that is when it exits (or is killed).
    let answer = rx.recv_timeout(TIME_LIMIT);
    if answer.is_err() {
        let _ = child.kill();
    }
    let status = child.wait();
    let _ = writer.join();
    let Ok((out, err)) = answer else {
        return Err(SandboxError::Timeout);
    };
    let status = status.map_err(|e| SandboxError::Crashed {
        status: e.to_string(),
        detail: String::new(),
    })?;
    let err = String::from_utf8_lossy(&err);
    if status.success()
        && let Ok(outcome) = serde_json::from_slice::<Outcome>(&out)
    {
        return Ok(outcome);
    }
    if err.contains("memory allocation of") {
        return Err(SandboxError::Memory);
    }
    Err(SandboxError::Crashed {
        status: status.to_string(),
        detail: err.lines().last().unwrap_or_default().trim().to_owned(),
    })
}

// === the child's side ===

/// `weir policy-sandbox`: reads a request on stdin, compiles and evaluates, writes the
/// [`Outcome`] on stdout. Started by [`Policies::check`] under its limits.
pub fn sandbox_main() -> ExitCode {
    // Run only under the limits weir sets when it starts the sandbox.
    let mut memory = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct it is given.
    let known = unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut memory) } == 0;
    if !known || memory.rlim_cur > MEMORY_LIMIT {
        eprintln!("weir {SANDBOX_COMMAND} runs only as started by weir, under its limits");
        return ExitCode::FAILURE;
    }
    let mut input = Vec::new();
    if std::io::stdin().read_to_end(&mut input).is_err() {
        return ExitCode::FAILURE;
    }
    let Ok(request) = serde_json::from_slice::<Request>(&input) else {
        eprintln!("the sandbox's request is not valid JSON");
        return ExitCode::FAILURE;
    };
    drop(input);
    let outcome = evaluate(request.sources, &request.input);
    let answer = serde_json::to_vec(&outcome).expect("an outcome always serializes");
    match std::io::stdout().write_all(&answer) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

/// Compiles `sources` and evaluates `data.weir.deny` on `input` (JSON), in this process. The
/// sandbox runs this; so do unit tests.
pub fn evaluate(sources: Vec<(String, String)>, input: &str) -> Outcome {
    let engine = match compile(sources) {
        Ok(e) => e,
        Err(errors) => return Outcome::Invalid(errors),
    };
    match deny(engine, input) {
        Ok(d) => Outcome::Denied(d),
        Err(e) => Outcome::Failed(e),
    }
}

fn compile(sources: Vec<(String, String)>) -> Result<regorus::Engine, Vec<CompileError>> {
    let mut engine = regorus::Engine::new();
    engine.set_execution_timer_config(ExecutionTimerConfig {
        limit: EVAL_TIME_LIMIT,
        check_interval: NonZeroU32::new(64).expect("64 is not zero"),
    });
    let mut errors = Vec::new();
    for (name, text) in sources {
        // Rego v1 first; a file in the older v0 syntax (`deny[msg] { ... }`) is accepted too.
        // When neither parses, the v1 error is the one to show.
        if let Err(e) = engine.add_policy(name.clone(), text.clone()) {
            engine.set_rego_v0(true);
            let v0 = engine.add_policy(name.clone(), text);
            engine.set_rego_v0(false);
            if v0.is_err() {
                errors.push(compile_error(&name, &e.to_string()));
            }
        }
    }
    if errors.is_empty() {
        Ok(engine)
    } else {
        Err(errors)
    }
}

/// The strings of `data.weir.deny`, sorted (a Rego set has no order); none when no policy
/// defines it.
fn deny(mut engine: regorus::Engine, input: &str) -> Result<Vec<String>, String> {
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

    fn one(rego: &str, input: &str) -> Outcome {
        evaluate(vec![("p.rego".into(), rego.into())], input)
    }

    #[test]
    fn a_syntax_error_is_located_in_the_policy_file() {
        assert_eq!(
            one(
                "package weir\n\ndeny contains msg if {\n  msg := 1 +\n}\n",
                "{}"
            ),
            Outcome::Invalid(vec![CompileError {
                file: "p.rego".into(),
                line: 4,
                column: 7,
                message: "expecting `}` while parsing set".into()
            }])
        );
    }

    #[test]
    fn v0_and_v1_syntax_both_deny() {
        let sources = vec![
            (
                "v0.rego".to_owned(),
                "package weir\n\ndeny[msg] {\n  input.config.a > 1\n  msg := \"a too big\"\n}\n"
                    .to_owned(),
            ),
            (
                "v1.rego".to_owned(),
                "package weir\n\nimport rego.v1\n\ndeny contains \"b too big\" if input.config.b > 1\n"
                    .to_owned(),
            ),
        ];
        assert_eq!(
            evaluate(sources.clone(), r#"{"config": {"a": 2, "b": 2}}"#),
            Outcome::Denied(vec!["a too big".to_owned(), "b too big".to_owned()])
        );
        assert_eq!(
            evaluate(sources, r#"{"config": {"a": 0, "b": 0}}"#),
            Outcome::Denied(vec![])
        );
    }

    #[test]
    fn no_deny_rule_means_no_denial() {
        assert_eq!(
            one("package other\n\nallow := true\n", "{}"),
            Outcome::Denied(vec![])
        );
    }
}
