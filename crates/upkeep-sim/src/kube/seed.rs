//! What the simulated cluster starts with: the real CRDs of the system-upgrade-controller, Flux
//! and Longhorn (copied into `crates/upkeep-sim/src/crds/`, see its NOTICE.md), CRDs written here for
//! flux-operator's FluxInstance and k3s' ETCDSnapshotFile, nodes, and the objects of a small
//! homelab cluster running Flux and Longhorn.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::ClusterSpec;
use super::store::{ApiError, Ctx, Store, gr, timestamp};

/// The real CRDs shipped with upkeep's simulator, by file name.
pub const UPSTREAM_CRDS: &[(&str, &str)] = &[
    (
        "upgrade.cattle.io_plans.yaml",
        include_str!("../crds/upgrade.cattle.io_plans.yaml"),
    ),
    (
        "helm.toolkit.fluxcd.io_helmreleases.yaml",
        include_str!("../crds/helm.toolkit.fluxcd.io_helmreleases.yaml"),
    ),
    (
        "kustomize.toolkit.fluxcd.io_kustomizations.yaml",
        include_str!("../crds/kustomize.toolkit.fluxcd.io_kustomizations.yaml"),
    ),
    (
        "source.toolkit.fluxcd.io_gitrepositories.yaml",
        include_str!("../crds/source.toolkit.fluxcd.io_gitrepositories.yaml"),
    ),
    (
        "source.toolkit.fluxcd.io_helmrepositories.yaml",
        include_str!("../crds/source.toolkit.fluxcd.io_helmrepositories.yaml"),
    ),
    (
        "source.toolkit.fluxcd.io_ocirepositories.yaml",
        include_str!("../crds/source.toolkit.fluxcd.io_ocirepositories.yaml"),
    ),
    (
        "longhorn-crds.yaml",
        include_str!("../crds/longhorn-crds.yaml"),
    ),
];

pub const SUC_NAMESPACE: &str = "system-upgrade";
pub const FLUX_NAMESPACE: &str = "flux-system";
pub const LONGHORN_NAMESPACE: &str = "longhorn-system";

/// Every CRD document of a YAML file.
pub fn crds_from_yaml(text: &str) -> Result<Vec<Value>, String> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| e.to_string())?;
    Ok(docs
        .into_iter()
        .filter(|d| d.get("kind").and_then(Value::as_str) == Some("CustomResourceDefinition"))
        .collect())
}

fn preserve() -> Value {
    json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

/// flux-operator's FluxInstance, written from its documented fields (the project's own YAML is
/// AGPL-3.0 and is not copied).
pub fn flux_instance_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "fluxinstances.fluxcd.controlplane.io"},
        "spec": {
            "group": "fluxcd.controlplane.io", "scope": "Namespaced",
            "names": {"kind": "FluxInstance", "listKind": "FluxInstanceList", "plural": "fluxinstances", "singular": "fluxinstance"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
                    {"name": "Status", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].message"},
                    {"name": "Revision", "type": "string", "jsonPath": ".status.lastAttemptedRevision"}
                ],
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "required": ["distribution"], "properties": {
                        "distribution": {"type": "object", "required": ["version", "registry"], "properties": {
                            "version": {"type": "string"}, "registry": {"type": "string"},
                            "artifact": {"type": "string"}, "variant": {"type": "string"},
                            "imagePullSecret": {"type": "string"}, "artifactPullSecret": {"type": "string"}}},
                        "components": {"type": "array", "items": {"type": "string"}},
                        "cluster": preserve(), "kustomize": preserve(), "sync": preserve(),
                        "storage": preserve(), "sharding": preserve(), "wait": {"type": "boolean"},
                        "migrateResources": {"type": "boolean"}, "commonMetadata": preserve()}},
                    "status": preserve()}}}
            }]
        }
    })
}

