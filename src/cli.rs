//! The command line: `run`, `check`, `demo`, `completions`, `man`. The only place that turns
//! errors into exit codes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};

use crate::config::{self, Config, ConfigErrors};

#[derive(Parser, Debug)]
#[command(
    name = "weir",
    version = crate::LONG_VERSION,
    about = "A weighted L7 traffic-splitting reverse proxy"
)]
pub struct Cli {
    /// Log format on stderr; RUST_LOG filters (default: info, access log off).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// How `weir check` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CheckFormat {
    /// Errors on stderr, the route table on stdout.
    Text,
    /// One JSON document on stdout, valid or not (see docs/OPERATIONS.md).
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve; reload on SIGHUP; drain and exit 0 on SIGTERM or SIGINT.
    Run {
        #[arg(long, default_value = "config/weir.yaml")]
        config: PathBuf,
        /// Worker threads (default: the number of CPUs; 1 = a single-threaded runtime).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Parse and validate a config; print each route's weights and shares.
    Check {
        #[arg(long, default_value = "config/weir.yaml")]
        config: PathBuf,
        /// The running config, for policies that compare old and new.
        #[arg(long)]
        previous: Option<PathBuf>,
        /// `json` prints one document on stdout for CI tools.
        #[arg(long, value_enum, default_value_t = CheckFormat::Text)]
        format: CheckFormat,
    },
    /// Internal: compiles and evaluates policies for a weir process, under its limits.
    #[command(name = "policy-sandbox", hide = true)]
    PolicySandbox,
    /// A self-contained tour on loopback: a stable and a canary upstream, weir in front,
    /// traffic, an automated rollout, then a broken canary rolled back.
    Demo {
        /// The longest the tour may take (it ends when its story does), e.g. 10s or 30s.
        #[arg(long, default_value = "30s", value_parser = parse_duration_arg)]
        duration: Duration,
        /// Instead of the tour: serve a stand-in on every loopback endpoint of every upstream
        /// in --config (each answers with its upstream's name and address) until Ctrl-C.
        #[arg(long)]
        upstreams: bool,
        /// The config whose upstreams --upstreams stands in for.
        #[arg(long, default_value = "config/weir.yaml", requires = "upstreams")]
        config: PathBuf,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout: `weir man | man -l -`.
    Man,
}

fn parse_duration_arg(text: &str) -> Result<Duration, String> {
    config::parse_duration(text)
        .ok_or_else(|| format!("expected a duration such as 5s, found `{text}`"))
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo's live view owns the terminal: weir's own log stays off unless RUST_LOG asks.
    let default_filter = match cli.command {
        Command::Demo { .. } => "off",
        _ => "info,weir::access=off",
    };
    // Held to the end of main: dropping it flushes the log lines still queued. The policy
    // sandbox logs nothing (it writes only its answer) and starts no logging thread.
    let sandbox = matches!(cli.command, Command::PolicySandbox);
    let _log_guard = (!sandbox).then(|| init_tracing(cli.log_format, default_filter));
    match cli.command {
        Command::PolicySandbox => config::policy::sandbox_main(),
        Command::Run { config, threads } => run(&config, threads),
        Command::Check {
            config,
            previous,
            format,
        } => check(&config, previous.as_deref(), format),
        Command::Demo {
            duration,
            upstreams,
            config,
        } => {
            let result = runtime(None).and_then(|rt| {
                if upstreams {
                    rt.block_on(crate::demo::stand_in_upstreams(&config))
                } else {
                    rt.block_on(crate::demo::run(duration))
                }
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("weir demo: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "weir", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man => match man_page() {
            Ok(page) => {
                use std::io::Write;
                let _ = std::io::stdout().write_all(&page);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("weir man: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// The man page: weir(1) with every subcommand's options in one page.
pub fn man_page() -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let command = Cli::command();
    let mut page = Vec::new();
    let man = clap_mangen::Man::new(command.clone());
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    // One section per subcommand, so `man weir` documents `weir check --format` too.
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("weir {}", sub.get_name());
        writeln!(page, ".SH \"{}\"", name.to_uppercase())?;
        let sub_man = clap_mangen::Man::new(sub.clone().bin_name(name));
        let mut body = Vec::new();
        sub_man.render_synopsis_section(&mut body)?;
        sub_man.render_description_section(&mut body)?;
        sub_man.render_options_section(&mut body)?;
        page.extend(demote_sections(&body));
    }
    man.render_version_section(&mut page)?;
    Ok(page)
}

/// Turns a rendered sub-page's `.SH` headings into `.SS`, so they nest under the subcommand.
fn demote_sections(roff: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(roff);
    let mut out = String::new();
    for line in text.lines() {
        match line.strip_prefix(".SH ") {
            Some(rest) => out.push_str(&format!(".SS {rest}")),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out.into_bytes()
}

/// Lines the log queue holds. tracing-appender's default of 128,000 is an array of 32-byte slots
/// written in full when it is made: 4 MiB resident from the start, most of an idle weir's heap.
const LOG_QUEUE_LINES: usize = 8_192;

/// Logs go to stderr through a background writer thread, so a request never waits on a write
/// (the access log above all). When its queue of [`LOG_QUEUE_LINES`] is full, lines are dropped
/// rather than slowing traffic.
fn init_tracing(
    format: LogFormat,
    default_filter: &str,
) -> tracing_appender::non_blocking::WorkerGuard {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .lossy(true)
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    guard
}

fn runtime(threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let rt = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n.max(1))
            .enable_all()
            .build(),
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    };
    rt.context("cannot start the async runtime")
}

fn print_errors(errors: &ConfigErrors) {
    for e in &errors.0 {
        eprintln!("{e}");
    }
}

/// One config error as `weir check --format json` prints it.
fn error_json(e: &config::ConfigError) -> Value {
    json!({
        "file": e.file,
        "line": e.line,
        "column": e.column,
        "path": e.path,
        "message": e.message,
    })
}

/// `weir check --format json`: `{"config", "valid", "stage", "errors", "policies", "routes"}`.
/// `stage` says what refused the file (`previous`, `validation` or `policies`; null when valid).
pub fn check_json(path: &Path, previous: Option<&Path>) -> (bool, Value) {
    let refused = |stage: &str, errors: &ConfigErrors| {
        json!({
            "config": path.display().to_string(),
            "valid": false,
            "stage": stage,
            "errors": errors.0.iter().map(error_json).collect::<Vec<_>>(),
            "routes": [],
        })
    };
    let previous = match previous.map(config::load_file) {
        None => None,
        Some(Ok(c)) => Some(c),
        Some(Err(errors)) => return (false, refused("previous", &errors)),
    };
    let config = match config::load_file(path) {
        Ok(c) => c,
        Err(errors) => return (false, refused("validation", &errors)),
    };
    if let Err(errors) = config.check_policies(previous.as_ref().map(|c| &c.spec)) {
        return (false, refused("policies", &errors));
    }
    let routes: Vec<Value> = config
        .spec
        .routes
        .iter()
        .map(|r| {
            let weights = || r.backends.iter().map(|b| b.weight);
            let backends: Vec<Value> = r
                .backends
                .iter()
                .map(|b| {
                    json!({
                        "upstream": b.upstream,
                        "weight": b.weight,
                        "share": config::share(b.weight, weights()),
                    })
                })
                .collect();
            json!({ "name": r.name, "backends": backends, "rollout": r.rollout })
        })
        .collect();
    let value = json!({
        "config": path.display().to_string(),
        "valid": true,
        "stage": null,
        "errors": [],
        "policies": {
            "files": config.spec.policies.len(),
            "against_previous": previous.is_some(),
        },
        "routes": routes,
    });
    (true, value)
}

fn check(path: &Path, previous: Option<&Path>, format: CheckFormat) -> ExitCode {
    if format == CheckFormat::Json {
        let (valid, value) = check_json(path, previous);
        println!(
            "{}",
            serde_json::to_string_pretty(&value).expect("JSON values always serialize")
        );
        return if valid {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let previous = match previous.map(config::load_file) {
        None => Ok(None),
        Some(Ok(c)) => Ok(Some(c)),
        Some(Err(errors)) => {
            eprintln!("the previous config (--previous) is not valid:");
            print_errors(&errors);
            Err(())
        }
    };
    let config = match config::load_file(path) {
        Ok(config) => config,
        Err(errors) => {
            print_errors(&errors);
            eprintln!("{}: {} error(s)", path.display(), errors.0.len());
            return ExitCode::FAILURE;
        }
    };
    let Ok(previous) = previous else {
        return ExitCode::FAILURE;
    };
    if let Err(errors) = config.check_policies(previous.as_ref().map(|c| &c.spec)) {
        print_errors(&errors);
        eprintln!(
            "{}: refused by its policies ({} denial(s))",
            path.display(),
            errors.0.len()
        );
        return ExitCode::FAILURE;
    }
    println!("{}: valid", path.display());
    if !config.spec.policies.is_empty() {
        println!(
            "policies: {} file(s), no denial{}",
            config.spec.policies.len(),
            if previous.is_some() {
                " (against --previous)"
            } else {
                ""
            }
        );
    }
    print!("{}", route_table(&config));
    ExitCode::SUCCESS
}

/// The routes with each backend's weight and share, as `weir check` prints them.
pub fn route_table(config: &Config) -> String {
    let mut rows = vec![[
        "route".to_owned(),
        "backend".to_owned(),
        "weight".to_owned(),
        "share".to_owned(),
    ]];
    for r in &config.routes {
        for (i, b) in r.backends.iter().enumerate() {
            rows.push([
                if i == 0 {
                    r.name.to_string()
                } else {
                    String::new()
                },
                config.upstreams[b.upstream].name.to_string(),
                b.weight.to_string(),
                format!(
                    "{:.1}%",
                    100.0 * config::share(b.weight, r.backends.iter().map(|b| b.weight))
                ),
            ]);
        }
    }
    let widths: Vec<usize> = (0..4)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line = format!(
            "{:<w0$}  {:<w1$}  {:>w2$}  {:>w3$}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    for r in &config.routes {
        if let Some(ro) = &r.rollout {
            let steps: Vec<String> = ro.plan.steps.iter().map(|s| format!("{s}%")).collect();
            out.push_str(&format!(
                "{}: rollout of {} through {}, one check per {:?}; weir drives these weights\n",
                r.name,
                config.upstreams[r.backends[ro.canary].upstream].name,
                steps.join(", "),
                ro.plan.interval,
            ));
        }
    }
    out
}

fn run(path: &Path, threads: Option<usize>) -> ExitCode {
    let candidate = match crate::reload::read_file(path) {
        Ok(c) => c,
        Err(refused) => {
            let errors = refused.errors;
            print_errors(&errors);
            return ExitCode::FAILURE;
        }
    };
    let result = runtime(threads).and_then(|rt| rt.block_on(serve(candidate, path.to_path_buf())));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(candidate: crate::reload::Candidate, path: PathBuf) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let running = crate::server::start(candidate, Some(path.clone())).await?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                // A refused file is logged and recorded by the control task; the old config
                // stays. Reading, validating and the policy sandbox run off the worker threads.
                if let Ok(changed) = running.reloader.reload().await {
                    tracing::info!(path = %path.display(), changed, "config reloaded on SIGHUP");
                }
            }
        }
    }
    tracing::info!("shutting down: draining connections");
    running.drain().await;
    Ok(())
}
