//! The Kubernetes emulator, driven by real clients: the `kubectl` binary and the `kube` crate,
//! over HTTPS on 127.0.0.1. Also a full simulated k3s rollout of 1 server + 2 agents, with and
//! without each fault.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, WatchEvent, WatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use upkeep_sim::clock::SimClock;
use upkeep_sim::kube::{ClusterFault, KubeOptions, KubeSim, Timings};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A simulated cluster on real time (its controllers look every few milliseconds, so that
/// what happens at once happens, and nothing that takes simulated minutes does).
fn real_time_cluster() -> KubeSim {
    upkeep::sources::install_crypto_provider();
    KubeSim::start_in_thread(KubeOptions {
        clock: SimClock::real(),
        bookmark_interval: Duration::from_millis(200),
        ..KubeOptions::default()
    })
    .expect("the emulator starts")
}

/// A simulated cluster whose clock moves only when the test moves it ([`KubeSim::run_for`]):
/// what it does is the same on a busy machine.
fn stepped_cluster() -> KubeSim {
    upkeep::sources::install_crypto_provider();
    KubeSim::start_in_thread(KubeOptions {
        clock: SimClock::stepped(chrono::Utc::now()),
        bookmark_interval: Duration::from_millis(200),
        ..KubeOptions::default()
    })
    .expect("the emulator starts")
}

/// How far a stepped cluster's clock moves at a time.
const STEP: Duration = Duration::from_secs(10);

/// Move a stepped cluster's clock a step at a time until `done` holds; false if it never does
/// in a simulated day.
fn run_until(sim: &KubeSim, done: impl Fn() -> bool) -> bool {
    for _ in 0..(24 * 3600 / STEP.as_secs()) {
        if done() {
            return true;
        }
        sim.run_for(STEP, STEP);
    }
    done()
}

struct Kubectl {
    dir: tempfile::TempDir,
}

impl Kubectl {
    fn new(sim: &KubeSim) -> Kubectl {
        let dir = tempfile::tempdir().expect("tempdir");
        sim.write_kubeconfig(&dir.path().join("kubeconfig"))
            .expect("kubeconfig");
        Kubectl { dir }
    }
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("kubectl");
        c.env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            .env("HOME", self.dir.path())
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args);
        c
    }
    /// Run kubectl; (exit code, stdout, stderr).
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = self
            .command(args)
            .output()
            .expect("kubectl is installed (it is on these machines; see .ci/run)");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert_eq!(code, 0, "kubectl {args:?} failed:\n{out}\n{err}");
        out
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        p
    }
}

const SERVER_PLAN: &str = r#"apiVersion: upgrade.cattle.io/v1
kind: Plan
metadata:
  name: server-plan
  namespace: system-upgrade
spec:
  concurrency: 1
  cordon: true
  nodeSelector:
    matchExpressions:
    - {key: node-role.kubernetes.io/control-plane, operator: In, values: ["true"]}
  serviceAccountName: system-upgrade
  upgrade:
    image: rancher/k3s-upgrade
  version: VERSION
"#;

const AGENT_PLAN: &str = r#"apiVersion: upgrade.cattle.io/v1
kind: Plan
metadata:
  name: agent-plan
  namespace: system-upgrade
spec:
  concurrency: 1
  cordon: true
  drain:
    force: true
    skipWaitForDeleteTimeout: 60
  nodeSelector:
    matchExpressions:
    - {key: node-role.kubernetes.io/control-plane, operator: DoesNotExist}
  prepare:
    image: rancher/k3s-upgrade
    args: ["prepare", "server-plan"]
  serviceAccountName: system-upgrade
  upgrade:
    image: rancher/k3s-upgrade
  version: VERSION
"#;

