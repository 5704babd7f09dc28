//! Drops messages whose JSON field does not match.

use crate::message::Message;
use crate::outcome::Failure;
use crate::processor::{Emitter, Processor};

/// Keeps a message when the value at a JSON pointer equals one of the given values
/// (or, with no values, when the field exists); drops (and acknowledges) the others.
pub struct Filter {
    name: String,
    field: String,
    values: Vec<serde_json::Value>,
    negate: bool,
}

impl Filter {
    /// Keeps messages whose `field` is one of `values` (exists, if `values` is empty).
    pub fn keep(name: &str, field: &str, values: Vec<serde_json::Value>) -> Self {
        Filter {
            name: name.into(),
            field: field.into(),
            values,
            negate: false,
        }
    }

    /// Drops messages whose `field` is one of `values` (exists, if `values` is empty).
    pub fn drop(name: &str, field: &str, values: Vec<serde_json::Value>) -> Self {
        Filter {
            negate: true,
            ..Self::keep(name, field, values)
        }
    }
}

impl Processor for Filter {
    fn name(&self) -> &str {
        &self.name
    }

    fn process(
        &mut self,
        mut msg: Message,
        _out: &mut Emitter,
    ) -> Result<Option<Message>, Failure> {
        let hit = match msg.pointer(&self.field)? {
            None => false,
            Some(v) => self.values.is_empty() || self.values.contains(v),
        };
        Ok((hit != self.negate).then_some(msg))
    }
}
