//! Database URLs whose passwords never reach logs (the type lives in `riverbed-core`, shared
//! with the other connectors).

pub use riverbed_core::DatabaseUrl;

/// The URL with user name, password and secret query values replaced by `***`; a URL that
/// does not parse is hidden wholesale (see [`riverbed_core::redact::url`]).
pub fn redact_url(url: &str) -> String {
    riverbed_core::redact::url(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("redis://:pw@127.0.0.1/0"),
            "redis://***@127.0.0.1/0"
        );
        assert_eq!(redact_url("postgres://app@db/x"), "postgres://***@db/x");
    }
}
