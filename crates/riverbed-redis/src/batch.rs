//! Writing a batch as script calls over ranges of it, splitting a range that Redis refuses
//! until the refused message is isolated (the same policy as the SQL table sink).

use std::future::Future;
use std::ops::Range;

use riverbed_core::Outcome;

use crate::error::{ErrorClass, classify};

/// Calls `call` on `0..n`, splitting ranges that fail permanently. Ranges run in order; on a
/// transient failure, that range and every later one are transient (earlier ones committed),
/// so no later message of a key commits before an earlier one. Returns one outcome per item
/// and the sum of what the successful calls returned.
pub async fn write_isolating<F, Fut>(n: usize, mut call: F) -> (Vec<Outcome>, u64)
where
    F: FnMut(Range<usize>) -> Fut,
    Fut: Future<Output = redis::RedisResult<u64>>,
{
    let mut outcomes = vec![Outcome::Ok; n];
    let mut applied = 0;
    let mut pending: Vec<Range<usize>> = Vec::new();
    pending.push(0..n);
    while let Some(range) = pending.pop() {
        if range.is_empty() {
            continue;
        }
        match call(range.clone()).await {
            Ok(a) => applied += a,
            Err(e) => match classify(&e) {
                ErrorClass::Permanent(f) if range.len() == 1 => {
                    outcomes[range.start] = Outcome::Permanent(f);
                }
                ErrorClass::Permanent(_) => {
                    let mid = range.start + range.len() / 2;
                    pending.push(mid..range.end);
                    pending.push(range.start..mid);
                }
                stopped => {
                    let stopped = stopped.into_outcome();
                    for r in std::iter::once(range).chain(pending.drain(..)) {
                        outcomes[r].fill(stopped.clone());
                    }
                    break;
                }
            },
        }
    }
    (outcomes, applied)
}
