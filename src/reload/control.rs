//! The control task: the one place where the control plane acts. It owns the clock (it reads the
//! time and passes it to the pure [`Rollouts`]), the timers (the next interval's end), the
//! rollout state file, the webhook sends and the confirm gates, and it is the only writer of the
//! running [`Snapshot`], the [`History`] and the reload metrics. Every new config reaches it
//! through its inbox ([`Command::Submit`]); decisions come back from `Rollouts` and are carried
//! out here, in order.
//!
//! Nothing slow runs on the runtime's worker threads: the policy sandbox, snapshot builds and
//! state-file writes go to `spawn_blocking`, and this task awaits them.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use tokio::sync::{Notify, mpsc, oneshot, watch};

use super::history::{
    History, HistoryEntry, ReloadRecord, RouteWeight, changes, config_weights, snapshot_weights,
    weight_changes,
};
use super::read::{Attempt, Candidate, ReadResult, Refused, attempt_of};
use super::revision::Revision;
use crate::config::{Config, ConfigError, ConfigErrors};
use crate::metrics::{Metrics, Probe};
use crate::observe::access::{self, AccessLog};
use crate::observe::human;
use crate::observe::span_export::{OtlpSettings, Protocol, SpanCounters, SpanExport};
use crate::observe::trace_context::Sampler;
use crate::rollout::compare::Counts;
use crate::rollout::webhook::Hooks;
use crate::rollout::{
    Action, Decisions, Measure, Now, Phase, Reading, Refusal, Rollouts, StateFile, Status,
};
use crate::snapshot::{Snapshot, Steering, Tracer};

/// What the control task is asked to do.
pub(super) enum Command {
    /// A config read from a file (or text): apply it, or refuse it and say why.
    Submit {
        ticket: u64,
        result: Box<ReadResult>,
        reply: oneshot::Sender<Result<bool, ConfigErrors>>,
    },
    /// A confirm gate answered.
    Confirmed {
        route: Arc<str>,
        answer: Result<(), String>,
    },
    /// Answer once everything due now has been carried out.
    CaughtUp { reply: oneshot::Sender<()> },
    /// An operator's command on a rollout (admin API): answered once carried out.
    Manual {
        route: String,
        action: Action,
        reply: oneshot::Sender<Result<serde_json::Value, Refusal>>,
    },
}

/// The rollouts' status, as the control task last published it (`/stats`, the demo).
#[derive(Debug, Default)]
pub struct RolloutView {
    statuses: std::collections::BTreeMap<Arc<str>, Status>,
}

impl RolloutView {
    /// The `/stats` rollout block of `route` (null without a rollout).
    pub fn status(&self, route: &str) -> serde_json::Value {
        self.statuses
            .get(route)
            .map_or(serde_json::Value::Null, |s| {
                serde_json::to_value(s).expect("a status always serializes")
            })
    }

    /// The phase of `route`'s rollout, `None` without one.
    pub fn phase(&self, route: &str) -> Option<Phase> {
        self.statuses.get(route).map(|s| s.state)
    }
}

/// The handles the control task shares with readers.
pub(super) struct Shared {
    pub snapshots: Arc<ArcSwap<Snapshot>>,
    pub history: Arc<History>,
    pub view: Arc<ArcSwap<RolloutView>>,
    /// The running snapshot's drain epoch, for the client connections (`proxy::drain`).
    pub drain: watch::Receiver<u64>,
}

pub(super) struct Control {
    snapshots: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
    history: Arc<History>,
    view: Arc<ArcSwap<RolloutView>>,
    rollouts: Rollouts,
    /// The probes of each measured route, with the run and settings they were made for.
    probes: HashMap<Arc<str>, Probes>,
    /// Rung by a probe whose fast-fail tripped.
    wake: Arc<Notify>,
    hooks: Hooks,
    state_file: Option<PathBuf>,
    /// Routes whose `weir_rollout_state` series exists.
    gauged: Vec<Arc<str>>,
    /// For the answers of confirm gates.
    inbox: mpsc::Sender<Command>,
    /// The ticket of the newest read handled.
    latest_read: u64,
    /// Sends the drain epoch when a new snapshot moved it.
    drain: watch::Sender<u64>,
}

/// The time, read here and nowhere else in the control plane.
fn now() -> Now {
    Now {
        at: tokio::time::Instant::now(),
        wall: SystemTime::now(),
    }
}

