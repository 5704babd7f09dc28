//! Assembling a pipeline in code: source, key, processors, sinks, dead letters, limits.

use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use crate::dead_letter::DeadLetterSink;
use crate::key::KeySpec;
use crate::lane::{BatchSettings, SinkSlot};
use crate::message::Message;
use crate::pipeline::Pipeline;
use crate::processor::{FnProcessor, MAIN, ProcessorFactory};
use crate::retry::{RetryMode, RetryPolicy};
use crate::sink::Sink;
use crate::source::Source;
use crate::storm::StormGuard;
use crate::{Failure, Processor};

/// Why a pipeline could not be assembled.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// No source was given.
    #[error("a pipeline needs a source")]
    NoSource,
    /// No sink was given.
    #[error("a pipeline needs at least one sink")]
    NoSink,
    /// Two sinks share a name.
    #[error("two sinks are named `{0}`")]
    DuplicateSink(String),
    /// A sink reads a stream nothing emits.
    #[error("sink `{sink}` reads stream `{stream}`, which no processor emits (streams: {known})")]
    UnknownStream {
        /// The sink.
        sink: String,
        /// The stream it reads.
        stream: String,
        /// The streams that exist.
        known: String,
    },
    /// Broker retry was asked of a source that cannot delay messages.
    #[error(
        "retry mode `broker` needs a source with delayed retry ({0} has none); use `in_process`"
    )]
    NoDelayedRetry(String),
    /// The storm guard's settings are out of range.
    #[error("storm guard: {0}")]
    StormGuard(String),
    /// Neither the pipeline nor the source names a dead-letter destination.
    #[error("no dead-letter destination: name one (the source {0} has no default)")]
    NoDeadLetters(String),
}

struct SinkSpec {
    name: String,
    input: String,
    sink: Arc<dyn Sink>,
    batch: Option<BatchSettings>,
}

/// Builds a [`Pipeline`]. Every setting has a default derived from the others.
pub struct PipelineBuilder {
    source: Option<Box<dyn Source>>,
    key: KeySpec,
    partitions: NonZeroUsize,
    max_in_flight: NonZeroUsize,
    retry: RetryPolicy,
    max_deliveries: NonZeroU32,
    shutdown_grace: Duration,
    processors: Vec<ProcessorFactory>,
    sinks: Vec<SinkSpec>,
    dead_letters: Option<Arc<dyn DeadLetterSink>>,
    storm_guard: Option<StormGuard>,
}

impl Default for PipelineBuilder {
    fn default() -> Self {
        PipelineBuilder {
            source: None,
            key: KeySpec::Source,
            partitions: default_partitions(),
            max_in_flight: NonZeroUsize::new(4096).expect("4096 is not zero"),
            retry: RetryPolicy::default(),
            max_deliveries: DEFAULT_MAX_DELIVERIES,
            shutdown_grace: Duration::from_secs(30),
            processors: Vec::new(),
            sinks: Vec::new(),
            dead_letters: None,
            storm_guard: Some(StormGuard::default()),
        }
    }
}

/// One partition per core, at least two: on this project's 2-core machine RabbitMQ ->
/// PostgreSQL ran at 36k msg/s with 2 partitions, 30k with 4 and 25k with 8 (BENCHMARKS.md);
/// sinks that wait on slow remote calls want more, set explicitly.
pub fn default_partitions() -> NonZeroUsize {
    let cores = std::thread::available_parallelism().map_or(2, NonZeroUsize::get);
    NonZeroUsize::new(cores.max(2)).expect("at least 2")
}

/// Deliveries of one message without it being settled before it is dead-lettered
/// (`delivery_limit`): well above what ordinary crashes and failovers cause (RabbitMQ 4 uses 20).
pub const DEFAULT_MAX_DELIVERIES: NonZeroU32 = NonZeroU32::new(20).expect("20 is not zero");

impl PipelineBuilder {
    /// A message the source delivered more than `n` times without it being settled (see
    /// [`crate::Metadata::deliveries`]) is dead-lettered with reason `delivery_limit` instead of
    /// being processed again: poison-pill protection (default [`DEFAULT_MAX_DELIVERIES`]).
    pub fn max_deliveries(mut self, n: NonZeroU32) -> Self {
        self.max_deliveries = n;
        self
    }

    /// The dead-letter storm guard (on by default, see [`StormGuard::default`]): when more than
    /// its share of the recent settlements were dead letters, the pipeline stops consuming and
    /// its run ends with [`crate::PipelineError::DeadLetterStorm`]. `None` turns it off, for
    /// pipelines whose point is to dead-letter most of what they read.
    pub fn storm_guard(mut self, guard: Option<StormGuard>) -> Self {
        self.storm_guard = guard;
        self
    }

    /// The source to consume.
    pub fn source(mut self, source: impl Source) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The source to consume, already boxed.
    pub fn boxed_source(mut self, source: Box<dyn Source>) -> Self {
        self.source = Some(source);
        self
    }

    /// Where the partition key comes from (default: the source's key).
    pub fn key(mut self, key: KeySpec) -> Self {
        self.key = key;
        self
    }

    /// How many partitions process in parallel (default: one per core, at least two).
    pub fn partitions(mut self, n: NonZeroUsize) -> Self {
        self.partitions = n;
        self
    }

    /// How many deliveries may be unsettled at once (default 4096).
    pub fn max_in_flight(mut self, n: NonZeroUsize) -> Self {
        self.max_in_flight = n;
        self
    }

    /// How transient failures are retried.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// How long a stop may take to drain before unsettled messages are left to redelivery.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Adds a processing step; `factory` builds one instance per partition.
    pub fn processor<F>(mut self, factory: F) -> Self
    where
        F: Fn(usize) -> Box<dyn Processor> + Send + Sync + 'static,
    {
        self.processors.push(Arc::new(factory));
        self
    }

