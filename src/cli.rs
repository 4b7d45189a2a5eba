//! The command line: `run`, `check`, `demo`, `rollout`, `completions`, `man`. The only place that turns
//! errors into exit codes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};

use crate::config::{self, Config, ConfigErrors};
use crate::rollout::fleet::controller::Controller;
use crate::rollout::fleet::{FleetRoute, Queries};

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
    /// traffic, an automated rollout, then a broken canary rolled back by fast-fail and a
    /// slightly worse one rolled back by the comparison with stable.
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
    /// The fleet's rollout controller: judges each rollout on fleet-wide metrics from
    /// Prometheus and records every decision as a commit in the config's Git repository
    /// (docs/FLEET.md). With a command, controls one route's rollout: a commit in fleet mode,
    /// the admin API (with its bearer token) for a single instance.
    Rollout {
        #[command(subcommand)]
        command: Option<RolloutCommand>,
        /// The config file; in fleet mode, in the config's Git work tree (or the file whose
        /// repository --workdir clones).
        #[arg(long, global = true, default_value = "config/weir.yaml")]
        config: PathBuf,
        /// The controller's own clone of the config's repository (made on first use); default:
        /// `fleet.git.workdir`, else the config's own work tree.
        #[arg(long, global = true)]
        workdir: Option<PathBuf>,
        /// Sync once and exit (0 when the sync went through).
        #[arg(long)]
        once: bool,
    },
}

/// `weir rollout ACTION ROUTE`.
#[derive(Subcommand, Debug, Clone)]
pub enum RolloutCommand {
    /// Promote now: the canary becomes the stable (fleet: the promotion commit).
    Promote { route: String },
    /// Roll back now: the canary's weight returns to 0.
    Abort { route: String },
    /// Hold at the current step: no checks, no deadline, until resumed.
    Pause { route: String },
    /// Resume a paused rollout with a fresh interval.
    Resume { route: String },
}

impl RolloutCommand {
    fn parts(&self) -> (&str, crate::rollout::Action) {
        use crate::rollout::Action;
        match self {
            RolloutCommand::Promote { route } => (route, Action::Promote),
            RolloutCommand::Abort { route } => (route, Action::Abort),
            RolloutCommand::Pause { route } => (route, Action::Pause),
            RolloutCommand::Resume { route } => (route, Action::Resume),
        }
    }
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
        Command::Rollout {
            command,
            config,
            workdir,
            once,
        } => rollout(&config, workdir.as_deref(), command, once),
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
    use tracing_subscriber::prelude::*;
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry.with(layer.with_filter(quiet_watcher())).init(),
        LogFormat::Json => registry
            .with(layer.json().with_filter(quiet_watcher()))
            .init(),
    }
    guard
}

/// Drops the file watcher's one warning, `Unable to remove the path from the watches` (target
/// `notify::inotify`): notify logs it when a watched directory disappears, which is how every
/// Kubernetes ConfigMap and git-sync update works (the old `..2026_...` data directory is
/// deleted after the `..data` link moves). weir re-resolves and re-watches the directories after
/// every event (`reload::watch`), so nothing is lost, and a WARN at every normal update would
/// teach operators to ignore warnings. `RUST_LOG` naming `notify` shows it again.
fn quiet_watcher() -> tracing_subscriber::filter::FilterFn<impl Fn(&tracing::Metadata<'_>) -> bool>
{
    let asked = std::env::var("RUST_LOG").is_ok_and(|v| v.contains("notify"));
    tracing_subscriber::filter::filter_fn(move |meta| {
        asked || !(meta.target() == "notify::inotify" && *meta.level() == tracing::Level::WARN)
    })
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
            let queries = fleet_queries(&config, &r.name);
            json!({ "name": r.name, "backends": backends, "rollout": r.rollout, "queries": queries })
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
        "hints": config::precedence_hints(&config),
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
    for hint in config::precedence_hints(&config) {
        println!("hint: {hint}");
    }
    ExitCode::SUCCESS
}

/// The PromQL a fleet rollout of `route` is judged on (`weir check`), null without one.
fn fleet_queries(config: &Config, route: &str) -> Value {
    match FleetRoute::of(config).into_iter().find(|r| r.name == route) {
        Some(r) => {
            let q = r.queries();
            let w = r.rollout.plan.interval;
            json!({
                "requests": Queries::windowed(&q.requests, w),
                "failures": Queries::windowed(&q.failures, w),
                "p99": Queries::windowed(&q.p99, w),
                "replicas_up": q.replicas_up,
                "replicas_serving": q.replicas_serving,
                "fast_failed": q.fast_failed,
            })
        }
        None => Value::Null,
    }
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
            if let Some(c) = &ro.compare {
                out.push_str(&compare_line(&r.name, c, |i| {
                    config.upstreams[r.backends[i].upstream].name.to_string()
                }));
            }
        }
    }
    for r in FleetRoute::of(config) {
        let q = r.queries();
        let w = r.rollout.plan.interval;
        out.push_str(&format!(
            "{}: judged by `weir rollout` on Prometheus at {} ({{G}}: the status generation):\n",
            r.name, r.source.url
        ));
        for (name, query) in [
            ("requests", Queries::windowed(&q.requests, w)),
            ("failures", Queries::windowed(&q.failures, w)),
            ("p99", Queries::windowed(&q.p99, w)),
            ("replicas up", q.replicas_up.clone()),
            ("replicas serving", q.replicas_serving.clone()),
            ("fast-failed", q.fast_failed.clone()),
        ] {
            out.push_str(&format!("  {name:<16}  {query}\n"));
        }
    }
    out
}

