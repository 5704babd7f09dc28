//! What the admin routes report: the plan's outline (fixed at start), the live pipeline (set
//! once it is built), the instance's role in singleton mode, and whether it is draining.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use metrics_exporter_prometheus::PrometheusHandle;
use riverbed_core::{Stats, StatsSnapshot};
use serde_json::{Value, json};

use super::capture::Capture;
use super::series::Series;

use crate::config::probes::Probes;
use crate::config::raw::SourceKind;
use crate::config::{ClusterPlan, Plan, SinkPlanKind};
use crate::run::control::Controller;

/// This instance's part in singleton mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// No singleton lease: the instance consumes on its own.
    Single,
    /// Waiting for the lease.
    Standby,
    /// Holding the lease and consuming.
    Leader,
}

impl Role {
    /// How `/api/status` names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Single => "single",
            Role::Standby => "standby",
            Role::Leader => "leader",
        }
    }
}

/// What the routes show of a configuration: its outline and redacted text.
pub struct View {
    outline: Value,
    config: Option<Value>,
}

/// The running pipeline's counters and probes.
pub(super) struct Live {
    pub stats: Arc<Stats>,
    pub probes: Probes,
}

/// Shared by every route; cheap to clone.
#[derive(Clone)]
pub struct AdminState(Arc<Shared>);

struct Shared {
    path: std::path::PathBuf,
    outline: RwLock<Value>,
    lease: Option<String>,
    config: RwLock<Value>,
    token: Option<String>,
    prometheus: PrometheusHandle,
    role: Mutex<Role>,
    /// The running pipeline generation's counters and probes (a swap replaces them).
    live: RwLock<Option<Arc<Live>>>,
    /// Pipelines built so far: 1 for the first, one more per configuration swapped in.
    generation: AtomicU64,
    /// The last answers of the source's broker on what waits there.
    backlog: Mutex<Vec<riverbed_core::Backlog>>,
    draining: AtomicBool,
    controller: Controller,
    capture: Arc<Capture>,
    series: Mutex<Series>,
}

/// What the sampler reads of the live pipeline at one instant.
pub(super) struct Observed {
    /// The pipeline's counters.
    pub stats: StatsSnapshot,
    /// Every sink of the plan, with its breaker state when it has a breaker.
    pub sinks: Vec<(String, Option<&'static str>)>,
    /// The singleton role, when there is a lease.
    pub leader: Option<&'static str>,
}

impl AdminState {
    /// The state for `plan`, loaded from `path`, whose redacted form is `config`.
    pub fn new(
        plan: &Plan,
        path: &std::path::Path,
        config: Value,
        token: Option<String>,
        (prometheus, capture): (PrometheusHandle, Arc<Capture>),
        series: Series,
        controller: Controller,
    ) -> Self {
        let lease = match &plan.cluster {
            Some(ClusterPlan::Singleton(s)) => Some(s.name.clone()),
            _ => None,
        };
        AdminState(Arc::new(Shared {
            path: path.to_owned(),
            outline: RwLock::new(outline(plan, path)),
            role: Mutex::new(if lease.is_some() {
                Role::Standby
            } else {
                Role::Single
            }),
            lease,
            config: RwLock::new(config),
            token,
            prometheus,
            live: RwLock::new(None),
            generation: AtomicU64::new(0),
            backlog: Mutex::new(Vec::new()),
            draining: AtomicBool::new(false),
            controller,
            capture,
            series: Mutex::new(series),
        }))
    }

    /// Records this instance's role.
    pub fn set_role(&self, role: Role) {
        *self.0.role.lock().expect("role lock") = role;
    }

    /// A pipeline is built and about to run (the first, or one swapped in).
    pub fn running(&self, stats: Arc<Stats>, probes: Probes) {
        *self.0.live.write().expect("live lock") = Some(Arc::new(Live { stats, probes }));
        let generation = self.0.generation.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::gauge!("riverbed_config_generation").set(generation as f64);
        super::backlog::watch(self.clone(), generation);
    }