#[test]
fn kubectl_gets_nodes_applies_crds_and_plans_patches_status_waits_and_watches() {
    let sim = real_time_cluster();
    let k = Kubectl::new(&sim);
    let nodes = k.ok(&["get", "nodes"]);
    assert!(nodes.starts_with("NAME"), "{nodes}");
    for n in ["server-1", "agent-1", "agent-2"] {
        assert!(nodes.contains(n), "{nodes}");
    }
    assert!(nodes.contains("control-plane,etcd,master"), "{nodes}");
    assert!(nodes.contains("v1.33.4+k3s1"), "{nodes}");
    let version = k.ok(&["version"]);
    assert!(
        version.contains("Server Version: v1.33.4+k3s1"),
        "{version}"
    );

    // The real CRDs, applied server-side.
    for f in [
        "upgrade.cattle.io_plans.yaml",
        "helm.toolkit.fluxcd.io_helmreleases.yaml",
        "longhorn-crds.yaml",
    ] {
        let p = root().join("crates/upkeep-sim/src/crds").join(f);
        let out = k.ok(&["apply", "--server-side", "-f", &p.to_string_lossy()]);
        assert!(out.contains("serverside-applied"), "{out}");
    }
    // A new CRD makes its kind served.
    let crd = k.write("widgets.yaml", "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.example.dev\nspec:\n  group: example.dev\n  scope: Namespaced\n  names: {kind: Widget, plural: widgets, singular: widget, listKind: WidgetList}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}\n");
    k.ok(&["apply", "--server-side", "-f", &crd.to_string_lossy()]);
    let w = k.write("widget.yaml", "apiVersion: example.dev/v1\nkind: Widget\nmetadata: {name: w1, namespace: default}\nspec: {size: 3}\n");
    k.ok(&["apply", "--server-side", "-f", &w.to_string_lossy()]);
    assert!(k.ok(&["get", "widgets"]).contains("w1"));

    // A Plan, applied server-side; the simulated SUC takes it up.
    let plan = k.write("plan.yaml", &SERVER_PLAN.replace("VERSION", "v1.33.5+k3s1"));
    let out = k.ok(&["apply", "--server-side", "-f", &plan.to_string_lossy()]);
    assert!(
        out.contains("plan.upgrade.cattle.io/server-plan serverside-applied"),
        "{out}"
    );
    let got = k.ok(&["get", "plans", "-n", "system-upgrade"]);
    assert!(
        got.contains("server-plan") && got.contains("v1.33.5+k3s1"),
        "{got}"
    );
    // Applying the same field from another manager conflicts, and the error says who owns it.
    let other = k.write(
        "plan2.yaml",
        &SERVER_PLAN.replace("VERSION", "v1.33.6+k3s1"),
    );
    let (code, _, err) = k.run(&[
        "apply",
        "--server-side",
        "--field-manager",
        "someone-else",
        "-f",
        &other.to_string_lossy(),
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("conflict") && err.contains(".spec.version"),
        "{err}"
    );

    // patch --subresource=status, then wait for the condition it sets, and watch it happen.
    let status = |s: &str| {
        format!(
            r#"{{"status":{{"conditions":[{{"type":"Ready","status":"{s}","reason":"Test","message":"set by the test","lastTransitionTime":"2026-11-21T00:00:00Z"}}]}}}}"#
        )
    };
    k.ok(&[
        "patch",
        "helmrelease",
        "longhorn",
        "-n",
        "longhorn-system",
        "--subresource=status",
        "--type=merge",
        "-p",
        &status("False"),
    ]);
    let hr = k.ok(&["get", "helmrelease", "longhorn", "-n", "longhorn-system"]);
    assert!(
        hr.contains("False") && hr.contains("set by the test"),
        "{hr}"
    );
    let mut watch = k
        .command(&[
            "get",
            "helmrelease",
            "longhorn",
            "-n",
            "longhorn-system",
            "-w",
            "-o",
            "jsonpath={.status.conditions[0].status}{\"\\n\"}",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("kubectl");
    // The watch has started once it printed the present state: only then the change.
    let mut lines = BufReader::new(watch.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();
    if let Some(Ok(l)) = lines.next() {
        seen.push(l);
    }
    let wait = k
        .command(&[
            "wait",
            "--for=condition=Ready",
            "helmrelease/longhorn",
            "-n",
            "longhorn-system",
            "--timeout=20s",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("kubectl");
    k.ok(&[
        "patch",
        "helmrelease",
        "longhorn",
        "-n",
        "longhorn-system",
        "--subresource=status",
        "--type=merge",
        "-p",
        &status("True"),
    ]);
    let waited = wait.wait_with_output().expect("kubectl wait");
    assert!(waited.status.success(), "{waited:?}");
    assert!(String::from_utf8_lossy(&waited.stdout).contains("condition met"));
    while let Some(Ok(l)) = lines.next() {
        seen.push(l);
        if seen.last().is_some_and(|l| l == "True") {
            break;
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert_eq!(
        seen,
        vec!["False", "True"],
        "the watch saw the initial state and the change"
    );

    // A strategic merge patch on a core kind, label selection, and a missing object.
    k.ok(&["label", "node", "agent-1", "pool=edge"]);
    let edge = k.ok(&["get", "nodes", "-l", "pool=edge", "-o", "name"]);
    assert_eq!(edge.trim(), "node/agent-1");
    let (code, _, err) = k.run(&["get", "plan", "nope", "-n", "system-upgrade"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("plans.upgrade.cattle.io \"nope\" not found"),
        "{err}"
    );
}

/// Custom resources are checked against their CRD's schema as the API server does: a wrong
/// type, a missing required field, a value outside an enum and a failed CEL rule are 422 with
/// the API server's words; unknown fields are refused under kubectl's strict field validation
/// and pruned without it.
#[test]
fn custom_resources_are_validated_against_their_crd_schemas() {
    let sim = real_time_cluster();
    let k = Kubectl::new(&sim);
    let bad = k.write(
        "bad-plan.yaml",
        &SERVER_PLAN
            .replace("VERSION", "v1.33.5+k3s1")
            .replace("concurrency: 1", "concurrency: one"),
    );
    let (code, _, err) = k.run(&["apply", "--server-side", "-f", &bad.to_string_lossy()]);
    assert_ne!(code, 0);
    assert!(
        err.contains(r#"Plan.upgrade.cattle.io "server-plan" is invalid: spec.concurrency: Invalid value: "string": spec.concurrency in body must be of type integer: "string""#),
        "{err}"
    );
    let unknown = k.write(
        "unknown.yaml",
        &SERVER_PLAN
            .replace("VERSION", "v1.33.5+k3s1")
            .replace("  concurrency: 1", "  concurrency: 1\n  paused: true"),
    );
    let (code, _, err) = k.run(&["apply", "--server-side", "-f", &unknown.to_string_lossy()]);
    assert_ne!(code, 0);
    assert!(err.contains(r#"unknown field "spec.paused""#), "{err}");
    // Without strict validation the field is dropped, as the API server prunes it.
    k.ok(&[
        "apply",
        "--server-side",
        "--validate=false",
        "-f",
        &unknown.to_string_lossy(),
    ]);
    let p = k.ok(&[
        "get",
        "plan",
        "server-plan",
        "-n",
        "system-upgrade",
        "-o",
        "json",
    ]);
    assert!(!p.contains("paused"), "{p}");
    // HelmRelease: `chart` and `chartRef` together break its CEL rule.
    let hr = k.write(
        "hr.yaml",
        "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {name: both, namespace: default}\nspec:\n  interval: 5m\n  chart: {spec: {chart: x, sourceRef: {kind: HelmRepository, name: x}}}\n  chartRef: {kind: OCIRepository, name: x}\n",
    );
    let (code, _, err) = k.run(&["apply", "--server-side", "-f", &hr.to_string_lossy()]);
    assert_ne!(code, 0);
    assert!(
        err.contains("either chart or chartRef must be set"),
        "{err}"
    );
    // An enum: a Kustomization's sourceRef kind.
    let ks = k.write(
        "ks.yaml",
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {name: k, namespace: default}\nspec:\n  interval: 5m\n  prune: true\n  sourceRef: {kind: Nothing, name: x}\n",
    );
    let (code, _, err) = k.run(&["apply", "--server-side", "-f", &ks.to_string_lossy()]);
    assert_ne!(code, 0);
    assert!(
        err.contains(r#"spec.sourceRef.kind: Unsupported value: "Nothing""#),
        "{err}"
    );
}

/// One Event list, served as core/v1 and as events.k8s.io/v1: what upkeep records through
/// events.k8s.io is what `kubectl get events` and `kubectl describe` read through core/v1.
#[test]
fn events_are_one_list_in_two_shapes() {
    let sim = real_time_cluster();
    let k = Kubectl::new(&sim);
    let uid = k.ok(&["get", "node", "server-1", "-o", "jsonpath={.metadata.uid}"]);
    let ev = k.write(
        "event.yaml",
        &format!("apiVersion: events.k8s.io/v1\nkind: Event\nmetadata: {{name: n1.transition, namespace: default}}\neventTime: 2026-11-21T21:30:00.000000Z\nreportingController: upkeep.dev/controller\nreportingInstance: upkeep\naction: Transition\nreason: Succeeded\ntype: Normal\nnote: k3s runs v1.33.5+k3s1\nregarding: {{apiVersion: v1, kind: Node, name: server-1, uid: {uid}}}\n"),
    );
    k.ok(&["create", "-f", &ev.to_string_lossy()]);
    let core = k.ok(&["get", "events", "-n", "default", "-o", "json"]);
    let core: Value = serde_json::from_str(&core).expect("json");
    let e = &core["items"][0];
    assert_eq!(e["apiVersion"], "v1");
    assert_eq!(e["message"], "k3s runs v1.33.5+k3s1");
    assert_eq!(e["involvedObject"]["name"], "server-1");
    assert_eq!(e["reportingComponent"], "upkeep.dev/controller");
    let v1 = k.ok(&[
        "get",
        "events.v1.events.k8s.io",
        "-n",
        "default",
        "-o",
        "json",
    ]);
    let v1: Value = serde_json::from_str(&v1).expect("json");
    assert_eq!(v1["items"][0]["note"], "k3s runs v1.33.5+k3s1");
    assert_eq!(v1["items"][0]["regarding"]["name"], "server-1");
    // kubectl describe finds it by the core shape's field selector.
    let d = k.ok(&["describe", "node", "server-1"]);
    assert!(d.contains("k3s runs v1.33.5+k3s1"), "{d}");
}

#[test]
fn a_wrong_token_is_refused() {
    let sim = real_time_cluster();
    let k = Kubectl::new(&sim);
    let cfg = sim.kubeconfig().replace(sim.token(), "wrong");
    std::fs::write(k.dir.path().join("kubeconfig"), cfg).expect("write");
    let (code, _, err) = k.run(&["get", "nodes"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("Unauthorized") || err.contains("provide credentials"),
        "{err}"
    );
}

async fn client(sim: &KubeSim) -> kube::Client {
    let kc = kube::config::Kubeconfig::from_yaml(&sim.kubeconfig()).expect("kubeconfig parses");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    kube::Client::try_from(cfg).expect("client")
}

fn plans_api(client: &kube::Client) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("upgrade.cattle.io", "v1", "Plan"));
    Api::namespaced_with(client.clone(), "system-upgrade", &ar)
}

fn plan_json(template: &str, version: &str) -> Value {
    serde_saphyr::from_str(&template.replace("VERSION", version)).expect("plan yaml")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn the_kube_crate_lists_watches_and_patches_a_plan_while_the_suc_works() {
    let sim = stepped_cluster();
    rt().block_on(async {
        let c = client(&sim).await;
        let plans = plans_api(&c);
        let pp = PatchParams::apply("upkeep");
        plans
            .patch(
                "server-plan",
                &pp,
                &Patch::Apply(plan_json(SERVER_PLAN, "v1.33.5+k3s1")),
            )
            .await
            .expect("apply");
        let list = plans.list(&ListParams::default()).await.expect("list");
        assert_eq!(list.items.len(), 1);
        let rv = list.metadata.resource_version.clone().unwrap_or_default();
        let mut stream = plans
            .watch(
                &WatchParams {
                    bookmarks: true,
                    ..WatchParams::default()
                },
                &rv,
            )
            .await
            .expect("watch")
            .boxed();
        let mut complete = false;
        let mut bookmarks = 0;
        let mut steps = 0;
        while !complete && steps < 24 * 360 {
            match tokio::time::timeout(Duration::from_millis(50), stream.next()).await {
                // Nothing more to see at this instant: the cluster's clock moves on.
                Err(_) => {
                    sim.run_for(STEP, STEP);
                    steps += 1;
                }
                Ok(Some(Ok(WatchEvent::Modified(p)))) => {
                    complete = p.data["status"]["conditions"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Complete" && c["status"] == "True")
                    });
                }
                Ok(Some(Ok(WatchEvent::Bookmark(_)))) => bookmarks += 1,
                Ok(Some(Ok(_))) => {}
                other => panic!("watch ended: {other:?}"),
            }
        }
        assert!(complete, "the server plan completed while watched");
        let _ = bookmarks;
        let node: Api<Node> = Api::all(c.clone());
        let s1 = node.get("server-1").await.expect("node");
        let info = s1.status.and_then(|s| s.node_info).expect("node info");
        assert_eq!(info.kubelet_version, "v1.33.5+k3s1");
        // A merge patch of the spec bumps the generation; the status shows the dash form.
        let p = plans
            .patch(
                "server-plan",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"concurrency": 2}})),
            )
            .await
            .expect("merge patch");
        assert_eq!(p.metadata.generation, Some(2));
        assert_eq!(p.data["status"]["latestVersion"], "v1.33.5-k3s1");
        // A stale resourceVersion is a 409.
        let mut stale = p.clone();
        stale.metadata.resource_version = Some("1".into());
        let e = plans
            .replace("server-plan", &Default::default(), &stale)
            .await;
        assert!(
            matches!(e, Err(kube::Error::Api(ref s)) if s.code == 409),
            "{e:?}"
        );
        // An old resourceVersion has expired: 410 Gone.
        sim.store().set_watch_window(1);
        plans
            .patch(
                "server-plan",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
            )
            .await
            .expect("patch");
        plans
            .patch(
                "server-plan",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"a": "c"}}})),
            )
            .await
            .expect("patch");
        let mut old = plans
            .watch(&WatchParams::default(), &rv)
            .await
            .expect("watch")
            .boxed();
        match old.next().await {
            Some(Ok(WatchEvent::Error(e))) => assert_eq!(e.code, 410),
            Some(Err(kube::Error::Api(e))) => assert_eq!(e.code, 410),
            other => panic!("expected 410 Gone, got {other:?}"),
        }
    });
}

#[test]
fn request_faults_500s_delays_and_dropped_watches() {
    let sim = real_time_cluster();
    rt().block_on(async {
        let c = client(&sim).await;
        let plans = plans_api(&c);
        sim.inject(ClusterFault::ApiError {
            path_contains: "/plans".into(),
            method: Some("GET".into()),
            status: 500,
            times: 2,
        });
        for _ in 0..2 {
            let e = plans.list(&ListParams::default()).await;
            assert!(
                matches!(e, Err(kube::Error::Api(ref s)) if s.code == 500),
                "{e:?}"
            );
        }
        assert!(
            plans.list(&ListParams::default()).await.is_ok(),
            "the fault is used up"
        );
        sim.inject(ClusterFault::ApiDelay {
            path_contains: "/plans".into(),
            millis: 300,
            times: 1,
        });
        let t = Instant::now();
        assert!(plans.list(&ListParams::default()).await.is_ok());
        assert!(t.elapsed() >= Duration::from_millis(300));
        sim.inject(ClusterFault::WatchDrops {
            path_contains: "/nodes".into(),
            after_events: 0,
            times: 1,
        });
        let nodes: Api<Node> = Api::all(c.clone());
        let mut w = nodes
            .watch(&WatchParams::default(), "0")
            .await
            .expect("watch")
            .boxed();
        assert!(w.next().await.is_none(), "the watch dropped at once");
    });
}

/// Apply both plans at `to` and run the simulated cluster until `done` (false if it never is, in
/// a simulated day).
fn rollout(sim: &KubeSim, to: &str, done: impl Fn(&KubeSim) -> bool) -> bool {
    rt().block_on(async {
        let c = client(sim).await;
        let plans = plans_api(&c);
        let pp = PatchParams::apply("upkeep");
        for (name, t) in [("server-plan", SERVER_PLAN), ("agent-plan", AGENT_PLAN)] {
            plans
                .patch(name, &pp, &Patch::Apply(plan_json(t, to)))
                .await
                .expect("apply");
        }
    });
    run_until(sim, || done(sim))
}

fn node(sim: &KubeSim, name: &str) -> Value {
    sim.get("", "nodes", "", name).expect("node")
}

fn version(n: &Value) -> &str {
    n["status"]["nodeInfo"]["kubeletVersion"]
        .as_str()
        .unwrap_or("")
}

fn ready(n: &Value) -> bool {
    n["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn cordoned(n: &Value) -> bool {
    n["spec"]["unschedulable"] == json!(true)
}

fn plan_condition(sim: &KubeSim, plan: &str) -> (String, String) {
    let p = sim
        .get("upgrade.cattle.io", "plans", "system-upgrade", plan)
        .unwrap_or_default();
    let c = p["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Complete").cloned())
        .unwrap_or_default();
    (
        c["status"].as_str().unwrap_or("").into(),
        c["reason"].as_str().unwrap_or("").into(),
    )
}

const FROM: &str = "v1.33.4+k3s1";
const TO: &str = "v1.33.5+k3s1";

fn fast_cluster() -> KubeSim {
    stepped_cluster()
}

#[test]
fn a_full_rollout_of_one_server_and_two_agents() {
    let sim = fast_cluster();
    let ok = rollout(&sim, TO, |s| {
        plan_condition(s, "agent-plan").0 == "True" && plan_condition(s, "server-plan").0 == "True"
    });
    assert!(ok, "the rollout completed");
    for n in ["server-1", "agent-1", "agent-2"] {
        let n = node(&sim, n);
        assert_eq!(version(&n), TO);
        assert!(ready(&n) && !cordoned(&n), "{n}");
        assert!(
            n["metadata"]["labels"]
                .as_object()
                .is_some_and(|l| l.keys().any(|k| k.starts_with("plan.upgrade.cattle.io/")))
        );
    }
    let jobs = sim.list("batch", "jobs");
    assert_eq!(jobs.len(), 3, "one upgrade Job per node");
    assert!(jobs.iter().all(|j| j["status"]["succeeded"] == 1));
    let p = sim
        .get("upgrade.cattle.io", "plans", "system-upgrade", "agent-plan")
        .unwrap_or_default();
    assert_eq!(p["status"]["latestVersion"], "v1.33.5-k3s1");
}

#[test]
fn a_node_that_never_comes_back_ready() {
    let sim = fast_cluster();
    sim.inject(ClusterFault::NodeNeverReady {
        node: "agent-1".into(),
    });
    let ok = rollout(&sim, TO, |s| {
        version(&node(s, "agent-1")) == TO && !cordoned(&node(s, "agent-1"))
    });
    assert!(ok);
    let a1 = node(&sim, "agent-1");
    assert!(!ready(&a1), "agent-1 upgraded but is NotReady");
    sim.run_for(Duration::from_secs(6 * 60), STEP);
    assert!(!ready(&node(&sim, "agent-1")), "and stays so");
}

#[test]
fn an_upgrade_that_takes_longer_than_the_job_deadline() {
    let sim = fast_cluster();
    sim.inject(ClusterFault::SlowUpgrade {
        node: Some("server-1".into()),
        seconds: 3600,
    });
    let ok = rollout(&sim, TO, |s| {
        plan_condition(s, "server-plan").1 == "JobFailed"
    });
    assert!(ok, "{:?}", plan_condition(&sim, "server-plan"));
    let s1 = node(&sim, "server-1");
    assert_eq!(version(&s1), FROM);
    assert!(
        cordoned(&s1),
        "a failed Job leaves the node cordoned, as the real SUC does"
    );
    // The server's Job (an agent's waits in its prepare container meanwhile).
    let job = sim
        .list("batch", "jobs")
        .into_iter()
        .find(|j| j["metadata"]["labels"]["upgrade.cattle.io/node"] == "server-1")
        .unwrap_or_default();
    assert!(job.to_string().contains("DeadlineExceeded"), "{job}");
    assert_eq!(
        version(&node(&sim, "agent-1")),
        FROM,
        "agents wait for the server plan"
    );
}

#[test]
fn a_job_that_fails_although_the_node_upgraded() {
    let sim = fast_cluster();
    sim.inject(ClusterFault::JobFailsButUpgraded {
        node: "agent-2".into(),
    });
    let ok = rollout(&sim, TO, |s| {
        plan_condition(s, "agent-plan").1 == "JobFailed" && version(&node(s, "agent-1")) == TO
    });
    assert!(ok, "{:?}", plan_condition(&sim, "agent-plan"));
    let a2 = node(&sim, "agent-2");
    assert_eq!(version(&a2), TO, "judge by the node: it did upgrade");
    assert!(ready(&a2));
    // Failed by its condition (every upgrade Job counts one failed pod, k3s restarting under
    // it; the others' retries succeeded).
    let failed: Vec<Value> = sim
        .list("batch", "jobs")
        .into_iter()
        .filter(|j| j.to_string().contains("BackoffLimitExceeded"))
        .collect();
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0]["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n.contains("agent-2"))
    );
}

#[test]
fn a_pod_disruption_budget_that_blocks_the_drain() {
    let sim = fast_cluster();
    sim.inject(ClusterFault::PdbBlocksDrain {
        node: "agent-1".into(),
    });
    let ok = rollout(&sim, TO, |s| {
        plan_condition(s, "agent-plan").1 == "JobFailed"
    });
    assert!(ok, "{:?}", plan_condition(&sim, "agent-plan"));
    let a1 = node(&sim, "agent-1");
    assert_eq!(version(&a1), FROM);
    assert!(cordoned(&a1), "left cordoned by the blocked drain");
    let p = sim
        .get("upgrade.cattle.io", "plans", "system-upgrade", "agent-plan")
        .unwrap_or_default();
    assert!(p.to_string().contains("PodDisruptionBudget"), "{p}");
}

#[test]
fn helm_upgrades_fail_when_told_and_volumes_degrade() {
    let sim = fast_cluster();
    let patch_version = |v: &str| {
        let mut s = sim.store();
        let g = (
            "helm.toolkit.fluxcd.io".to_string(),
            "helmreleases".to_string(),
        );
        let ctx = upkeep_sim::kube::store::Ctx::new(sim.clock().now(), "upkeep");
        s.patch(
            &g,
            "longhorn-system",
            "longhorn",
            upkeep_sim::kube::store::PatchKind::Merge,
            &json!({"spec": {"chart": {"spec": {"version": v}}}}),
            None,
            &ctx,
        )
        .expect("patch");
    };
    let hr = |sim: &KubeSim| {
        sim.get(
            "helm.toolkit.fluxcd.io",
            "helmreleases",
            "longhorn-system",
            "longhorn",
        )
        .unwrap_or_default()
    };
    let wait = |f: &dyn Fn(&Value) -> bool| run_until(&sim, || f(&hr(&sim)));
    sim.inject(ClusterFault::HelmUpgradeFails {
        release: "longhorn-system/longhorn".into(),
    });
    patch_version("1.9.2");
    assert!(
        wait(&|h| h.to_string().contains("UpgradeFailed")),
        "{}",
        hr(&sim)
    );
    // The failed revision is recorded first; what runs is the deployed one below it.
    let h = hr(&sim);
    assert_eq!(
        (
            h["status"]["history"][0]["chartVersion"].clone(),
            h["status"]["history"][0]["status"].clone(),
            h["status"]["history"][1]["chartVersion"].clone(),
            h["status"]["history"][1]["status"].clone(),
        ),
        (
            json!("1.9.2"),
            json!("failed"),
            json!("1.9.1"),
            json!("deployed")
        )
    );
    sim.inject(ClusterFault::VolumeDegradesAfterUpgrade {
        volume: "pvc-00003dde-0000-4000-8000-000000000002".into(),
    });
    patch_version("1.10.2");
    assert!(
        wait(&|h| h["status"]["history"][0]["chartVersion"] == "1.10.2"),
        "{}",
        hr(&sim)
    );
    // Longhorn's own upgrade goes on after Helm: the volume degrades once the manager is done.
    let setting = || {
        sim.get(
            "longhorn.io",
            "settings",
            "longhorn-system",
            "current-longhorn-version",
        )
        .unwrap_or_default()
    };
    run_until(&sim, || setting()["value"] == "v1.10.2");
    let vol = sim
        .get(
            "longhorn.io",
            "volumes",
            "longhorn-system",
            "pvc-00003dde-0000-4000-8000-000000000002",
        )
        .unwrap_or_default();
    assert_eq!(vol["status"]["robustness"], "degraded");
    let setting = sim
        .get(
            "longhorn.io",
            "settings",
            "longhorn-system",
            "current-longhorn-version",
        )
        .unwrap_or_default();
    assert_eq!(setting["value"], "v1.10.2");
    // A minor skip is refused like Longhorn's pre-upgrade check does.
    patch_version("1.12.1");
    assert!(
        wait(&|h| h.to_string().contains("for minor version is not supported")),
        "{}",
        hr(&sim)
    );
}

#[test]
fn the_state_directory_keeps_the_cluster_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = || KubeOptions {
        state_dir: Some(dir.path().to_path_buf()),
        actors: false,
        ..KubeOptions::default()
    };
    upkeep::sources::install_crypto_provider();
    let a = KubeSim::start_in_thread(opts()).expect("start");
    let k = Kubectl::new(&a);
    k.ok(&["label", "node", "agent-2", "kept=yes"]);
    a.save(dir.path()).expect("save");
    let b = KubeSim::start_in_thread(opts()).expect("restart");
    let n = b.get("", "nodes", "", "agent-2").expect("node");
    assert_eq!(n["metadata"]["labels"]["kept"], "yes");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("ca.crt"))
            .ok()
            .as_deref(),
        Some(b.ca_pem()),
        "the same CA, so old kubeconfigs keep working"
    );
    assert!(Path::new(&dir.path().join("kube.json")).exists());
}