/// Runs `f` on a blocking thread and waits for it without holding a worker thread.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Control {
    /// The initial load, the first reload: checks the policies (with no previous config), builds
    /// the first snapshot and records the first history entry.
    pub(super) async fn start(
        candidate: Candidate,
        metrics: Arc<Metrics>,
        inbox: mpsc::Sender<Command>,
    ) -> Result<(Control, Shared), ConfigErrors> {
        let candidate = blocking(move || {
            let checked = candidate.config.check_policies(None);
            checked.map(|()| candidate)
        })
        .await?;
        let Candidate { config, revision } = candidate;
        let state_file = config.rollout_state.clone();
        let saved = match state_file.clone() {
            Some(path) => blocking(move || read_state(&path)).await,
            None => StateFile::default(),
        };
        let mut rollouts = Rollouts::new(saved);
        let decisions = rollouts.sync(&config, now());
        let weights = weight_changes(None, &config);
        let record = ReloadRecord {
            history: [HistoryEntry::applied(&revision, weights, Vec::new())].into(),
            last_attempt: Attempt::Read {
                identity: revision.identity.clone(),
                inputs: revision.inputs.clone(),
            },
            revision,
        };
        let config = Arc::new(config);
        let before = config_weights(&config);
        let wake = Arc::new(Notify::new());
        let mut probes = HashMap::new();
        let steering = steering(&rollouts, &mut probes, &wake);
        let m = metrics.clone();
        let c = config.clone();
        let access_log =
            open_access_log(&config, None, metrics.telemetry.access_log.clone()).await?;
        let tracer = tracer(&config, None, &metrics.telemetry.spans);
        let snapshot = blocking(move || {
            let mut s = Snapshot::build(c, None, &m, &steering);
            s.access_log = access_log;
            s.tracer = tracer;
            s
        })
        .await;
        metrics.reloads.with_label_values(&["success"]).inc();
        metrics
            .last_reload_success
            .set(unix_seconds(record.revision.loaded_at));
        metrics.last_reload_successful.set(1);
        let (drain, drain_rx) = watch::channel(snapshot.drain.epoch());
        let shared = Shared {
            snapshots: Arc::new(ArcSwap::from_pointee(snapshot)),
            history: Arc::new(History::new(record)),
            view: Arc::default(),
            drain: drain_rx,
        };
        let mut control = Control {
            snapshots: shared.snapshots.clone(),
            metrics,
            history: shared.history.clone(),
            view: shared.view.clone(),
            rollouts,
            probes,
            wake,
            hooks: Hooks::new(),
            state_file,
            gauged: Vec::new(),
            inbox,
            latest_read: 0,
            drain,
        };
        control.carry_out(decisions.without_steer(), &before).await;
        Ok((control, shared))
    }

    /// Serves the inbox, the interval timers and fast-fail wake-ups until `stop` turns true (or
    /// its sender is gone).
    pub(super) async fn run(
        mut self,
        mut inbox: mpsc::Receiver<Command>,
        mut stop: watch::Receiver<bool>,
    ) {
        let wake = self.wake.clone();
        loop {
            let deadline = self.rollouts.next_deadline();
            let interval_end = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            // Due work before new commands: a command then sees everything due carried out.
            tokio::select! {
                biased;
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        return;
                    }
                }
                _ = interval_end => self.tick().await,
                _ = wake.notified() => self.tick().await,
                command = inbox.recv() => match command {
                    Some(c) => self.handle(c).await,
                    None => return,
                },
            }
        }
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Submit {
                ticket,
                result,
                reply,
            } => {
                // A read that started before one already handled has older bytes, or the same.
                let outcome = if ticket < self.latest_read {
                    Ok(false)
                } else {
                    self.latest_read = ticket;
                    self.submit(*result).await
                };
                let _ = reply.send(outcome);
            }
            Command::Confirmed { route, answer } => {
                let before = snapshot_weights(&self.snapshots.load());
                let d = self.rollouts.confirmed(&route, answer, now());
                self.carry_out(d, &before).await;
            }
            Command::CaughtUp { reply } => {
                self.tick().await;
                let _ = reply.send(());
            }
            Command::Manual {
                route,
                action,
                reply,
            } => {
                let before = snapshot_weights(&self.snapshots.load());
                let answer = match self.rollouts.manual(&route, action, now()) {
                    Ok(d) => {
                        tracing::info!(route = %route, action = action.name(), "rollout command");
                        self.carry_out(d, &before).await;
                        Ok(self.view.load().status(&route))
                    }
                    Err(refusal) => Err(refusal),
                };
                let _ = reply.send(answer);
            }
        }
    }

    /// A read file: the attempt last made again is a no-op (`Ok(false)`); a valid config that
    /// passes its policies against the running one is applied (`Ok(true)`); anything else is
    /// refused and recorded, and the running config stays.
    async fn submit(&mut self, result: ReadResult) -> Result<bool, ConfigErrors> {
        if attempt_of(&result) == self.history.record().last_attempt {
            return Ok(false);
        }
        let candidate = match result {
            Ok(c) => c,
            Err(refused) => {
                let Refused { revision, errors } = *refused;
                self.refuse(
                    revision.as_ref(),
                    attempt_of_refused(revision.as_ref(), &errors),
                    &errors,
                );
                return Err(errors);
            }
        };
        let running = self.snapshots.load_full();
        let (candidate, checked) = blocking(move || {
            let checked = candidate.config.check_policies(Some(&running.config.spec));
            (candidate, checked)
        })
        .await;
        if let Err(errors) = checked {
            let attempt = attempt_of_refused(Some(&candidate.revision), &errors);
            self.refuse(Some(&candidate.revision), attempt, &errors);
            return Err(errors);
        }
        let running = self.snapshots.load().access_log.clone();
        let counters = self.metrics.telemetry.access_log.clone();
        let access_log = match open_access_log(&candidate.config, running, counters).await {
            Ok(a) => a,
            Err(errors) => {
                let attempt = attempt_of_refused(Some(&candidate.revision), &errors);
                self.refuse(Some(&candidate.revision), attempt, &errors);
                return Err(errors);
            }
        };
        self.apply(candidate, access_log).await;
        Ok(true)
    }

    /// Swaps `candidate` in. Listener and admin addresses are bound once at start: a change of
    /// them is reported in the warnings and the old addresses stay; the rest applies.
    async fn apply(&mut self, candidate: Candidate, access_log: Option<Arc<AccessLog>>) {
        let Candidate {
            mut config,
            revision,
        } = candidate;
        let previous = self.snapshots.load_full();
        let warnings = keep_bound_addresses(&previous.config, &mut config);
        for w in &warnings {
            tracing::warn!("{w}");
        }
        let weights = weight_changes(Some(&previous.config), &config);
        let changed = human::changes(&config_shape(&previous.config), &config_shape(&config));
        self.state_file = config.rollout_state.clone();
        let decisions = self.rollouts.sync(&config, now());
        self.build(Arc::new(config), access_log).await;
        self.metrics.reloads.with_label_values(&["success"]).inc();
        self.metrics
            .last_reload_success
            .set(unix_seconds(revision.loaded_at));
        self.metrics.last_reload_successful.set(1);
        tracing::info!(
            sha256 = %revision.sha256,
            changes = %human::summary(&changed, 20),
            "config applied"
        );
        {
            let limit = self.snapshots.load().config.spec.admin.history;
            let mut record = self.history.record();
            record.push(HistoryEntry::applied(&revision, weights, warnings), limit);
            record.last_attempt = Attempt::Read {
                identity: revision.identity.clone(),
                inputs: revision.inputs.clone(),
            };
            record.revision = revision;
        }
        self.carry_out(decisions.without_steer(), &snapshot_weights(&previous))
            .await;
    }

    fn refuse(&mut self, revision: Option<&Revision>, attempt: Attempt, errors: &ConfigErrors) {
        self.metrics.reloads.with_label_values(&["failure"]).inc();
        self.metrics.last_reload_successful.set(0);
        tracing::error!(errors = %errors, "config refused; the running config stays");
        let limit = self.snapshots.load().config.spec.admin.history;
        let mut record = self.history.record();
        record.last_attempt = attempt;
        record.push(
            HistoryEntry::refused(revision, errors.to_string(), now().wall),
            limit,
        );
    }

    /// Runs what is due now: a fast-fail rollback where a probe tripped, and the check of every
    /// interval that ended.
    async fn tick(&mut self) {
        let now = now();
        let before = snapshot_weights(&self.snapshots.load());
        let mut d = Decisions::default();
        for route in self.rollouts.judged() {
            if let Some(p) = self.probes.get(&route)
                && p.canary.tripped()
            {
                d.merge(self.rollouts.fast_fail(&route, p.canary.peek(), now));
            }
        }
        // Comparisons before the checks: one that passed with `advance: on_evidence` makes its
        // interval due now.
        for route in self.rollouts.comparisons_due(now.at) {
            let reading = self.probes.get(&route).and_then(Probes::reading);
            d.merge(self.rollouts.compare(&route, reading, now));
        }
        for due in self.rollouts.due(now.at) {
            let measurement = self
                .probes
                .get(&due.route)
                .map(|p| p.canary.take())
                .unwrap_or_default();
            d.merge(self.rollouts.check(&due.route, measurement, now));
        }
        self.carry_out(d, &before).await;
    }

    /// Carries out `d`: a snapshot with the new weights, the history and logs, the webhooks,
    /// the confirm gates, the state file, the published status. `before` are the weights served
    /// before the decisions, for the history's weight changes.
    async fn carry_out(&mut self, d: Decisions, before: &[RouteWeight]) {
        let families = &self.metrics.rollout;
        for (route, result) in &d.checks {
            families
                .checks
                .with_label_values(&[&**route, *result])
                .inc();
        }
        for route in &d.deadlines {
            families
                .deadline_exceeded
                .with_label_values(&[&**route])
                .inc();
            tracing::warn!(
                route = &**route,
                "rollout rolled back: its progress deadline passed"
            );
        }
        for route in &d.restart {
            if let Some(p) = self.probes.get(route) {
                p.canary.take();
            }
        }
        if d.steer {
            let running = self.snapshots.load_full();
            self.build(running.config.clone(), running.access_log.clone())
                .await;
        }
        self.publish();
        if !d.events.is_empty() {
            let after = snapshot_weights(&self.snapshots.load());
            let all = changes(before, &after);
            let limit = self.snapshots.load().config.spec.admin.history;
            let mut record = self.history.record();
            for a in &d.events {
                tracing::info!(route = &*a.route, canary = &*a.canary, event = a.event.kind.name(), step = a.event.step, canary_weight = a.event.canary_weight, reason = %a.event.reason, "rollout");
                let weights = all.iter().filter(|c| c.route == *a.route).cloned();
                let entry = HistoryEntry::rollout(&record.revision, a.clone(), weights.collect());
                record.push(entry, limit);
            }
        }
        for a in &d.events {
            let body = bytes::Bytes::from(
                serde_json::to_vec(&a.body()).expect("an event body always serializes"),
            );
            for url in a.receivers() {
                self.hooks.deliver(url.clone(), body.clone());
            }
        }
        for gate in d.gates {
            let (hooks, inbox) = (self.hooks.clone(), self.inbox.clone());
            // On a task of its own, so a slow gate holds only its own rollout.
            tokio::spawn(async move {
                let answer = hooks.confirm(&gate.url, gate.body).await;
                let route = gate.route;
                let _ = inbox.send(Command::Confirmed { route, answer }).await;
            });
        }
        if let (Some(state), Some(path)) = (d.save, self.state_file.clone()) {
            let bytes = state.to_bytes();
            let written = blocking(move || write_atomically(&path, &bytes).map_err(|e| (path, e)));
            if let Err((path, e)) = written.await {
                tracing::error!(path = %path.display(), error = %e, "cannot save the rollout state");
            }
        }
    }

    /// Builds and stores the snapshot of `config` with the rollouts' weights and probes.
    /// Builds and stores the snapshot of `config`, with `access_log` (opened by
    /// [`open_access_log`] when the config was checked, or the running one for a rollout's
    /// new weights).
    async fn build(&mut self, config: Arc<Config>, access_log: Option<Arc<AccessLog>>) {
        let steering = steering(&self.rollouts, &mut self.probes, &self.wake);
        let previous = self.snapshots.load_full();
        let metrics = self.metrics.clone();
        let tracer = tracer(
            &config,
            previous.tracer.as_ref(),
            &self.metrics.telemetry.spans,
        );
        let snapshot = blocking(move || {
            let mut s = Snapshot::build(config, Some(&previous), &metrics, &steering);
            s.access_log = access_log;
            s.tracer = tracer;
            s
        })
        .await;
        let epoch = snapshot.drain.epoch();
        self.snapshots.store(Arc::new(snapshot));
        // After the store: a connection that wakes up compares against the new snapshot.
        self.drain
            .send_if_modified(|e| std::mem::replace(e, epoch) != epoch);
    }

    /// Publishes the rollouts' status (`/stats`) and each route's `weir_rollout_state`.
    fn publish(&mut self) {
        let snapshot = self.snapshots.load();
        let generation = snapshot
            .config
            .fleet
            .as_ref()
            .map_or(0, |f| f.status.generation);
        self.metrics
            .rollout
            .status_generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
        let mut gauged = Vec::with_capacity(snapshot.routes.len());
        for r in snapshot.routes.iter() {
            let state = self.rollouts.phase(&r.name).map_or(0, |p| p.gauge());
            self.metrics
                .rollout_state
                .with_label_values(&[&*r.name])
                .set(state);
            gauged.push(r.name.clone());
        }
        for gone in self.gauged.iter().filter(|g| !gauged.contains(g)) {
            let _ = self.metrics.rollout_state.remove_label_values(&[&**gone]);
        }
        self.gauged = gauged;
        self.view.store(Arc::new(RolloutView {
            statuses: self.rollouts.statuses(),
        }));
    }
}

