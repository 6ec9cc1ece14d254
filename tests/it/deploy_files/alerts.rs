//! deploy/prometheus-rules.yml: every rule is an alert with a unique `Regcache` name, a
//! severity of `critical`, `warning` or `info` and a summary; its expression is valid PromQL
//! over the metrics `src/metrics.rs` exports, with their labels (the dashboard's check); and
//! every `$labels.X` its annotations name is a label the expression keeps.

use std::collections::BTreeSet;

use super::grafana::{check_query, exported_series};
use super::{read, yaml_documents};

pub(super) const RULES: &str = "deploy/prometheus-rules.yml";

#[test]
fn alert_rules_query_exported_metrics_and_name_kept_labels() {
    let docs = yaml_documents(RULES, &read(RULES));
    assert_eq!(docs.len(), 1, "{RULES}: one document");
    let series = exported_series();
    let mut names = BTreeSet::new();
    let mut shown = BTreeSet::new();
    let groups = docs[0]["groups"].as_sequence().expect("groups");
    for rule in groups
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules"))
    {
        let name = rule["alert"].as_str().expect("every rule is an alert");
        assert!(name.starts_with("Regcache"), "{name}");
        assert!(names.insert(name.to_string()), "{name} twice");
        let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
        assert!(
            ["critical", "warning", "info"].contains(&severity),
            "{name}: severity {severity:?}"
        );
        let expr = rule["expr"].as_str().expect("expr");
        check_query(name, expr, &BTreeSet::new(), &series, &mut shown);
        let annotations = rule["annotations"].as_mapping().expect("annotations");
        assert!(
            rule["annotations"]["summary"].as_str().is_some(),
            "{name}: no summary"
        );
        for text in annotations.values().filter_map(|v| v.as_str()) {
            for used in text.split("$labels.").skip(1) {
                let label: String = used
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let kept = expr.contains(&format!("by ({label}")) || expr.contains(&format!(", {label}"));
                assert!(
                    kept,
                    "{name}: annotation names {label}, which the expression drops"
                );
            }
        }
    }
    assert!(names.len() >= 8, "only {} alerts", names.len());
}
