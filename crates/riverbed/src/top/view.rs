//! One screen of `riverbed top`: the pipeline's state, the latest rates and totals, latency
//! percentiles, a sparkline of acked/s, the sinks and the dead letters by reason.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Row, Sparkline, Table};
use serde_json::Value;

use super::Fetched;

/// Draws `fetched` from the admin server at `admin`.
pub fn draw(frame: &mut Frame, admin: &str, fetched: &Fetched) {
    let [head, figures, spark, sinks, letters, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(5),
        Constraint::Length(6),
        Constraint::Min(4),
        Constraint::Min(4),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let foot_line = Line::from(format!("q quits · {admin} · every second"));
    frame.render_widget(Paragraph::new(foot_line).style(dim()), foot);
    let (status, series) = match fetched {
        Ok(answers) => answers,
        Err(why) => {
            let line = Line::from(vec![
                Span::styled("riverbed top ", bold()),
                Span::styled(why.clone(), Style::new().fg(Color::Red)),
            ]);
            frame.render_widget(Paragraph::new(line), head);
            return;
        }
    };
    let samples = series["samples"].as_array().map_or(&[][..], Vec::as_slice);
    let last = samples.last().unwrap_or(&Value::Null);
    frame.render_widget(Paragraph::new(header(status)), head);
    frame.render_widget(
        Paragraph::new(numbers(status, last)).block(Block::bordered().title(" now ")),
        figures,
    );
    let acked: Vec<u64> = samples
        .iter()
        .map(|s| s["acked"].as_f64().unwrap_or(0.0).round() as u64)
        .collect();
    let width = usize::from(spark.width.saturating_sub(2));
    let shown = &acked[acked.len().saturating_sub(width)..];
    let title = format!(" acked/s, last {} s ", shown.len());
    frame.render_widget(
        Sparkline::default()
            .block(Block::bordered().title(title))
            .data(shown)
            .style(Style::new().fg(Color::Green)),
        spark,
    );
    frame.render_widget(sink_table(status, last), sinks);
    frame.render_widget(letter_table(last), letters);
}

fn header(status: &Value) -> Line<'static> {
    let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
    let leader = status["leader"]["state"]
        .as_str()
        .unwrap_or("single")
        .to_owned();
    Line::from(vec![
        Span::styled("riverbed top ", bold()),
        Span::styled(text(&status["pipeline"]), bold()),
        Span::raw(format!(
            "  state {}  leader {leader}  partitions {}  max in flight {}  source {}",
            text(&status["state"]),
            status["partitions"],
            status["max_in_flight"],
            text(&status["source"]),
        )),
    ])
}

fn numbers(status: &Value, last: &Value) -> Vec<Line<'static>> {
    let c = &status["counters"];
    let lat = &last["latency"];
    vec![
        Line::from(format!(
            "received/s {}   acked/s {}   dead-lettered/s {}   in flight {}",
            rate(&last["received"]),
            rate(&last["acked"]),
            rate(&last["dead_lettered"]),
            count(&c["in_flight"]),
        )),
        Line::from(format!(
            "received {}   acked {}   dead-lettered {}   retried {}",
            count(&c["received"]),
            count(&c["acked"]),
            count(&c["dead_lettered"]),
            count(&c["retried"]),
        )),
        Line::from(format!(
            "end to end   p50 {}   p95 {}   p99 {}",
            millis(&lat["p50"]),
            millis(&lat["p95"]),
            millis(&lat["p99"]),
        )),
    ]
}

fn sink_table(status: &Value, last: &Value) -> Table<'static> {
    let rows = status["sinks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|sink| {
            let name = sink["name"].as_str().unwrap_or("").to_owned();
            let now = &last["sinks"][name.as_str()];
            let breaker = sink["breaker"].as_str().unwrap_or("none").to_owned();
            let colour = match breaker.as_str() {
                "open" => Color::Red,
                "half_open" => Color::Yellow,
                _ => Color::Reset,
            };
            Row::new(vec![
                name,
                sink["kind"].as_str().unwrap_or("").to_owned(),
                rate(&now["writes"]),
                rate(&now["batches"]),
                rate(&now["errors"]),
                count(&now["errors_total"]),
                millis(&now["latency"]["p99"]),
                breaker,
            ])
            .style(Style::new().fg(colour))
        });
    let header = Row::new([
        "sink",
        "kind",
        "writes/s",
        "batches/s",
        "errors/s",
        "errors",
        "p99 write",
        "breaker",
    ])
    .style(bold());
    Table::new(rows, [Constraint::Fill(1); 8])
        .header(header)
        .block(Block::bordered().title(" sinks "))
}

fn letter_table(last: &Value) -> Table<'static> {
    let rows = last["dead_letters"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(reason, n)| Row::new(vec![reason.clone(), count(n)]));
    Table::new(rows, [Constraint::Fill(3), Constraint::Fill(1)])
        .header(Row::new(["reason", "dead letters"]).style(bold()))
        .block(Block::bordered().title(" dead letters by reason "))
}

fn rate(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "-".to_owned(), |r| format!("{r:.1}"))
}

fn count(v: &Value) -> String {
    v.as_u64().map_or_else(|| "-".to_owned(), |n| n.to_string())
}

fn millis(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "-".to_owned(), |s| format!("{:.2} ms", s * 1000.0))
}

fn bold() -> Style {
    Style::new().add_modifier(Modifier::BOLD)
}

fn dim() -> Style {
    Style::new().add_modifier(Modifier::DIM)
}

#[cfg(test)]
mod tests {
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use serde_json::json;

    #[test]
    fn the_screen_shows_the_figures_of_the_answers() {
        let status = json!({
            "pipeline": "meters", "state": "running", "partitions": 3, "max_in_flight": 64,
            "source": "generate", "leader": null,
            "counters": {"received": 1200, "acked": 1100, "dead_lettered": 7, "in_flight": 93},
            "sinks": [{"name": "pg", "kind": "postgres", "breaker": "open"}],
        });
        let series = json!({"samples": [{
            "t": 1, "received": 250.0, "acked": 240.5, "dead_lettered": 1.0,
            "latency": {"p50": 0.002, "p95": 0.004, "p99": 0.0125},
            "sinks": {"pg": {"writes": 240.5, "batches": 3.0, "errors": 0.0,
                             "errors_total": 4, "latency": {"p99": 0.003}}},
            "dead_letters": {"malformed_payload": 7},
        }]});
        let mut terminal = Terminal::new(TestBackend::new(120, 40)).unwrap();
        terminal
            .draw(|f| super::draw(f, "http://127.0.0.1:9600/", &Ok((status, series))))
            .unwrap();
        let screen: String = terminal
            .backend()
            .buffer()
            .content()
            .iter()
            .map(|c| c.symbol())
            .collect();
        for shown in [
            "riverbed top meters",
            "acked/s 240.5",
            "acked 1100",
            "in flight 93",
            "p99 12.50 ms",
            "malformed_payload",
            "open",
        ] {
            assert!(screen.contains(shown), "no `{shown}` in {screen}");
        }
    }
}
