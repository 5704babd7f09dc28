//! Redis's command stream (`MONITOR`), to see the first totals write under a prefix: the startup
//! reconciliation, whatever the daemon writes after it.

use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};

use super::recipe::{Names, Totals, cents};
use super::services::REDIS_URL;

/// Every command Redis runs from now on, one `MONITOR` line each.
pub struct Monitor(Pin<Box<dyn Stream<Item = String> + Send>>);

impl Monitor {
    /// Starts watching.
    pub async fn start() -> Monitor {
        let monitor = redis::Client::open(REDIS_URL)
            .unwrap()
            .get_async_monitor()
            .await
            .expect("Redis MONITOR");
        Monitor(Box::pin(monitor.into_on_message::<String>()))
    }

    /// The totals of the first write under `names.prefix` (its `HSET`s, up to the `SET` of
    /// the `@as_of_ms` key that ends it) and the instant it was for.
    pub async fn first_write(mut self, names: &Names, limit: Duration) -> (Totals, u64) {
        let mut fields: Vec<(String, String, String)> = Vec::new();
        let scan = async {
            while let Some(line) = self.0.next().await {
                let args = args(&line);
                let Some((command, rest)) = args.split_first() else {
                    continue;
                };
                match command.to_ascii_uppercase().as_str() {
                    "HSET" if rest[0].starts_with(&names.prefix) => {
                        for pair in rest[1..].chunks(2) {
                            fields.push((rest[0].clone(), pair[0].clone(), pair[1].clone()));
                        }
                    }
                    "SET" if rest[0] == names.as_of_key() => {
                        return rest[1].parse::<u64>().expect("as_of_ms is a number");
                    }
                    _ => {}
                }
            }
            panic!("the MONITOR stream ended");
        };
        let as_of = tokio::time::timeout(limit, scan)
            .await
            .expect("a totals write under the prefix");
        let mut totals = Totals::new();
        for (key, field, value) in fields {
            let provider = key.strip_prefix(&names.prefix).unwrap().to_owned();
            let t = totals.entry(provider).or_default();
            match field.as_str() {
                "count" => t.0 = value.parse().unwrap(),
                "sum" => t.1 = cents(&value),
                other => panic!("unexpected total `{other}`"),
            }
        }
        (totals, as_of)
    }
}

/// The quoted arguments of a `MONITOR` line: `1.2 [0 127.0.0.1:5] "HSET" "k" "f" "v"`.
fn args(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = line.chars();
    while chars.by_ref().any(|c| c == '"') {
        let mut arg = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => arg.extend(chars.next()),
                c => arg.push(c),
            }
        }
        out.push(arg);
    }
    out
}

#[test]
fn monitor_lines_split_into_their_arguments() {
    let line = r#"1795424694.625645 [0 127.0.0.1:48654] "HSET" "p:provider-1" "sum" "12.50""#;
    assert_eq!(args(line), ["HSET", "p:provider-1", "sum", "12.50"]);
    assert_eq!(
        args(r#"1.0 [0 unix] "SET" "a\"b" "1""#),
        ["SET", "a\"b", "1"]
    );
}
