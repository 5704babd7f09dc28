//! Riverbed's daemon is the `riverbed` binary; this library only exposes its configuration
//! loader to the fuzzers (`fuzz/` at the repository root). Not a stable API.

#![forbid(unsafe_code)]

// The module's unit tests run in the binary (they use its demo); here it is built without them.
#[cfg(not(test))]
#[path = "config/mod.rs"]
#[allow(dead_code, unused_imports)]
mod config;

#[cfg(not(test))]
#[allow(dead_code, unused_imports)]
mod feed;

#[cfg(not(test))]
#[allow(dead_code, unused_imports)]
mod leader;

#[cfg(not(test))]
#[allow(dead_code, unused_imports)]
mod held;

/// The fuzzers' entry points.
#[cfg(not(test))]
#[doc(hidden)]
pub mod fuzzing {
    /// Parses and checks a pipeline file's text, as `riverbed validate` does; the error text on
    /// refusal.
    pub fn load_config(text: &str) -> Result<(), String> {
        crate::config::load_str(text)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
