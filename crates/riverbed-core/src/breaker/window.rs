//! The sliding window of a closed breaker: the outcomes of the most recent calls.

use std::collections::VecDeque;

/// The last `size` call outcomes, oldest first.
#[derive(Debug, Clone)]
pub struct Window {
    outcomes: VecDeque<bool>,
    failures: u32,
    size: usize,
}

impl Window {
    /// An empty window of `size` calls.
    pub fn new(size: u32) -> Self {
        Window {
            outcomes: VecDeque::with_capacity(size as usize),
            failures: 0,
            size: size.max(1) as usize,
        }
    }

    /// Records one call; the oldest falls out once the window is full.
    pub fn record(&mut self, failed: bool) {
        self.outcomes.push_back(failed);
        self.failures += u32::from(failed);
        if self.outcomes.len() > self.size && self.outcomes.pop_front() == Some(true) {
            self.failures -= 1;
        }
    }

    /// Calls in the window.
    pub fn calls(&self) -> u32 {
        self.outcomes.len() as u32
    }

    /// Failed calls in the window.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_window_slides() {
        let mut w = Window::new(3);
        w.record(true);
        w.record(true);
        w.record(false);
        assert_eq!((w.calls(), w.failures()), (3, 2));
        w.record(false);
        assert_eq!((w.calls(), w.failures()), (3, 1));
    }
}