/// k3s' ETCDSnapshotFile (cluster-scoped, `k3s.cattle.io/v1`).
pub fn etcd_snapshot_file_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "etcdsnapshotfiles.k3s.cattle.io"},
        "spec": {
            "group": "k3s.cattle.io", "scope": "Cluster",
            "names": {"kind": "ETCDSnapshotFile", "listKind": "ETCDSnapshotFileList", "plural": "etcdsnapshotfiles", "singular": "etcdsnapshotfile"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "SnapshotName", "type": "string", "jsonPath": ".spec.snapshotName"},
                    {"name": "Node", "type": "string", "jsonPath": ".spec.nodeName"},
                    {"name": "Location", "type": "string", "jsonPath": ".spec.location"},
                    {"name": "Size", "type": "string", "jsonPath": ".status.size"},
                    {"name": "CreationTime", "type": "date", "jsonPath": ".status.creationTime"}
                ],
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {
                        "snapshotName": {"type": "string"}, "nodeName": {"type": "string"},
                        "location": {"type": "string"}, "metadata": preserve(), "s3": preserve()}},
                    "status": {"type": "object", "properties": {
                        "readyToUse": {"type": "boolean"}, "size": {"type": "string"},
                        "creationTime": {"type": "string"}, "error": preserve()}}}}}
            }]
        }
    })
}

pub fn is_server(node: &Value) -> bool {
    node.pointer("/metadata/labels/node-role.kubernetes.io~1control-plane")
        .and_then(Value::as_str)
        == Some("true")
}

/// The name of the n-th (from 1) server or agent node.
pub fn node_name(server: bool, n: usize) -> String {
    if server {
        format!("server-{n}")
    } else {
        format!("agent-{n}")
    }
}

pub fn node(name: &str, server: bool, version: &str, etcd: bool, now: DateTime<Utc>) -> Value {
    let mut labels = json!({
        "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": "k3s",
    });
    if server {
        labels["node-role.kubernetes.io/control-plane"] = json!("true");
        labels["node-role.kubernetes.io/master"] = json!("true");
        if etcd {
            labels["node-role.kubernetes.io/etcd"] = json!("true");
        }
    }
    let t = timestamp(now);
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels,
            "annotations": {"k3s.io/node-args": if server { "[\"server\"]" } else { "[\"agent\"]" }}},
        "spec": {"podCIDR": "10.42.0.0/24", "providerID": format!("k3s://{name}")},
        "status": {
            "nodeInfo": {"kubeletVersion": version, "kubeProxyVersion": version,
                "containerRuntimeVersion": "containerd://2.0.5-k3s2", "operatingSystem": "linux",
                "architecture": "amd64", "osImage": "Debian GNU/Linux 12 (bookworm)",
                "kernelVersion": "6.1.0-37-amd64", "machineID": name, "systemUUID": name, "bootID": name},
            "conditions": [
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory", "message": "kubelet has sufficient memory available", "lastHeartbeatTime": t, "lastTransitionTime": t},
                {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure", "message": "kubelet has no disk pressure", "lastHeartbeatTime": t, "lastTransitionTime": t},
                {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID", "message": "kubelet has sufficient PID available", "lastHeartbeatTime": t, "lastTransitionTime": t},
                {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status", "lastHeartbeatTime": t, "lastTransitionTime": t}
            ],
            "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "Hostname", "address": name}]
        }
    })
}

fn condition(
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: DateTime<Utc>,
    generation: i64,
) -> Value {
    json!({"type": kind, "status": status, "reason": reason, "message": message,
        "lastTransitionTime": timestamp(now), "observedGeneration": generation})
}

/// A ready condition list, as Flux controllers write it.
pub fn ready(
    status: bool,
    reason: &str,
    message: &str,
    now: DateTime<Utc>,
    generation: i64,
) -> Value {
    json!([condition(
        "Ready",
        if status { "True" } else { "False" },
        reason,
        message,
        now,
        generation
    )])
}

pub fn digest(s: &str) -> String {
    let h = crate::fnv1a(s.as_bytes());
    format!("{h:016x}{:016x}{h:016x}{:016x}", !h, h.rotate_left(17))
}

