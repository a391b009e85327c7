//! deploy/manifests/upkeep.yaml's RBAC, held against what upkeep asked of the Kubernetes
//! emulator (`KubeSim::audit`): every access must be allowed by the ClusterRole (any namespace)
//! or by a Role in the namespace it touched.

use upkeep_sim::kube::Access;

const MANIFESTS: &str = include_str!("../../deploy/manifests/upkeep.yaml");

/// What `upkeep apply` creates when it is missing (a first run from a laptop); in a cluster
/// deploy/ installs them and upkeep only reads them.
pub const INSTALLED_BY_DEPLOY: [(&str, &str, &str); 2] = [
    ("patch", "apiextensions.k8s.io", "customresourcedefinitions"),
    ("patch", "", "namespaces"),
];

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    /// Empty for the ClusterRole.
    pub namespace: String,
    pub group: String,
    pub resource: String,
    pub verb: String,
}

/// Every (namespace, group, resource, verb) the manifests grant, one per combination.
pub fn grants() -> Vec<Grant> {
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(MANIFESTS).expect("deploy/manifests/upkeep.yaml parses");
    let mut out = Vec::new();
    for d in docs {
        let namespace = match d["kind"].as_str() {
            Some("ClusterRole") => String::new(),
            Some("Role") => d["metadata"]["namespace"]
                .as_str()
                .expect("a Role has a namespace")
                .to_string(),
            _ => continue,
        };
        for rule in d["rules"].as_array().expect("rules") {
            let list = |k: &str| -> Vec<String> {
                rule[k]
                    .as_array()
                    .unwrap_or_else(|| panic!("{k} in {rule}"))
                    .iter()
                    .map(|v| v.as_str().expect("a string").to_string())
                    .collect()
            };
            for group in list("apiGroups") {
                for resource in list("resources") {
                    for verb in list("verbs") {
                        for s in [&group, &resource, &verb] {
                            assert!(!s.contains('*'), "no wildcards in RBAC: {rule}");
                        }
                        out.push(Grant {
                            namespace: namespace.clone(),
                            group: group.clone(),
                            resource: resource.clone(),
                            verb,
                        });
                    }
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

pub fn allowed(grants: &[Grant], a: &Access) -> bool {
    grants.iter().any(|g| {
        g.group == a.group
            && g.resource == a.resource
            && g.verb == a.verb
            && (g.namespace.is_empty() || g.namespace == a.namespace)
    })
}

/// The accesses in `audit` the manifests do not allow (install-time writes left out).
pub fn denied(audit: &[Access]) -> Vec<Access> {
    let grants = grants();
    audit
        .iter()
        .filter(|a| {
            !INSTALLED_BY_DEPLOY
                .iter()
                .any(|(v, g, r)| a.verb == *v && a.group == *g && a.resource == *r)
        })
        .filter(|a| !allowed(&grants, a))
        .cloned()
        .collect()
}