    /// The live pipeline while `generation` is the running one and the process does not
    /// drain.
    pub(super) fn live_of(&self, generation: u64) -> Option<Arc<Live>> {
        if self.0.generation.load(Ordering::Relaxed) != generation
            || self.0.draining.load(Ordering::Relaxed)
        {
            return None;
        }
        self.live()
    }

    pub(super) fn set_backlog(&self, backlog: Vec<riverbed_core::Backlog>) {
        *self.0.backlog.lock().expect("backlog lock") = backlog;
    }

    /// What the routes will show of `plan`, loaded from `text`, once it runs: its outline and
    /// its redacted text (worked out before `plan` is built, which uses it up).
    pub fn view(&self, plan: &Plan, text: &str) -> View {
        let config = crate::config::redacted(text, &|name| std::env::var(name).ok())
            .inspect_err(
                |e| tracing::warn!(error = %e, "The new configuration cannot be shown redacted"),
            )
            .ok();
        View {
            outline: outline(plan, &self.0.path),
            config,
        }
    }

    /// A changed configuration has been swapped in: the routes show `view` from now on.
    pub fn reconfigured(&self, view: View) {
        *self.0.outline.write().expect("outline lock") = view.outline;
        if let Some(c) = view.config {
            *self.0.config.write().expect("config lock") = c;
        }
    }

    pub(super) fn controller(&self) -> &Controller {
        &self.0.controller
    }

    fn live(&self) -> Option<Arc<Live>> {
        self.0.live.read().expect("live lock").clone()
    }

    /// Intake stopped: the pipeline drains, then the process ends.
    pub fn draining(&self) {
        self.0.draining.store(true, Ordering::Relaxed);
    }

    pub(super) fn token(&self) -> Option<&str> {
        self.0.token.as_deref()
    }

    pub(super) fn metrics(&self) -> String {
        self.0.prometheus.render()
    }

    pub(super) fn config(&self) -> Value {
        self.0.config.read().expect("config lock").clone()
    }

    pub(super) fn capture(&self) -> &Capture {
        &self.0.capture
    }

    /// Runs `f` on the history.
    pub(super) fn with_series<T>(&self, f: impl FnOnce(&mut Series) -> T) -> T {
        f(&mut self.0.series.lock().expect("series lock"))
    }

