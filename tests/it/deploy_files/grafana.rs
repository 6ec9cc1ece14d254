//! deploy/grafana-dashboard.json: every query is valid PromQL over the metrics `src/metrics.rs`
//! and `src/metrics/*.rs` define, with their labels, and every exported metric is on the
//! dashboard.

use std::collections::{BTreeMap, BTreeSet};

use promql_parser::parser::{self, Expr, VectorSelector};
use promql_parser::util::{walk_expr, ExprVisitor};

use super::{parse_json, read};

/// Every series name `src/metrics.rs` and `src/metrics/*.rs` export, with their labels
/// (histograms as their `_bucket`, `_sum` and `_count` series).
pub(super) fn exported_series() -> Series {
    let mut src = read("src/metrics.rs");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/metrics");
    let mut parts: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    parts.sort();
    for p in parts {
        src.push_str(&std::fs::read_to_string(p).unwrap());
    }
    let starts: Vec<usize> = src.match_indices("\"regcache_").map(|(i, _)| i).collect();
    let mut series = BTreeMap::new();
    for (n, &start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(src.len());
        let segment = &src[start + 1..end];
        let name = &segment[..segment.find('"').unwrap()];
        // The label list, if any, follows the name (and help) before the next metric's name.
        let labels: BTreeSet<String> = match segment.find("&[\"") {
            Some(at) => {
                let list = &segment[at + 2..];
                list[..list.find(']').unwrap()]
                    .split(',')
                    .map(|l| l.trim().trim_matches('"').to_string())
                    .filter(|l| !l.is_empty())
                    .collect()
            }
            None => BTreeSet::new(),
        };
        let before = &src[start.saturating_sub(120)..start];
        let histogram = before.contains("HistogramOpts::new(") || before.contains("histogram_vec(");
        if histogram {
            let mut with_le = labels.clone();
            with_le.insert("le".to_string());
            series.insert(format!("{name}_bucket"), with_le);
            series.insert(format!("{name}_sum"), labels.clone());
            series.insert(format!("{name}_count"), labels);
        } else {
            series.insert(name.to_string(), labels);
        }
    }
    assert!(
        series.len() >= 15,
        "src/metrics.rs was not understood: {series:?}"
    );
    assert!(series.contains_key("regcache_request_duration_seconds_bucket"));
    assert_eq!(
        series["regcache_requests_total"],
        ["kind", "result", "upstream"].map(String::from).into()
    );
    series
}

/// Labels Prometheus adds to every scraped series.
const TARGET_LABELS: [&str; 2] = ["instance", "job"];

/// The metric names and labels a query refers to.
#[derive(Default)]
struct QueryRefs {
    selectors: Vec<(String, Vec<String>)>,
    grouping: Vec<String>,
    unnamed: bool,
}

impl QueryRefs {
    fn selector(&mut self, vs: &VectorSelector) {
        let labels = vs
            .matchers
            .matchers
            .iter()
            .chain(vs.matchers.or_matchers.iter().flatten())
            .map(|m| m.name.clone())
            .filter(|n| n != "__name__")
            .collect();
        match &vs.name {
            Some(n) => self.selectors.push((n.clone(), labels)),
            None => self.unnamed = true,
        }
    }
}

impl ExprVisitor for QueryRefs {
    type Error = String;
    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, String> {
        match expr {
            Expr::VectorSelector(vs) => self.selector(vs),
            Expr::MatrixSelector(ms) => self.selector(&ms.vs),
            Expr::Aggregate(a) => {
                if let Some(m) = &a.modifier {
                    self.grouping.extend(m.labels().labels.iter().cloned());
                }
            }
            _ => {}
        }
        Ok(true)
    }
}