#[test]
fn timings_can_be_changed_by_tests() {
    let sim = fast_cluster();
    sim.set_timings(Timings {
        node_upgrade: Duration::from_secs(1),
        ..Timings::default()
    });
    assert!(rollout(&sim, TO, |s| plan_condition(s, "agent-plan").0 == "True"));
}

#[test]
fn a_rollout_rides_out_api_errors_and_dropped_watches() {
    let sim = fast_cluster();
    sim.inject(ClusterFault::WatchDrops {
        path_contains: "/plans".into(),
        after_events: 1,
        times: 3,
    });
    rt().block_on(async {
        let c = client(&sim).await;
        let plans = plans_api(&c);
        sim.inject(ClusterFault::ApiError {
            path_contains: "/plans/server-plan".into(),
            method: Some("PATCH".into()),
            status: 500,
            times: 1,
        });
        let pp = PatchParams::apply("upkeep");
        let first = plans
            .patch(
                "server-plan",
                &pp,
                &Patch::Apply(plan_json(SERVER_PLAN, TO)),
            )
            .await;
        assert!(
            matches!(first, Err(kube::Error::Api(ref s)) if s.code == 500),
            "{first:?}"
        );
        // A client that retries gets through, and re-watches after each drop.
        plans
            .patch(
                "server-plan",
                &pp,
                &Patch::Apply(plan_json(SERVER_PLAN, TO)),
            )
            .await
            .expect("retry");
        plans
            .patch("agent-plan", &pp, &Patch::Apply(plan_json(AGENT_PLAN, TO)))
            .await
            .expect("apply");
        let mut drops = 0;
        let mut complete = false;
        let mut steps = 0;
        while !complete && steps < 24 * 360 {
            let mut w = plans
                .watch(&WatchParams::default(), "0")
                .await
                .expect("watch")
                .boxed();
            loop {
                let ev = match tokio::time::timeout(Duration::from_millis(50), w.next()).await {
                    Ok(Some(ev)) => ev,
                    Ok(None) => break,
                    // Nothing more to see at this instant: the cluster's clock moves on.
                    Err(_) => {
                        sim.run_for(STEP, STEP);
                        steps += 1;
                        continue;
                    }
                };
                if let Ok(WatchEvent::Added(p) | WatchEvent::Modified(p)) = ev
                    && p.metadata.name.as_deref() == Some("agent-plan")
                    && p.data["status"]["conditions"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Complete" && c["status"] == "True")
                    })
                {
                    complete = true;
                    break;
                }
            }
            drops += 1;
        }
        assert!(complete, "the rollout completed");
        assert!(drops >= 2, "the watch dropped and was reopened");
    });
    for n in ["server-1", "agent-1", "agent-2"] {
        assert_eq!(version(&node(&sim, n)), TO);
    }
}

