//! `kustomize build` as kustomize-controller runs it on a Kustomization's path, far enough for
//! the repositories upkeep is used on: `resources` (files, and directories built the same way),
//! `configMapGenerator`/`secretGenerator` (with kustomize's name hash, `generatorOptions`,
//! and the `nameReference` rewrites a `configurations` file declares), `components`
//! (`kind: Component`), `patches` (strategic merge and JSON 6902, with targets),
//! `patchesStrategicMerge`, `patchesJson6902`, and `namespace`; and, when the path has no
//! kustomization, the one Flux generates.
//!
//! Upstream: kubernetes-sigs/kustomize `api/internal/target/kusttarget.go` (`AccumulateTarget`:
//! resources, then generators, then components, then transformers; `LoadKustFile`),
//! `api/internal/builtins/PatchTransformer.go`, `api/hasher/hasher.go` (`Hash`: sha256 of the
//! JSON `{"data","kind","name"}`, ten hex characters, `encode`), `api/resource/factory.go`
//! (`disableNameSuffixHash`); fluxcd/pkg `kustomize/kustomize_generator.go` (`GenerateManifest`,
//! `scanManifests`). Left out (docs/fidelity.md): remote resources, `images`, name prefixes and
//! suffixes, `replacements`, `helmCharts`, vars, and strategic-merge directives beyond
//! `$patch: delete` and merging lists by `name`.

use serde_json::{Map, Value};

use super::flux::Artifact;

const KFILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];
const MAX_DEPTH: usize = 20;

/// Kinds outside namespaces (the `namespace:` transformer leaves them alone).
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
];

/// One object the build yields, and the file it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Res {
    pub file: String,
    pub obj: Value,
}

#[derive(Debug, Default)]
struct Acc {
    res: Vec<Res>,
    /// Generated names: (kind, namespace, base name, name with hash).
    generated: Vec<(String, String, String, String)>,
    /// nameReference rules from `configurations`: (referenced kind, referring kind, path).
    name_refs: Vec<(String, String, Vec<String>)>,
}

fn join(dir: &str, rel: &str) -> String {
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for p in rel.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            x => parts.push(x),
        }
    }
    parts.join("/")
}

fn is_dir(a: &Artifact, dir: &str) -> bool {
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    a.files
        .range(prefix.clone()..)
        .next()
        .is_some_and(|(f, _)| f.starts_with(&prefix))
}

fn kfile(a: &Artifact, dir: &str) -> Option<String> {
    KFILES
        .iter()
        .map(|k| join(dir, k))
        .find(|k| a.files.contains_key(k))
}

fn docs(text: &str, file: &str) -> Result<Vec<Value>, String> {
    let all: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| format!("{file}: {e}"))?;
    Ok(all
        .into_iter()
        .filter(|d| {
            d.get("kind")
                .is_some_and(|k| k.as_str().is_some_and(|k| !k.is_empty()))
        })
        .collect())
}

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for p in path {
        match cur.get(*p) {
            Some(n) => cur = n,
            None => return "",
        }
    }
    cur.as_str().unwrap_or("")
}

fn list<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> + 'a {
    v.get(key).and_then(Value::as_array).into_iter().flatten()
}

/// Flux's build of `path` in `a` (a kustomization generated when there is none), with a Flux
/// Kustomization's `components` and `patches` on top.
pub fn flux_build(
    a: &Artifact,
    path: &str,
    components: &[String],
    patches: &[Value],
) -> Result<Vec<Res>, String> {
    let root = join("", path);
    if !root.is_empty() && !is_dir(a, &root) {
        return Err(format!("kustomization path not found: {root}"));
    }
    let mut acc = match kfile(a, &root) {
        Some(k) => build_kustomization(a, &root, &k, 0, false)?.0,
        None => generated(a, &root)?,
    };
    for c in components {
        if c.contains("://") || c.starts_with('/') {
            return Err(format!("component path '{c}' must be local and relative"));
        }
        let dir = join(&root, c);
        let k = kfile(a, &dir).ok_or_else(|| format!("component {dir}: no kustomization"))?;
        let (more, more_patches) = build_kustomization(a, &dir, &k, 1, true)?;
        merge_acc(&mut acc, more);
        apply_patches(&mut acc.res, &more_patches)?;
    }
    let flux_patches: Vec<Patch> = patches
        .iter()
        .filter_map(|p| {
            let body = p.get("patch")?.as_str()?;
            Some(parse_patch(body, p.get("target").cloned()))
        })
        .collect::<Result<_, _>>()?;
    apply_patches(&mut acc.res, &flux_patches)?;
    rename_references(&mut acc);
    Ok(acc.res)
}

