//! [`Reloader`], the handle on the control task that everyone else holds: it submits configs to
//! the task (every new config comes through here) and reads what the task publishes (the
//! snapshot, the history, the rollouts' status).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, MutexGuard};

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot};

use super::control::{Command, Control, RolloutView};
use super::history::{History, ReloadRecord};
use super::read::{self, Candidate, ReadResult, read_file};
use crate::config::ConfigErrors;
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;

/// The handle on the control task.
pub struct Reloader {
    path: Option<PathBuf>,
    /// The running snapshot: requests load it; only the control task stores it.
    pub snapshots: Arc<ArcSwap<Snapshot>>,
    pub metrics: Arc<Metrics>,
    history: Arc<History>,
    view: Arc<ArcSwap<RolloutView>>,
    inbox: mpsc::Sender<Command>,
    /// Numbers each read, taken before the read starts: the control task drops a read older
    /// than one it has already handled (a slow poll must not undo a newer reload).
    tickets: AtomicU64,
    /// The running snapshot's drain epoch, sent when a retirement moves it (`proxy::drain`).
    pub drain: tokio::sync::watch::Receiver<u64>,
}

/// A config read, numbered by when its read started.
pub struct Read {
    ticket: u64,
    pub result: ReadResult,
}

impl Reloader {
    /// The initial load (the first reload): checks the policies, builds the first snapshot and
    /// starts the control task, which runs until `stop` turns true or its sender is dropped.
    /// `path` is the file later reloads read.
    pub async fn start(
        candidate: Candidate,
        path: Option<PathBuf>,
        metrics: Arc<Metrics>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Reloader, ConfigErrors> {
        let (inbox, commands) = mpsc::channel(64);
        let (control, shared) = Control::start(candidate, metrics.clone(), inbox.clone()).await?;
        tokio::spawn(control.run(commands, stop));
        Ok(Reloader {
            path,
            snapshots: shared.snapshots,
            metrics,
            history: shared.history,
            view: shared.view,
            inbox,
            tickets: AtomicU64::new(1),
            drain: shared.drain,
        })
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The record of attempts: the revision serving and the history.
    pub fn record(&self) -> MutexGuard<'_, ReloadRecord> {
        self.history.record()
    }

    /// The rollouts' status as last published.
    pub fn rollouts(&self) -> Arc<RolloutView> {
        self.view.load_full()
    }

    /// Hands a read config to the control task. The attempt last made again is a no-op
    /// (`Ok(false)`); a valid config that passes its policies is applied (`Ok(true)`); an invalid
    /// or denied one is refused and recorded (`Err`), and the running config stays. Every new
    /// config goes through here, the demo's included.
    pub async fn submit(&self, result: ReadResult) -> Result<bool, ConfigErrors> {
        let ticket = self.ticket();
        self.submit_read(Read { ticket, result }).await
    }

    /// [`submit`](Reloader::submit)s a file read; a read that started before one the control
    /// task already handled is dropped (`Ok(false)`).
    pub async fn submit_read(&self, read: Read) -> Result<bool, ConfigErrors> {
        let (reply, answer) = oneshot::channel();
        let Read { ticket, result } = read;
        if self
            .inbox
            .send(Command::Submit {
                ticket,
                result: Box::new(result),
                reply,
            })
            .await
            .is_err()
        {
            tracing::warn!("weir is stopping: the config is not applied");
            return Ok(false);
        }
        answer.await.unwrap_or(Ok(false))
    }

    /// Re-reads the config file and submits it, unless it is the attempt last made (then
    /// `Ok(false)`, without parsing it).
    pub async fn reload(&self) -> Result<bool, ConfigErrors> {
        let ticket = self.ticket();
        let Some(path) = self.path.clone() else {
            return Ok(false);
        };
        let last = self.record().last_attempt.clone();
        let read = tokio::task::spawn_blocking(move || read::read_if_changed(&path, &last)).await;
        match read {
            Ok(Some(result)) => self.submit_read(Read { ticket, result }).await,
            _ => Ok(false),
        }
    }

    /// The file read, when it is not the attempt last made. Blocks: call it off the runtime.
    pub fn read_if_changed(&self) -> Option<Read> {
        let ticket = self.ticket();
        let last = self.record().last_attempt.clone();
        let result = read::read_if_changed(self.path.as_deref()?, &last)?;
        Some(Read { ticket, result })
    }

    /// The file read now, changed or not. Blocks: call it off the runtime.
    pub fn read(&self) -> Option<Read> {
        let ticket = self.ticket();
        let result = read_file(self.path.as_deref()?);
        Some(Read { ticket, result })
    }

    fn ticket(&self) -> u64 {
        self.tickets.fetch_add(1, Ordering::Relaxed)
    }

    /// An operator's command on `route`'s rollout, carried out by the control task; answers
    /// the route's new `/stats` rollout block.
    pub async fn manual(
        &self,
        route: &str,
        action: crate::rollout::Action,
    ) -> Result<serde_json::Value, crate::rollout::Refusal> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Manual {
            route: route.to_owned(),
            action,
            reply,
        };
        if self.inbox.send(command).await.is_err() {
            return Err(crate::rollout::Refusal::NoRollout(route.to_owned()));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(crate::rollout::Refusal::NoRollout(route.to_owned())))
    }

    /// Returns once the control task has carried out everything due now (interval checks,
    /// fast-fail, earlier submissions). On a paused clock, after `tokio::time::advance`, this
    /// is how a test knows the checks of the skipped time ran.
    pub async fn caught_up(&self) {
        let (reply, done) = oneshot::channel();
        if self.inbox.send(Command::CaughtUp { reply }).await.is_ok() {
            let _ = done.await;
        }
    }
}
