//! The scheduler's pure core: `step(inputs, now)` records what happened (events, operator
//! requests), decides what to trigger, poll, cancel or retry and when to wake next, and returns it
//! all as one `Output`. No IO and no clock reads: the runtime passes `now` in, makes the output's
//! writes durable, then carries out its actions, then sends its replies.

mod accounts;
mod active;
pub mod archive;
pub mod backfill;
#[cfg(test)]
mod check;
pub mod deadline;
pub mod details;
mod dispatch;
pub mod event;
mod operator;
pub mod predict;
mod schedule;
pub mod state;
mod ticks;
mod watch;
pub mod why;

#[cfg(test)]
mod tests;

use crate::ids::{AccountName, RunId};
use crate::model::pipeline::{Pipeline, PipelineName};
use crate::model::schedule::Schedule;
use chrono::{DateTime, Utc};
use event::{Event, Input, Output, Plan, Reply, Transition, TransitionKind};
use state::{AttemptPhase, AttemptRef, PipelineRun, PipelineRunId, State, Write};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// Most rounds of the start-queued-runs-then-dispatch passes in one plan: a run that ends during
/// dispatch (every step skipped or upstream-failed) may free its pipeline or backfill for another,
/// and each round starts what the last one freed. Bounded so that one plan stays short; a later
/// plan starts whatever is left.
const DISPATCH_ROUNDS: usize = 8;
/// How often the dispatch and attempt passes look at every active run, not only the changed ones:
/// a safety net for a time-based reason the incremental passes might miss.
const FULL_PASS_EVERY: chrono::Duration = chrono::Duration::minutes(1);
/// How often finished runs past `history_retention` are looked for.
const PRUNE_EVERY: chrono::Duration = chrono::Duration::hours(1);
/// Runs deleted in one pass at the most: one small transaction, never a long stall of the loop.
const PRUNE_BATCH: usize = 1000;
/// When a pass left runs behind, the next comes this soon.
const PRUNE_AGAIN_AFTER: chrono::Duration = chrono::Duration::minutes(1);
/// How often finished runs past the memory window leave memory.
const ARCHIVE_EVERY: chrono::Duration = chrono::Duration::minutes(1);

/// Tunables of the engine, from the daemon's config.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub poll_interval: Duration,
    /// Cap on attempts in flight (triggering or running) for each account.
    pub max_in_flight: usize,
    /// Most missed ticks run per pipeline under `catchup: all`.
    pub catchup_max: usize,
    /// How long after an ambiguous trigger answer to search for the run it may have created.
    pub reconcile_delay: Duration,
    /// Finished pipeline runs older than this are pruned.
    pub history_retention: Duration,
    /// Finished pipeline runs stay in memory this long, then only their records in the store
    /// (`Write::Archive`) and one small entry in memory remain. A minute covers what reads a
    /// finished run in full right after it ends (the metrics, notifications); whatever asks later
    /// reads the store.
    pub memory_window: Duration,
    /// Failed pipeline runs stay in memory this long instead: the status page lists recent
    /// failures from memory, and an operator retries one soon after it fails.
    pub failure_memory_window: Duration,
    /// A tick found this late is still on time; later ones count as missed (catch-up).
    pub on_time_grace: Duration,
    /// Poll each run around its expected end, learned from its job's recent durations (off when
    /// webhooks say when a run ends: polling is then only the fallback).
    pub predict_polls: bool,
    /// After a takeover from another leader: attempts it left `triggering` are reconciled (and
    /// re-sent when dbt Cloud has no run with their key) only this long after start, when no
    /// request it sent can still land. Zero for a single node, whose requests died with it.
    pub takeover_hold: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(10),
            max_in_flight: 50,
            catchup_max: 10,
            reconcile_delay: Duration::from_secs(10),
            history_retention: Duration::from_secs(30 * 86_400),
            memory_window: Duration::from_secs(60),
            failure_memory_window: Duration::from_secs(600),
            on_time_grace: Duration::from_secs(60),
            predict_polls: true,
            takeover_hold: Duration::ZERO,
        }
    }
}