fn merge_acc(into: &mut Acc, from: Acc) {
    into.res.extend(from.res);
    into.generated.extend(from.generated);
    into.name_refs.extend(from.name_refs);
}

/// fluxcd/pkg's generator: YAML files in lexical order; a subdirectory with its own
/// kustomization taken as a whole.
fn generated(a: &Artifact, dir: &str) -> Result<Acc, String> {
    let mut acc = Acc::default();
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let mut taken: Vec<String> = Vec::new();
    let files: Vec<(String, String)> = a
        .files
        .range(prefix.clone()..)
        .take_while(|(f, _)| f.starts_with(&prefix))
        .map(|(f, t)| (f.clone(), t.clone()))
        .collect();
    for (f, text) in files {
        if taken.iter().any(|t| f.starts_with(&format!("{t}/"))) {
            continue;
        }
        let mut owner = None;
        let mut d = f
            .rsplit_once('/')
            .map_or(String::new(), |(d, _)| d.to_string());
        while d.len() > dir.len() {
            if kfile(a, &d).is_some() {
                owner = Some(d.clone());
            }
            d = d
                .rsplit_once('/')
                .map_or(String::new(), |(x, _)| x.to_string());
        }
        if let Some(o) = owner {
            taken.push(o.clone());
            let k = kfile(a, &o).unwrap_or_default();
            merge_acc(&mut acc, build_kustomization(a, &o, &k, 1, false)?.0);
            continue;
        }
        let lower = f.to_ascii_lowercase();
        if lower.ends_with(".yaml") || lower.ends_with(".yml") {
            for d in
                docs(&text, &f).map_err(|e| format!("failed to decode Kubernetes YAML from {e}"))?
            {
                acc.res.push(Res {
                    file: f.clone(),
                    obj: d,
                });
            }
        }
    }
    Ok(acc)
}

fn build_dir(a: &Artifact, dir: &str, depth: usize) -> Result<Acc, String> {
    let k = kfile(a, dir).ok_or_else(|| {
        format!("unable to find one of 'kustomization.yaml', 'kustomization.yml' or 'Kustomization' in directory '{dir}'")
    })?;
    Ok(build_kustomization(a, dir, &k, depth, false)?.0)
}