    /// The live pipeline's counters, sinks and role; `None` before it runs.
    pub(super) fn observe(&self) -> Option<Observed> {
        let live = self.live()?;
        let outline = self.0.outline.read().expect("outline lock");
        let sinks = outline["sinks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["name"].as_str())
            .map(|name| {
                let breaker = live.probes.breakers.iter().find(|(n, _)| n == name);
                (name.to_owned(), breaker.map(|(_, b)| b.state().as_str()))
            })
            .collect();
        Some(Observed {
            stats: live.stats.snapshot(),
            sinks,
            leader: self.0.lease.as_ref().map(|_| self.role().as_str()),
        })
    }

    fn role(&self) -> Role {
        *self.0.role.lock().expect("role lock")
    }

    fn leader(&self) -> Value {
        match &self.0.lease {
            Some(lease) => json!({"lease": lease, "state": self.role().as_str()}),
            None => Value::Null,
        }
    }

    /// Whether the instance is ready, and the JSON that says why (or why not).
    pub(super) fn readiness(&self) -> (bool, Value) {
        let role = self.role().as_str();
        if self.0.draining.load(Ordering::Relaxed) {
            return (
                false,
                json!({"status": "not_ready", "role": role, "reason": "draining"}),
            );
        }
        let Some(live) = self.live() else {
            if self.role() == Role::Standby {
                return (true, json!({"status": "ready", "role": role}));
            }
            return (
                false,
                json!({"status": "not_ready", "role": role, "reason": "starting"}),
            );
        };
        let problems: Vec<Value> = live
            .probes
            .connections
            .iter()
            .filter_map(|(what, check)| {
                check()
                    .err()
                    .map(|why| json!({"what": what, "problem": why}))
            })
            .collect();
        if problems.is_empty() {
            (true, json!({"status": "ready", "role": role}))
        } else {
            let reason = problems
                .iter()
                .map(|p| {
                    format!(
                        "{}: {}",
                        p["what"].as_str().unwrap_or(""),
                        p["problem"].as_str().unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            (
                false,
                json!({"status": "not_ready", "role": role, "reason": reason, "problems": problems}),
            )
        }
    }

    /// `/api/status`.
    pub(super) fn status(&self) -> Value {
        let mut out = self.0.outline.read().expect("outline lock").clone();
        out["generation"] = json!(self.0.generation.load(Ordering::Relaxed));
        let (ready, readiness) = self.readiness();
        out["ready"] = json!(ready);
        out["readiness"] = readiness;
        out["leader"] = self.leader();
        let Some(live) = self.live() else {
            out["state"] = json!(if self.role() == Role::Standby {
                "standby"
            } else {
                "starting"
            });
            out["counters"] = Value::Null;
            return out;
        };
        out["state"] = json!(if self.0.draining.load(Ordering::Relaxed) {
            "draining"
        } else {
            "running"
        });
        let s = live.stats.snapshot();
        out["counters"] = json!({
            "received": s.received,
            "acked": s.acked,
            "filtered": s.filtered,
            "dead_lettered": s.dead_lettered,
            "retried": s.retried,
            "unavailable_waits": s.unavailable_waits,
            "broker_retried": s.broker_retried,
            "dead_letter_write_failures": s.dead_letter_write_failures,
            "batches": s.batches,
            "in_flight": s.in_flight(),
        });
        let backlog: Vec<Value> = (self.0.backlog.lock().expect("backlog lock").iter())
            .map(|b| json!({"queue": b.name, "messages": b.messages}))
            .collect();
        out["backlog"] = json!(backlog);
        if let Some(sinks) = out["sinks"].as_array_mut() {
            for sink in sinks {
                let name = sink["name"].as_str().unwrap_or_default().to_owned();
                let breaker = live.probes.breakers.iter().find(|(n, _)| *n == name);
                sink["breaker"] = breaker.map_or(Value::Null, |(_, b)| json!(b.state().as_str()));
            }
        }
        out
    }
}

/// What the plan says, once: pipeline name, source, partitions, sinks.
fn outline(plan: &Plan, path: &std::path::Path) -> Value {
    let name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
    let sinks: Vec<Value> = plan
        .sinks
        .iter()
        .map(|s| json!({"name": s.name, "kind": sink_kind(&s.kind), "input": s.input, "breaker": null}))
        .collect();
    let cluster = match &plan.cluster {
        None => Value::Null,
        Some(ClusterPlan::Singleton(_)) => json!("singleton"),
        Some(ClusterPlan::Redundant(_)) => json!("redundant"),
        Some(ClusterPlan::Partitioned(_) | ClusterPlan::NatsPartitioned { .. }) => {
            json!("partitioned")
        }
    };
    json!({
        "pipeline": name,
        "version": env!("CARGO_PKG_VERSION"),
        "source": source_kind(&plan.source),
        "partitions": plan.partitions.get(),
        "max_in_flight": plan.max_in_flight.get(),
        "cluster": cluster,
        "sinks": sinks,
    })
}

fn source_kind(s: &SourceKind) -> &'static str {
    match s {
        SourceKind::Embedded(_) => "embedded",
        SourceKind::Generate(_) => "generate",
        SourceKind::Amqp(_) => "amqp",
        SourceKind::Nats(_) => "nats",
        SourceKind::PostgresOutbox(_) => "postgres_outbox",
    }
}

fn sink_kind(k: &SinkPlanKind) -> &'static str {
    match k {
        SinkPlanKind::Sqlite { .. } => "sqlite",
        SinkPlanKind::Stdout { .. } => "stdout",
        SinkPlanKind::File { .. } => "file",
        SinkPlanKind::Noop => "noop",
        SinkPlanKind::Postgres(_) => "postgres",
        SinkPlanKind::RedisHashIncr(_) => "redis_hash_incr",
        SinkPlanKind::RedisLatest(_) => "redis_latest",
        SinkPlanKind::Amqp(_) => "amqp",
        SinkPlanKind::Nats(_) => "nats",
        SinkPlanKind::Http(_) => "http",
    }
}