impl Decisions {
    /// These decisions, for a caller that builds the snapshot itself.
    fn without_steer(mut self) -> Decisions {
        self.steer = false;
        self
    }
}

fn attempt_of_refused(revision: Option<&Revision>, errors: &ConfigErrors) -> Attempt {
    match revision {
        Some(r) => Attempt::Read {
            identity: r.identity.clone(),
            inputs: r.inputs.clone(),
        },
        None => Attempt::Unreadable(errors.to_string()),
    }
}

/// A measured route's probes: its canary's, and, when the rollout compares the canary with
/// stable, the one its stable backends feed together.
struct Probes {
    /// The run and settings they were made for.
    measure: Measure,
    /// Tells this pair from the ones before it: a new pair counts from zero.
    id: u64,
    canary: Arc<Probe>,
    stable: Option<Arc<Probe>>,
}

impl Probes {
    fn new(measure: Measure, wake: &Arc<Notify>) -> Probes {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Probes {
            measure,
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            canary: Arc::new(Probe::new(measure.fast_fail, wake.clone())),
            stable: measure
                .compare
                .then(|| Arc::new(Probe::new(None, wake.clone()))),
        }
    }

    /// Both arms' totals, for the comparison.
    fn reading(&self) -> Option<Reading> {
        let stable = self.stable.as_ref()?;
        Some(Reading {
            probes: self.id,
            counts: Counts {
                canary: self.canary.totals(),
                stable: stable.totals(),
            },
        })
    }
}

