//! The Helm chart renders and validates with real Helm (lint --strict,
//! template), kubernetes-validate against the Kubernetes schemas, and the
//! Prometheus Operator's CRD schemas, through ../shared/tools/artifact-check.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::output_of_success;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn check_chart(extra: &[&str]) -> String {
    let tool = repo("../shared/tools/artifact-check");
    assert!(tool.exists(), "{} is missing", tool.display());
    output_of_success(
        Command::new(tool)
            .arg("chart")
            .arg(repo("helm/procward"))
            .arg("--")
            .args(extra),
        "artifact-check chart",
    )
}

#[test]
fn chart_passes_lint_and_schema_validation_with_defaults() {
    let out = check_chart(&[]);
    assert!(out.contains("apps/v1 Deployment"), "{out}");
    assert!(out.contains("all checks passed"), "{out}");
}

#[test]
fn chart_with_a_service_monitor_selects_the_metrics_port() {
    let out = check_chart(&[
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "replicaCount=3",
    ]);
    assert!(out.contains("ok ServiceMonitor/"), "{out}");
}

#[test]
fn chart_puts_procward_in_front_of_the_app_command() {
    let tool = repo("../shared/tools/artifact-check");
    let out_dir = tempfile::tempdir().unwrap();
    output_of_success(
        Command::new(tool)
            .arg("chart")
            .arg(repo("helm/procward"))
            .arg("--out")
            .arg(out_dir.path())
            .args([
                "--",
                "--set-json",
                r#"command=["node","--enable-source-maps","app.js"]"#,
            ]),
        "artifact-check chart --out",
    );
    let rendered = std::fs::read_to_string(out_dir.path().join("rendered.yaml")).unwrap();
    let expected =
        "- /opt/procward/procward\n            - --metrics\n            - \"0.0.0.0:9079\"";
    assert!(rendered.contains(expected), "{rendered}");
    let tail = "- \"--\"\n            - \"node\"\n            - \"--enable-source-maps\"\n            - \"app.js\"";
    assert!(rendered.contains(tail), "{rendered}");
    assert!(rendered.contains("path: /readyz") && rendered.contains("path: /healthz"));
}
