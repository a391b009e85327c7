//! The repository as Flux builds it: from the entry point (a FluxInstance's `sync.path`, the
//! flux-instance chart's `instance.sync.path`, the `flux-system` Kustomization of a bootstrap,
//! or any Flux Kustomization written in the cluster's directory), each Flux Kustomization's
//! `spec.path` is built as kustomize-controller builds it, and the Kustomizations found there
//! are built in turn. Every object found keeps the file and document it was written in, the
//! namespace it lands in, the Kustomization that applies it, the postBuild variables in force
//! and the patches that touch it, so that the place holding any field can be named and changed.
//!
//! Modelled on (reading only; nothing is applied): fluxcd/kustomize-controller
//! `internal/controller/kustomization_controller.go` (`build`: `spec.path` through a secure
//! join, `targetNamespace`, `spec.components`, `spec.patches`, then postBuild substitution),
//! fluxcd/pkg `kustomize/kustomize_generator.go` (`GenerateManifest`: a kustomization is
//! generated when the path has none: YAML files in lexical order, a subdirectory with its own
//! kustomization taken as a whole) and `kustomize/kustomize_varsub.go` (`SubstituteVariables`:
//! `substituteFrom` in order, then `substitute` wins; the `substitute: disabled` label or
//! annotation), and kubernetes-sigs/kustomize `api/internal/target/kusttarget.go`
//! (`resources`, then generators, then `components`, then patches and `namespace`).
//! What is left out is said as a note (remote resources, `images`, name prefixes and hashes).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use super::files::{Files, join, normalize, parent};
use super::yaml::{Node, Value};
use crate::diag::{Diagnostic, Pos};

/// A Flux Kustomization, by namespace and name, and where it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KsId {
    pub namespace: String,
    pub name: String,
    pub file: String,
    pub pos: Pos,
}

impl std::fmt::Display for KsId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Where a value is written: a scalar in a file. `inline` when the document itself is the
/// text of a block scalar (an inline patch, a ConfigMap's `values.yaml: |`): readable, but
/// not changed in place.
#[derive(Debug, Clone, PartialEq)]
pub struct Loc {
    pub file: String,
    pub node: Node,
    pub inline: Option<Pos>,
}

impl Loc {
    pub fn pos(&self) -> Pos {
        self.inline.unwrap_or(self.node.pos)
    }
}

/// A postBuild variable: its value and where it is defined.
#[derive(Debug, Clone, PartialEq)]
pub struct Var {
    pub value: String,
    /// The scalar that defines it, when it can be changed in place.
    pub at: Option<Loc>,
    /// Where it comes from, for people: "postBuild.substitute of Kustomization flux-system/k3s"
    /// or "ConfigMap flux-system/cluster-settings".
    pub from: String,
}

pub type Vars = BTreeMap<String, Var>;

/// A patch written in a kustomization (or a Flux Kustomization's `spec.patches`).
#[derive(Debug, Clone)]
pub struct Patch {
    pub file: String,
    pub root: Arc<Node>,
    pub inline: Option<Pos>,
    pub json6902: bool,
}

/// Where a generated ConfigMap's or Secret's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum DataSource {
    /// A whole file (`files: [key=path]`).
    File(String),
    /// A `key=value` literal or a line of an env file: readable, not changed in place.
    Literal(String),
}

/// One object as Flux would apply it.
#[derive(Debug, Clone)]
pub struct Obj {
    pub file: String,
    /// The document as written (before substitution and patches).
    pub doc: Arc<Node>,
    pub inline: Option<Pos>,
    pub kind: String,
    pub api_version: String,
    pub name: String,
    /// The namespace it lands in ("" when cluster-scoped).
    pub namespace: String,
    /// The Flux Kustomization that applies it (`None`: a Kustomization read as an entry point,
    /// applied by a bootstrap).
    pub applied_by: Option<KsId>,
    pub vars: Arc<Vars>,
    /// Whether postBuild substitution runs on it.
    pub substitutes: bool,
    pub patches: Vec<Arc<Patch>>,
    /// A ConfigMap or Secret made by a generator: its keys and their sources.
    pub generated: Option<BTreeMap<String, DataSource>>,
}

impl Obj {
    pub fn group(&self) -> &str {
        self.api_version.rsplit_once('/').map_or("", |(g, _)| g)
    }

    /// `Kind namespace/name` (or `Kind name`), for messages.
    pub fn describe(&self) -> String {
        if self.namespace.is_empty() {
            format!("{} {}", self.kind, self.name)
        } else {
            format!("{} {}/{}", self.kind, self.namespace, self.name)
        }
    }

    /// Where the object is written: `file:line`.
    pub fn pos(&self) -> Pos {
        self.inline.unwrap_or(self.doc.pos)
    }

    /// The field at `path` as Flux applies it: the last patch that sets it, else the document.
    /// (A patch's own name and namespace only select what it patches.)
    pub fn field(&self, path: &[&str]) -> Option<Loc> {
        let identity = matches!(path, ["metadata", "name" | "namespace"]);
        for p in self.patches.iter().rev().filter(|_| !identity) {
            if p.json6902 {
                let pointer = format!(
                    "/{}",
                    path.iter()
                        .map(|s| s.replace('~', "~0").replace('/', "~1"))
                        .collect::<Vec<_>>()
                        .join("/")
                );
                for op in p.root.items().iter().rev() {
                    if matches!(op.str_at(&["op"]), "add" | "replace")
                        && op.str_at(&["path"]) == pointer
                        && let Some(v) = op.get("value")
                    {
                        return Some(Loc {
                            file: p.file.clone(),
                            node: v.clone(),
                            inline: p.inline,
                        });
                    }
                }
            } else if let Some(n) = p.root.at(path) {
                return Some(Loc {
                    file: p.file.clone(),
                    node: n.clone(),
                    inline: p.inline,
                });
            }
        }
        self.doc.at(path).map(|n| Loc {
            file: self.file.clone(),
            node: n.clone(),
            inline: self.inline,
        })
    }

