//! Control requests (`procward restart web`, ...) as the supervisor carries
//! them out: each becomes events fed to the instances' machines, and its
//! answer waits in [`Pending`] until every instance concerned has settled.
//!
//! An instance has settled for a stop once nothing of it runs; for a start
//! or restart once a new process is ready, or once it has failed (errored,
//! stopped, or waiting out a restart delay after a crash). A reload is the
//! rolling reload's own (`reload.rs`): its answer waits for the report
//! [`super::Supervisor::reload_apps`] sends once every instance has settled,
//! aborted reloads included; a scale-down's waits for the instances it
//! removes to be gone (`scale.rs`).

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

use super::instance::Instance;
use super::reload::{InstanceReload, ReloadReport, ReloadResult};
use super::state::State;
use super::{App, Slot};
use crate::control::{Outcome, Reply, RestartRecord};

/// What a request does to its instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Stop for good.
    Stop,
    /// Start or restart: a new process, ready.
    Renew(&'static str),
}

/// What an answer waits for.
pub enum Wait {
    /// These instances to settle, each with its process before the request.
    Settle(Kind, Vec<(Slot, Option<i32>)>),
    /// The rolling reload's report; the instances and their processes
    /// before, should it never come.
    Reload(oneshot::Receiver<ReloadReport>, Vec<(Slot, Option<i32>)>),
    /// The outcomes of a scale-down, sent once its instances are removed
    /// (`scale.rs`); the instances and their processes before, should
    /// they never come.
    Retire(oneshot::Receiver<Vec<Outcome>>, Vec<(Slot, Option<i32>)>),
}

/// An answer waiting for instances to settle.
pub struct Pending {
    /// What it waits for.
    pub wait: Wait,
    /// Outcomes decided at once (nothing to do).
    pub done: Vec<Outcome>,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Reply>,
    /// The app a scale-up is adding instances to.
    pub scaling: Option<usize>,
}

impl Pending {
    /// Whether the answer waits for an instance of app `a`.
    pub fn touches(&self, a: usize) -> bool {
        let slots = match &self.wait {
            Wait::Settle(_, s) | Wait::Reload(_, s) | Wait::Retire(_, s) => s,
        };
        slots.iter().any(|((x, _), _)| *x == a)
    }

    /// The answer, once every instance has settled; `aborted` gives the
    /// answer now, as it stands (procward is stopping).
    pub fn answer(&mut self, apps: &[App], aborted: bool) -> Option<Reply> {
        let mut out = self.done.clone();
        let (kind, slots) = match &mut self.wait {
            Wait::Settle(kind, slots) => (*kind, &*slots),
            Wait::Reload(rx, slots) => {
                match rx.try_recv() {
                    Ok(report) => {
                        out.extend(report.iter().filter_map(|r| reloaded(apps, r)));
                        return Some(Reply::outcomes(out));
                    }
                    Err(oneshot::error::TryRecvError::Empty) if !aborted => return None,
                    Err(_) => {}
                }
                for &((a, i), before) in slots.iter() {
                    let inst = &apps[a].instances[i];
                    let detail = "aborted: procward is stopping".into();
                    out.push(outcome(&apps[a], inst, before, false, detail));
                }
                return Some(Reply::outcomes(out));
            }
            Wait::Retire(rx, slots) => {
                match rx.try_recv() {
                    Ok(removed) => {
                        out.extend(removed);
                        return Some(Reply::outcomes(out));
                    }
                    Err(oneshot::error::TryRecvError::Empty) if !aborted => return None,
                    Err(_) => {}
                }
                for &((a, i), before) in slots.iter() {
                    if let Some(inst) = apps[a].instances.get(i) {
                        let detail = "aborted: procward is stopping".into();
                        out.push(outcome(&apps[a], inst, before, false, detail));
                    }
                }
                return Some(Reply::outcomes(out));
            }
        };
        for &((a, i), before) in slots {
            let inst = &apps[a].instances[i];
            let settled = settled(kind, inst, before);
            if settled.is_none() && !aborted {
                return None;
            }
            let (ok, detail) = settled.unwrap_or((false, "aborted: procward is stopping".into()));
            out.push(outcome(&apps[a], inst, before, ok, detail));
        }
        Some(Reply::outcomes(out))
    }
}

/// One instance's reload as the answer lists it.
fn reloaded(apps: &[App], r: &InstanceReload) -> Option<Outcome> {
    let app = apps.iter().find(|a| a.spec.name == r.app)?;
    let inst = app.instances.get(r.instance)?;
    let (ok, detail) = match &r.result {
        ReloadResult::Done => (true, "reloaded".to_string()),
        ReloadResult::Aborted(why) => (false, format!("aborted: {why}")),
        ReloadResult::NotRunning => (true, format!("{}: nothing to reload", inst.state.name())),
    };
    Some(Outcome {
        app: r.app.clone(),
        instance: inst.index,
        pid_before: r.pid_before,
        pid: r.pid,
        state: inst.state.name().into(),
        ok,
        detail,
    })
}