/// One kustomization (or component): its objects, and the patches a component brings.
fn build_kustomization(
    a: &Artifact,
    dir: &str,
    kpath: &str,
    depth: usize,
    component: bool,
) -> Result<(Acc, Vec<Patch>), String> {
    if depth > MAX_DEPTH {
        return Err(format!("{dir}: kustomizations nested too deep"));
    }
    let text = &a.files[kpath];
    let k: Value = serde_saphyr::from_str(text).map_err(|e| format!("{kpath}: {e}"))?;
    let is_component = s(&k, &["kind"]) == "Component";
    if component != is_component {
        return Err(if component {
            format!("{kpath}: a component must be kind: Component")
        } else {
            format!("{kpath}: expected kind != 'Component' for path '{dir}'")
        });
    }
    let mut acc = Acc::default();
    for key in ["resources", "bases"] {
        for r in list(&k, key).filter_map(Value::as_str) {
            if r.contains("://") || r.starts_with("github.com/") || r.starts_with("git@") {
                // Remote bases need the network: left out (their objects are not applied).
                continue;
            }
            let p = join(dir, r);
            if let Some(t) = a.files.get(&p) {
                for d in docs(t, &p)? {
                    acc.res.push(Res {
                        file: p.clone(),
                        obj: d,
                    });
                }
            } else if is_dir(a, &p) {
                merge_acc(&mut acc, build_dir(a, &p, depth + 1)?);
            } else {
                return Err(format!("{kpath}: accumulating resources: '{p}' not found"));
            }
        }
    }
    let global_no_hash = k
        .pointer("/generatorOptions/disableNameSuffixHash")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let ns = s(&k, &["namespace"]).to_string();
    for (key, kind) in [
        ("configMapGenerator", "ConfigMap"),
        ("secretGenerator", "Secret"),
    ] {
        for g in list(&k, key) {
            acc.res.push(generate(
                a,
                dir,
                kpath,
                g,
                kind,
                global_no_hash,
                &ns,
                &mut acc.generated,
            )?);
        }
    }
    for c in list(&k, "components").filter_map(Value::as_str) {
        if c.contains("://") {
            continue;
        }
        let cdir = join(dir, c);
        let ck = kfile(a, &cdir)
            .ok_or_else(|| format!("{kpath}: component {cdir}: no kustomization"))?;
        let (more, patches) = build_kustomization(a, &cdir, &ck, depth + 1, true)?;
        merge_acc(&mut acc, more);
        apply_patches(&mut acc.res, &patches)?;
    }
    let mut patches = Vec::new();
    for p in list(&k, "patches") {
        if let Some(body) = p.get("patch").and_then(Value::as_str) {
            patches.push(parse_patch(body, p.get("target").cloned())?);
        } else if let Some(path) = p.get("path").and_then(Value::as_str) {
            let f = join(dir, path);
            let body = a
                .files
                .get(&f)
                .ok_or_else(|| format!("{kpath}: patch {f} not found"))?;
            patches.push(parse_patch(body, p.get("target").cloned())?);
        }
    }
    for p in list(&k, "patchesStrategicMerge").filter_map(Value::as_str) {
        let f = join(dir, p);
        let body = a.files.get(&f).map_or(p, String::as_str);
        patches.push(parse_patch(body, None)?);
    }
    for p in list(&k, "patchesJson6902") {
        let body = match (
            p.get("patch").and_then(Value::as_str),
            p.get("path").and_then(Value::as_str),
        ) {
            (Some(b), _) => b.to_string(),
            (None, Some(path)) => a
                .files
                .get(&join(dir, path))
                .cloned()
                .ok_or_else(|| format!("{kpath}: patch {path} not found"))?,
            _ => continue,
        };
        patches.push(parse_patch(&body, p.get("target").cloned())?);
    }
    for c in list(&k, "configurations").filter_map(Value::as_str) {
        let f = join(dir, c);
        if let Some(t) = a.files.get(&f)
            && let Ok(conf) = serde_saphyr::from_str::<Value>(t)
        {
            for nr in list(&conf, "nameReference") {
                let kind = s(nr, &["kind"]).to_string();
                for fs in list(nr, "fieldSpecs") {
                    let path: Vec<String> =
                        s(fs, &["path"]).split('/').map(str::to_string).collect();
                    acc.name_refs
                        .push((kind.clone(), s(fs, &["kind"]).to_string(), path));
                }
            }
        }
    }
    if component {
        return Ok((acc, patches));
    }
    apply_patches(&mut acc.res, &patches)?;
    if !ns.is_empty() {
        for r in &mut acc.res {
            let kind = s(&r.obj, &["kind"]).to_string();
            if kind == "Namespace" {
                // The namespace transformer names Namespace objects too (its `metadata/name`
                // field spec for kind Namespace): a shared component's placeholder Namespace
                // becomes this one.
                r.obj["metadata"]["name"] = Value::String(ns.clone());
            } else if !CLUSTER_SCOPED.contains(&kind.as_str()) {
                r.obj["metadata"]["namespace"] = Value::String(ns.clone());
            }
        }
        for g in &mut acc.generated {
            g.1 = ns.clone();
        }
    }
    Ok((acc, Vec::new()))
}