/// The canonical k3s upgrade Plans (domain facts): a server plan over control-plane nodes, or an
/// agent plan over the rest that drains and prepares on `server-plan`; both cordon.
pub fn example_plan(name: &str, version: &str, server: bool, concurrency: u64) -> Value {
    let mut p = json!({"apiVersion": "upgrade.cattle.io/v1", "kind": "Plan",
        "metadata": {"name": name, "namespace": SUC_NAMESPACE},
        "spec": {"concurrency": concurrency, "cordon": true, "version": version, "serviceAccountName": "system-upgrade",
            "upgrade": {"image": "rancher/k3s-upgrade"},
            "nodeSelector": {"matchExpressions": [{"key": "node-role.kubernetes.io/control-plane",
                "operator": if server { "In" } else { "DoesNotExist" }, "values": if server { json!(["true"]) } else { json!([]) }}]}}});
    if !server {
        p["spec"]["prepare"] =
            json!({"image": "rancher/k3s-upgrade", "args": ["prepare", "server-plan"]});
        p["spec"]["drain"] = json!({"force": true});
    }
    p
}

/// Fill an empty store with the cluster `spec` describes.
pub fn seed(store: &mut Store, spec: &ClusterSpec, now: DateTime<Utc>) -> Result<(), ApiError> {
    let ctx = Ctx::new(now, "k3s");
    let crd = gr("apiextensions.k8s.io", "customresourcedefinitions");
    let mut crds = vec![flux_instance_crd(), etcd_snapshot_file_crd()];
    for (file, text) in UPSTREAM_CRDS {
        crds.extend(
            crds_from_yaml(text).map_err(|e| ApiError::bad_request(format!("{file}: {e}")))?,
        );
    }
    for c in crds {
        store.create(&crd, "", c, &ctx)?;
    }
    let mut namespaces = vec!["default", "kube-system", "kube-public", "kube-node-lease"];
    if spec.suc {
        namespaces.push(SUC_NAMESPACE);
    }
    if spec.flux_version.is_some() || spec.bootstrap.is_some() {
        namespaces.push(FLUX_NAMESPACE);
    }
    if spec.longhorn_version.is_some() && spec.bootstrap.is_none() {
        namespaces.push(LONGHORN_NAMESPACE);
    }
    for ns in namespaces {
        let mut n = json!({"metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
        if ns == "kube-system" {
            // How many volumes Longhorn has once its chart is installed (a bootstrapped cluster).
            n["metadata"]["annotations"] =
                json!({"sim.upkeep.dev/longhorn-volumes": spec.volumes.to_string()});
        }
        store.create_with_status(&gr("", "namespaces"), "", n, &ctx)?;
    }
    for (server, count) in [(true, spec.servers), (false, spec.agents)] {
        for i in 1..=count {
            let n = node(
                &node_name(server, i),
                server,
                &spec.k3s_version,
                spec.embedded_etcd,
                now,
            );
            store.create_with_status(&gr("", "nodes"), "", n, &ctx)?;
        }
    }
    let deploy = |name: &str, ns: &str, labels: Value| {
        json!({"metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": name, "image": format!("example/{name}")}]}}},
            "status": {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1, "updatedReplicas": 1, "observedGeneration": 1}})
    };
    let deployments = gr("apps", "deployments");
    if spec.suc {
        store.create(
            &gr("", "serviceaccounts"),
            SUC_NAMESPACE,
            json!({"metadata": {"name": "system-upgrade"}}),
            &ctx,
        )?;
        store.create_with_status(
            &deployments,
            SUC_NAMESPACE,
            deploy(
                "system-upgrade-controller",
                SUC_NAMESPACE,
                json!({"app.kubernetes.io/name": "system-upgrade-controller"}),
            ),
            &ctx,
        )?;
    }
    if let Some(flux) = &spec.flux_version {
        match &spec.bootstrap {
            Some(b) => seed_bootstrap(store, flux, b, now, &ctx)?,
            None => seed_flux(store, flux, now, &ctx)?,
        }
        for c in [
            "source-controller",
            "kustomize-controller",
            "helm-controller",
            "notification-controller",
        ] {
            store.create_with_status(
                &deployments,
                FLUX_NAMESPACE,
                deploy(
                    c,
                    FLUX_NAMESPACE,
                    json!({"app.kubernetes.io/part-of": "flux", "app.kubernetes.io/version": flux}),
                ),
                &ctx,
            )?;
        }
        store.create_with_status(
            &deployments,
            FLUX_NAMESPACE,
            deploy(
                "flux-operator",
                FLUX_NAMESPACE,
                json!({"app.kubernetes.io/name": "flux-operator"}),
            ),
            &ctx,
        )?;
    }
    if let Some(lh) = &spec.longhorn_version
        && spec.bootstrap.is_none()
    {
        seed_longhorn(store, spec, lh, now, &ctx)?;
    }
    Ok(())
}

