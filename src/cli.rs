//! The command line: `run`, `check`, `demo`. The only place that turns errors into exit codes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, Config, ConfigErrors};

#[derive(Parser, Debug)]
#[command(
    name = "weir",
    version,
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
    },
    /// Internal: compiles and evaluates policies for a weir process, under its limits.
    #[command(name = "policy-sandbox", hide = true)]
    PolicySandbox,
    /// A self-contained tour on loopback: two upstreams, weir in front, traffic, the live split.
    Demo {
        /// How long to send traffic, e.g. 5s or 30s.
        #[arg(long, default_value = "30s", value_parser = parse_duration_arg)]
        duration: Duration,
    },
}

fn parse_duration_arg(text: &str) -> Result<Duration, String> {
    config::parse_duration(text)
        .ok_or_else(|| format!("expected a duration such as 5s, found `{text}`"))
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Held to the end of main: dropping it flushes the log lines still queued. The policy
    // sandbox logs nothing (it writes only its answer) and starts no logging thread.
    let sandbox = matches!(cli.command, Command::PolicySandbox);
    let _log_guard = (!sandbox).then(|| init_tracing(cli.log_format));
    match cli.command {
        Command::PolicySandbox => config::policy::sandbox_main(),
        Command::Run { config, threads } => run(&config, threads),
        Command::Check { config, previous } => check(&config, previous.as_deref()),
        Command::Demo { duration } => {
            match runtime(None).and_then(|rt| rt.block_on(crate::demo::run(duration))) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("weir demo: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Lines the log queue holds. tracing-appender's default of 128,000 is an array of 32-byte slots
/// written in full when it is made: 4 MiB resident from the start, most of an idle weir's heap.
const LOG_QUEUE_LINES: usize = 8_192;

/// Logs go to stderr through a background writer thread, so a request never waits on a write
/// (the access log above all). When its queue of [`LOG_QUEUE_LINES`] is full, lines are dropped
/// rather than slowing traffic.
fn init_tracing(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,weir::access=off"));
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

fn check(path: &Path, previous: Option<&Path>) -> ExitCode {
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