/// Whether the instance has settled, and if so whether as asked.
fn settled(kind: Kind, inst: &Instance, before: Option<i32>) -> Option<(bool, String)> {
    let last = || {
        inst.last_status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "no process".into())
    };
    if inst.draining.is_some() {
        return None;
    }
    match (kind, &inst.state) {
        (_, State::Spawning { .. } | State::Stopping { .. } | State::Emptying { .. }) => None,
        (Kind::Stop, State::Stopped { .. }) => Some((true, "stopped".into())),
        (Kind::Stop, State::Errored { .. }) => Some((true, "errored, not running".into())),
        (Kind::Stop, State::Starting { .. } | State::Online { .. } | State::Waiting { .. }) => None,
        (Kind::Renew(_), State::Starting { .. }) => None,
        (Kind::Renew(done), State::Online { pid, .. }) => {
            (Some(*pid) != before).then(|| (true, done.to_string()))
        }
        (Kind::Renew(_), State::Waiting { .. }) => Some((
            false,
            format!("{} before it was ready; restart pending", last()),
        )),
        (Kind::Renew(_), State::Stopped { .. }) => {
            Some((false, format!("{}; not restarted", last())))
        }
        (Kind::Renew(_), State::Errored { .. }) => Some((false, format!("errored: {}", last()))),
    }
}

/// One instance's outcome.
pub fn outcome(
    app: &App,
    inst: &Instance,
    before: Option<i32>,
    ok: bool,
    detail: String,
) -> Outcome {
    Outcome {
        app: app.spec.name.clone(),
        instance: inst.index,
        pid_before: before,
        pid: inst.state.pid(),
        state: inst.state.name().into(),
        ok,
        detail,
    }
}

/// A restart as `describe` lists it.
pub fn record(reason: &str, inst: &Instance) -> RestartRecord {
    RestartRecord {
        at_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64,
        reason: reason.into(),
        exit: inst.last_status.map(|s| s.to_string()),
    }
}

impl super::Supervisor {
    /// Carries out one control request; the answer goes back now, or once
    /// its instances have settled ([`Pending`]).
    pub(super) fn on_call(&mut self, call: crate::control::Call) {
        use crate::control::Request;
        let crate::control::Call { request, reply } = call;
        if self.shutting_down {
            let _ = reply.send(Reply::refused(
                "shutting_down",
                "procward is stopping and takes no more requests",
                None,
            ));
            return;
        }
        tracing::info!(cmd = request.name(), "control request");
        if let Some(refusal) = self.refuse_while_scaling(&request) {
            let _ = reply.send(refusal);
            return;
        }
        let mut scaling = None;
        let answer = match request {
            Request::Hello | Request::Status | Request::Logs { .. } => Err(Reply::refused(
                "bad_request",
                "answered by the control socket itself",
                None,
            )),
            Request::Describe { app } => self.select(&app, false).map(|a| self.describe(a[0])),
            Request::Stop { app } => self.select(&app, true).map(|apps| self.stop_apps(&apps)),
            Request::Start { app } => self
                .select(&app, true)
                .map(|apps| self.renew(&apps, "start")),
            Request::Restart { app } => self
                .select(&app, true)
                .map(|apps| self.renew(&apps, "restart")),
            Request::Reload { app } => self.select(&app, true).map(|apps| self.reload(&apps)),
            Request::Signal { app, signal } => match crate::config::units::parse_signal(&signal) {
                Err(e) => Err(Reply::refused("bad_request", e, None)),
                Ok(sig) => self
                    .select(&app, true)
                    .map(|apps| Ok(self.signal_apps(&apps, sig as i32))),
            },
            Request::Scale { app, instances } => self.select(&app, false).map(|a| {
                scaling = (instances as usize > self.apps[a[0]].instances.len()).then_some(a[0]);
                self.scale(a[0], instances)
            }),
        };
        match answer {
            Ok(Ok(now)) | Err(now) => {
                let _ = reply.send(now);
            }
            Ok(Err((wait, done))) => self.pending.push(Pending {
                wait,
                done,
                reply,
                scaling,
            }),
        }
    }

    /// A refusal of a request that would act on an app being scaled: its
    /// answer would mix with the scale's.
    fn refuse_while_scaling(&self, request: &crate::control::Request) -> Option<Reply> {
        use crate::control::Request;
        let app = match request {
            Request::Stop { app }
            | Request::Start { app }
            | Request::Restart { app }
            | Request::Reload { app } => app,
            _ => return None,
        };
        let a = (0..self.apps.len())
            .find(|&a| (app == "all" || self.apps[a].spec.name == *app) && self.is_scaling(a))?;
        let name = &self.apps[a].spec.name;
        Some(Reply::refused(
            "busy",
            format!("`{name}` is being scaled"),
            Some(format!(
                "try again once `procward scale {name}` has answered"
            )),
        ))
    }

    /// The apps a request names: one by name, or every one for `all`.
    fn select(&self, name: &str, all_allowed: bool) -> Result<Vec<usize>, Reply> {
        if name == "all" && all_allowed {
            return Ok((0..self.apps.len()).collect());
        }
        match self.apps.iter().position(|a| a.spec.name == name) {
            Some(a) => Ok(vec![a]),
            None => {
                let names: Vec<&str> = self.apps.iter().map(|a| a.spec.name.as_str()).collect();
                Err(Reply::refused(
                    "unknown_app",
                    format!("no app named `{name}`"),
                    Some(format!(
                        "this procward runs: {}{}",
                        names.join(", "),
                        if all_allowed { " (or `all`)" } else { "" }
                    )),
                ))
            }
        }
    }