/// A cluster bootstrapped from a config repository (`flux bootstrap`, or flux-operator with a
/// FluxInstance's `sync`): Flux's controllers at `version`, the GitRepositories that serve the
/// repository, and the Kustomizations the bootstrap created; everything else comes from git
/// when the emulated kustomize-controller applies it.
fn seed_bootstrap(
    store: &mut Store,
    version: &str,
    b: &super::RepoBootstrap,
    now: DateTime<Utc>,
    ctx: &Ctx,
) -> Result<(), ApiError> {
    let bare = version.trim_start_matches('v');
    let crd = gr("apiextensions.k8s.io", "customresourcedefinitions");
    store.modify(&crd, "", "gitrepositories.source.toolkit.fluxcd.io", ctx, |c| {
        c["metadata"]["labels"] = json!({"app.kubernetes.io/part-of": "flux", "app.kubernetes.io/version": format!("v{bare}")});
    })?;
    let ns_gr = gr("", "namespaces");
    for (ns, name) in &b.sources {
        if store.try_get(&ns_gr, "", ns).is_none() {
            store.create_with_status(
                &ns_gr,
                "",
                json!({"metadata": {"name": ns}, "status": {"phase": "Active"}}),
                ctx,
            )?;
        }
        store.create(
            &gr("source.toolkit.fluxcd.io", "gitrepositories"),
            ns,
            json!({"metadata": {"name": name},
                "spec": {"interval": "1m", "url": b.url, "ref": {"branch": "main"}}}),
            ctx,
        )?;
    }
    for (ns, name, path, source) in &b.kustomizations {
        let _ = now;
        store.create(
            &gr("kustomize.toolkit.fluxcd.io", "kustomizations"),
            ns,
            json!({"metadata": {"name": name},
                "spec": {"interval": "10m", "path": format!("./{}", path.trim_start_matches("./")), "prune": true,
                    "sourceRef": {"kind": "GitRepository", "name": source}}}),
            ctx,
        )?;
    }
    Ok(())
}

fn seed_flux(
    store: &mut Store,
    version: &str,
    now: DateTime<Utc>,
    ctx: &Ctx,
) -> Result<(), ApiError> {
    let bare = version.trim_start_matches('v');
    let rev = format!("v{bare}@sha256:{}", digest(version));
    store.create_with_status(
        &gr("fluxcd.controlplane.io", "fluxinstances"),
        FLUX_NAMESPACE,
        json!({"metadata": {"name": "flux"},
            "spec": {"distribution": {"version": bare, "registry": "ghcr.io/fluxcd", "artifact": "oci://ghcr.io/controlplaneio-fluxcd/flux-operator-manifests"},
                "components": ["source-controller", "kustomize-controller", "helm-controller", "notification-controller"],
                "cluster": {"type": "kubernetes", "networkPolicy": true, "domain": "cluster.local"},
                "sync": {"kind": "GitRepository", "url": "https://github.com/example/homelab", "ref": "refs/heads/main", "path": "clusters/homelab"}},
            "status": {"conditions": ready(true, "ReconciliationSucceeded", "Reconciliation finished in 2s", now, 1),
                "lastAppliedRevision": rev, "lastAttemptedRevision": rev, "lastArtifactRevision": format!("sha256:{}", digest(bare)),
                "history": [{"digest": format!("sha256:{}", digest(&rev)), "firstReconciled": timestamp(now), "lastReconciled": timestamp(now),
                    "lastReconciledDuration": "2s", "lastReconciledStatus": "ReconciliationSucceeded", "totalReconciliations": 1,
                    "metadata": {"flux": format!("v{bare}")}}]}}),
        ctx,
    )?;
    let crd = gr("apiextensions.k8s.io", "customresourcedefinitions");
    store.modify(&crd, "", "gitrepositories.source.toolkit.fluxcd.io", ctx, |c| {
        c["metadata"]["labels"] = json!({"app.kubernetes.io/part-of": "flux", "app.kubernetes.io/version": format!("v{bare}")});
    })?;
    let sha = digest("main");
    store.create_with_status(
        &gr("source.toolkit.fluxcd.io", "gitrepositories"),
        FLUX_NAMESPACE,
        json!({"metadata": {"name": "flux-system"},
            "spec": {"interval": "1m", "url": "https://github.com/example/homelab", "ref": {"branch": "main"}},
            "status": {"conditions": ready(true, "Succeeded", &format!("stored artifact for revision 'main@sha1:{}'", &sha[..40]), now, 1),
                "observedGeneration": 1}}),
        ctx,
    )?;
    for (name, path) in [
        ("flux-system", "./clusters/homelab"),
        ("infrastructure", "./infrastructure"),
        ("apps", "./apps"),
    ] {
        store.create_with_status(
            &gr("kustomize.toolkit.fluxcd.io", "kustomizations"),
            FLUX_NAMESPACE,
            json!({"metadata": {"name": name},
                "spec": {"interval": "10m", "path": path, "prune": true, "sourceRef": {"kind": "GitRepository", "name": "flux-system"}},
                "status": {"conditions": ready(true, "ReconciliationSucceeded", &format!("Applied revision: main@sha1:{}", &sha[..40]), now, 1),
                    "lastAppliedRevision": format!("main@sha1:{}", &sha[..40]), "observedGeneration": 1}}),
            ctx,
        )?;
    }
    Ok(())
}