/// What each route with a rollout takes in the next snapshot: the rollout's weights, and the
/// probes of a running one (kept while its run and measure settings stay, new otherwise).
fn steering(
    rollouts: &Rollouts,
    probes: &mut HashMap<Arc<str>, Probes>,
    wake: &Arc<Notify>,
) -> HashMap<Arc<str>, Steering> {
    let steers = rollouts.steering();
    probes.retain(|route, kept| {
        steers
            .get(route)
            .and_then(|s| s.measure)
            .is_some_and(|m| m == kept.measure)
    });
    steers
        .into_iter()
        .map(|(route, s)| {
            let made = s.measure.map(|m| {
                probes
                    .entry(route.clone())
                    .or_insert_with(|| Probes::new(m, wake))
            });
            let steering = Steering {
                weights: s.weights,
                canary: s.canary,
                probe: made.as_ref().map(|p| p.canary.clone()),
                stable: s.stable,
                stable_probe: made.and_then(|p| p.stable.clone()),
            };
            (route, steering)
        })
        .collect()
}

/// The sockets bound at start stay: each keeps its new definition (certificates included) where
/// the file still names it at the same address, else its old one, so a renamed TLS listener
/// never falls back to plaintext. Returns the warnings for changed addresses.
fn keep_bound_addresses(previous: &Config, config: &mut Config) -> Vec<String> {
    let mut warnings = Vec::new();
    if previous.listeners != config.listeners {
        warnings.push(String::from(
            "listener names or addresses changed: restart weir to apply them",
        ));
    }
    config.listeners = previous
        .listeners
        .iter()
        .map(|bound| {
            config
                .listeners
                .iter()
                .find(|l| *l == bound)
                .unwrap_or(bound)
                .clone()
        })
        .collect();
    if previous.admin_address != config.admin_address {
        warnings.push(String::from(
            "the admin address changed: restart weir to apply it",
        ));
    }
    warnings
}