/// The binary: `upkeep sim serve` prints a kubeconfig that kubectl uses; faults come from a file;
/// SIGTERM saves the cluster and a restart with the same state directory resumes it.
#[test]
fn upkeep_sim_serve_runs_and_kubectl_lists_its_nodes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let faults = dir.path().join("faults.yaml");
    std::fs::write(&faults, "- kind: nodeNeverReady\n  node: agent-3\n").expect("write");
    let start = |extra: &[&str]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_upkeep"))
            .env("UPKEEP_FORGE_WRITE_INTERVAL_MS", "20")
            .args(["sim", "serve", "--agents", "3", "--state-dir"])
            .arg(dir.path().join("state"))
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("upkeep");
        let mut kubeconfig = String::new();
        for line in BufReader::new(child.stdout.take().expect("stdout"))
            .lines()
            .map_while(Result::ok)
        {
            if let Some(k) = line.strip_prefix("kubeconfig=") {
                kubeconfig = k.to_string();
                break;
            }
        }
        (child, kubeconfig)
    };
    let (mut child, kubeconfig) = start(&["--faults", &faults.to_string_lossy()]);
    let kubectl = |args: &[&str]| {
        let out = Command::new("kubectl")
            .env("HOME", dir.path())
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .args(args)
            .output()
            .expect("kubectl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = kubectl(&["get", "nodes"]);
    assert!(ok, "{out}");
    for n in ["server-1", "agent-1", "agent-2", "agent-3"] {
        assert!(out.contains(n), "{out}");
    }
    assert!(kubectl(&["label", "node", "agent-2", "kept=yes"]).0);
    // SIGTERM: saved and exit 0.
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status:?}");
    let (mut child, again) = start(&[]);
    assert_eq!(again, kubeconfig);
    let (ok, out) = kubectl(&["get", "nodes", "-l", "kept=yes", "-o", "name"]);
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "node/agent-2");
    // A bad faults file is a usage error that names the file.
    let out = Command::new(env!("CARGO_BIN_EXE_upkeep"))
        .env("UPKEEP_FORGE_WRITE_INTERVAL_MS", "20")
        .args(["sim", "serve", "--faults"])
        .arg(dir.path().join("nope.yaml"))
        .output()
        .expect("upkeep");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.yaml"));
}

