//! The transactional outbox: the table and [`Outbox::enqueue`] for producers, and the relay
//! source ([`OutboxSource`]) that publishes rows in per-entity order and marks them sent.

mod acker;
mod claim;
mod config;
mod dead_letter;
mod retention;
mod source;
mod table;

pub use claim::{ENTITY_HEADER, VERSION_HEADER};
pub use config::PostgresOutboxConfig;
pub use dead_letter::OutboxDeadLetters;
pub use retention::remove_sent_once;
pub use source::OutboxSource;
pub use table::{Enqueued, Outbox, OutboxTable};