/// The `rollout_state` file, or nothing when it is missing or unreadable (logged).
fn read_state(path: &Path) -> StateFile {
    match std::fs::read(path) {
        Ok(bytes) => StateFile::parse(&bytes).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable rollout state file");
            StateFile::default()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => StateFile::default(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the rollout state file");
            StateFile::default()
        }
    }
}

/// Replaces the file at `path` with `bytes` so that a crash leaves the old or the new file,
/// never a part: a temporary file in the same directory, fsync, rename, fsync of the directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

/// The tracer of `config`'s `tracing` section: its sampler, and the span exporter (the running
/// one while `tracing.otlp` is unchanged, else a new one; the old one sends what it holds, then
/// ends).
fn tracer(config: &Config, running: Option<&Tracer>, counters: &SpanCounters) -> Option<Tracer> {
    use crate::config::OtlpProtocol;
    let t = config.tracing.as_ref()?;
    let export = t.otlp.as_ref().and_then(|o| {
        let settings = OtlpSettings {
            endpoint: o.endpoint.clone(),
            protocol: match o.protocol {
                OtlpProtocol::Grpc => Protocol::Grpc,
                OtlpProtocol::HttpProtobuf => Protocol::HttpProtobuf,
            },
            timeout: o.timeout,
            headers: o.headers.clone(),
            service_name: o.service_name.clone(),
        };
        let running = running.and_then(|r| r.export.as_ref());
        // Validation checked the endpoint, the one thing `start` refuses.
        SpanExport::keep_or_start(running, &settings, counters)
            .inspect_err(|e| tracing::error!(error = %e, "spans will not be exported"))
            .ok()
    });
    Some(Tracer {
        sampler: Sampler::new(t.sampling),
        export,
    })
}