#[allow(clippy::too_many_arguments)]
fn generate(
    a: &Artifact,
    dir: &str,
    kpath: &str,
    g: &Value,
    kind: &str,
    global_no_hash: bool,
    ns: &str,
    generated: &mut Vec<(String, String, String, String)>,
) -> Result<Res, String> {
    let name = s(g, &["name"]).to_string();
    let mut data = Map::new();
    for f in list(g, "files").filter_map(Value::as_str) {
        let (key, path) = match f.split_once('=') {
            Some((k, p)) => (k.to_string(), p),
            None => (f.rsplit('/').next().unwrap_or(f).to_string(), f),
        };
        let p = join(dir, path);
        let text = a
            .files
            .get(&p)
            .ok_or_else(|| format!("{kpath}: configMapGenerator {name}: {p} not found"))?;
        data.insert(key, Value::String(text.clone()));
    }
    for l in list(g, "literals").filter_map(Value::as_str) {
        if let Some((k, v)) = l.split_once('=') {
            data.insert(k.to_string(), Value::String(v.to_string()));
        }
    }
    for e in list(g, "envs").filter_map(Value::as_str) {
        let p = join(dir, e);
        for line in a.files.get(&p).map(String::as_str).unwrap_or("").lines() {
            let line = line.trim();
            if !line.starts_with('#')
                && let Some((k, v)) = line.split_once('=')
            {
                data.insert(k.trim().to_string(), Value::String(v.to_string()));
            }
        }
    }
    let no_hash = global_no_hash
        || g.pointer("/options/disableNameSuffixHash")
            .and_then(Value::as_bool)
            .unwrap_or(false);
    let hashed = if no_hash {
        name.clone()
    } else {
        format!("{name}-{}", hash(kind, &name, &data))
    };
    let gns = s(g, &["namespace"]).to_string();
    generated.push((
        kind.to_string(),
        if gns.is_empty() {
            ns.to_string()
        } else {
            gns.clone()
        },
        name.clone(),
        hashed.clone(),
    ));
    let data = if kind == "Secret" {
        use base64::Engine;
        Value::Object(
            data.into_iter()
                .map(|(k, v)| {
                    let enc = base64::engine::general_purpose::STANDARD
                        .encode(v.as_str().unwrap_or("").as_bytes());
                    (k, Value::String(enc))
                })
                .collect(),
        )
    } else {
        Value::Object(data)
    };
    let mut obj = serde_json::json!({"apiVersion": "v1", "kind": kind,
        "metadata": {"name": hashed}, "data": data});
    if !gns.is_empty() {
        obj["metadata"]["namespace"] = Value::String(gns);
    }
    Ok(Res {
        file: kpath.to_string(),
        obj,
    })
}

/// kustomize's name hash of a generated ConfigMap or Secret (`hasher.Hash` then `encode`).
pub fn hash(kind: &str, name: &str, data: &Map<String, Value>) -> String {
    // Go's json.Marshal of a map sorts its keys.
    let mut m = std::collections::BTreeMap::new();
    m.insert("data", Value::Object(data.clone()));
    m.insert("kind", Value::String(kind.to_string()));
    m.insert("name", Value::String(name.to_string()));
    let text = serde_json::to_string(&m).unwrap_or_default();
    let sum = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let hex: String = sum.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    hex.chars()
        .take(10)
        .map(|c| match c {
            '0' => 'g',
            '1' => 'h',
            '3' => 'k',
            'a' => 'm',
            'e' => 't',
            c => c,
        })
        .collect()
}

/// References to generated names, rewritten to their hashed names: the built-in ones kustomize
/// knows for workloads (volumes, envFrom, env valueFrom) and those `configurations` declare.
fn rename_references(acc: &mut Acc) {
    if acc
        .generated
        .iter()
        .all(|(_, _, base, hashed)| base == hashed)
    {
        return;
    }
    let generated = acc.generated.clone();
    let rules = acc.name_refs.clone();
    for r in &mut acc.res {
        let kind = s(&r.obj, &["kind"]).to_string();
        let ns = s(&r.obj, &["metadata", "namespace"]).to_string();
        let rename = |refkind: &str, v: &mut Value| {
            if let Some(name) = v.as_str()
                && let Some((_, _, _, hashed)) = generated.iter().find(|(k, gns, base, _)| {
                    k == refkind && base == name && (gns.is_empty() || *gns == ns)
                })
            {
                *v = Value::String(hashed.clone());
            }
        };
        for (refkind, on, path) in &rules {
            if *on != kind {
                continue;
            }
            visit(&mut r.obj, path, &mut |v| rename(refkind, v));
        }
        if matches!(
            kind.as_str(),
            "Deployment" | "StatefulSet" | "DaemonSet" | "Job" | "Pod"
        ) {
            let spec = if kind == "Pod" {
                r.obj.get_mut("spec")
            } else {
                r.obj.pointer_mut("/spec/template/spec")
            };
            if let Some(spec) = spec {
                for v in spec
                    .get_mut("volumes")
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    if let Some(n) = v.pointer_mut("/configMap/name") {
                        rename("ConfigMap", n);
                    }
                    if let Some(n) = v.pointer_mut("/secret/secretName") {
                        rename("Secret", n);
                    }
                }
            }
        }
    }
}

