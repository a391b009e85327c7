//! deploy/ as a user meets it: the Helm chart says what the plain manifests say (the same CRD,
//! RBAC rules, alerts and dashboard), the Deployment is hardened, the shipped controller config
//! is valid, and every metric the alerts and the dashboard query is one upkeep exports.
//! (The RBAC itself is held against what upkeep asks of the API in tests/apply.rs, tests/run.rs
//! and tests/demo.rs; `kubectl apply` of the manifests is in tests/run.rs.)

use std::collections::BTreeSet;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(rel: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/{rel}")).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn docs(rel: &str) -> Vec<serde_json::Value> {
    serde_saphyr::from_multiple(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn the_chart_carries_the_same_crd_alerts_and_dashboard_as_deploy() {
    for (chart, plain) in [
        (
            "deploy/helm/upkeep/crds/upkeeprollouts.upkeep.dev.yaml",
            "deploy/crds/upkeeprollouts.upkeep.dev.yaml",
        ),
        (
            "deploy/helm/upkeep/files/prometheusrule.yaml",
            "deploy/monitoring/prometheusrule.yaml",
        ),
        (
            "deploy/helm/upkeep/files/grafana-dashboard.json",
            "deploy/monitoring/grafana-dashboard.json",
        ),
    ] {
        assert_eq!(
            read(chart),
            read(plain),
            "{chart} differs from {plain}: copy it"
        );
    }
}

/// The `rules:` blocks of every ClusterRole and Role, in order.
fn rule_blocks(text: &str) -> Vec<String> {
    text.split("\n---")
        .filter(|d| d.contains("\nkind: ClusterRole\n") || d.contains("\nkind: Role\n"))
        .map(|d| {
            let at = d.find("\nrules:\n").expect("rules");
            d[at..]
                .lines()
                .filter(|l| !l.starts_with("{{"))
                .collect::<Vec<_>>()
                .join("\n")
                .trim()
                .to_string()
        })
        .collect()
}

#[test]
fn the_charts_rbac_rules_are_the_manifests() {
    let plain = rule_blocks(&read("deploy/manifests/upkeep.yaml"));
    let chart = rule_blocks(&read("deploy/helm/upkeep/templates/rbac.yaml"));
    assert_eq!(plain.len(), 6);
    assert_eq!(chart, plain);
}

#[test]
fn the_deployment_is_hardened_and_its_config_is_valid() {
    let all = docs("deploy/manifests/upkeep.yaml");
    let by_kind = |k: &str| {
        all.iter()
            .find(|d| d["kind"] == k)
            .unwrap_or_else(|| panic!("a {k}"))
            .clone()
    };
    let dep = by_kind("Deployment");
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["serviceAccountName"], "upkeep");
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    for r in ["requests", "limits"] {
        for k in ["cpu", "memory"] {
            assert!(c["resources"][r][k].is_string(), "resources.{r}.{k}");
        }
    }
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    // Secrets come from a Secret, never from the ConfigMap.
    let env: Vec<&str> = c["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(env.contains(&"GITHUB_TOKEN") && env.contains(&"UPKEEP_WEBHOOK_SECRET"));
    // The shipped config is a valid ControllerConfig.
    let cm = by_kind("ConfigMap");
    let text = cm["data"]["config.yaml"].as_str().expect("config.yaml");
    let f = upkeep::runconfig::parse("upkeep-config", text).expect("valid");
    assert_eq!(f.listen.as_deref(), Some("0.0.0.0:8080"));
    // The chart's config (its fixed keys plus values.config) is one too.
    let values: serde_json::Value =
        serde_saphyr::from_str(&read("deploy/helm/upkeep/values.yaml")).expect("values");
    let mut yaml = String::from(
        "apiVersion: upkeep.dev/v1alpha1\nkind: ControllerConfig\nnamespace: upkeep-system\nlisten: 0.0.0.0:8080\nstateDir: /var/lib/upkeep\ncacheDir: /var/lib/upkeep/cache\n",
    );
    for (k, v) in values["config"].as_object().expect("config") {
        yaml.push_str(&format!("{k}: {v}\n"));
    }
    upkeep::runconfig::parse("values.yaml config", &yaml).expect("the chart's config is valid");
}

/// Every `upkeep_*` series upkeep exports (with the suffixes histograms and counters get).
fn exported() -> BTreeSet<String> {
    use upkeep::telemetry::*;
    let m = Metrics::new();
    // Families show up only once they have a series.
    let c = ComponentLabel {
        component: "k3s".into(),
    };
    let s = StatusLabel {
        status: "ok".into(),
    };
    m.updates_available.get_or_create(&c).set(1);
    m.source_failing.get_or_create(&c).set(0);
    m.soak_regressions.get_or_create(&c).inc();
    m.notifications
        .get_or_create(&NotifyLabels {
            provider: "team".into(),
            result: "delivered".into(),
        })
        .inc();
    m.rollout_phase
        .get_or_create(&RolloutLabels {
            rollout: "r".into(),
            component: "k3s".into(),
            phase: "Succeeded".into(),
        })
        .set(1);
    m.reconcile_errors
        .get_or_create(&KindLabel { kind: "git".into() })
        .inc();
    m.check_result
        .get_or_create(&CheckLabels {
            rollout: "r".into(),
            check: "c".into(),
        })
        .set(1);
    m.upstream_requests.get_or_create(&s).inc();
    m.webhook_deliveries.get_or_create(&s).inc();
    m.rate_limit_remaining
        .get_or_create(&ApiLabel {
            api: "forge".into(),
        })
        .set(1);
    m.rollout_duration
        .get_or_create(&OutcomeLabels {
            component: "k3s".into(),
            outcome: "Succeeded".into(),
        })
        .observe(1.0);
    m.step_duration
        .get_or_create(&StepLabels {
            component: "k3s".into(),
            step: "Applying".into(),
        })
        .observe(1.0);
    let text = m.encode();
    let mut out = BTreeSet::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let (name, kind) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
            out.insert(name.to_string());
            match kind {
                "counter" => {
                    out.insert(format!("{name}_total"));
                }
                "histogram" => {
                    for s in ["_bucket", "_sum", "_count"] {
                        out.insert(format!("{name}{s}"));
                    }
                }
                _ => {}
            }
        }
    }
    out
}

fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("upkeep_") {
        let start = i + at;
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_lowercase() || b[end] == b'_') {
            end += 1;
        }
        // Not part of a longer word (a label value like `upkeep-system` has no underscore).
        if start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_') {
            out.insert(text[start..end].to_string());
        }
        i = end;
    }
    out
}

#[test]
fn alerts_and_the_dashboard_query_only_metrics_upkeep_exports() {
    let have = exported();
    assert!(have.contains("upkeep_rollout_phase"), "{have:?}");
    let rules = docs("deploy/monitoring/prometheusrule.yaml");
    let mut alerts = BTreeSet::new();
    let mut exprs = String::new();
    for g in rules[0]["spec"]["groups"].as_array().expect("groups") {
        for r in g["rules"].as_array().expect("rules") {
            alerts.insert(r["alert"].as_str().expect("alert").to_string());
            exprs.push_str(r["expr"].as_str().expect("expr"));
            exprs.push('\n');
            assert!(r["labels"]["severity"].is_string());
            assert!(r["annotations"]["summary"].is_string());
        }
    }
    for a in [
        "UpkeepRolloutFailed",
        "UpkeepRolloutStuck",
        "UpkeepUpdatesPending",
        "UpkeepSourceFailing",
    ] {
        assert!(alerts.contains(a), "{a}");
    }
    let dash: serde_json::Value =
        serde_json::from_str(&read("deploy/monitoring/grafana-dashboard.json")).expect("JSON");
    let mut queries = String::new();
    for p in dash["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            queries.push_str(t["expr"].as_str().expect("expr"));
            queries.push('\n');
        }
    }
    for (what, text) in [("alerts", &exprs), ("dashboard", &queries)] {
        let used = metric_names(text);
        assert!(!used.is_empty());
        let unknown: Vec<_> = used.difference(&have).collect();
        assert!(
            unknown.is_empty(),
            "the {what} query unknown metrics: {unknown:?}"
        );
    }
}