    /// Adds a processing step made of a closure (cloned for each partition).
    pub fn map<F>(self, name: &str, f: F) -> Self
    where
        F: FnMut(Message) -> Result<Option<Message>, Failure> + Clone + Send + Sync + 'static,
    {
        let name = name.to_owned();
        self.processor(move |_| Box::new(FnProcessor::new(name.clone(), f.clone())))
    }

    /// Adds a sink reading the `main` stream, with batches derived from the limits.
    pub fn sink(self, name: &str, sink: impl Sink) -> Self {
        self.sink_with(name, MAIN, Arc::new(sink), None)
    }

    /// Adds a sink reading `input`, with explicit batch settings when given.
    pub fn sink_with(
        mut self,
        name: &str,
        input: &str,
        sink: Arc<dyn Sink>,
        batch: Option<BatchSettings>,
    ) -> Self {
        self.sinks.push(SinkSpec {
            name: name.to_owned(),
            input: input.to_owned(),
            sink,
            batch,
        });
        self
    }

    /// Where dead letters go (default: the source's own destination, if it has one).
    pub fn dead_letters(mut self, destination: Arc<dyn DeadLetterSink>) -> Self {
        self.dead_letters = Some(destination);
        self
    }

    /// Checks the assembly and builds the pipeline.
    pub fn build(self) -> Result<Pipeline, BuildError> {
        let source = self.source.ok_or(BuildError::NoSource)?;
        if let Some(g) = &self.storm_guard {
            g.check().map_err(BuildError::StormGuard)?;
        }
        if self.sinks.is_empty() {
            return Err(BuildError::NoSink);
        }
        if self.retry.mode == RetryMode::Broker && !source.capabilities().delayed_retry {
            return Err(BuildError::NoDelayedRetry(source.describe()));
        }
        let dead_letters = match self.dead_letters.or_else(|| source.dead_letters()) {
            Some(d) => d,
            None => return Err(BuildError::NoDeadLetters(source.describe())),
        };
        let partitions = self.partitions.get();
        let processors: Vec<Vec<Box<dyn Processor>>> = (0..partitions)
            .map(|p| self.processors.iter().map(|f| f(p)).collect())
            .collect();
        let mut streams = vec![MAIN.to_owned()];
        for p in &processors[0] {
            for s in p.outputs() {
                if !streams.contains(&s) {
                    streams.push(s);
                }
            }
        }
        let mut routes = vec![Vec::new(); streams.len()];
        let mut slots = Vec::with_capacity(self.sinks.len());
        // Batches no larger than what can be in flight: the pipeline's window or the source's.
        let window = source
            .capabilities()
            .window
            .map_or(self.max_in_flight.get(), |w| {
                w.clamp(1, self.max_in_flight.get())
            });
        let derived = BatchSettings::derived(window, partitions);
        for (i, spec) in self.sinks.into_iter().enumerate() {
            if slots.iter().any(|s: &SinkSlot| *s.name == spec.name) {
                return Err(BuildError::DuplicateSink(spec.name));
            }
            let Some(stream) = streams.iter().position(|s| *s == spec.input) else {
                return Err(BuildError::UnknownStream {
                    sink: spec.name,
                    stream: spec.input,
                    known: streams.join(", "),
                });
            };
            routes[stream].push(i);
            let batch = spec.batch.unwrap_or(derived);
            if batch.max_size.get() > window / partitions {
                tracing::warn!(
                    sink = %spec.name,
                    max_size = batch.max_size.get(),
                    per_partition_in_flight = window / partitions,
                    "Batch size exceeds what one partition can hold in flight; batches will flush on max_wait"
                );
            }
            slots.push(SinkSlot {
                name: spec.name.into(),
                sink: spec.sink,
                batch,
            });
        }
        Ok(Pipeline::new(
            source,
            crate::pipeline::Plan {
                key: self.key,
                max_in_flight: self.max_in_flight.get(),
                retry: self.retry,
                max_deliveries: self.max_deliveries.get(),
                shutdown_grace: self.shutdown_grace,
                processors,
                sinks: slots,
                routes: routes.into(),
                streams: streams.into(),
                dead_letters,
                storm_guard: self.storm_guard,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Journal, MemoryDeadLetters, MemorySink, MemorySource};

    struct Windowed(MemorySource);

    #[async_trait::async_trait]
    impl Source for Windowed {
        fn describe(&self) -> String {
            "windowed".into()
        }
        async fn recv(
            &mut self,
            out: &mut Vec<crate::Delivery>,
            max: usize,
        ) -> Result<bool, crate::SourceError> {
            self.0.recv(out, max).await
        }
        fn acker(&self) -> Arc<dyn crate::Acker> {
            self.0.acker()
        }
        fn capabilities(&self) -> crate::Capabilities {
            crate::Capabilities {
                delayed_retry: false,
                window: Some(100),
            }
        }
    }

    #[test]
    fn default_batches_fit_the_smaller_of_the_pipeline_and_source_windows() {
        let j = Journal::default();
        let build = |windowed: bool| {
            let source = MemorySource::new(vec![], j.clone());
            let b = Pipeline::builder();
            let b = if windowed {
                b.source(Windowed(source))
            } else {
                b.source(source)
            };
            b.partitions(NonZeroUsize::new(2).unwrap())
                .max_in_flight(NonZeroUsize::new(4096).unwrap())
                .sink("s", MemorySink::new("s", j.clone()))
                .dead_letters(Arc::new(MemoryDeadLetters::new(j.clone())))
                .build()
                .unwrap()
        };
        assert_eq!(build(true).batch_sizes(), vec![25]);
        assert_eq!(build(false).batch_sizes(), vec![1000]);
    }
}