    /// [`field`](Self::field)'s text ("" when absent).
    pub fn field_str(&self, path: &[&str]) -> String {
        self.field(path)
            .and_then(|l| l.node.as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

/// What Flux's reading of the repository found.
#[derive(Debug, Default)]
pub struct Layout {
    pub objects: Vec<Obj>,
    /// The Flux Kustomizations built, in order.
    pub kustomizations: Vec<KsId>,
    /// The entry points: (path, what pointed there).
    pub entries: Vec<(String, String)>,
    /// What could not be read, or was left out (remote resources, unknown variables).
    pub notes: Vec<Diagnostic>,
}

impl Layout {
    pub fn find(&self, kind: &str, namespace: &str, name: &str) -> Option<&Obj> {
        self.objects
            .iter()
            .find(|o| o.kind == kind && o.name == name && o.namespace == namespace)
    }

    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Obj> + 'a {
        self.objects.iter().filter(move |o| o.kind == kind)
    }
}

/// Bounds on the reading: a hostile or cyclic repository ends with a note.
const MAX_KUSTOMIZATIONS: usize = 500;
const MAX_DEPTH: usize = 20;
const MAX_OBJECTS: usize = 50_000;

const KFILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// Kinds that live outside namespaces (a kustomization's `namespace:` leaves them alone).
const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "PriorityClass",
    "StorageClass",
    "PersistentVolume",
    "Node",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "APIService",
    "CSIDriver",
    "IngressClass",
    "RuntimeClass",
    "ClusterIssuer",
    "VolumeSnapshotClass",
];

/// What one kustomization build yields, before Flux's namespace and variables.
#[derive(Debug, Clone)]
struct Res {
    file: String,
    doc: Arc<Node>,
    inline: Option<Pos>,
    /// Set by a kustomization's `namespace:`.
    ns: Option<String>,
    patches: Vec<Arc<Patch>>,
    /// A ConfigMap or Secret a generator made.
    generated: Option<Generated>,
}

/// A ConfigMap or Secret from a kustomization's generator (written nowhere, so no namespace).
#[derive(Debug, Clone)]
struct Generated {
    kind: String,
    name: String,
    data: BTreeMap<String, DataSource>,
}

impl Res {
    fn kind(&self) -> String {
        match &self.generated {
            Some(g) => g.kind.clone(),
            None => self.doc.str_at(&["kind"]).to_string(),
        }
    }
    fn name(&self) -> String {
        match &self.generated {
            Some(g) => g.name.clone(),
            // kustomize's namespace transformer names Namespace objects after the namespace.
            None if self.kind() == "Namespace" && self.ns.is_some() => {
                self.ns.clone().unwrap_or_default()
            }
            None => self.doc.str_at(&["metadata", "name"]).to_string(),
        }
    }
    fn written_ns(&self) -> String {
        match &self.generated {
            Some(_) => String::new(),
            None => self.doc.str_at(&["metadata", "namespace"]).to_string(),
        }
    }
}

struct Builder<'a> {
    files: &'a Files,
    notes: Vec<Diagnostic>,
}

/// A Flux Kustomization to build.
#[derive(Debug, Clone)]
struct KsSpec {
    id: KsId,
    path: String,
    target_ns: Option<String>,
    components: Vec<String>,
    patches: Vec<Arc<Patch>>,
    /// (kind, name, optional) of each `substituteFrom`, in order.
    substitute_from: Vec<(String, String, bool)>,
    /// `substitute` entries: name -> (value, where).
    substitute: Vec<(String, Var)>,
    post_build: bool,
}