/// A loaded pipeline with its parsed schedule.
#[derive(Debug, Clone)]
struct Loaded {
    def: Arc<Pipeline>,
    schedule: Option<Schedule>,
    /// The schedule of the pipeline's rolling backfill, if it has one.
    rolling: Option<Schedule>,
}

/// Calls to dbt Cloud the engine has asked for and not yet heard back from. Not persisted: after a
/// restart the persisted phases alone decide what to re-issue.
#[derive(Debug, Default)]
struct InFlight {
    triggers: BTreeSet<AttemptRef>,
    reconciles: BTreeSet<AttemptRef>,
    cancels: BTreeSet<AttemptRef>,
    details: BTreeSet<AttemptRef>,
    poll: bool,
}

/// Where to find things fast; derived from `state`, rebuilt at start-up.
#[derive(Debug, Default)]
struct Indices {
    /// Pipeline runs not yet terminal, indexed by pipeline.
    active: active::ActiveRuns,
    /// Which attempt watches which dbt Cloud run.
    by_dbt_run: HashMap<RunId, AttemptRef>,
    /// Each scheduled pipeline's next tick, so a plan does not look at every pipeline.
    ticks: ticks::TickCache,
    /// Runs whose deadline is still ahead of a verdict, by deadline.
    deadlines: deadline::DeadlineQueue,
}

/// Calls to dbt Cloud to make later (not persisted: a restart derives them again).
#[derive(Debug, Default)]
struct Due {
    /// When each watched dbt Cloud run is next looked at.
    polls: predict::PollSchedule,
    /// When a cancel that failed may be sent again.
    cancel_retry: HashMap<AttemptRef, DateTime<Utc>>,
    /// Failure details to fetch (a restart asks again for those still missing).
    details: BTreeMap<AttemptRef, details::DetailsDue>,
}

/// What this step changed, for its `Output`: the records to write and the transitions to report.
#[derive(Debug, Default)]
struct Outbox {
    /// Pipeline runs whose record changed.
    runs: BTreeSet<PipelineRunId>,
    cursors: BTreeSet<PipelineName>,
    backfills: BTreeSet<backfill::BackfillId>,
    deleted_runs: Vec<PipelineRunId>,
    archived_runs: Vec<PipelineRun>,
    transitions: Vec<Transition>,
}

/// Bookkeeping of the planning passes: what they must look at, and when they last looked at all.
#[derive(Debug, Default)]
struct Passes {
    /// Runs changed since their last dispatch and attempt pass: a plan looks only at these,
    /// unless a full pass is due (see `full_pass_due`). Not the same set as `Outbox::runs`: a
    /// run written is not necessarily one to look at again, nor the other way round.
    changed: BTreeSet<PipelineRunId>,
    /// The earliest time-based reason (a retry's time, a timeout, a re-send, a cancel retry) seen
    /// by the passes: a full pass runs when it comes.
    wake_at: Option<DateTime<Utc>>,
    last_full: Option<DateTime<Utc>>,
    /// A ready step waited for room under `max_in_flight`: a full pass runs when room frees.
    blocked_by_cap: bool,
    /// The accounts whose cap held a ready step back.
    blocked_accounts: BTreeSet<crate::ids::AccountName>,
    last_prune: Option<DateTime<Utc>>,
    last_archive: Option<DateTime<Utc>>,
}

/// The scheduler state machine.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    pipelines: BTreeMap<PipelineName, Loaded>,
    state: State,
    index: Indices,
    /// Each job's recent run durations, which place the looks at its runs.
    durations: predict::Durations,
    in_flight: InFlight,
    due: Due,
    outbox: Outbox,
    passes: Passes,
    /// How many times the pipeline definitions were set (start-up and every reload).
    definitions_set: u64,
    /// The pipelines with a rolling backfill, which every plan looks at (not all pipelines).
    rolling: Vec<PipelineName>,
}