/// Replaces Grafana's variables with values PromQL accepts: range variables with a duration,
/// dashboard variables (used in regex matchers) with `.*`.
fn substitute_variables(expr: &str, variables: &BTreeSet<String>) -> String {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (var, len) = match after.strip_prefix('{') {
            Some(braced) => {
                let close = braced.find('}').expect("unclosed ${");
                (&braced[..close], close + 2)
            }
            None => {
                let n = after
                    .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                    .unwrap_or(after.len());
                (&after[..n], n)
            }
        };
        match var {
            "__rate_interval" | "__interval" | "__range" => out.push_str("5m"),
            v if variables.contains(v) => out.push_str(".*"),
            v => panic!("query {expr:?} uses ${v}, which the dashboard does not define"),
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

/// Every `targets[].expr` of every panel, rows' nested panels included, with the panel title.
fn dashboard_queries(panels: &serde_json::Value, out: &mut Vec<(String, String)>) {
    for panel in panels.as_array().into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or("?").to_string();
        let targets = panel["targets"].as_array();
        if let Some(targets) = targets {
            assert_eq!(
                panel["datasource"]["uid"].as_str(),
                Some("${DS_PROMETHEUS}"),
                "panel {title:?} uses the DS_PROMETHEUS input"
            );
            for t in targets {
                let expr = t["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("panel {title:?}: a target without expr"));
                out.push((title.clone(), expr.to_string()));
            }
        }
        dashboard_queries(&panel["panels"], out);
    }
}

pub(super) type Series = BTreeMap<String, BTreeSet<String>>;

#[test]
fn grafana_dashboard_queries_only_exported_metrics() {
    let dashboard = parse_json("deploy/grafana-dashboard.json");
    let series = exported_series();
    let inputs = dashboard["__inputs"].as_array().expect("__inputs");
    assert!(
        inputs
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
        "a DS_PROMETHEUS datasource input"
    );
    let variables = template_variables(&dashboard, &series);
    let mut queries = Vec::new();
    dashboard_queries(&dashboard["panels"], &mut queries);
    assert!(queries.len() >= 15, "only {} queries", queries.len());
    let mut shown = BTreeSet::new();
    for (title, expr) in &queries {
        check_query(title, expr, &variables, &series, &mut shown);
    }

    // Every exported metric is on the dashboard.
    for name in series.keys() {
        let base = name
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        assert!(
            shown.contains(name) || shown.contains(base),
            "{name} is exported but not on the dashboard"
        );
    }
}

/// The dashboard's template variables, each `label_values(<metric>, <label>)` over exported
/// series and labels.
fn template_variables(dashboard: &serde_json::Value, series: &Series) -> BTreeSet<String> {
    let mut variables = BTreeSet::new();
    for var in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().unwrap();
        variables.insert(name.to_string());
        let query = var["query"]["query"]
            .as_str()
            .or(var["query"].as_str())
            .unwrap_or("");
        if let Some(args) = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
        {
            let (metric, label) = args.split_once(',').expect("label_values(metric, label)");
            let (metric, label) = (metric.trim(), label.trim());
            let labels = series
                .get(metric)
                .unwrap_or_else(|| panic!("variable {name}: {metric} is not exported"));
            assert!(
                labels.contains(label) || TARGET_LABELS.contains(&label),
                "variable {name}: {metric} has no label {label}"
            );
        }
    }
    variables
}

/// One panel query is valid PromQL over exported metrics and their labels; adds the metrics it
/// shows to `shown`.
pub(super) fn check_query(
    title: &str,
    expr: &str,
    variables: &BTreeSet<String>,
    series: &Series,
    shown: &mut BTreeSet<String>,
) {
    let promql = substitute_variables(expr, variables);
    let ast =
        parser::parse(&promql).unwrap_or_else(|e| panic!("panel {title:?}: invalid PromQL {promql:?}: {e}"));
    let mut refs = QueryRefs::default();
    walk_expr(&mut refs, &ast).unwrap();
    assert!(
        !refs.unnamed,
        "panel {title:?}: a selector without a metric name: {expr}"
    );
    assert!(!refs.selectors.is_empty(), "panel {title:?}: no metric: {expr}");
    let mut available: BTreeSet<&str> = TARGET_LABELS.into();
    for (metric, labels) in &refs.selectors {
        let known = series
            .get(metric)
            .unwrap_or_else(|| panic!("panel {title:?}: {metric} is not in src/metrics.rs"));
        for l in labels {
            assert!(
                known.contains(l) || TARGET_LABELS.contains(&l.as_str()),
                "panel {title:?}: {metric} has no label {l}"
            );
        }
        available.extend(known.iter().map(String::as_str));
        shown.insert(metric.trim_end_matches("_bucket").to_string());
    }
    for l in &refs.grouping {
        assert!(
            available.contains(l.as_str()),
            "panel {title:?}: groups by {l}, which none of its metrics has"
        );
    }
}
