//! User and built-in processing steps that run inside a partition, in delivery order.

use std::sync::Arc;

use crate::message::Message;
use crate::outcome::Failure;

/// The main stream: what a processor returns flows on to the next processor and then to every
/// sink that reads `main`.
pub const MAIN: &str = "main";

/// Collects the extra messages a processor emits on named streams (an aggregate's snapshots).
#[derive(Debug)]
pub struct Emitter {
    streams: Arc<[String]>,
    pub(crate) out: Vec<(usize, Message)>,
}

impl Emitter {
    pub(crate) fn new(streams: Arc<[String]>) -> Self {
        Emitter {
            streams,
            out: Vec::new(),
        }
    }

    /// Emits `msg` on `stream`. A stream that no sink reads drops the message.
    pub fn emit(&mut self, stream: &str, msg: Message) {
        if let Some(i) = self.streams.iter().position(|s| s == stream) {
            self.out.push((i, msg));
        }
    }
}

/// One processing step. Each partition owns its own instance, so state kept per key (a running
/// aggregate) needs no locking: a key always lands in the same partition.
pub trait Processor: Send + 'static {
    /// The step's name, used in dead letters and logs.
    fn name(&self) -> &str;

    /// The streams this step may emit on (besides returning the message to `main`).
    fn outputs(&self) -> Vec<String> {
        Vec::new()
    }

    /// Handles one message: `Ok(Some(m))` passes `m` on, `Ok(None)` drops it (it is acknowledged),
    /// `Err(f)` dead-letters the delivery with `f` as its reason.
    fn process(&mut self, msg: Message, out: &mut Emitter) -> Result<Option<Message>, Failure>;
}

/// Builds a step's instance for a partition.
pub type ProcessorFactory = Arc<dyn Fn(usize) -> Box<dyn Processor> + Send + Sync>;

/// A processor made of a closure: `|msg| Ok(Some(msg))`.
pub struct FnProcessor<F> {
    name: String,
    f: F,
}

impl<F> FnProcessor<F>
where
    F: FnMut(Message) -> Result<Option<Message>, Failure> + Send + 'static,
{
    /// Wraps a closure under a name.
    pub fn new(name: impl Into<String>, f: F) -> Self {
        FnProcessor {
            name: name.into(),
            f,
        }
    }
}

impl<F> Processor for FnProcessor<F>
where
    F: FnMut(Message) -> Result<Option<Message>, Failure> + Send + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn process(&mut self, msg: Message, _out: &mut Emitter) -> Result<Option<Message>, Failure> {
        (self.f)(msg)
    }
}