/// A pipeline definition the engine could not use.
#[derive(Debug, thiserror::Error)]
#[error("pipeline {pipeline}: {message}")]
pub struct LoadError {
    pub pipeline: PipelineName,
    pub message: String,
}

impl Engine {
    /// Builds the engine from loaded state. Every attempt that was triggering when the state was
    /// written is reconciled before anything is sent again: the POST may have reached dbt Cloud.
    pub fn new(
        config: EngineConfig,
        pipelines: Vec<Pipeline>,
        state: State,
        now: DateTime<Utc>,
    ) -> Result<Self, LoadError> {
        let mut engine = Self {
            config,
            pipelines: BTreeMap::new(),
            state,
            index: Indices::default(),
            durations: predict::Durations::default(),
            in_flight: InFlight::default(),
            due: Due::default(),
            outbox: Outbox::default(),
            passes: Passes::default(),
            definitions_set: 0,
            rolling: Vec::new(),
        };
        engine.set_pipelines(pipelines)?;
        // Records read back grew their vectors push by push: give the spare room back.
        for run in engine.state.runs.values_mut() {
            for step in run.steps.values_mut() {
                step.attempts.shrink_to_fit();
            }
        }
        let mut to_reconcile = Vec::new();
        let mut learned = Vec::new();
        for run in engine.state.runs.values() {
            if !run.state.is_terminal() {
                let queued = run.state == state::PipelineRunState::Queued;
                engine
                    .index
                    .active
                    .insert(run.id.clone(), run.pipeline(), queued);
            }
            engine.index.deadlines.watch(run);
            for (step, step_run) in &run.steps {
                for attempt in &step_run.attempts {
                    let at = AttemptRef {
                        run: run.id.clone(),
                        step: step.clone(),
                        number: attempt.number,
                    };
                    if let Some(id) = attempt.run_id {
                        if attempt.phase != AttemptPhase::Finished {
                            engine.index.by_dbt_run.insert(id, at.clone());
                            // Every run in flight is looked at once at start-up.
                            engine.due.polls.set(id, now);
                        }
                    }
                    if let (Some(ms), Some(end)) = (attempt.run_duration_ms, attempt.finished_at) {
                        let account = accounts::account_of_step(run, &step.0);
                        learned.push((end, account, attempt.job_id, ms));
                    }
                    if attempt.phase == AttemptPhase::Triggering && attempt.resend_at.is_none() {
                        to_reconcile.push(at);
                    }
                }
            }
        }
        // The duration windows, oldest first, from the runs memory holds.
        learned.sort_unstable();
        let default_account = AccountName::default();
        for (_, account, job, ms) in learned {
            let ms = i64::try_from(ms).unwrap_or(i64::MAX);
            engine.durations.record(
                account.unwrap_or(&default_account),
                job,
                chrono::Duration::milliseconds(ms),
            );
        }
        let reconcile_at = now + to_chrono(engine.config.takeover_hold);
        for at in to_reconcile {
            if let Some(attempt) = engine.attempt_mut(&at) {
                attempt.reconcile_at = Some(reconcile_at);
            }
            engine.mark_changed(at.run);
        }
        engine.details_missing_after_restart(now);
        Ok(engine)
    }

    /// Replaces the pipeline definitions (start-up and reload). Runs in flight keep the definition
    /// they started with; removed pipelines stop being scheduled.
    pub fn set_pipelines(&mut self, pipelines: Vec<Pipeline>) -> Result<(), LoadError> {
        let mut loaded = BTreeMap::new();
        for def in pipelines {
            let schedule = match &def.schedule {
                Some(spec) => Some(Schedule::new(spec).map_err(|e| LoadError {
                    pipeline: def.name.clone(),
                    message: e.to_string(),
                })?),
                None => None,
            };
            let rolling = match &def.backfill {
                Some(rb) => Some(Schedule::new(&rb.schedule).map_err(|e| LoadError {
                    pipeline: def.name.clone(),
                    message: format!("backfill schedule: {e}"),
                })?),
                None => None,
            };
            loaded.insert(
                def.name.clone(),
                Loaded {
                    def: Arc::new(def),
                    schedule,
                    rolling,
                },
            );
        }
        self.pipelines = loaded;
        self.index.ticks.reset(self.pipelines.keys().cloned());
        self.rolling = self
            .pipelines
            .iter()
            .filter(|(_, l)| l.rolling.is_some())
            .map(|(name, _)| name.clone())
            .collect();
        self.definitions_set += 1;
        Ok(())
    }