/// Call `f` on every value at `path` (a `/`-separated path; lists are stepped through).
fn visit(v: &mut Value, path: &[String], f: &mut dyn FnMut(&mut Value)) {
    match path.split_first() {
        None => f(v),
        Some((head, rest)) => match v {
            Value::Array(items) => items.iter_mut().for_each(|i| visit(i, path, f)),
            Value::Object(m) => {
                if let Some(next) = m.get_mut(head) {
                    visit(next, rest, f);
                }
            }
            _ => {}
        },
    }
}

#[derive(Debug, Clone)]
struct Patch {
    body: Value,
    json6902: bool,
    target: Option<Value>,
}

fn parse_patch(text: &str, target: Option<Value>) -> Result<Patch, String> {
    let body: Value = serde_saphyr::from_str(text).map_err(|e| format!("patch: {e}"))?;
    Ok(Patch {
        json6902: body.is_array(),
        body,
        target,
    })
}

fn selector(sel: &str, labels: &Value) -> bool {
    sel.split(',').all(|term| {
        let term = term.trim();
        let label = |k: &str| labels.get(k.trim()).and_then(Value::as_str);
        if term.is_empty() {
            true
        } else if let Some((k, rest)) = term.split_once(" notin ") {
            let set: Vec<&str> = rest
                .trim_matches(|c| c == '(' || c == ')' || c == ' ')
                .split(',')
                .map(str::trim)
                .collect();
            label(k).is_none_or(|v| !set.contains(&v))
        } else if let Some((k, rest)) = term.split_once(" in ") {
            let set: Vec<&str> = rest
                .trim_matches(|c| c == '(' || c == ')' || c == ' ')
                .split(',')
                .map(str::trim)
                .collect();
            label(k).is_some_and(|v| set.contains(&v))
        } else if let Some((k, v)) = term.split_once("!=") {
            label(k) != Some(v.trim())
        } else if let Some((k, v)) = term.split_once('=') {
            label(k.trim_end_matches('=')) == Some(v.trim())
        } else if let Some(k) = term.strip_prefix('!') {
            label(k).is_none()
        } else {
            label(term).is_some()
        }
    })
}

fn name_matches(pattern: &str, name: &str) -> bool {
    if !pattern.contains(".*") {
        return pattern == name;
    }
    let parts: Vec<&str> = pattern.split(".*").collect();
    let mut rest = name;
    for (i, p) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(p) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(p);
        } else if let Some(at) = rest.find(p) {
            rest = &rest[at + p.len()..];
        } else {
            return false;
        }
    }
    true
}

fn targets(t: &Value, obj: &Value) -> bool {
    let want = |k: &str| s(t, &[k]);
    let api = s(obj, &["apiVersion"]);
    let (group, version) = api.rsplit_once('/').unwrap_or(("", api));
    (want("kind").is_empty() || want("kind") == s(obj, &["kind"]))
        && (want("name").is_empty() || name_matches(want("name"), s(obj, &["metadata", "name"])))
        && (want("namespace").is_empty() || want("namespace") == s(obj, &["metadata", "namespace"]))
        && (want("group").is_empty() || want("group") == group)
        && (want("version").is_empty() || want("version") == version)
        && selector(
            want("labelSelector"),
            obj.pointer("/metadata/labels").unwrap_or(&Value::Null),
        )
        && selector(
            want("annotationSelector"),
            obj.pointer("/metadata/annotations").unwrap_or(&Value::Null),
        )
}