/// deploy/crds/ holds the Rollout CRD that `upkeep apply` installs; the two must not drift, and
/// the file must be what `kubectl apply` accepts.
#[test]
fn the_shipped_rollout_crd_is_the_one_the_code_installs_and_kubectl_applies_it() {
    let path = root().join("deploy/crds/upkeeprollouts.upkeep.dev.yaml");
    let text = std::fs::read_to_string(&path).expect("deploy/crds/upkeeprollouts.upkeep.dev.yaml");
    let shipped: Value = serde_saphyr::from_str(&text).expect("the CRD file is YAML");
    let code = upkeep::rollout::crd();
    assert!(
        shipped == code,
        "{} drifted from upkeep::rollout::crd(); write this (as YAML) there:\n{}",
        path.display(),
        serde_json::to_string_pretty(&code).unwrap_or_default()
    );
    let sim = real_time_cluster();
    let k = Kubectl::new(&sim);
    let out = k.ok(&["apply", "--server-side", "-f", &path.to_string_lossy()]);
    assert!(out.contains("upkeeprollouts.upkeep.dev"), "{out}");
    let r = k.write(
        "rollout.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: upkeep-system\n---\napiVersion: upkeep.dev/v1alpha1\nkind: UpkeepRollout\nmetadata:\n  name: k3s-test\n  namespace: upkeep-system\nspec:\n  component: k3s\n  from: v1.33.4+k3s1\n  to: v1.33.5+k3s1\n  hops: [v1.33.5+k3s1]\n",
    );
    k.ok(&["apply", "-f", &r.to_string_lossy()]);
    // Generators send protobuf, which the emulator declines clearly (docs/simulator.md).
    let (code, _, err) = k.run(&["create", "namespace", "other"]);
    assert!(
        code != 0 && err.contains("UnsupportedMediaType") && err.contains("application/json"),
        "{err}"
    );
    // `kubectl explain` reads the typed schema.
    let explained = k.ok(&["explain", "upkeeprollouts"]);
    assert!(
        explained.contains("One update upkeep applies"),
        "{explained}"
    );
    let explained = k.ok(&["explain", "upkeeprollouts.status.conditions"]);
    assert!(explained.contains("lastTransitionTime"), "{explained}");
    let table = k.ok(&["get", "ukr", "-n", "upkeep-system"]);
    assert!(
        table.contains("COMPONENT") && table.contains("v1.33.5+k3s1"),
        "the printer columns show: {table}"
    );
}