/// The `status.history` entry helm-controller writes for a release of a chart version.
pub fn helm_snapshot(
    (name, namespace): (&str, &str),
    chart: &str,
    version: &str,
    revision: i64,
    now: DateTime<Utc>,
    status: &str,
) -> Value {
    json!({"name": name, "namespace": namespace, "version": revision, "status": status,
        "chartName": chart, "chartVersion": version, "appVersion": format!("v{}", version.trim_start_matches('v')),
        "configDigest": format!("sha256:{}", digest(chart)), "digest": format!("sha256:{}", digest(&format!("{chart}{version}{revision}"))),
        "firstDeployed": timestamp(now), "lastDeployed": timestamp(now)})
}

fn seed_longhorn(
    store: &mut Store,
    spec: &ClusterSpec,
    version: &str,
    now: DateTime<Utc>,
    ctx: &Ctx,
) -> Result<(), ApiError> {
    let chart = version.trim_start_matches('v');
    store.create_with_status(
        &gr("source.toolkit.fluxcd.io", "helmrepositories"),
        FLUX_NAMESPACE,
        json!({"metadata": {"name": "longhorn"}, "spec": {"interval": "1h", "url": "https://charts.longhorn.io"},
            "status": {"conditions": ready(true, "Succeeded", "stored artifact: revision 'sha256:1'", now, 1), "observedGeneration": 1}}),
        ctx,
    )?;
    store.create_with_status(
        &gr("helm.toolkit.fluxcd.io", "helmreleases"),
        LONGHORN_NAMESPACE,
        json!({"metadata": {"name": "longhorn"},
            "spec": {"interval": "30m", "chart": {"spec": {"chart": "longhorn", "version": chart,
                "sourceRef": {"kind": "HelmRepository", "name": "longhorn", "namespace": FLUX_NAMESPACE}}},
                "values": {"defaultSettings": {"nodeDrainPolicy": "block-if-contains-last-replica"}}},
            "status": {"conditions": [
                    condition("Ready", "True", "UpgradeSucceeded", &format!("Helm upgrade succeeded for release longhorn-system/longhorn.v1 with chart longhorn@{chart}"), now, 1),
                    condition("Released", "True", "UpgradeSucceeded", &format!("Helm upgrade succeeded for release longhorn-system/longhorn.v1 with chart longhorn@{chart}"), now, 1)],
                "history": [helm_snapshot(("longhorn", LONGHORN_NAMESPACE), "longhorn", chart, 1, now, "deployed")],
                "lastAttemptedRevision": chart, "lastAttemptedGeneration": 1, "observedGeneration": 1}}),
        ctx,
    )?;
    let nodes: Vec<String> = (1..=spec.servers)
        .map(|i| node_name(true, i))
        .chain((1..=spec.agents).map(|i| node_name(false, i)))
        .collect();
    longhorn_objects(store, LONGHORN_NAMESPACE, chart, &nodes, spec.volumes, ctx)
}