/// Opens the access log `config` asks for, or keeps `running` when the settings are the same;
/// on a blocking thread (it opens a file and starts the writer's thread). A file that cannot be
/// opened refuses the config, located at `access_log.path`.
async fn open_access_log(
    config: &Config,
    running: Option<Arc<AccessLog>>,
    counters: access::AccessLogCounters,
) -> Result<Option<Arc<AccessLog>>, ConfigErrors> {
    use crate::config::{AccessLogFormat, AccessLogOutput};
    let Some(spec) = config.access_log.clone() else {
        return Ok(None);
    };
    let settings = access::AccessLogSettings {
        format: match spec.format {
            AccessLogFormat::Json => access::Format::Json,
            AccessLogFormat::Text => access::Format::Text,
        },
        output: match spec.output {
            AccessLogOutput::Stderr => access::Output::Stderr,
            AccessLogOutput::Stdout => access::Output::Stdout,
            AccessLogOutput::File(p) => access::Output::File(p),
        },
    };
    blocking(move || AccessLog::keep_or_start(running.as_ref(), &settings, &counters))
        .await
        .map(Some)
        .map_err(|e| {
            ConfigErrors(vec![ConfigError {
                message: e.to_string(),
                ..spec.at
            }])
        })
}

/// What a change summary speaks of in `config`: each route's backends and their weights as the
/// file sets them, each upstream's endpoints.
fn config_shape(config: &Config) -> human::ConfigShape {
    human::ConfigShape {
        routes: config
            .routes
            .iter()
            .map(|r| human::RouteShape {
                name: r.name.to_string(),
                backends: r
                    .backends
                    .iter()
                    .map(|b| (config.upstreams[b.upstream].name.to_string(), b.weight))
                    .collect(),
            })
            .collect(),
        upstreams: config
            .upstreams
            .iter()
            .map(|u| human::UpstreamShape {
                name: u.name.to_string(),
                endpoints: u.endpoints.iter().map(ToString::to_string).collect(),
            })
            .collect(),
    }
}