    fn describe(&self, a: usize) -> Answer {
        let app = &self.apps[a];
        let d = crate::control::Description {
            name: app.spec.name.clone(),
            config: crate::config::commands::app_settings(&app.spec),
            env_names: app.spec.env_keys.clone(),
            instances: app
                .instances
                .iter()
                .enumerate()
                .map(|(i, inst)| crate::control::InstanceHistory {
                    instance: inst.index,
                    state: inst.state.name().into(),
                    pid: inst.state.pid(),
                    restarts: inst.history.iter().cloned().collect(),
                    last_crash: self
                        .logs
                        .last_crash(a, i)
                        .map(|c| crate::control::LastCrash {
                            pid: c.pid,
                            status: c.status,
                            lines: c.lines,
                        }),
                })
                .collect(),
        };
        Ok(Reply::data(serde_json::to_value(d).unwrap_or_default()))
    }

    fn stop_apps(&mut self, apps: &[usize]) -> Answer {
        let mut slots = Vec::new();
        let mut done = Vec::new();
        for &a in apps {
            for i in 0..self.apps[a].instances.len() {
                let slot = (a, i);
                if !self.held.contains(&slot) {
                    self.held.push(slot);
                }
                let inst = &self.apps[a].instances[i];
                if inst.is_final() {
                    done.push(outcome(
                        &self.apps[a],
                        inst,
                        None,
                        true,
                        "already stopped".into(),
                    ));
                    continue;
                }
                slots.push((slot, inst.state.pid()));
                self.feed(slot, super::machine::Event::Stop);
            }
        }
        Err((Wait::Settle(Kind::Stop, slots), done))
    }

    /// `reload`: the rolling reload, answered by its report.
    fn reload(&mut self, apps: &[usize]) -> Answer {
        let slots = apps
            .iter()
            .flat_map(|&a| {
                self.apps[a]
                    .instances
                    .iter()
                    .enumerate()
                    .map(move |(i, inst)| ((a, i), inst.state.pid()))
            })
            .collect();
        let (tx, rx) = oneshot::channel();
        self.reload_apps(apps, Some(tx));
        Err((Wait::Reload(rx, slots), Vec::new()))
    }

    /// `start` or `restart`.
    fn renew(&mut self, apps: &[usize], what: &'static str) -> Answer {
        let mut slots = Vec::new();
        let mut done = Vec::new();
        for &a in apps {
            for i in 0..self.apps[a].instances.len() {
                let slot = (a, i);
                let inst = &self.apps[a].instances[i];
                let running = matches!(inst.state, State::Starting { .. } | State::Online { .. });
                let before = inst.state.pid();
                match what {
                    "start"
                        if running
                            || !inst.is_final() && !matches!(inst.state, State::Waiting { .. }) =>
                    {
                        done.push(outcome(
                            &self.apps[a],
                            inst,
                            before,
                            true,
                            "already running".into(),
                        ));
                        continue;
                    }
                    _ => {}
                }
                self.held.retain(|s| *s != slot);
                slots.push((slot, before));
                self.feed(
                    slot,
                    super::machine::Event::Restart(super::policy::Reason::Manual),
                );
            }
        }
        let past = match what {
            "start" => "started",
            _ => "restarted",
        };
        Err((Wait::Settle(Kind::Renew(past), slots), done))
    }

    fn signal_apps(&mut self, apps: &[usize], signo: i32) -> Reply {
        let mut out = Vec::new();
        let name = crate::init::signals::name(signo);
        for &a in apps {
            for inst in &self.apps[a].instances {
                let Some(pid) = inst.state.pid() else {
                    out.push(outcome(
                        &self.apps[a],
                        inst,
                        None,
                        true,
                        format!("{}: not signalled", inst.state.name()),
                    ));
                    continue;
                };
                let (ok, detail) = match crate::tree::signal(pid, signo) {
                    Ok(()) => {
                        self.signals_forwarded += 1;
                        (true, format!("{name} sent"))
                    }
                    Err(e) => (false, format!("{name} not sent: {e}")),
                };
                out.push(outcome(&self.apps[a], inst, Some(pid), ok, detail));
            }
        }
        Reply::outcomes(out)
    }

    /// Sends the answers whose instances have settled (all of them, as
    /// they stand, once procward is stopping).
    pub(super) fn settle_pending(&mut self) {
        let aborted = self.shutting_down;
        let mut k = 0;
        while k < self.pending.len() {
            match self.pending[k].answer(&self.apps, aborted) {
                Some(reply) => {
                    let p = self.pending.swap_remove(k);
                    let _ = p.reply.send(reply);
                }
                None => k += 1,
            }
        }
    }
}

/// A request's answer: now, or the instances to wait for.
pub(super) type Answer = Result<Reply, (Wait, Vec<Outcome>)>;