/// What longhorn-manager makes once the chart is installed in `ns` at `chart`: its settings,
/// the backup target, the manager DaemonSet, an instance manager (and its PDB) per node, the
/// engine image, and `volumes` volumes spread over the nodes.
pub fn longhorn_objects(
    store: &mut Store,
    ns: &str,
    chart: &str,
    node_names: &[String],
    volumes: usize,
    ctx: &Ctx,
) -> Result<(), ApiError> {
    let chart = chart.trim_start_matches('v');
    let lh = |p: &str| gr("longhorn.io", p);
    let setting = |name: &str, value: &str| json!({"metadata": {"name": name}, "value": value, "status": {"applied": true}});
    store.create_with_status(
        &lh("settings"),
        ns,
        setting("current-longhorn-version", &format!("v{chart}")),
        ctx,
    )?;
    store.create_with_status(
        &lh("settings"),
        ns,
        setting("node-drain-policy", "block-if-contains-last-replica"),
        ctx,
    )?;
    store.create_with_status(
        &lh("settings"),
        ns,
        setting("concurrent-automatic-engine-upgrade-per-node-limit", "0"),
        ctx,
    )?;
    // From 1.8 the backup target is the BackupTarget `default`; before, the `backup-target`
    // setting (longhorn-manager's upgrade to v1.8 moves one into the other).
    if longhorn_has_backup_target_cr(chart) {
        store.create_with_status(
            &lh("backuptargets"),
            ns,
            json!({"metadata": {"name": "default"},
                "spec": {"backupTargetURL": "", "credentialSecret": "", "pollInterval": "5m0s"},
                "status": {"available": false, "conditions": [{"type": "Unavailable", "status": "True",
                    "reason": "", "message": "backup target URL is empty"}]}}),
            ctx,
        )?;
    } else {
        store.create_with_status(&lh("settings"), ns, setting("backup-target", ""), ctx)?;
    }
    store.create_with_status(
        &gr("apps", "daemonsets"),
        ns,
        json!({"metadata": {"name": "longhorn-manager", "labels": {"app": "longhorn-manager", "app.kubernetes.io/version": format!("v{chart}")}},
            "spec": {"selector": {"matchLabels": {"app": "longhorn-manager"}},
                "template": {"metadata": {"labels": {"app": "longhorn-manager"}},
                    "spec": {"containers": [{"name": "longhorn-manager", "image": format!("longhornio/longhorn-manager:v{chart}")}]}}},
            "status": {"desiredNumberScheduled": node_names.len(), "currentNumberScheduled": node_names.len(),
                "updatedNumberScheduled": node_names.len(), "numberReady": node_names.len(),
                "numberAvailable": node_names.len(), "numberMisscheduled": 0, "observedGeneration": 1}}),
        ctx,
    )?;
    for n in node_names {
        instance_manager(store, ns, n, chart, ctx)?;
    }
    let image = format!("longhornio/longhorn-engine:v{chart}");
    store.create_with_status(
        &lh("engineimages"),
        ns,
        json!({"metadata": {"name": format!("ei-{}", &digest(&image)[..8])}, "spec": {"image": image},
            "status": {"state": "deployed", "refCount": volumes, "incompatible": false}}),
        ctx,
    )?;
    let nodes = node_names.len();
    for i in 1..=volumes {
        let owner = if nodes == 0 {
            String::new()
        } else {
            node_names[i % nodes].clone()
        };
        store.create_with_status(
            &lh("volumes"),
            ns,
            json!({"metadata": {"name": format!("pvc-{:08x}-0000-4000-8000-{i:012x}", i * 7919)},
                "spec": {"size": "10737418240", "numberOfReplicas": 3.min(nodes.max(1)), "image": image, "frontend": "blockdev"},
                "status": {"state": "attached", "robustness": "healthy", "currentImage": image, "currentNodeID": owner,
                    "kubernetesStatus": {"namespace": "default", "pvcName": format!("data-{i}")}}}),
            ctx,
        )?;
    }
    Ok(())
}

