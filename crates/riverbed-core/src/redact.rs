//! Credentials out of URLs, for every URL kind (amqp, amqps, postgres, redis, rediss, http...),
//! before a log line, an error or a printed configuration shows them.

/// What replaces a credential.
const HIDDEN: &str = "***";

/// Query parameters whose value is a secret (matched case-insensitively as a substring).
const SECRET_PARAMS: &[&str] = &["pass", "secret", "token", "key"];

/// `raw` with its user name, password and secret query parameters replaced by `***`:
/// `postgres://app:s3cret@db:5432/x` shows as `postgres://***@db:5432/x`.
///
/// The URL is parsed with the `url` crate, as the drivers parse it. A URL that does not parse,
/// or whose path, query or fragment still holds an `@` (a password with an unescaped `/`, `?`
/// or `#` in it), is hidden wholesale: only its scheme is shown.
pub fn url(raw: &str) -> String {
    match ::url::Url::parse(raw) {
        Ok(parsed) if !has_stray_at(&parsed) => redacted(parsed),
        _ => wholesale(raw),
    }
}

/// `text` with every URL in it redacted by [`url`]. A URL starts at its scheme; it ends at the
/// quote that opened it (`"` or `'`, backslash escapes honoured) or, unquoted, at white space.
pub fn urls_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(sep) = rest.find("://") {
        // The scheme starts after the last character that cannot be in one (which may be
        // several bytes long).
        let start = rest[..sep]
            .char_indices()
            .rev()
            .find(|&(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let quote = rest[..start]
            .chars()
            .next_back()
            .filter(|c| matches!(c, '"' | '\''));
        let len = url_len(&rest[start..], quote);
        out.push_str(&rest[..start]);
        out.push_str(&url(&rest[start..start + len]));
        rest = &rest[start + len..];
    }
    out.push_str(rest);
    out
}

/// The length of the URL at the start of `s`, which ends at `quote` or white space.
fn url_len(s: &str, quote: Option<char>) -> usize {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match quote {
            Some(q) if c == q && !escaped => return i,
            Some(_) => escaped = c == '\\' && !escaped,
            None if c.is_whitespace() => return i,
            None => {}
        }
    }
    s.len()
}

/// Whether an `@` was left outside the authority: the parser cut a password short there.
fn has_stray_at(u: &::url::Url) -> bool {
    u.path().contains('@')
        || u.query().is_some_and(|q| q.contains('@'))
        || u.fragment().is_some_and(|f| f.contains('@'))
}

/// `u` with user info and secret query values replaced.
fn redacted(mut u: ::url::Url) -> String {
    if !u.username().is_empty() || u.password().is_some() {
        // Both fail only for URLs without a host, which cannot carry user info.
        let _ = u.set_password(None);
        let _ = u.set_username(HIDDEN);
    }
    let secret_query = u.query_pairs().any(|(k, _)| is_secret_param(&k));
    if secret_query {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if is_secret_param(&k) {
                    HIDDEN.into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

fn is_secret_param(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_PARAMS.iter().any(|s| key.contains(s))
}

/// Only the scheme of a URL that cannot be parsed (or looks cut), never any of the rest.
fn wholesale(raw: &str) -> String {
    match raw.split_once("://") {
        Some((scheme, _))
            if scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+') =>
        {
            format!("{scheme}://{HIDDEN}")
        }
        _ => HIDDEN.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_with_non_ascii_before_a_scheme_is_redacted_without_panicking() {
        // Found by the config_load fuzz target: a multi-byte character right before `p://`.
        let text = "type = \"num:s%\u{7d9}\u{34d}p://u:secret@h/x\"";
        let out = urls_in(text);
        assert!(!out.contains("secret"), "{out}");
        assert!(out.starts_with("type = \"num:s%\u{7d9}\u{34d}"), "{out}");
    }

    const SCHEMES: &[&str] = &["amqp", "amqps", "postgres", "redis", "rediss", "http"];

    #[test]
    fn user_info_never_shows_for_any_scheme() {
        for scheme in SCHEMES {
            let shown = url(&format!("{scheme}://app:s3cret@db.example:5432/x?a=1"));
            assert_eq!(shown, format!("{scheme}://***@db.example:5432/x?a=1"));
        }
        assert_eq!(url("redis://:pw@127.0.0.1/0"), "redis://***@127.0.0.1/0");
        assert_eq!(
            url("https://token@api.example/v1"),
            "https://***@api.example/v1"
        );
        assert_eq!(
            url("amqp://127.0.0.1:5672/%2f"),
            "amqp://127.0.0.1:5672/%2f"
        );
    }

    #[test]
    fn passwords_with_url_delimiters_never_show_in_part() {
        for c in ["#", "/", "?", "@", "%", "%40", ":", "12/"] {
            for scheme in SCHEMES {
                let raw = format!("{scheme}://app:hunter{c}2@db.example:5432/x");
                let shown = url(&raw);
                assert!(!shown.contains("hunter"), "{raw} shown as {shown}");
                assert!(!shown.contains("2@"), "{raw} shown as {shown}");
            }
        }
        assert_eq!(url("postgres://app:12/2@db/x"), "postgres://***");
    }

    #[test]
    fn unparsable_urls_are_hidden_wholesale() {
        assert_eq!(url("postgres://app:p#ss@db/x"), "postgres://***");
        assert_eq!(url("not a url with s3cret"), "***");
        assert_eq!(url("x y://s3cret"), "***");
    }

    #[test]
    fn secret_query_parameters_are_hidden() {
        let shown = url("postgres://db/x?sslmode=require&password=s3cret&sslkey=/k.pem");
        assert_eq!(
            shown,
            "postgres://db/x?sslmode=require&password=***&sslkey=***"
        );
    }

    #[test]
    fn urls_in_text_are_found_by_their_quotes() {
        let line = r#"urls = ["amqp://app:s#3/c?r@et@rabbit:5672/%2f", 'redis://:a"b@h'], x = postgres://u:p@db/test y"#;
        assert_eq!(
            urls_in(line),
            r#"urls = ["amqp://***", 'redis://***@h'], x = postgres://***@db/test y"#
        );
        let json = r#"{"url":"amqp://guest:gu\"est@127.0.0.1:5672/%2f","x":"redis://h"}"#;
        assert_eq!(
            urls_in(json),
            r#"{"url":"amqp://***@127.0.0.1:5672/%2f","x":"redis://h"}"#
        );
        assert_eq!(urls_in("no url here"), "no url here");
    }
}