    /// Changes whenever the pipeline definitions are replaced: what is derived from the set of
    /// pipelines (a metric series per pipeline, say) is rebuilt only then.
    pub fn definitions_version(&self) -> u64 {
        self.definitions_set
    }

    /// The pipeline runs not yet terminal (queued or running), in id order.
    pub fn active_runs(&self) -> impl Iterator<Item = &PipelineRun> {
        self.index
            .active
            .ids()
            .iter()
            .filter_map(|id| self.state.runs.get(id))
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn pipeline(&self, name: &PipelineName) -> Option<&Arc<Pipeline>> {
        self.pipelines.get(name).map(|l| &l.def)
    }

    pub fn pipelines(&self) -> impl Iterator<Item = &Arc<Pipeline>> {
        self.pipelines.values().map(|l| &l.def)
    }

    /// A pipeline's parsed schedule, if it has one.
    pub fn schedule(&self, name: &PipelineName) -> Option<&Schedule> {
        self.pipelines.get(name)?.schedule.as_ref()
    }

    /// The next schedule tick of a pipeline after `now`, if it is scheduled and not paused.
    pub fn next_tick(&self, name: &PipelineName, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let loaded = self.pipelines.get(name)?;
        let schedule = loaded.schedule.as_ref()?;
        // The tick the scheduler waits for, when still ahead, is the answer without a cron search
        // (the status page asks for every pipeline's).
        if let Some(next) = self.index.ticks.get(name).filter(|next| *next > now) {
            return Some(next);
        }
        schedule.next_after(now)
    }

    /// Number of attempts triggering or running in dbt Cloud.
    pub fn in_flight_attempts(&self) -> usize {
        self.index
            .active
            .iter()
            .filter_map(|id| self.state.runs.get(id))
            .flat_map(|run| run.steps.values())
            .filter(|s| s.current().is_some_and(|a| a.is_in_flight()))
            .count()
    }

    /// Records what happened.
    fn apply(&mut self, event: Event, now: DateTime<Utc>) {
        // An answer about an attempt may free it for its next step (a cancel to send again, a
        // reconcile to retry) without changing the record.
        let answered = match &event {
            Event::Triggered { attempt, .. }
            | Event::Reconciled { attempt, .. }
            | Event::ReconcileFailed { attempt, .. }
            | Event::CancelAcknowledged { attempt, .. }
            | Event::CancelFailed { attempt, .. }
            | Event::FailureDetails { attempt, .. } => Some(attempt.run.clone()),
            _ => None,
        };
        if let Some(run) = answered {
            self.passes.changed.insert(run);
        }
        match event {
            Event::Tick => {}
            Event::Triggered { attempt, result } => self.on_triggered(attempt, result, now),
            Event::Reconciled { attempt, found } => self.on_reconciled(attempt, found, now),
            Event::ReconcileFailed { attempt, message } => {
                self.on_reconcile_failed(attempt, message, now)
            }
            Event::RunsSeen { runs } => {
                self.in_flight.poll = false;
                for run in runs {
                    self.on_run_seen(&run, now);
                }
            }
            Event::PollFailed { message } => {
                self.in_flight.poll = false;
                tracing::warn!(error = %message, "poll failed; trying again at the next poll tick");
            }
            Event::CancelAcknowledged { attempt, run } => {
                self.in_flight.cancels.remove(&attempt);
                if let Some(a) = self.attempt_mut(&attempt) {
                    if let Some(cancel) = a.cancel.as_mut() {
                        cancel.acknowledged = true;
                    }
                }
                self.mark_changed(attempt.run.clone());
                self.on_run_seen(&run, now);
            }
            Event::CancelFailed { attempt, message } => {
                self.in_flight.cancels.remove(&attempt);
                tracing::warn!(%attempt, error = %message, "cancel failed; trying again at the next poll tick");
            }
            Event::RunHint { run } => {
                if self.index.by_dbt_run.contains_key(&run) {
                    self.due.polls.set(run, now);
                }
            }
            Event::Operator(request) => self.on_operator(request, now),
            Event::FailureDetails { attempt, fetch } => self.on_details(attempt, fetch, now),
        }
    }

    /// One step: takes `inputs` in order (events applied, operator requests carried out or
    /// refused), then decides what to do now and when to look again.
    pub fn step(&mut self, inputs: impl IntoIterator<Item = Input>, now: DateTime<Utc>) -> Output {
        let mut replies = Vec::new();
        for input in inputs {
            match input {
                Input::Event(event) => self.apply(event, now),
                Input::Request { reply, request } => replies.push(Reply {
                    to: reply,
                    result: self.operate(request, now),
                }),
            }
        }
        let plan = self.plan(now);
        Output {
            writes: self.take_writes(),
            actions: plan.actions,
            transitions: std::mem::take(&mut self.outbox.transitions),
            replies,
            wake_at: plan.wake_at,
        }
    }

    /// Decides what to do now and when to look again.
    fn plan(&mut self, now: DateTime<Utc>) -> Plan {
        let mut plan = Plan::default();
        self.plan_schedules(now, &mut plan);
        self.plan_rolling(now, &mut plan);
        let full = self.full_pass_due(now);
        let wake_before_passes = plan.wake_at.take();
        // A run that ends during dispatch may free its pipeline (or its backfill) for another.
        for _ in 0..DISPATCH_ROUNDS {
            self.plan_backfills(now);
            self.plan_queued_runs(now);
            if !self.plan_dispatch(now, &mut plan, full) {
                break;
            }
        }
        let dispatched = std::mem::take(&mut self.passes.changed);
        self.plan_attempts(now, &mut plan, full, &dispatched);
        self.passes.wake_at = if full {
            plan.wake_at
        } else {
            sooner(self.passes.wake_at, plan.wake_at)
        };
        plan.wake_at = sooner(wake_before_passes, self.passes.wake_at);
        if !self.passes.changed.is_empty() {
            // The attempt pass changed runs the dispatch pass has not seen yet.
            plan.wake_at = Some(now);
        }
        self.plan_deadlines(now, &mut plan);
        self.plan_poll(now, &mut plan);
        self.plan_details(now, &mut plan);
        self.prune(now);
        self.archive(now);
        plan
    }

    /// Records that a run changed: it is written at the end of this step and looked at by the
    /// next dispatch and attempt passes.
    fn mark_changed(&mut self, id: PipelineRunId) {
        if let Some(run) = self.state.runs.get(&id) {
            self.index.deadlines.watch(run);
        }
        self.passes.changed.insert(id.clone());
        self.outbox.runs.insert(id);
    }

    /// Whether the dispatch and attempt passes must look at every active run rather than only the
    /// runs changed since: at start-up, when a time-based reason comes due, when room frees under
    /// `max_in_flight`, and once a minute as a safety net.
    fn full_pass_due(&mut self, now: DateTime<Utc>) -> bool {
        let due = self
            .passes
            .last_full
            .is_none_or(|t| now - t >= FULL_PASS_EVERY)
            || self.passes.wake_at.is_some_and(|t| t <= now)
            || (self.passes.blocked_by_cap && self.blocked_account_has_room());
        if due {
            self.passes.last_full = Some(now);
            self.passes.blocked_by_cap = false;
            self.passes.blocked_accounts.clear();
        }
        due
    }

    /// The changes to make durable, in order, since the last step.
    /// The transitions reported since the last step (for the engine's own tests, which drive
    /// `apply` and `plan` apart).
    #[cfg(test)]
    fn take_transitions(&mut self) -> Vec<Transition> {
        std::mem::take(&mut self.outbox.transitions)
    }

    fn take_writes(&mut self) -> Vec<Write> {
        let mut writes = Vec::new();
        for id in std::mem::take(&mut self.outbox.deleted_runs) {
            writes.push(Write::DeleteRun(id));
        }
        for run in std::mem::take(&mut self.outbox.archived_runs) {
            writes.push(Write::Archive(Box::new(run)));
        }
        for id in std::mem::take(&mut self.outbox.runs) {
            if self.state.runs.contains_key(&id) {
                writes.push(Write::Changed(id));
            }
        }
        for name in std::mem::take(&mut self.outbox.cursors) {
            if let Some(cursor) = self.state.cursors.get(&name) {
                writes.push(Write::Cursor(name, cursor.clone()));
            }
        }
        for id in std::mem::take(&mut self.outbox.backfills) {
            if let Some(backfill) = self.state.backfills.get(&id) {
                writes.push(Write::Backfill(Box::new(backfill.clone())));
            }
        }
        writes
    }

    /// Whether any call to dbt Cloud is outstanding.
    pub fn has_calls_in_flight(&self) -> bool {
        self.in_flight.poll
            || !self.in_flight.triggers.is_empty()
            || !self.in_flight.reconciles.is_empty()
            || !self.in_flight.cancels.is_empty()
            || !self.in_flight.details.is_empty()
    }

    fn attempt(&self, at: &AttemptRef) -> Option<&state::Attempt> {
        self.state
            .runs
            .get(&at.run)?
            .steps
            .get(&at.step)?
            .attempts
            .iter()
            .find(|a| a.number == at.number)
    }

    fn attempt_mut(&mut self, at: &AttemptRef) -> Option<&mut state::Attempt> {
        self.state
            .runs
            .get_mut(&at.run)?
            .steps
            .get_mut(&at.step)?
            .attempts
            .iter_mut()
            .find(|a| a.number == at.number)
    }

    fn note(
        &mut self,
        now: DateTime<Utc>,
        run: &PipelineRun,
        what: TransitionKind,
        detail: String,
    ) {
        self.outbox
            .transitions
            .push(run_transition(now, run, what, detail));
    }

    /// `note` for a run in memory, by id (without cloning the run to free the borrow).
    fn note_id(
        &mut self,
        now: DateTime<Utc>,
        id: &PipelineRunId,
        what: TransitionKind,
        detail: String,
    ) {
        if let Some(run) = self.state.runs.get(id) {
            self.outbox
                .transitions
                .push(run_transition(now, run, what, detail));
        }
    }

    fn note_attempt(
        &mut self,
        now: DateTime<Utc>,
        at: &AttemptRef,
        what: TransitionKind,
        detail: String,
    ) {
        let Some(run) = self.state.runs.get(&at.run) else {
            return;
        };
        let attempt = run
            .steps
            .get(&at.step)
            .and_then(|s| s.attempts.iter().find(|a| a.number == at.number));
        self.outbox.transitions.push(Transition {
            at: now,
            pipeline: run.pipeline().clone(),
            run: Some(run.id.clone()),
            step: Some(at.step.0.clone()),
            attempt: Some(at.number),
            dbt_run: attempt.and_then(|a| a.run_id),
            href: attempt.and_then(|a| a.href.clone()),
            what,
            detail,
        });
    }

    /// Drops finished pipeline runs older than the retention from memory and from the store, at
    /// most `PRUNE_BATCH` a pass so that a long history is deleted in small transactions; a pass
    /// that left some behind comes back a minute later instead of an hour.
    fn prune(&mut self, now: DateTime<Utc>) {
        if self
            .passes
            .last_prune
            .is_some_and(|t| now - t < PRUNE_EVERY)
        {
            return;
        }
        self.passes.last_prune = Some(now);
        let Ok(retention) = chrono::Duration::from_std(self.config.history_retention) else {
            return;
        };
        let cutoff = now - retention;
        let old: Vec<PipelineRunId> = self
            .state
            .runs
            .values()
            .filter(|r| r.state.is_terminal() && r.finished_at.is_some_and(|f| f < cutoff))
            .map(|r| r.id.clone())
            .chain(self.state.archived.finished_before(cutoff))
            .take(PRUNE_BATCH + 1)
            .collect();
        if old.len() > PRUNE_BATCH {
            self.passes.last_prune = Some(now - PRUNE_EVERY + PRUNE_AGAIN_AFTER);
        }
        for id in old.into_iter().take(PRUNE_BATCH) {
            self.state.runs.remove(&id);
            self.state.archived.remove(&id);
            self.outbox.runs.remove(&id);
            self.outbox.deleted_runs.push(id);
        }
    }

    /// Moves runs finished more than `memory_window` ago (failed ones: `failure_memory_window`)
    /// out of memory, except those something still reads in full: a failure whose details are
    /// being fetched, a run of a backfill that is not over.
    fn archive(&mut self, now: DateTime<Utc>) {
        if self
            .passes
            .last_archive
            .is_some_and(|t| now - t < ARCHIVE_EVERY)
        {
            return;
        }
        self.passes.last_archive = Some(now);
        let cutoff = now - to_chrono(self.config.memory_window);
        let failure_cutoff = now - to_chrono(self.config.failure_memory_window);
        let held: BTreeSet<&PipelineRunId> = self
            .state
            .backfills
            .values()
            .filter(|b| b.finished_at.is_none())
            .flat_map(|b| b.dates.iter().filter_map(|d| d.run.as_ref()))
            .chain(self.due.details.keys().map(|at| &at.run))
            .chain(self.in_flight.details.iter().map(|at| &at.run))
            .collect();
        let leaving: Vec<PipelineRunId> = self
            .state
            .runs
            .values()
            .filter(|r| {
                let cutoff = match r.state {
                    state::PipelineRunState::Failed => failure_cutoff,
                    _ => cutoff,
                };
                r.state.is_terminal() && r.finished_at.is_some_and(|f| f < cutoff)
            })
            .filter(|r| !held.contains(&r.id))
            .map(|r| r.id.clone())
            .collect();
        for id in leaving {
            let Some(run) = self.state.runs.remove(&id) else {
                continue;
            };
            self.outbox.runs.remove(&id);
            let finished_at = run.finished_at.unwrap_or(run.created_at);
            if run.state == state::PipelineRunState::Succeeded {
                let last = self
                    .state
                    .archived_last_success
                    .entry(run.pipeline().clone())
                    .or_insert(finished_at);
                *last = (*last).max(finished_at);
            }
            self.state.archived.insert(
                id,
                state::ArchivedRun {
                    state: run.state,
                    finished_at,
                },
            );
            self.outbox.archived_runs.push(run);
        }
    }

    /// Whether a run's record is archived (the runtime reads it back with `recall` before an
    /// operator request that needs it whole).
    pub fn is_archived(&self, id: &PipelineRunId) -> bool {
        self.state.archived.contains_key(id)
    }

    /// Takes an archived run back into memory.
    pub fn recall(&mut self, run: PipelineRun) {
        if self.state.archived.remove(&run.id).is_some() {
            self.passes.changed.insert(run.id.clone());
            self.state.runs.insert(run.id.clone(), run);
        }
    }
}

/// A transition of a pipeline run as a whole.
fn run_transition(
    now: DateTime<Utc>,
    run: &PipelineRun,
    what: TransitionKind,
    detail: String,
) -> Transition {
    Transition {
        at: now,
        pipeline: run.pipeline().clone(),
        run: Some(run.id.clone()),
        step: None,
        attempt: None,
        dbt_run: None,
        href: None,
        what,
        detail,
    }
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

fn earliest(a: Option<DateTime<Utc>>, b: DateTime<Utc>) -> Option<DateTime<Utc>> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// The sooner of two optional times (`Option`'s own `min` would take `None` as the sooner).
fn sooner(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
