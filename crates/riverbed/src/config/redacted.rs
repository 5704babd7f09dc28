//! The configuration as loaded, for `GET /api/config`: variables expanded, every credential
//! replaced by `***` (values of secret-named keys, user info and secret query parameters of
//! URLs, and anything that came from the environment).

use serde_json::{Map, Value};

use super::secrets::{Secrets, expand};

/// What replaces a credential.
const HIDDEN: &str = "***";

/// Key names (matched case-insensitively as substrings) whose values are credentials.
const SECRET_KEYS: &[&str] = &[
    "password",
    "secret",
    "token",
    "authorization",
    "api_key",
    "apikey",
    "credential",
];

/// Keys that name where a credential is, not the credential itself.
const POINTER_SUFFIXES: &[&str] = &["_file", "_env"];

/// The pipeline file `text` as JSON, redacted, with `${VAR}` taken from `env`. A file that does
/// not parse gives an error naming no value.
pub fn redacted(text: &str, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Value> {
    let table: toml::Table = text
        .parse()
        .map_err(|_| anyhow::anyhow!("the configuration does not parse"))?;
    let mut secrets = Secrets::default();
    let value = to_json(toml::Value::Table(table), env, &mut secrets);
    Ok(redact(value, &secrets, false))
}

fn to_json(v: toml::Value, env: &dyn Fn(&str) -> Option<String>, secrets: &mut Secrets) -> Value {
    match v {
        toml::Value::String(s) => {
            // A refused expansion shows the text as written (it names variables, not values).
            Value::String(expand(&s, env, secrets).unwrap_or(s))
        }
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => Value::from(f),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|i| to_json(i, env, secrets))
                .collect(),
        ),
        toml::Value::Table(t) => Value::Object(
            t.into_iter()
                .map(|(k, v)| (k, to_json(v, env, secrets)))
                .collect::<Map<_, _>>(),
        ),
    }
}

fn redact(v: Value, secrets: &Secrets, secret: bool) -> Value {
    match v {
        Value::String(_) | Value::Number(_) | Value::Bool(_) if secret => {
            Value::String(HIDDEN.into())
        }
        Value::String(s) => Value::String(secrets.hide(&riverbed_core::redact::urls_in(&s))),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|i| redact(i, secrets, secret))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let hide = secret || is_secret_key(&k);
                    (k, redact(v, secrets, hide))
                })
                .collect(),
        ),
        other => other,
    }
}

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_KEYS.iter().any(|s| key.contains(s))
        && !POINTER_SUFFIXES.iter().any(|s| key.ends_with(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "PG_PASSWORD").then(|| "fr0m-env-pw".to_owned())
    }

    #[test]
    fn credentials_never_show_and_the_rest_does() {
        let text = r#"
[source]
kind = "amqp"
urls = ["amqp://app:hunter2@rabbit:5672/%2f"]
queue = "orders"

[[sinks]]
name = "pg"
kind = "postgres"
connection = { url = "postgres://app:${PG_PASSWORD}@db/x?sslpassword=k3y" }
headers = { Authorization = "Bearer abc123", "X-Trace" = "on" }

[admin]
token_env = "ADMIN_TOKEN"
token = "literal-t0ken"
"#;
        let v = redacted(text, &env).unwrap();
        let shown = v.to_string();
        for secret in ["hunter2", "fr0m-env-pw", "k3y", "abc123", "literal-t0ken"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert_eq!(v["source"]["urls"][0], "amqp://***@rabbit:5672/%2f");
        assert_eq!(v["source"]["queue"], "orders");
        assert_eq!(v["sinks"][0]["headers"]["X-Trace"], "on");
        assert_eq!(v["sinks"][0]["headers"]["Authorization"], "***");
        assert_eq!(v["admin"]["token_env"], "ADMIN_TOKEN");
    }

    #[test]
    fn values_from_the_environment_are_hidden_wherever_they_are() {
        let v = redacted("[pipeline]\nnote = \"pw ${PG_PASSWORD} here\"\n", &env).unwrap();
        assert_eq!(v["pipeline"]["note"], "pw *** here");
        assert!(redacted("[x", &env).is_err());
    }
}