/// Read the repository in `files` as Flux builds it, for the cluster whose directory is
/// `subdir` ("" for the repository's root).
pub fn read(files: &Files, subdir: &str) -> Layout {
    let subdir = normalize(subdir);
    let mut b = Builder {
        files,
        notes: Vec::new(),
    };
    let mut layout = Layout::default();
    for (f, why) in &files.skipped {
        b.notes.push(Diagnostic::warning(
            f,
            Pos::START,
            format!("not read: {why}"),
        ));
    }
    // Candidate entry points and Kustomizations written in the cluster's directory.
    let mut roots: VecDeque<KsSpec> = VecDeque::new();
    let mut written_ks: Vec<KsSpec> = Vec::new();
    let mut self_sources: BTreeSet<String> = ["flux-system".to_string()].into();
    for path in files.under(&subdir).map(str::to_string).collect::<Vec<_>>() {
        let Some(docs) = files.docs(&path) else {
            continue;
        };
        let Ok(docs) = docs.as_ref() else { continue };
        for d in docs {
            let kind = d.str_at(&["kind"]);
            let group = d.str_at(&["apiVersion"]);
            if kind == "FluxInstance" && group.starts_with("fluxcd.controlplane.io/") {
                let ns = or(d.str_at(&["metadata", "namespace"]), "flux-system");
                let sync = d.str_at(&["spec", "sync", "path"]);
                if !sync.is_empty() {
                    let name = or(d.str_at(&["spec", "sync", "name"]), &ns);
                    self_sources.insert(name.clone());
                    layout.entries.push((
                        normalize(sync),
                        format!(
                            "FluxInstance {ns}/{} in {path}",
                            d.str_at(&["metadata", "name"])
                        ),
                    ));
                    roots.push_back(entry_spec(&name, &ns, sync, &path, d.pos));
                }
            } else if kind == "HelmRelease" && is_flux_instance_chart(d) {
                let ns = or(d.str_at(&["metadata", "namespace"]), "flux-system");
                let sync = d
                    .str_at(&["spec", "values", "instance", "sync", "path"])
                    .to_string();
                let sync = if sync.is_empty() {
                    values_file_sync_path(files, parent(&path)).unwrap_or_default()
                } else {
                    sync
                };
                if !sync.is_empty() {
                    let name = or(
                        d.str_at(&["spec", "values", "instance", "sync", "name"]),
                        &ns,
                    );
                    self_sources.insert(name.clone());
                    layout.entries.push((
                        normalize(&sync),
                        format!(
                            "the flux-instance chart's instance.sync.path (HelmRelease {ns}/{} in {path})",
                            d.str_at(&["metadata", "name"])
                        ),
                    ));
                    roots.push_back(entry_spec(&name, &ns, &sync, &path, d.pos));
                }
            } else if kind == "GitRepository" && group.starts_with("source.toolkit.fluxcd.io/") {
                self_sources.insert(d.str_at(&["metadata", "name"]).to_string());
            } else if kind == "Kustomization"
                && group.starts_with("kustomize.toolkit.fluxcd.io/")
                && let Some(spec) = ks_spec(d, &path, None, "flux-system", &Vars::new(), false)
            {
                written_ks.push(spec);
            }
        }
    }
    // Written Kustomizations that no other one builds are entry points too: the bootstrap's
    // flux-system, or one applied by hand at bootstrap (cluster-template's `cluster`).
    let contains =
        |path: &str, file: &str| path.is_empty() || file.starts_with(&format!("{path}/"));
    for ks in &written_ks {
        let built_by_other = written_ks
            .iter()
            .any(|o| o.id.file != ks.id.file && contains(&o.path, &ks.id.file))
            || roots.iter().any(|r| contains(&r.path, &ks.id.file));
        if !built_by_other && !roots.iter().any(|r| r.path == ks.path) {
            layout.entries.push((
                ks.path.clone(),
                format!("Kustomization {} in {}", ks.id, ks.id.file),
            ));
            roots.push_back(ks.clone());
        }
    }
    if roots
        .iter()
        .filter(|r| r.id.name == "flux-system" || r.id.file.ends_with("gotk-sync.yaml"))
        .count()
        > 1
    {
        b.notes.push(
            Diagnostic::warning(
                if subdir.is_empty() { "." } else { &subdir },
                Pos::START,
                format!(
                    "{} Flux entry points here ({}): several clusters are read as one",
                    roots.len(),
                    roots
                        .iter()
                        .map(|r| r.path.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
            .hint("keep a versions.yaml in each cluster's directory and run upkeep with --subdir"),
        );
    }
    let mut seen: BTreeSet<(String, String, String)> = BTreeSet::new();
    let mut built_docs: BTreeSet<(String, Pos)> = BTreeSet::new();
    let mut queue = roots;
    let mut extra = written_ks.into_iter();
    // Kustomizations written here that Flux's tree did not reach are applied by some
    // bootstrap: read them as entry points too.
    while let Some(ks) = queue
        .pop_front()
        .or_else(|| extra.find(|k| !built_docs.contains(&(k.id.file.clone(), k.id.pos))))
    {
        if !seen.insert((ks.id.namespace.clone(), ks.id.name.clone(), ks.path.clone())) {
            continue;
        }
        if layout.kustomizations.len() >= MAX_KUSTOMIZATIONS || layout.objects.len() >= MAX_OBJECTS
        {
            b.notes.push(Diagnostic::warning(
                &ks.id.file,
                ks.id.pos,
                format!("more than {MAX_KUSTOMIZATIONS} Kustomizations or {MAX_OBJECTS} objects: the rest is not read"),
            ));
            break;
        }
        let res = match b.flux_build(&ks) {
            Ok(r) => r,
            Err(why) => {
                b.notes.push(Diagnostic::warning(
                    &ks.id.file,
                    ks.id.pos,
                    format!(
                        "Kustomization {} (path {:?}) cannot be read: {why}",
                        ks.id, ks.path
                    ),
                ));
                continue;
            }
        };
        layout.kustomizations.push(ks.id.clone());
        // Variables come from what is built so far, this Kustomization's own output included
        // (a bootstrap applies the settings a Kustomization both makes and substitutes from).
        let placeholder = Arc::new(Vars::new());
        let mut made = Vec::new();
        for r in &res {
            if r.kind() == "ConfigMap" || r.kind() == "Secret" {
                made.push(b.object(r, &ks, placeholder.clone()));
            }
        }
        let vars = {
            let all: Vec<Obj> = layout.objects.iter().cloned().chain(made).collect();
            Arc::new(b.vars_of(&ks, &all))
        };
        for r in res {
            let obj = b.object(&r, &ks, vars.clone());
            let kind = obj.kind.clone();
            if r.generated.is_none() {
                built_docs.insert((r.file.clone(), r.doc.pos));
            }
            if kind == "Kustomization"
                && obj.group() == "kustomize.toolkit.fluxcd.io"
                && let Some(child) = ks_spec(
                    &obj.doc,
                    &obj.file,
                    Some(&obj),
                    &obj.namespace,
                    &obj.vars,
                    obj.substitutes,
                )
            {
                let source = child_source(&obj);
                if self_sources.contains(&source) {
                    queue.push_back(child);
                } else {
                    b.notes.push(Diagnostic::warning(
                        &obj.file,
                        obj.pos(),
                        format!(
                            "Kustomization {}/{} builds from {source}, not this repository: not read",
                            obj.namespace, obj.name
                        ),
                    ));
                }
            }
            layout.objects.push(obj);
        }
    }
    if layout.entries.is_empty() && layout.kustomizations.is_empty() {
        b.notes.push(
            Diagnostic::warning(
                if subdir.is_empty() { "." } else { &subdir },
                Pos::START,
                "no Flux entry point found (no FluxInstance with sync.path, no flux-instance chart, no Flux Kustomization): upkeep cannot tell what Flux applies from this repository",
            )
            .hint("upkeep reads the repository from the FluxInstance's `spec.sync.path` or the Flux Kustomizations written in the cluster's directory"),
        );
    }
    layout.notes = b.notes;
    layout
}

fn or(s: &str, default: &str) -> String {
    if s.is_empty() {
        default.to_string()
    } else {
        s.to_string()
    }
}

fn entry_spec(name: &str, ns: &str, path: &str, file: &str, pos: Pos) -> KsSpec {
    KsSpec {
        id: KsId {
            namespace: ns.to_string(),
            name: name.to_string(),
            file: file.to_string(),
            pos,
        },
        path: normalize(path),
        target_ns: None,
        components: Vec::new(),
        patches: Vec::new(),
        substitute_from: Vec::new(),
        substitute: Vec::new(),
        post_build: false,
    }
}

/// The flux-instance chart: by `chart.spec.chart`, or a `chartRef` whose name says it (the
/// OCIRepository's URL is checked by the carriers).
pub fn is_flux_instance_chart(d: &Node) -> bool {
    d.str_at(&["spec", "chart", "spec", "chart"]) == "flux-instance"
        || d.str_at(&["spec", "chartRef", "name"])
            .contains("flux-instance")
}

/// `instance.sync.path` in a values file next to a flux-instance HelmRelease (the
/// configMapGenerator layout).
fn values_file_sync_path(files: &Files, dir: &str) -> Option<String> {
    for f in files.under(dir) {
        let Some(docs) = files.docs(f) else { continue };
        let Ok(docs) = docs.as_ref() else { continue };
        for d in docs {
            let p = d.str_at(&["instance", "sync", "path"]);
            if !p.is_empty() {
                return Some(p.to_string());
            }
        }
    }
    None
}

fn child_source(obj: &Obj) -> String {
    let kind = obj.field_str(&["spec", "sourceRef", "kind"]);
    let name = obj.field_str(&["spec", "sourceRef", "name"]);
    if kind.is_empty() || kind == "GitRepository" {
        name
    } else {
        format!("{kind} {name}")
    }
}

/// A Flux Kustomization document's spec, read with the variables in force where it is applied.
fn ks_spec(
    d: &Node,
    file: &str,
    obj: Option<&Obj>,
    default_ns: &str,
    vars: &Vars,
    substitutes: bool,
) -> Option<KsSpec> {
    let get = |path: &[&str]| -> String {
        let raw = match obj {
            Some(o) => o.field_str(path),
            None => d.str_at(path).to_string(),
        };
        if substitutes {
            super::subst::substitute(&raw, vars).text
        } else {
            raw
        }
    };
    let name = get(&["metadata", "name"]);
    if name.is_empty() {
        return None;
    }
    let namespace = match obj {
        Some(o) if !o.namespace.is_empty() => o.namespace.clone(),
        _ => or(&get(&["metadata", "namespace"]), default_ns),
    };
    let spec = d.get("spec");
    let list = |key: &str| -> Vec<Node> {
        spec.and_then(|s| s.get(key))
            .map(|n| n.items().to_vec())
            .unwrap_or_default()
    };
    // postBuild as written, and as strategic-merge patches of a parent add to it (the common
    // "every app Kustomization substitutes from cluster-settings" patch).
    let mut posts: Vec<(String, &Node)> = d
        .at(&["spec", "postBuild"])
        .map(|p| (file.to_string(), p))
        .into_iter()
        .collect();
    for p in obj.map(|o| o.patches.as_slice()).unwrap_or_default() {
        if !p.json6902
            && let Some(n) = p.root.at(&["spec", "postBuild"])
        {
            posts.push((p.file.clone(), n));
        }
    }
    let mut substitute: Vec<(String, Var)> = Vec::new();
    let mut substitute_from: Vec<(String, String, bool)> = Vec::new();
    for (pfile, post) in &posts {
        let inline_patch = pfile != file || obj.is_some_and(|o| o.inline.is_some());
        for (k, v) in post
            .get("substitute")
            .map(Node::entries)
            .unwrap_or_default()
        {
            let Some(key) = k.as_str() else { continue };
            substitute.retain(|(x, _)| x != key);
            substitute.push((
                key.to_string(),
                Var {
                    value: v.as_str().unwrap_or("").replace('\n', ""),
                    at: (!inline_patch).then(|| Loc {
                        file: pfile.clone(),
                        node: v.clone(),
                        inline: None,
                    }),
                    from: format!("postBuild.substitute of Kustomization {namespace}/{name}"),
                },
            ));
        }
        for f in post
            .get("substituteFrom")
            .map(Node::items)
            .unwrap_or_default()
        {
            let entry = (
                or(f.str_at(&["kind"]), "ConfigMap"),
                f.str_at(&["name"]).to_string(),
                f.str_at(&["optional"]) == "true",
            );
            if !substitute_from
                .iter()
                .any(|e| e.0 == entry.0 && e.1 == entry.1)
            {
                substitute_from.push(entry);
            }
        }
    }
    let target = get(&["spec", "targetNamespace"]);
    Some(KsSpec {
        id: KsId {
            namespace,
            name,
            file: file.to_string(),
            pos: d.pos,
        },
        path: normalize(&get(&["spec", "path"])),
        target_ns: (!target.is_empty()).then_some(target),
        components: list("components")
            .iter()
            .filter_map(|c| c.as_str().map(str::to_string))
            .collect(),
        patches: list("patches")
            .iter()
            .filter_map(|p| inline_patch(file, p))
            .collect(),
        substitute_from,
        substitute,
        post_build: !posts.is_empty(),
    })
}

/// A `patches:` entry written inline (`patch: |`) with its optional target.
fn inline_patch(file: &str, entry: &Node) -> Option<Arc<Patch>> {
    let text = entry.get("patch")?;
    let body = text.as_str()?;
    let docs = super::yaml::parse_stream(body).ok()?;
    let root = docs.into_iter().next()?;
    let json6902 = matches!(root.value, Value::Seq(_));
    let root = with_target(root, entry.get("target"));
    Some(Arc::new(Patch {
        file: file.to_string(),
        root: Arc::new(root),
        inline: Some(text.pos),
        json6902,
    }))
}

/// A patch remembers its target in a synthetic `__target` entry when it is a mapping; JSON6902
/// patches are matched through [`target_of`].
fn with_target(root: Node, target: Option<&Node>) -> Node {
    match target {
        None => root,
        Some(t) => Node {
            value: Value::Map(vec![
                (
                    Node {
                        value: Value::Str("__target".into()),
                        ..t.clone()
                    },
                    t.clone(),
                ),
                (
                    Node {
                        value: Value::Str("__patch".into()),
                        ..root.clone()
                    },
                    root.clone(),
                ),
            ]),
            ..root
        },
    }
}

/// (target, patch body) of a patch built by [`with_target`].
fn target_of(p: &Patch) -> (Option<&Node>, &Node) {
    match p.root.get("__target") {
        Some(t) => (Some(t), p.root.get("__patch").unwrap_or(&p.root)),
        None => (None, &p.root),
    }
}

impl Builder<'_> {
    /// A built resource as the object Flux applies for `ks`.
    fn object(&self, r: &Res, ks: &KsSpec, vars: Arc<Vars>) -> Obj {
        let kind = r.kind();
        let scoped = !CLUSTER_SCOPED.contains(&kind.as_str());
        let namespace = if !scoped {
            String::new()
        } else if let Some(t) = &ks.target_ns {
            t.clone()
        } else if let Some(n) = &r.ns {
            n.clone()
        } else {
            or(&r.written_ns(), &ks.id.namespace)
        };
        let disabled = ["labels", "annotations"].iter().any(|m| {
            r.doc
                .str_at(&["metadata", m, "kustomize.toolkit.fluxcd.io/substitute"])
                == "disabled"
        });
        Obj {
            file: r.file.clone(),
            kind: kind.clone(),
            api_version: match &r.generated {
                Some(_) => "v1".into(),
                None => r.doc.str_at(&["apiVersion"]).to_string(),
            },
            name: match &ks.target_ns {
                // targetNamespace is the kustomization's `namespace:`, which names Namespaces.
                Some(t) if kind == "Namespace" => t.clone(),
                _ => r.name(),
            },
            namespace,
            applied_by: Some(ks.id.clone()),
            vars,
            substitutes: ks.post_build && !disabled,
            patches: r.patches.clone(),
            generated: r.generated.as_ref().map(|g| g.data.clone()),
            doc: r.doc.clone(),
            inline: r.inline,
        }
    }

    fn note(&mut self, file: &str, pos: Pos, message: impl Into<String>) {
        self.notes
            .push(Diagnostic::warning(file, pos, message.into()));
    }

    /// A Flux Kustomization's variables: `substituteFrom` objects found so far, in order, then
    /// `substitute` (which wins).
    fn vars_of(&mut self, ks: &KsSpec, objects: &[Obj]) -> Vars {
        let mut vars = Vars::new();
        for (kind, name, optional) in &ks.substitute_from {
            let found = objects
                .iter()
                .rev()
                .find(|o| o.kind == *kind && o.name == *name && o.namespace == ks.id.namespace);
            match found {
                Some(o) => {
                    for (k, v) in data_of(o) {
                        vars.insert(k, v);
                    }
                }
                None if *optional => {}
                None => self.note(
                    &ks.id.file,
                    ks.id.pos,
                    format!(
                        "Kustomization {} substitutes from {kind} {}/{name}, which is not in this repository (made outside git?): its variables are unknown to upkeep",
                        ks.id, ks.id.namespace
                    ),
                ),
            }
        }
        for (k, v) in &ks.substitute {
            vars.insert(k.clone(), v.clone());
        }
        vars
    }

    /// `spec.path` built, with the Flux Kustomization's components and patches.
    fn flux_build(&mut self, ks: &KsSpec) -> Result<Vec<Res>, String> {
        if !ks.path.is_empty() && !self.files.is_dir(&ks.path) {
            return Err(format!("kustomization path not found: {}", ks.path));
        }
        let mut stack = Vec::new();
        let mut res = self.build_dir(&ks.path, true, &mut stack)?;
        for c in &ks.components {
            if c.contains("://") || c.starts_with('/') {
                return Err(format!("component path '{c}' must be local and relative"));
            }
            let dir = join(&ks.path, c);
            let (more, patches) = self.build_component(&dir, &mut stack)?;
            res.extend(more);
            apply_patches(&mut res, &patches);
        }
        apply_patches(&mut res, &ks.patches);
        Ok(res)
    }

    fn kfile(&self, dir: &str) -> Option<String> {
        KFILES
            .iter()
            .map(|k| join(dir, k))
            .find(|k| self.files.exists(k))
    }

    fn kdoc(&self, kfile: &str) -> Result<Arc<Node>, String> {
        let docs = self
            .files
            .docs(kfile)
            .ok_or_else(|| format!("{kfile} cannot be read"))?;
        match docs.as_ref() {
            Ok(d) => Ok(Arc::new(d.first().cloned().unwrap_or(Node {
                value: Value::Null,
                pos: Pos::START,
                start: 0,
                end: 0,
                style: super::yaml::Style::Plain,
                shared: false,
            }))),
            Err(e) => Err(format!(
                "{kfile}:{}:{}: {}",
                e.pos.line, e.pos.column, e.message
            )),
        }
    }

    /// One directory, as kustomize builds it (`generate`: as Flux generates a kustomization
    /// for a path that has none).
    fn build_dir(
        &mut self,
        dir: &str,
        generate: bool,
        stack: &mut Vec<String>,
    ) -> Result<Vec<Res>, String> {
        if stack.len() > MAX_DEPTH {
            return Err(format!(
                "{dir}: kustomizations nested deeper than {MAX_DEPTH}"
            ));
        }
        if stack.iter().any(|d| d == dir) {
            return Err(format!("{dir}: a kustomization includes itself"));
        }
        stack.push(dir.to_string());
        let out = match self.kfile(dir) {
            Some(k) => self.build_kustomization(dir, &k, stack, false).map(|x| x.0),
            None if generate => self.generated(dir, stack),
            None => Err(format!(
                "{dir}: no kustomization.yaml (a directory resource needs one)"
            )),
        };
        stack.pop();
        out
    }

    fn build_component(
        &mut self,
        dir: &str,
        stack: &mut Vec<String>,
    ) -> Result<(Vec<Res>, Vec<Arc<Patch>>), String> {
        let k = self
            .kfile(dir)
            .ok_or_else(|| format!("component {dir}: no kustomization.yaml"))?;
        stack.push(dir.to_string());
        let out = self.build_kustomization(dir, &k, stack, true);
        stack.pop();
        out
    }

    /// What Flux's generator makes of a path without a kustomization: its YAML files in
    /// lexical order, and each subdirectory that has its own kustomization as a whole.
    fn generated(&mut self, dir: &str, stack: &mut Vec<String>) -> Result<Vec<Res>, String> {
        let mut out = Vec::new();
        let mut taken: Vec<String> = Vec::new();
        let files: Vec<String> = self.files.under(dir).map(str::to_string).collect();
        for f in files {
            if taken.iter().any(|t| f.starts_with(&format!("{t}/"))) {
                continue;
            }
            // The nearest directory between `dir` and `f` that has a kustomization.
            let mut owner = None;
            let mut d = parent(&f).to_string();
            while d.len() > dir.len() {
                if self.kfile(&d).is_some() {
                    owner = Some(d.clone());
                }
                d = parent(&d).to_string();
            }
            if let Some(o) = owner {
                taken.push(o.clone());
                out.extend(self.build_dir(&o, false, stack)?);
                continue;
            }
            let lower = f.to_ascii_lowercase();
            if lower.ends_with(".yaml") || lower.ends_with(".yml") {
                out.extend(self.file_docs(&f)?);
            }
        }
        Ok(out)
    }

    fn file_docs(&mut self, f: &str) -> Result<Vec<Res>, String> {
        let docs = self
            .files
            .docs(f)
            .ok_or_else(|| format!("{f} cannot be read"))?;
        let docs = docs
            .as_ref()
            .as_ref()
            .map_err(|e| format!("{f}:{}:{}: {}", e.pos.line, e.pos.column, e.message))?;
        Ok(docs
            .iter()
            .filter(|d| !d.is_null() && !d.str_at(&["kind"]).is_empty())
            .map(|d| Res {
                file: f.to_string(),
                doc: Arc::new(d.clone()),
                inline: None,
                ns: None,
                patches: Vec::new(),
                generated: None,
            })
            .collect())
    }

    /// A kustomization file: resources, generators, components, patches, namespace. Also the
    /// patches it declares (a component's apply to what includes it).
    fn build_kustomization(
        &mut self,
        dir: &str,
        kfile: &str,
        stack: &mut Vec<String>,
        component: bool,
    ) -> Result<(Vec<Res>, Vec<Arc<Patch>>), String> {
        let k = self.kdoc(kfile)?;
        let is_component = k.str_at(&["kind"]) == "Component";
        if is_component != component {
            return Err(if component {
                format!("{kfile}: a component must be `kind: Component`")
            } else {
                format!("{kfile}: expected kind != 'Component' for a resource")
            });
        }
        let mut out = Vec::new();
        for key in ["resources", "bases"] {
            for r in k.get(key).map(Node::items).unwrap_or_default() {
                let Some(entry) = r.as_str() else { continue };
                if is_remote(entry) {
                    self.note(
                        kfile,
                        r.pos,
                        format!("remote resource {entry:?} is not read (upkeep reads this repository only)"),
                    );
                    continue;
                }
                let p = join(dir, entry);
                if self.files.text(&p).is_some() {
                    out.extend(self.file_docs(&p)?);
                } else if self.files.is_dir(&p) {
                    out.extend(self.build_dir(&p, false, stack)?);
                } else if self.files.exists(&p) {
                    self.note(kfile, r.pos, format!("{p} is not read (not YAML text)"));
                } else {
                    return Err(format!(
                        "{kfile}:{}:{}: resource {entry} not found",
                        r.pos.line, r.pos.column
                    ));
                }
            }
        }
        for (key, kind) in [
            ("configMapGenerator", "ConfigMap"),
            ("secretGenerator", "Secret"),
        ] {
            for g in k.get(key).map(Node::items).unwrap_or_default() {
                out.push(self.generator(dir, kfile, g, kind));
            }
        }
        for c in k.get("components").map(Node::items).unwrap_or_default() {
            let Some(entry) = c.as_str() else { continue };
            if is_remote(entry) {
                self.note(
                    kfile,
                    c.pos,
                    format!("remote component {entry:?} is not read"),
                );
                continue;
            }
            let (more, patches) = self.build_component(&join(dir, entry), stack)?;
            out.extend(more);
            apply_patches(&mut out, &patches);
        }
        let patches = self.patches(dir, kfile, &k);
        apply_patches(&mut out, &patches);
        let ns = k.str_at(&["namespace"]);
        if !ns.is_empty() {
            for r in &mut out {
                if !CLUSTER_SCOPED.contains(&r.kind().as_str()) || r.kind() == "Namespace" {
                    r.ns = Some(ns.to_string());
                }
            }
        }
        for key in [
            "images",
            "namePrefix",
            "nameSuffix",
            "replacements",
            "helmCharts",
        ] {
            if let Some(n) = k.key(key) {
                self.note(
                    kfile,
                    n.pos,
                    format!("`{key}` is not taken into account by upkeep's reading"),
                );
            }
        }
        Ok((out, if component { patches } else { Vec::new() }))
    }

    fn generator(&mut self, dir: &str, kfile: &str, g: &Node, kind: &str) -> Res {
        let name = g.str_at(&["name"]).to_string();
        let ns = Some(g.str_at(&["namespace"]).to_string()).filter(|n| !n.is_empty());
        let mut data = BTreeMap::new();
        for f in g.get("files").map(Node::items).unwrap_or_default() {
            let Some(s) = f.as_str() else { continue };
            let (key, path) = match s.split_once('=') {
                Some((k, p)) => (k.to_string(), p),
                None => (s.rsplit('/').next().unwrap_or(s).to_string(), s),
            };
            data.insert(key, DataSource::File(join(dir, path)));
        }
        for l in g.get("literals").map(Node::items).unwrap_or_default() {
            if let Some((k, v)) = l.as_str().and_then(|s| s.split_once('=')) {
                data.insert(k.to_string(), DataSource::Literal(v.to_string()));
            }
        }
        for e in g.get("envs").map(Node::items).unwrap_or_default() {
            let Some(p) = e.as_str() else { continue };
            let p = join(dir, p);
            match self.files.text(&p) {
                Some(t) => {
                    for line in t.lines() {
                        let line = line.trim();
                        if line.starts_with('#') {
                            continue;
                        }
                        if let Some((k, v)) = line.split_once('=') {
                            data.insert(k.trim().to_string(), DataSource::Literal(v.to_string()));
                        }
                    }
                }
                None => self.note(kfile, e.pos, format!("env file {p} not found")),
            }
        }
        Res {
            file: kfile.to_string(),
            doc: Arc::new(g.clone()),
            inline: None,
            ns,
            patches: Vec::new(),
            generated: Some(Generated {
                kind: kind.to_string(),
                name,
                data,
            }),
        }
    }

    /// `patches`, `patchesStrategicMerge` and `patchesJson6902` of a kustomization.
    fn patches(&mut self, dir: &str, kfile: &str, k: &Node) -> Vec<Arc<Patch>> {
        let mut out = Vec::new();
        let from_file = |b: &mut Self, path: &str, at: Pos| -> Option<Node> {
            let p = join(dir, path);
            match b.files.docs(&p).map(|d| d.as_ref().clone()) {
                Some(Ok(docs)) => docs.into_iter().next(),
                _ => {
                    b.note(kfile, at, format!("patch file {p} cannot be read"));
                    None
                }
            }
        };
        for e in k.get("patches").map(Node::items).unwrap_or_default() {
            if e.get("patch").is_some() {
                out.extend(inline_patch(kfile, e));
            } else if let Some(path) = e.get("path").and_then(Node::as_str)
                && let Some(root) = from_file(self, path, e.pos)
            {
                let json6902 = matches!(root.value, Value::Seq(_));
                out.push(Arc::new(Patch {
                    file: join(dir, path),
                    root: Arc::new(with_target(root, e.get("target"))),
                    inline: None,
                    json6902,
                }));
            }
        }
        for e in k
            .get("patchesStrategicMerge")
            .map(Node::items)
            .unwrap_or_default()
        {
            let Some(s) = e.as_str() else { continue };
            if s.contains('\n') || s.contains(':') && !s.ends_with(".yaml") && !s.ends_with(".yml")
            {
                if let Ok(docs) = super::yaml::parse_stream(s)
                    && let Some(root) = docs.into_iter().next()
                {
                    out.push(Arc::new(Patch {
                        file: kfile.to_string(),
                        root: Arc::new(root),
                        inline: Some(e.pos),
                        json6902: false,
                    }));
                }
            } else if let Some(root) = from_file(self, s, e.pos) {
                out.push(Arc::new(Patch {
                    file: join(dir, s),
                    root: Arc::new(root),
                    inline: None,
                    json6902: false,
                }));
            }
        }
        for e in k
            .get("patchesJson6902")
            .map(Node::items)
            .unwrap_or_default()
        {
            if e.get("patch").is_some() {
                out.extend(inline_patch(kfile, e));
            } else if let Some(path) = e.get("path").and_then(Node::as_str)
                && let Some(root) = from_file(self, path, e.pos)
            {
                out.push(Arc::new(Patch {
                    file: join(dir, path),
                    root: Arc::new(with_target(root, e.get("target"))),
                    inline: None,
                    json6902: true,
                }));
            }
        }
        out
    }
}

fn is_remote(entry: &str) -> bool {
    entry.contains("://")
        || entry.starts_with("github.com/")
        || entry.starts_with("git@")
        || entry.starts_with("gh:")
}

/// Attach each patch to the resources it targets.
fn apply_patches(res: &mut [Res], patches: &[Arc<Patch>]) {
    for p in patches {
        let (target, body) = target_of(p);
        for r in res.iter_mut() {
            let hit = match target {
                Some(t) => target_matches(t, r),
                None if p.json6902 => false,
                None => {
                    body.str_at(&["kind"]) == r.kind()
                        && body.str_at(&["metadata", "name"]) == r.name()
                        && {
                            let ns = body.str_at(&["metadata", "namespace"]);
                            ns.is_empty() || ns == r.written_ns()
                        }
                }
            };
            if hit {
                let unwrapped = Arc::new(Patch {
                    file: p.file.clone(),
                    root: Arc::new(body.clone()),
                    inline: p.inline,
                    json6902: p.json6902,
                });
                r.patches.push(unwrapped);
            }
        }
    }
}

/// kustomize's patch target: kind, name (a regular expression, anchored: `.*` and exact names
/// are understood), namespace, group, version, labelSelector (`k=v` terms).
fn target_matches(t: &Node, r: &Res) -> bool {
    let want = |key: &str| t.str_at(&[key]);
    let api = r.doc.str_at(&["apiVersion"]);
    let (group, version) = api.rsplit_once('/').unwrap_or(("", api));
    let name_ok = {
        let pat = want("name");
        pat.is_empty() || glob(pat, &r.name())
    };
    let labels_ok = selector_matches(want("labelSelector"), |k| {
        Some(r.doc.str_at(&["metadata", "labels", k])).filter(|v| !v.is_empty())
    });
    (want("kind").is_empty() || want("kind") == r.kind())
        && name_ok
        && (want("namespace").is_empty() || want("namespace") == r.written_ns())
        && (want("group").is_empty() || want("group") == group)
        && (want("version").is_empty() || want("version") == version)
        && labels_ok
}

/// A Kubernetes label selector (`k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`,
/// `!k`) against labels read by `label`.
pub fn selector_matches<'a>(sel: &str, label: impl Fn(&str) -> Option<&'a str>) -> bool {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in sel.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&sel[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&sel[start..]);
    terms.iter().all(|t| {
        let t = t.trim();
        if t.is_empty() {
            return true;
        }
        let set = |rest: &str| -> Vec<String> {
            rest.trim()
                .trim_start_matches('(')
                .trim_end_matches(')')
                .split(',')
                .map(|v| v.trim().to_string())
                .collect()
        };
        if let Some((k, rest)) = t.split_once(" notin ") {
            return label(k.trim()).is_none_or(|v| !set(rest).iter().any(|x| x == v));
        }
        if let Some((k, rest)) = t.split_once(" in ") {
            return label(k.trim()).is_some_and(|v| set(rest).iter().any(|x| x == v));
        }
        if let Some((k, v)) = t.split_once("!=") {
            return label(k.trim()) != Some(v.trim());
        }
        if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
            return label(k.trim()) == Some(v.trim());
        }
        match t.strip_prefix('!') {
            Some(k) => label(k.trim()).is_none(),
            None => label(t).is_some(),
        }
    })
}