fn apply_patches(res: &mut [Res], patches: &[Patch]) -> Result<(), String> {
    for p in patches {
        for r in res.iter_mut() {
            let hit = match &p.target {
                Some(t) => targets(t, &r.obj),
                None if p.json6902 => false,
                None => {
                    s(&p.body, &["kind"]) == s(&r.obj, &["kind"])
                        && s(&p.body, &["metadata", "name"]) == s(&r.obj, &["metadata", "name"])
                }
            };
            if !hit {
                continue;
            }
            if p.json6902 {
                json6902(&mut r.obj, &p.body)?;
            } else {
                let mut body = p.body.clone();
                // A targeted patch's own name and namespace only select (kustomize keeps the
                // target's).
                if let Some(m) = body.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("name");
                    m.remove("namespace");
                }
                strategic_merge(&mut r.obj, &body);
            }
        }
    }
    Ok(())
}

/// Strategic merge, as far as manifests here need it: maps merge, `null` removes, `$patch:
/// delete` deletes, lists of maps with `name` merge by name, other lists are replaced.
fn strategic_merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() || v.get("$patch").and_then(Value::as_str) == Some("delete") {
                    t.remove(k);
                } else {
                    match t.get_mut(k) {
                        Some(existing) => strategic_merge(existing, v),
                        None => {
                            t.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
        }
        (Value::Array(t), Value::Array(p))
            if p.iter().all(|x| x.get("name").is_some())
                && t.iter().all(|x| x.get("name").is_some()) =>
        {
            for item in p {
                match t.iter_mut().find(|x| x.get("name") == item.get("name")) {
                    Some(existing) => strategic_merge(existing, item),
                    None => t.push(item.clone()),
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn pointer_parts(path: &str) -> Vec<String> {
    path.trim_start_matches('/')
        .split('/')
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// RFC 6902 `add`, `replace` and `remove`.
fn json6902(obj: &mut Value, ops: &Value) -> Result<(), String> {
    for op in ops.as_array().into_iter().flatten() {
        let path = pointer_parts(s(op, &["path"]));
        let Some((last, parents)) = path.split_last() else {
            continue;
        };
        let mut cur = &mut *obj;
        for p in parents {
            cur = match cur {
                Value::Object(m) => m
                    .get_mut(p)
                    .ok_or_else(|| format!("json patch: no {p} in {}", s(op, &["path"])))?,
                Value::Array(a) => p
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| a.get_mut(i))
                    .ok_or_else(|| format!("json patch: no index {p}"))?,
                _ => {
                    return Err(format!(
                        "json patch: {} is not a container",
                        s(op, &["path"])
                    ));
                }
            };
        }
        let value = op.get("value").cloned().unwrap_or(Value::Null);
        match (s(op, &["op"]), cur) {
            ("add" | "replace", Value::Object(m)) => {
                m.insert(last.clone(), value);
            }
            ("add", Value::Array(a)) if last == "-" => a.push(value),
            ("add", Value::Array(a)) => {
                let i = last
                    .parse::<usize>()
                    .map_err(|e| e.to_string())?
                    .min(a.len());
                a.insert(i, value);
            }
            ("replace", Value::Array(a)) => {
                if let Some(x) = last.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                    *x = value;
                }
            }
            ("remove", Value::Object(m)) => {
                m.remove(last);
            }
            ("remove", Value::Array(a)) => {
                if let Ok(i) = last.parse::<usize>()
                    && i < a.len()
                {
                    a.remove(i);
                }
            }
            (other, _) => {
                return Err(format!(
                    "json patch: op {other:?} is not supported by the emulator"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn art(files: &[(&str, &str)]) -> Artifact {
        Artifact {
            revision: "main@sha1:1".into(),
            files: files
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn generators_hash_names_and_references_follow() {
        let a = art(&[
            (
                "app/kustomization.yaml",
                "namespace: flux-system\nresources: [hr.yaml]\nconfigMapGenerator:\n  - name: values\n    files: [values.yaml=./values.yaml]\nconfigurations: [./kc.yaml]\n",
            ),
            (
                "app/values.yaml",
                "instance:\n  distribution: {version: 2.6.4}\n",
            ),
            (
                "app/kc.yaml",
                "nameReference:\n  - kind: ConfigMap\n    version: v1\n    fieldSpecs:\n      - path: spec/valuesFrom/name\n        kind: HelmRelease\n",
            ),
            (
                "app/hr.yaml",
                "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {name: fi}\nspec:\n  valuesFrom:\n    - {kind: ConfigMap, name: values}\n",
            ),
        ]);
        let out = flux_build(&a, "app", &[], &[]).expect("build");
        let cm = out
            .iter()
            .find(|r| r.obj["kind"] == "ConfigMap")
            .expect("cm");
        let name = cm.obj["metadata"]["name"].as_str().unwrap_or("");
        assert!(name.starts_with("values-") && name.len() == 17, "{name}");
        assert_eq!(cm.obj["metadata"]["namespace"], "flux-system");
        let hr = out
            .iter()
            .find(|r| r.obj["kind"] == "HelmRelease")
            .expect("hr");
        assert_eq!(hr.obj["spec"]["valuesFrom"][0]["name"], name);
    }

    #[test]
    fn components_patches_and_flux_overlays() {
        let a = art(&[
            (
                "apps/kustomization.yaml",
                "namespace: media\ncomponents: [../comp]\nresources: [hr.yaml]\npatches:\n  - target: {kind: HelmRelease, name: web}\n    patch: |\n      - op: replace\n        path: /spec/chart/spec/version\n        value: 2.0.0\n",
            ),
            (
                "apps/hr.yaml",
                "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {name: web}\nspec:\n  chart: {spec: {chart: web, version: 1.0.0}}\n  values: {a: 1, b: 2}\n",
            ),
            (
                "comp/kustomization.yaml",
                "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\nresources: [ns.yaml]\npatches:\n  - patch: |\n      apiVersion: helm.toolkit.fluxcd.io/v2\n      kind: HelmRelease\n      metadata: {name: web}\n      spec:\n        values: {b: null, c: 3}\n",
            ),
            (
                "comp/ns.yaml",
                "apiVersion: v1\nkind: Namespace\nmetadata: {name: _}\n",
            ),
        ]);
        let flux_patch = serde_json::json!([{"patch": "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {name: x}\nspec: {interval: 5m}\n", "target": {"kind": "HelmRelease"}}]);
        let out = flux_build(
            &a,
            "./apps",
            &[],
            flux_patch.as_array().map(Vec::as_slice).unwrap_or(&[]),
        )
        .expect("build");
        let hr = out
            .iter()
            .find(|r| r.obj["kind"] == "HelmRelease")
            .expect("hr");
        assert_eq!(hr.obj["spec"]["chart"]["spec"]["version"], "2.0.0");
        assert_eq!(
            hr.obj["spec"]["values"],
            serde_json::json!({"a": 1, "c": 3})
        );
        assert_eq!(hr.obj["spec"]["interval"], "5m");
        assert_eq!(hr.obj["metadata"]["name"], "web");
        assert_eq!(hr.obj["metadata"]["namespace"], "media");
        let ns = out
            .iter()
            .find(|r| r.obj["kind"] == "Namespace")
            .expect("ns");
        assert!(ns.obj["metadata"]["namespace"].is_null());
    }

    #[test]
    fn a_generated_kustomization_takes_subdirectories_with_their_own_whole() {
        let a = art(&[
            (
                "c/a.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
            ),
            ("c/sub/kustomization.yaml", "resources: [b.yaml]\n"),
            (
                "c/sub/b.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n",
            ),
            (
                "c/sub/ignored.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ignored}\n",
            ),
            ("c/notes.md", "hi"),
        ]);
        let names: Vec<String> = flux_build(&a, "c", &[], &[])
            .expect("build")
            .iter()
            .map(|r| r.obj["metadata"]["name"].as_str().unwrap_or("").to_string())
            .collect();
        assert_eq!(names, vec!["a", "b"]);
        assert!(flux_build(&a, "nowhere", &[], &[]).is_err());
    }
}