/// Whether Longhorn `version` keeps its backup target in a `BackupTarget` resource (1.8 on).
pub fn longhorn_has_backup_target_cr(version: &str) -> bool {
    upkeep::versions::parse(version, upkeep::versions::Scheme::Semver)
        .is_ok_and(|v| (v.major, v.minor) >= (1, 8))
}

/// The labels of the instance-manager pod on `node` (longhorn-manager
/// `types.GetInstanceManagerLabels`), which its PodDisruptionBudget selects.
pub fn instance_manager_labels(node: &str) -> Value {
    json!({"longhorn.io/component": "instance-manager", "longhorn.io/instance-manager-type": "aio",
        "longhorn.io/node": node, "longhorn.io/managed-by": "longhorn-manager"})
}

/// The name of the instance manager on `node` (and of its pod and PodDisruptionBudget).
pub fn instance_manager_name(node: &str) -> String {
    format!("instance-manager-{}", &digest(node)[..32])
}

/// The instance manager of `node`: its Ready pod, and the `minAvailable: 1`
/// PodDisruptionBudget longhorn-manager keeps on it while the node is schedulable.
fn instance_manager(
    store: &mut Store,
    ns: &str,
    node: &str,
    version: &str,
    ctx: &Ctx,
) -> Result<(), ApiError> {
    let name = instance_manager_name(node);
    let t = timestamp(ctx.now);
    store.create_with_status(
        &gr("", "pods"),
        ns,
        json!({"metadata": {"name": name, "labels": instance_manager_labels(node),
                "ownerReferences": [{"apiVersion": "longhorn.io/v1beta2", "kind": "InstanceManager", "name": name, "uid": digest(&name)}]},
            "spec": {"nodeName": node, "containers": [{"name": "instance-manager", "image": format!("longhornio/longhorn-instance-manager:v{version}")}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": t}]}}),
        ctx,
    )?;
    store.create_with_status(
        &gr("policy", "poddisruptionbudgets"),
        ns,
        instance_manager_pdb(ns, node),
        ctx,
    )?;
    Ok(())
}

/// longhorn-manager's PodDisruptionBudget on the instance manager of `node`
/// (`createInstanceManagerPDB`); its status is the disruption controller's to fill.
pub fn instance_manager_pdb(ns: &str, node: &str) -> Value {
    json!({"metadata": {"name": instance_manager_name(node), "namespace": ns},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": instance_manager_labels(node)}},
        "status": {"disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 1, "expectedPods": 0, "observedGeneration": 0}})
}

/// A pod on `node` guarded by a PodDisruptionBudget that allows no disruption, so that draining
/// the node blocks (the fault `pdbBlocksDrain`).
pub fn blocking_pdb(store: &mut Store, node: &str, now: DateTime<Utc>) {
    let ctx = Ctx::new(now, "sim");
    let name = format!("critical-{node}");
    let _ = store.create_with_status(
        &gr("", "pods"),
        "default",
        json!({"metadata": {"name": name, "labels": {"app": name}},
            "spec": {"nodeName": node, "containers": [{"name": "app", "image": "example/critical"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}),
        &ctx,
    );
    let _ = store.create_with_status(
        &gr("policy", "poddisruptionbudgets"),
        "default",
        json!({"metadata": {"name": name}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": name}}},
            "status": {"disruptionsAllowed": 0, "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1, "observedGeneration": 1}}),
        &ctx,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_crd_is_served() {
        let mut s = Store::new();
        let spec = ClusterSpec::default();
        assert_eq!(
            seed(&mut s, &spec, Utc::now()).map_err(|e| e.message),
            Ok(())
        );
        for (g, p) in [
            ("upgrade.cattle.io", "plans"),
            ("helm.toolkit.fluxcd.io", "helmreleases"),
            ("longhorn.io", "volumes"),
            ("longhorn.io", "systembackups"),
            ("fluxcd.controlplane.io", "fluxinstances"),
            ("k3s.cattle.io", "etcdsnapshotfiles"),
            ("kustomize.toolkit.fluxcd.io", "kustomizations"),
        ] {
            assert!(s.type_of(&gr(g, p)).is_ok(), "{p}.{g}");
        }
        assert_eq!(s.list(&gr("", "nodes"), None).len(), 3);
        assert_eq!(s.list(&gr("longhorn.io", "volumes"), None).len(), 3);
    }
}
