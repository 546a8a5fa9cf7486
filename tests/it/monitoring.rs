//! The Grafana dashboard (`deploy/grafana/`) and the Prometheus alert rules
//! (`deploy/prometheus/alerts.yml`) query only series a running daemon really exports: every
//! metric name in every query is read from the `/metrics` of a real daemon moving real
//! messages. (`scripts/check-deploy` adds promtool's syntax check and the rules' unit tests.)

use std::collections::BTreeSet;
use std::time::Duration;

use crate::harness::*;

fn deploy_file(path: &str) -> String {
    std::fs::read_to_string(format!("{}/deploy/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// Every `expr` in the dashboard JSON, wherever it sits.
fn dashboard_queries(json: &serde_json::Value, into: &mut Vec<String>) {
    match json {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(q)) => into.push(q.clone()),
                    _ => dashboard_queries(v, into),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| dashboard_queries(v, into)),
        _ => {}
    }
}

/// Every `expr:` of a rules file: inline, or the block (`expr: |`) indented below it.
fn rule_queries(yaml: &str) -> Vec<String> {
    let indent = |l: &str| l.len() - l.trim_start().len();
    let lines: Vec<&str> = yaml.lines().collect();
    let mut queries = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let rest = rest.trim();
        if rest != "|" && rest != ">" {
            queries.push(rest.to_string());
            continue;
        }
        let block: Vec<&str> = lines[i + 1..]
            .iter()
            .take_while(|l| l.trim().is_empty() || indent(l) > indent(line))
            .map(|l| l.trim())
            .collect();
        queries.push(block.join("\n"));
    }
    queries
}

/// The metric names a query uses: every `batch_processor_*` identifier.
fn metric_names(query: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = query;
    while let Some(at) = rest.find("batch_processor_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// The names of the series a scrape holds samples of (`# HELP`/`# TYPE` lines alone do not
/// count: a family with no series yet would give a query nothing).
fn exported(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// The queries whose metric names the scrape lacks, one line per missing name; queries that
/// name no metric of the daemon at all are reported too (they would check nothing).
fn missing(queries: &[String], exported: &BTreeSet<String>) -> Vec<String> {
    let mut problems = Vec::new();
    for q in queries {
        let names = metric_names(q);
        if names.is_empty() {
            problems.push(format!("names no batch_processor metric: {q}"));
        }
        for name in names.difference(exported) {
            problems.push(format!("{name} (in {q})"));
        }
    }
    problems
}

/// `/metrics` of a real daemon that has moved messages and dead-lettered one, once ready.
fn scrape_a_working_daemon() -> String {
    let server = RedisServer::start();
    let names = Names::new();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let source_series = format!(
        "batch_processor_queue_length{{queue=\"source\",list=\"{}\"}}",
        names.source
    );
    let mut conn = server.conn();
    let mut messages: Vec<Vec<u8>> = (0..25).map(|i| event(i, 100)).collect();
    messages.push(b"not json".to_vec());
    push_all(&mut conn, &names.source, &messages);
    let mut daemon = start_daemon(
        &server,
        &names,
        &[
            ("REDIS_HTTP_ADDR", &addr),
            ("REDIS_PROCESSING_TIMEOUT", "0.2"),
        ],
    );
    assert!(wait_drained(&mut conn, &names, Duration::from_secs(20)));
    assert!(
        wait_until(Duration::from_secs(10), || {
            let (_, text) = http_get(port, "/metrics");
            metric(&text, "batch_processor_ready") == Some(1.0)
                && metric(&text, &source_series) == Some(0.0)
        }),
        "never ready with the source drained: {}",
        daemon.all_output()
    );
    let (status, text) = http_get(port, "/metrics");
    assert_eq!(status, 200);
    daemon.terminate_ok();
    text
}

#[test]
fn every_metric_the_dashboard_and_the_alerts_query_is_exported() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&deploy_file("grafana/batch-processor.json")).unwrap();
    let mut panels = Vec::new();
    dashboard_queries(&dashboard, &mut panels);
    let alerts = rule_queries(&deploy_file("prometheus/alerts.yml"));
    // Guards against a reader that silently finds nothing.
    assert!(panels.len() >= 8, "dashboard queries: {panels:?}");
    assert_eq!(alerts.len(), 6, "alert queries: {alerts:?}");

    let scrape = scrape_a_working_daemon();
    let exported = exported(&scrape);
    assert_eq!(
        missing(&panels, &exported),
        Vec::<String>::new(),
        "dashboard"
    );
    assert_eq!(missing(&alerts, &exported), Vec::<String>::new(), "alerts");
    // The readiness series the NotReady alert needs is 1 on a ready daemon.
    assert_eq!(metric(&scrape, "batch_processor_ready"), Some(1.0));
}

#[test]
fn the_check_reports_an_unknown_metric_and_a_query_without_one() {
    let exported: BTreeSet<String> = ["batch_processor_messages_total".to_string()].into();
    let queries = vec![
        "sum(rate(batch_processor_messages_total[5m]))".to_string(),
        "rate(batch_processor_mesages_total[5m]) > 0".to_string(),
        "up == 0".to_string(),
    ];
    let problems = missing(&queries, &exported);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].starts_with("batch_processor_mesages_total"));
    assert!(problems[1].starts_with("names no batch_processor metric"));
    let yaml = "  - alert: A\n    expr: |\n      x_total\n      > 1\n    for: 1m\n  - alert: B\n    expr: y == 0\n";
    assert_eq!(rule_queries(yaml), ["x_total\n> 1", "y == 0"]);
}
