//! What the admin server asks about a built pipeline: whether its connections are up, and the
//! state of its sinks' circuit breakers.

use std::sync::Arc;

use riverbed_core::breaker::{BreakerState, CircuitBreaker};
use riverbed_core::{BacklogProbe, SinkHealth};

/// One connection check: `Ok` while usable, else why not (credentials never in it).
pub type Check = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The live checks of one pipeline.
#[derive(Default)]
pub struct Probes {
    /// Connections the pipeline needs, by what they are (`source`, `sink pg`).
    pub connections: Vec<(String, Check)>,
    /// Circuit breakers, by sink name.
    pub breakers: Vec<(String, Arc<CircuitBreaker>)>,
    /// What the broker says waits at the source (consumer lag), where it tells.
    pub backlog: Vec<Arc<dyn BacklogProbe>>,
}

impl Probes {
    /// Adds the source's connection check (RabbitMQ: a consuming session is open; NATS: the
    /// pull runs).
    pub fn source(&mut self, check: impl Fn() -> Result<(), String> + Send + Sync + 'static) {
        self.connections
            .push(("source".to_owned(), Box::new(check)));
    }

    /// Adds a way to ask the broker how much waits at the source.
    pub fn backlog(&mut self, probe: impl BacklogProbe + 'static) {
        self.backlog.push(Arc::new(probe));
    }

    /// Adds a check per sink: its destination can be reached (a sink that cannot makes its
    /// partitions wait and the intake pause).
    pub fn sinks<'a>(&mut self, names: impl IntoIterator<Item = &'a str>, health: SinkHealth) {
        for name in names {
            let (health, sink) = (health.clone(), name.to_owned());
            self.connections.push((
                format!("sink {name}"),
                Box::new(move || match health.unreachable_for(&sink) {
                    Some(d) => Err(format!(
                        "destination unreachable for {} s (its partitions wait)",
                        d.as_secs()
                    )),
                    None => Ok(()),
                }),
            ));
        }
    }

    /// Adds a sink's breaker: an open breaker means its destination cannot be reached.
    pub fn breaker(&mut self, sink: &str, breaker: Arc<CircuitBreaker>) {
        let b = breaker.clone();
        self.connections.push((
            format!("sink {sink}"),
            Box::new(move || match b.state() {
                BreakerState::Open => Err("circuit breaker open".to_owned()),
                _ => Ok(()),
            }),
        ));
        self.breakers.push((sink.to_owned(), breaker));
    }
}

impl std::fmt::Debug for Probes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.connections.iter().map(|(n, _)| n).collect();
        f.debug_struct("Probes")
            .field("connections", &names)
            .finish()
    }
}
