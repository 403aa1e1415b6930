//! The Helm chart renders and validates with real Helm (lint --strict,
//! template), kubernetes-validate against the Kubernetes schemas, and the
//! Prometheus Operator's CRD schemas, through scripts/tools/artifact-check.
//! values.schema.json makes bad values fail at lint and template time.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::output_of_success;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn check_chart(extra: &[&str]) -> String {
    let tool = repo("scripts/tools/artifact-check");
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

/// Renders the chart with these values (checked as above) and returns the
/// rendered YAML.
fn render(extra: &[&str]) -> String {
    let out_dir = tempfile::tempdir().unwrap();
    output_of_success(
        Command::new(repo("scripts/tools/artifact-check"))
            .arg("chart")
            .arg(repo("helm/procward"))
            .arg("--out")
            .arg(out_dir.path())
            .arg("--")
            .args(extra),
        "artifact-check chart --out",
    );
    std::fs::read_to_string(out_dir.path().join("rendered.yaml")).unwrap()
}

/// The chart with these values must fail both `helm lint --strict` and
/// `helm template`, saying `why`.
fn refused(extra: &[&str], why: &str) {
    let out = Command::new(repo("scripts/tools/artifact-check"))
        .arg("chart")
        .arg(repo("helm/procward"))
        .arg("--")
        .args(extra)
        .output()
        .expect("run artifact-check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{extra:?} was accepted:\n{text}");
    assert!(
        text.contains("FAIL helm lint --strict"),
        "{extra:?}:\n{text}"
    );
    assert!(text.contains("FAIL helm template"), "{extra:?}:\n{text}");
    assert!(text.contains(why), "{extra:?}: no {why:?} in\n{text}");
}

#[test]
fn values_of_the_wrong_type_are_refused() {
    refused(
        &["--set", "replicaCount=two"],
        "at '/replicaCount': got string, want integer",
    );
    refused(
        &["--set", "metrics.port=99999"],
        "at '/metrics/port': maximum",
    );
    refused(
        &["--set-json", "command=\"node server.js\""],
        "at '/command': got string, want array",
    );
    refused(
        &["--set", "procward.killTimeoutSeconds=5s"],
        "at '/procward/killTimeoutSeconds': got string, want integer",
    );
}

#[test]
fn unknown_keys_are_refused() {
    refused(
        &["--set", "replicas=3"],
        "additional properties 'replicas' not allowed",
    );
    refused(
        &["--set", "procward.killTimeout=5"],
        "additional properties 'killTimeout' not allowed",
    );
    refused(
        &["--set", "metrics.serviceMonitor.enable=true"],
        "additional properties 'enable' not allowed",
    );
    // The old place of the grace period: it is computed now.
    refused(
        &["--set", "terminationGracePeriodSeconds=30"],
        "additional properties 'terminationGracePeriodSeconds' not allowed",
    );
    // The kill timeout has one place, killTimeoutSeconds.
    refused(
        &["--set-json", r#"procward.args=["--kill-timeout","9s"]"#],
        "at '/procward/args/0'",
    );
}

#[test]
fn the_grace_period_is_computed_above_the_kill_timeout() {
    let rendered = render(&["--set", "procward.killTimeoutSeconds=25"]);
    assert!(
        rendered.contains("- --kill-timeout\n            - \"25s\""),
        "{rendered}"
    );
    assert!(
        rendered.contains("terminationGracePeriodSeconds: 30"),
        "{rendered}"
    );
}

#[test]
fn the_pod_runs_as_non_root_read_only_without_privileges() {
    let rendered = render(&[]);
    for want in [
        "runAsNonRoot: true",
        "runAsUser: 1000",
        "type: RuntimeDefault",
    ] {
        assert!(rendered.contains(want), "no {want:?} in\n{rendered}");
    }
    // Both containers, the init container and the app.
    let hardened = "securityContext:\n            allowPrivilegeEscalation: false\n            readOnlyRootFilesystem: true\n            capabilities:\n              drop: [\"ALL\"]";
    assert_eq!(rendered.matches(hardened).count(), 2, "{rendered}");
    // procward's runtime directory (its sockets) is a writable emptyDir.
    assert!(
        rendered.contains("- name: procward-run\n          emptyDir: {}"),
        "{rendered}"
    );
    assert!(
        rendered.contains("- name: procward-run\n              mountPath: /run/procward"),
        "{rendered}"
    );
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
    let rendered = render(&[
        "--set-json",
        r#"command=["node","--enable-source-maps","app.js"]"#,
    ]);
    let expected =
        "- /opt/procward/procward\n            - --metrics\n            - \"0.0.0.0:9079\"";
    assert!(rendered.contains(expected), "{rendered}");
    let tail = "- \"--\"\n            - \"node\"\n            - \"--enable-source-maps\"\n            - \"app.js\"";
    assert!(rendered.contains(tail), "{rendered}");
    assert!(rendered.contains("path: /readyz") && rendered.contains("path: /healthz"));
}