/// `pat` as an anchored regular expression where only `.*` and `.+` are special.
fn glob(pat: &str, s: &str) -> bool {
    if !pat.contains(".*") && !pat.contains(".+") {
        return pat == s;
    }
    let parts: Vec<&str> = pat.split(".*").flat_map(|p| p.split(".+")).collect();
    let mut rest = s;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

/// The variables a ConfigMap or Secret gives `substituteFrom`, with where each is written.
fn data_of(o: &Obj) -> Vec<(String, Var)> {
    let from = format!("{} {}/{}", o.kind, o.namespace, o.name);
    if let Some(g) = &o.generated {
        return g
            .iter()
            .map(|(k, src)| {
                let value = match src {
                    DataSource::Literal(v) => v.clone(),
                    DataSource::File(_) => String::new(),
                };
                (
                    k.clone(),
                    Var {
                        value: value.replace('\n', ""),
                        at: None,
                        from: format!("{from} (generated in {})", o.file),
                    },
                )
            })
            .collect();
    }
    let sops = o.doc.get("sops").is_some();
    let mut out = Vec::new();
    for key in ["data", "stringData"] {
        let base64 = o.kind == "Secret" && key == "data";
        for (k, v) in o.doc.get(key).map(Node::entries).unwrap_or_default() {
            let Some(name) = k.as_str() else { continue };
            let raw = v.as_str().unwrap_or("");
            let value = if sops || raw.starts_with("ENC[") {
                String::new()
            } else if base64 {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .decode(raw)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .unwrap_or_default()
            } else {
                raw.to_string()
            };
            let editable = !sops && !base64;
            out.push((
                name.to_string(),
                Var {
                    value: value.replace('\n', ""),
                    at: editable.then(|| Loc {
                        file: o.file.clone(),
                        node: v.clone(),
                        inline: o.inline,
                    }),
                    from: from.clone(),
                },
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(pairs: &[(&str, &str)]) -> Files {
        Files::from_pairs(pairs.iter().copied())
    }

    const FI: &str = "apiVersion: fluxcd.controlplane.io/v1\nkind: FluxInstance\nmetadata: {name: flux, namespace: flux-system}\nspec:\n  distribution: {version: 2.6.4}\n  sync: {kind: GitRepository, url: https://example.com/r, ref: refs/heads/main, path: clusters/main}\n";

    #[test]
    fn the_tree_from_a_flux_instance_with_target_namespace_components_and_variables() {
        let f = files(&[
            ("clusters/main/flux-instance.yaml", FI),
            (
                "clusters/main/kustomization.yaml",
                "resources: [flux-instance.yaml, apps.yaml, settings.yaml]\n",
            ),
            (
                "clusters/main/settings.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cluster-settings, namespace: flux-system}\ndata:\n  TZ: Europe/Amsterdam\n  KUBE_VERSION: v1.33.4+k3s1\n",
            ),
            (
                "clusters/main/apps.yaml",
                "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {name: longhorn, namespace: flux-system}\nspec:\n  path: ./apps/storage/longhorn\n  targetNamespace: storage\n  components: [../../../components/common]\n  sourceRef: {kind: GitRepository, name: flux-system}\n  postBuild:\n    substituteFrom: [{kind: ConfigMap, name: cluster-settings}]\n    substitute:\n      APP: longhorn\n",
            ),
            (
                "apps/storage/longhorn/helmrelease.yaml",
                "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {name: longhorn}\nspec:\n  chart:\n    spec: {chart: longhorn, version: 1.9.1}\n",
            ),
            (
                "components/common/kustomization.yaml",
                "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\nresources: [./namespace.yaml]\n",
            ),
            (
                "components/common/namespace.yaml",
                "apiVersion: v1\nkind: Namespace\nmetadata: {name: _}\n",
            ),
            (
                "elsewhere/ignored.yaml",
                "kind: ConfigMap\nmetadata: {name: x}\n",
            ),
        ]);
        let l = read(&f, "clusters/main");
        assert_eq!(l.entries.len(), 1, "{:?}", l.entries);
        let hr = l.find("HelmRelease", "storage", "longhorn").expect("hr");
        assert_eq!(hr.file, "apps/storage/longhorn/helmrelease.yaml");
        assert_eq!(
            hr.applied_by.as_ref().map(|k| k.name.as_str()),
            Some("longhorn")
        );
        assert_eq!(hr.vars["KUBE_VERSION"].value, "v1.33.4+k3s1");
        assert_eq!(
            hr.vars["APP"].from,
            "postBuild.substitute of Kustomization flux-system/longhorn"
        );
        let at = hr.vars["KUBE_VERSION"].at.as_ref().expect("editable");
        assert_eq!(
            (at.file.as_str(), at.node.pos.line),
            ("clusters/main/settings.yaml", 6)
        );
        assert!(hr.substitutes);
        assert!(
            l.find("Namespace", "", "storage").is_some(),
            "the component's Namespace named by targetNamespace"
        );
        assert!(l.objects.iter().all(|o| o.file != "elsewhere/ignored.yaml"));
        assert!(l.notes.is_empty(), "{:?}", l.notes);
    }

    #[test]
    fn generated_kustomizations_patches_and_generators() {
        let f = files(&[
            (
                "gotk/gotk-sync.yaml",
                "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {name: flux-system, namespace: flux-system}\nspec:\n  path: ./cluster\n  sourceRef: {kind: GitRepository, name: flux-system}\n",
            ),
            (
                "cluster/a.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
            ),
            (
                "cluster/app/kustomization.yaml",
                "namespace: media\nresources: [hr.yaml]\nconfigMapGenerator:\n  - name: values\n    files: [values.yaml=./helm/values.yaml]\npatches:\n  - path: patch.yaml\n  - target: {kind: HelmRelease, name: web}\n    patch: |\n      - op: replace\n        path: /spec/chart/spec/version\n        value: 2.0.0\n",
            ),
            (
                "cluster/app/hr.yaml",
                "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {name: web}\nspec:\n  chart:\n    spec: {chart: web, version: 1.0.0}\n  values:\n    image: {tag: a}\n",
            ),
            (
                "cluster/app/patch.yaml",
                "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {name: web}\nspec:\n  values:\n    image: {tag: b}\n",
            ),
            (
                "cluster/app/helm/values.yaml",
                "instance:\n  distribution: {version: 2.6.4}\n",
            ),
            (
                "cluster/app/extra/loose.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: not-in-kustomization}\n",
            ),
        ]);
        let l = read(&f, "");
        let hr = l.find("HelmRelease", "media", "web").expect("hr");
        let v = hr
            .field(&["spec", "chart", "spec", "version"])
            .expect("version");
        assert_eq!(v.node.as_str(), Some("2.0.0"));
        assert!(v.inline.is_some(), "an inline JSON6902 patch");
        let t = hr.field(&["spec", "values", "image", "tag"]).expect("tag");
        assert_eq!(
            (t.file.as_str(), t.node.as_str()),
            ("cluster/app/patch.yaml", Some("b"))
        );
        let cm = l.find("ConfigMap", "media", "values").expect("generated");
        assert_eq!(
            cm.generated.as_ref().and_then(|g| g.get("values.yaml")),
            Some(&DataSource::File("cluster/app/helm/values.yaml".into()))
        );
        assert!(l.find("ConfigMap", "flux-system", "a").is_some());
        assert!(
            l.find("ConfigMap", "media", "not-in-kustomization")
                .is_none()
        );
    }

    #[test]
    fn bounded_on_cycles_and_missing_paths() {
        let f = files(&[
            (
                "c/ks.yaml",
                "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {name: loop, namespace: flux-system}\nspec:\n  path: ./c\n  sourceRef: {kind: GitRepository, name: flux-system}\n---\napiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {name: gone, namespace: flux-system}\nspec:\n  path: ./nowhere\n  sourceRef: {kind: GitRepository, name: flux-system}\n",
            ),
            ("d/kustomization.yaml", "resources: [../d]\n"),
            (
                "d/ks.yaml",
                "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {name: self, namespace: flux-system}\nspec:\n  path: ./d\n  sourceRef: {kind: GitRepository, name: flux-system}\n",
            ),
        ]);
        let l = read(&f, "");
        let said: Vec<String> = l.notes.iter().map(ToString::to_string).collect();
        assert!(
            said.iter()
                .any(|n| n.contains("kustomization path not found: nowhere")),
            "{said:?}"
        );
        assert!(
            said.iter().any(|n| n.contains("includes itself")),
            "{said:?}"
        );
    }

    #[test]
    fn label_selectors() {
        let labels = |k: &str| match k {
            "app" => Some("web"),
            "tier" => Some("front"),
            _ => None,
        };
        assert!(selector_matches("", labels));
        assert!(selector_matches("app=web,tier in (front, back)", labels));
        assert!(selector_matches("x notin (true)", labels));
        assert!(!selector_matches("app notin (web)", labels));
        assert!(selector_matches("!x, app, tier!=back", labels));
        assert!(!selector_matches("app==db", labels));
    }

    #[test]
    fn glob_names() {
        assert!(glob("web", "web"));
        assert!(!glob("web", "webs"));
        assert!(glob("web.*", "web-1"));
        assert!(glob(".*-db", "app-db"));
        assert!(!glob(".*-db", "app-dbx"));
    }
}