/// A bare git repository holding the example Flux repository, committed with the git CLI; the
/// working copy's path, to commit more.
fn flux_repo(dir: &Path) -> (PathBuf, PathBuf) {
    let work = dir.join("work");
    upkeep_sim::write_example_repo(&work).expect("example");
    let git = |args: &[&str], at: &Path| {
        let out = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(at)
            .output()
            .expect("git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    git(&["init", "-q", "-b", "main"], &work);
    git(&["add", "-A"], &work);
    git(&["commit", "-q", "-m", "cluster"], &work);
    let bare = dir.join("repo.git");
    git(
        &[
            "clone",
            "-q",
            "--bare",
            &work.to_string_lossy(),
            &bare.to_string_lossy(),
        ],
        dir,
    );
    git(&["remote", "add", "origin", &bare.to_string_lossy()], &work);
    (bare, work)
}

/// kustomize-controller, as Flux's: what git says is applied with forced ownership on every
/// interval, so a version set beside it is taken back (why upkeep never does); a suspended
/// Kustomization is left alone; `reconcile.fluxcd.io/requestedAt` applies a new commit now.
#[test]
fn flux_applies_git_and_takes_drift_back() {
    let sim = stepped_cluster();
    let dir = tempfile::tempdir().expect("tempdir");
    let (bare, work) = flux_repo(dir.path());
    sim.serve_git("flux-system", "flux-system", &bare);
    let version = |sim: &KubeSim| {
        sim.get(
            "helm.toolkit.fluxcd.io",
            "helmreleases",
            "longhorn-system",
            "longhorn",
        )
        .map(|h| h["spec"]["chart"]["spec"]["version"].clone())
        .unwrap_or_default()
    };
    let wait = |what: &str, f: &dyn Fn() -> bool| {
        assert!(run_until(&sim, f), "never, in a simulated day: {what}");
    };
    wait("Flux applies the HelmRelease", &|| {
        sim.get(
            "helm.toolkit.fluxcd.io",
            "helmreleases",
            "longhorn-system",
            "longhorn",
        )
        .is_some_and(|h| {
            h["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/name"] == "infrastructure"
        })
    });
    let set = |sim: &KubeSim, v: &str| {
        let mut st = sim.store();
        let ctx = upkeep_sim::kube::store::Ctx::new(sim.clock().now(), "someone");
        st.patch(
            &("helm.toolkit.fluxcd.io".into(), "helmreleases".into()),
            "longhorn-system",
            "longhorn",
            upkeep_sim::kube::store::PatchKind::Apply { force: true },
            &json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
                "metadata": {"name": "longhorn", "namespace": "longhorn-system"},
                "spec": {"chart": {"spec": {"version": v}}}}),
            None,
            &ctx,
        )
        .expect("apply");
    };
    set(&sim, "1.10.2");
    assert_eq!(version(&sim), "1.10.2");
    wait("the drift is taken back at the next interval", &|| {
        version(&sim) == "1.9.1"
    });

    // Suspended: Flux leaves the object alone.
    let patch_ks = |sim: &KubeSim, p: Value| {
        let mut st = sim.store();
        let ctx = upkeep_sim::kube::store::Ctx::new(sim.clock().now(), "flux");
        st.patch(
            &(
                "kustomize.toolkit.fluxcd.io".into(),
                "kustomizations".into(),
            ),
            "flux-system",
            "infrastructure",
            upkeep_sim::kube::store::PatchKind::Merge,
            &p,
            None,
            &ctx,
        )
        .expect("patch");
    };
    patch_ks(&sim, json!({"spec": {"suspend": true}}));
    set(&sim, "1.10.2");
    sim.run_for(Duration::from_secs(20 * 60), STEP);
    assert_eq!(
        version(&sim),
        "1.10.2",
        "a suspended Kustomization corrects nothing"
    );

    // A day-long interval: a new commit waits for it, unless a reconcile is requested.
    patch_ks(&sim, json!({"spec": {"suspend": false, "interval": "24h"}}));
    let file = work.join("infrastructure/longhorn.yaml");
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    std::fs::write(&file, text.replace("version: 1.9.1", "version: 1.10.2")).expect("write");
    for args in [
        vec![
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "commit",
            "-q",
            "-am",
            "longhorn 1.10.2",
        ],
        vec!["push", "-q", "origin", "main"],
    ] {
        let out = Command::new("git")
            .args(&args)
            .current_dir(&work)
            .output()
            .expect("git");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    set(&sim, "1.9.1");
    patch_ks(
        &sim,
        json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": "now"}}}),
    );
    wait("the requested reconcile applies the new commit", &|| {
        version(&sim) == "1.10.2"
    });
    let ks = sim
        .get(
            "kustomize.toolkit.fluxcd.io",
            "kustomizations",
            "flux-system",
            "infrastructure",
        )
        .unwrap_or_default();
    assert_eq!(ks["status"]["lastHandledReconcileAt"], "now");
}