/// How a rollout's canary is judged against stable, in one line of `weir check`.
fn compare_line(route: &str, c: &config::Compare, name: impl Fn(usize) -> String) -> String {
    let arm: Vec<String> = c.stable.iter().map(|&i| name(i)).collect();
    let mut tests = Vec::new();
    if let Some(e) = c.errors {
        tests.push(format!(
            "errors (good up to {}x stable's rate, caught at {}x)",
            1.0 + e.margin,
            e.detect
        ));
    }
    if let Some(l) = c.latency {
        let tolerance = match l.tolerance {
            config::ToleranceSpec::Fraction(f) => format!("{}% slower", f * 100.0),
            config::ToleranceSpec::Duration(d) => format!("{d} slower"),
        };
        tests.push(format!(
            "latency above stable's p{} bucket, {tolerance} tolerated (good up to {}x stable's share, caught at {}x)",
            l.quantile * 100.0,
            1.0 + l.rates.margin,
            l.rates.detect
        ));
    }
    let advance = match c.advance {
        config::Advance::Interval => "at the interval's end",
        config::Advance::OnEvidence => "as soon as it passes",
    };
    let limit = c
        .max_canary_requests
        .map_or_else(String::new, |n| format!(" or {n} canary requests"));
    format!(
        "{route}: the canary is compared with {} ({}) by a sequential test on {}; false alarm \
         {} over {} step(s) ({} each), miss {} per test; a step advances {advance}; no decision \
         within {:?}{limit}: the evidence's sign decides\n",
        c.against,
        arm.join(", "),
        tests.join(" and "),
        c.false_alarm,
        c.comparing_steps,
        c.step_false_alarm(),
        c.miss,
        c.decide_within,
    )
}

/// `weir rollout`: the controller (until SIGTERM/SIGINT, or one sync with `--once`), or one
/// operator's command.
fn rollout(
    path: &Path,
    workdir: Option<&Path>,
    command: Option<RolloutCommand>,
    once: bool,
) -> ExitCode {
    let result = runtime(None).and_then(|rt| {
        rt.block_on(async {
            let config = config::load_file(path).map_err(|errors| {
                print_errors(&errors);
                anyhow::anyhow!("{}: {} error(s)", path.display(), errors.0.len())
            })?;
            match (command, config.fleet.is_some()) {
                (Some(c), false) => single_instance_command(&config, &c).await,
                (None, false) => anyhow::bail!(
                    "{} has no `fleet` block: a single instance runs its rollouts inside `weir run` (use `weir rollout ACTION ROUTE` to control them)",
                    path.display()
                ),
                (Some(c), true) => {
                    let (route, action) = c.parts();
                    let mut ctl = Controller::open(path, workdir).await?;
                    let subject = ctl.command(route, action).await?;
                    println!("{subject}");
                    Ok(())
                }
                (None, true) => {
                    let mut ctl = Controller::open(path, workdir).await?;
                    if once {
                        for subject in ctl.sync().await? {
                            println!("{subject}");
                        }
                        return Ok(());
                    }
                    tracing::info!(clone = %ctl.repo().root.display(), "rollout controller started");
                    let (stop, task) = crate::rollout::fleet::controller::spawn(ctl);
                    use tokio::signal::unix::{SignalKind, signal};
                    let mut term = signal(SignalKind::terminate())?;
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = tokio::signal::ctrl_c() => {}
                    }
                    let _ = stop.send(true);
                    let _ = task.await;
                    Ok(())
                }
            }
        })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir rollout: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A single instance's rollout command: `POST /rollouts/ROUTE/ACTION` on its admin address with
/// the bearer token of `admin.token_file` or `admin.token_env`.
async fn single_instance_command(config: &Config, command: &RolloutCommand) -> anyhow::Result<()> {
    use http_body_util::{BodyExt, Full};
    let (route, action) = command.parts();
    let token = match (&config.spec.admin.token_file, &config.spec.admin.token_env) {
        (Some(file), _) => {
            let path = config.base_dir.join(file);
            let bytes = config::files::read_limited(&path, 64 * 1024)
                .with_context(|| format!("reading the admin token {}", path.display()))?;
            String::from_utf8(bytes)
                .context("the admin token is not UTF-8")?
                .trim()
                .to_owned()
        }
        (None, Some(var)) => std::env::var(var)
            .with_context(|| format!("the admin token's environment variable {var} is not set"))?
            .trim()
            .to_owned(),
        (None, None) => anyhow::bail!(
            "rollout commands change state, so they need the admin API's bearer token: set admin.token_file or admin.token_env"
        ),
    };
    let mut address = config.admin_address;
    if address.ip().is_unspecified() {
        address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let uri = format!("http://{address}/rollouts/{route}/{}", action.name());
    let req = http::Request::post(uri.as_str())
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Full::new(bytes::Bytes::new()))?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .with_context(|| format!("{uri}: no answer within 10s"))?
        .with_context(|| uri.clone())?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    let text = String::from_utf8_lossy(&body);
    if !status.is_success() {
        anyhow::bail!("{uri}: {status}: {}", text.trim());
    }
    println!("{}", text.trim());
    Ok(())
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
