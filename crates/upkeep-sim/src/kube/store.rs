//! The emulator's object store: resource types (built-in and from CRDs), objects as JSON keyed by
//! group/resource/namespace/name, one cluster-wide resourceVersion counter, a window of recent
//! events for watches, and the write semantics of the API server (generation, status subresource,
//! optimistic concurrency, managed fields and server-side apply). Synchronous; the HTTP layer and
//! the simulated controllers lock it briefly.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use super::patch::{
    fields_v1, get_path, json_patch, leaf_paths, merge_patch, paths_from_fields_v1, remove_path,
    strategic_merge_patch,
};

/// (API group, resource plural); the core group is "".
pub type Gr = (String, String);

pub fn gr(group: &str, plural: &str) -> Gr {
    (group.to_string(), plural.to_string())
}

/// A printer column (`additionalPrinterColumns` of a CRD, or built in).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    pub kind: String,
    pub json_path: String,
    pub priority: i64,
    pub description: String,
}

/// A served resource type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceType {
    pub group: String,
    /// Served versions, the preferred (storage) one first.
    pub versions: Vec<String>,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Has a `/status` subresource: writes to the main resource leave status alone, and status
    /// writes leave everything else alone.
    pub status: bool,
    pub columns: Vec<Column>,
}

impl ResourceType {
    pub fn gr(&self) -> Gr {
        gr(&self.group, &self.plural)
    }
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }
    /// Kinds whose spec changes bump `metadata.generation`.
    fn has_generation(&self) -> bool {
        !(self.group.is_empty()
            && matches!(
                self.plural.as_str(),
                "nodes" | "pods" | "events" | "configmaps" | "secrets" | "serviceaccounts"
            ))
            && self.group != "coordination.k8s.io"
    }
}

/// An API error, answered as a `metav1.Status`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
        }
    }
    pub fn not_found(t: &ResourceType, name: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", plural_group(t)),
        )
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(422, "Invalid", message)
    }
    pub fn status(&self) -> Value {
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        })
    }
}

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as watches see it.
#[derive(Debug, Clone)]
pub struct Event {
    pub rv: u64,
    pub gr: Gr,
    pub namespace: String,
    pub kind: EventType,
    pub object: Value,
}

/// Who writes, and when.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub now: DateTime<Utc>,
    pub manager: String,
    /// An API request (checked against the CRD's schema), not a simulated controller's write.
    pub request: Option<Request>,
}

/// What an API request asks of validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// `fieldValidation=Strict`: unknown fields are an error (else they are pruned).
    pub strict: bool,
    /// A PATCH (strict errors are 422 then, 400 for POST and PUT).
    pub patch: bool,
}

impl Ctx {
    pub fn new(now: DateTime<Utc>, manager: &str) -> Ctx {
        Ctx {
            now,
            manager: manager.to_string(),
            request: None,
        }
    }
}

/// How a PATCH body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    Merge,
    Json,
    Strategic,
    Apply { force: bool },
}

pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

type Key = (String, String);

pub struct Store {
    types: BTreeMap<Gr, ResourceType>,
    /// The storage version's `openAPIV3Schema` of each custom resource type.
    schemas: BTreeMap<Gr, Arc<Value>>,
    objects: BTreeMap<Gr, BTreeMap<Key, Value>>,
    rv: u64,
    window: VecDeque<Arc<Event>>,
    window_cap: usize,
    /// Every event after this resourceVersion is still in `window`.
    window_start: u64,
    tx: broadcast::Sender<Arc<Event>>,
    next_uid: u64,
    /// Set on every write; the state-dir saver clears it.
    pub dirty: bool,
}

/// How many events a watch may be behind before it is closed (the client then lists again).
pub const WATCH_BUFFER: usize = 8192;

impl Default for Store {
    fn default() -> Store {
        Store::new()
    }
}

impl Store {
    /// The storage version's `openAPIV3Schema` of a custom resource type, if it has one.
    pub fn schema_of(&self, gr: &Gr) -> Option<Arc<Value>> {
        self.schemas.get(gr).cloned()
    }

    pub fn new() -> Store {
        let (tx, _) = broadcast::channel(WATCH_BUFFER);
        let mut s = Store {
            types: BTreeMap::new(),
            schemas: BTreeMap::new(),
            objects: BTreeMap::new(),
            rv: 1000,
            window: VecDeque::new(),
            window_cap: 10_000,
            window_start: 1000,
            tx,
            next_uid: 1,
            dirty: false,
        };
        for t in builtin_types() {
            s.types.insert(t.gr(), t);
        }
        s
    }

    pub fn types(&self) -> impl Iterator<Item = &ResourceType> {
        self.types.values()
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// How many events a watch can resume from; older resourceVersions get 410 Gone.
    pub fn set_watch_window(&mut self, n: usize) {
        self.window_cap = n.max(1);
        self.trim_window();
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    /// The type served at `group/version/plural`.
    pub fn resolve(&self, group: &str, version: &str, plural: &str) -> Result<&ResourceType> {
        let t = self
            .types
            .get(&gr(group, plural))
            .filter(|t| t.versions.iter().any(|v| v == version))
            .ok_or_else(|| {
                ApiError::new(
                    404,
                    "NotFound",
                    format!("the server could not find the requested resource ({group}/{version} {plural})"),
                )
            })?;
        Ok(t)
    }

    pub fn type_of(&self, g: &Gr) -> Result<&ResourceType> {
        self.types.get(g).ok_or_else(|| {
            ApiError::new(404, "NotFound", format!("no resource type {}.{}", g.1, g.0))
        })
    }

    /// The type of an `apiVersion` + `kind`.
    pub fn type_for_kind(&self, api_version: &str, kind: &str) -> Option<&ResourceType> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        self.types
            .values()
            .find(|t| t.group == group && t.kind == kind && t.versions.iter().any(|v| v == version))
    }

    fn key(t: &ResourceType, ns: &str, name: &str) -> Key {
        if t.namespaced {
            (ns.to_string(), name.to_string())
        } else {
            (String::new(), name.to_string())
        }
    }

    pub fn get(&self, g: &Gr, ns: &str, name: &str) -> Result<Value> {
        let t = self.type_of(g)?;
        self.objects
            .get(g)
            .and_then(|m| m.get(&Store::key(t, ns, name)))
            .cloned()
            .ok_or_else(|| ApiError::not_found(t, name))
    }

    pub fn try_get(&self, g: &Gr, ns: &str, name: &str) -> Option<&Value> {
        let t = self.types.get(g)?;
        self.objects.get(g)?.get(&Store::key(t, ns, name))
    }

    /// Objects of a type, in one namespace or (`None`) all.
    pub fn list(&self, g: &Gr, ns: Option<&str>) -> Vec<&Value> {
        let Some(m) = self.objects.get(g) else {
            return Vec::new();
        };
        match ns {
            Some(ns) if self.types.get(g).is_some_and(|t| t.namespaced) => m
                .range((ns.to_string(), String::new())..)
                .take_while(|((n, _), _)| n == ns)
                .map(|(_, v)| v)
                .collect(),
            _ => m.values().collect(),
        }
    }

    /// Events after `rv` (all still in the window), or 410 Gone.
    pub fn events_since(&self, rv: u64) -> Result<Vec<Arc<Event>>> {
        if rv < self.window_start {
            return Err(ApiError::new(
                410,
                "Expired",
                format!("too old resource version: {rv} ({})", self.window_start + 1),
            ));
        }
        Ok(self.window.iter().filter(|e| e.rv > rv).cloned().collect())
    }

    fn trim_window(&mut self) {
        while self.window.len() > self.window_cap {
            if let Some(e) = self.window.pop_front() {
                self.window_start = e.rv;
            }
        }
    }

    fn emit(&mut self, g: &Gr, ns: &str, kind: EventType, object: Value) {
        let e = Arc::new(Event {
            rv: self.rv,
            gr: g.clone(),
            namespace: ns.to_string(),
            kind,
            object,
        });
        self.window.push_back(e.clone());
        self.trim_window();
        let _ = self.tx.send(e);
        self.dirty = true;
    }

    fn check_namespace(&self, t: &ResourceType, ns: &str) -> Result<()> {
        if !t.namespaced {
            return Ok(());
        }
        if ns.is_empty() {
            return Err(ApiError::bad_request(format!(
                "{} is namespaced: name a namespace",
                t.plural
            )));
        }
        if self.try_get(&gr("", "namespaces"), "", ns).is_none() {
            return Err(ApiError::new(
                404,
                "NotFound",
                format!("namespaces \"{ns}\" not found"),
            ));
        }
        Ok(())
    }

    /// POST: create an object. Status is dropped for types with a status subresource, as the
    /// API server does.
    pub fn create(&mut self, g: &Gr, ns: &str, mut obj: Value, ctx: &Ctx) -> Result<Value> {
        let t = self.type_of(g)?.clone();
        if t.status
            && let Some(m) = obj.as_object_mut()
        {
            m.remove("status");
        }
        self.insert_new(&t, ns, obj, ctx)
    }

    /// Create an object keeping its status (for seeding the simulated cluster).
    pub fn create_with_status(&mut self, g: &Gr, ns: &str, obj: Value, ctx: &Ctx) -> Result<Value> {
        let t = self.type_of(g)?.clone();
        self.insert_new(&t, ns, obj, ctx)
    }

    fn insert_new(
        &mut self,
        t: &ResourceType,
        ns: &str,
        mut obj: Value,
        ctx: &Ctx,
    ) -> Result<Value> {
        let ns = if t.namespaced { ns } else { "" };
        self.check_namespace(t, ns)?;
        let Some(m) = obj.as_object_mut() else {
            return Err(ApiError::bad_request("the body is not a JSON object"));
        };
        let meta = m
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if !meta.is_object() {
            return Err(ApiError::bad_request("metadata is not an object"));
        }
        let mut name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if name.is_empty() {
            let prefix = meta
                .get("generateName")
                .and_then(Value::as_str)
                .unwrap_or("");
            if prefix.is_empty() {
                return Err(ApiError::invalid(format!(
                    "{} is invalid: metadata.name: Required value: name or generateName is required",
                    t.kind
                )));
            }
            name = format!("{prefix}{:05x}", self.next_uid);
        }
        validate_name(&name, t)?;
        if let Some(meta_ns) = meta.get("namespace").and_then(Value::as_str)
            && t.namespaced
            && meta_ns != ns
        {
            return Err(ApiError::bad_request(format!(
                "the namespace of the object ({meta_ns}) does not match the namespace on the request ({ns})"
            )));
        }
        let key = Store::key(t, ns, &name);
        if self
            .objects
            .get(&t.gr())
            .is_some_and(|o| o.contains_key(&key))
        {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", plural_group(t)),
            ));
        }
        self.rv += 1;
        let uid = self.next_uid;
        self.next_uid += 1;
        let meta = meta
            .as_object_mut()
            .ok_or_else(|| ApiError::bad_request("metadata"))?;
        meta.insert("name".into(), json!(name));
        if t.namespaced {
            meta.insert("namespace".into(), json!(ns));
        } else {
            meta.remove("namespace");
        }
        meta.insert(
            "uid".into(),
            json!(format!("00000000-0000-4000-8000-{uid:012x}")),
        );
        meta.insert("resourceVersion".into(), json!(self.rv.to_string()));
        meta.insert("creationTimestamp".into(), json!(timestamp(ctx.now)));
        if t.has_generation() {
            meta.insert("generation".into(), json!(1));
        }
        meta.remove("generateName");
        m.insert("apiVersion".into(), json!(t.api_version(&t.versions[0])));
        m.insert("kind".into(), json!(t.kind));
        self.check_schema(t, &name, &mut obj, None, ctx)?;
        if !ctx.manager.is_empty() {
            let fields = owned_by_writer(&Value::Null, &obj, None);
            set_managed(&mut obj, &ctx.manager, "Update", None, fields, ctx);
        }
        self.after_write(t, &mut obj, ctx);
        self.objects
            .entry(t.gr())
            .or_default()
            .insert(key, obj.clone());
        self.emit(&t.gr(), ns, EventType::Added, obj.clone());
        Ok(obj)
    }

    /// PUT: replace an object (or its status, with `sub = Some("status")`). A non-empty
    /// `metadata.resourceVersion` must match (409 Conflict otherwise).
    pub fn replace(
        &mut self,
        g: &Gr,
        ns: &str,
        name: &str,
        new: Value,
        sub: Option<&str>,
        ctx: &Ctx,
    ) -> Result<Value> {
        let old = self.get(g, ns, name)?;
        let t = self.type_of(g)?.clone();
        check_precondition(&t, name, &new, &old)?;
        if let Some(n) = new.pointer("/metadata/name").and_then(Value::as_str)
            && n != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        self.write(&t, ns, name, old, new, sub, ctx, None)
    }

    /// PATCH in any of the four formats.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        g: &Gr,
        ns: &str,
        name: &str,
        kind: PatchKind,
        body: &Value,
        sub: Option<&str>,
        ctx: &Ctx,
    ) -> Result<Value> {
        let t = self.type_of(g)?.clone();
        let old = match kind {
            PatchKind::Apply { force } => return self.apply(&t, ns, name, body, sub, ctx, force),
            _ => self.get(g, ns, name)?,
        };
        let new = match kind {
            PatchKind::Merge => {
                let mut n = old.clone();
                merge_patch(&mut n, body);
                n
            }
            PatchKind::Strategic => {
                if !t.group.is_empty() && !builtin_group(&t.group) {
                    return Err(ApiError::new(
                        415,
                        "UnsupportedMediaType",
                        "strategic merge patch is not supported for custom resources: use a merge patch (--type=merge) or a JSON patch",
                    ));
                }
                let mut n = old.clone();
                strategic_merge_patch(&mut n, body);
                n
            }
            PatchKind::Json => {
                json_patch(&old, body).map_err(|e| ApiError::invalid(e.to_string()))?
            }
            PatchKind::Apply { .. } => return Err(ApiError::bad_request("apply")),
        };
        check_precondition(&t, name, body, &old)?;
        self.write(&t, ns, name, old, new, sub, ctx, None)
    }

    /// Change an object through a closure (the simulated controllers' way of writing); nothing
    /// is written, and no event sent, when the closure changes nothing.
    pub fn modify(
        &mut self,
        g: &Gr,
        ns: &str,
        name: &str,
        ctx: &Ctx,
        f: impl FnOnce(&mut Value),
    ) -> Result<Value> {
        let old = self.get(g, ns, name)?;
        let mut new = old.clone();
        f(&mut new);
        if new == old {
            return Ok(old);
        }
        let t = self.type_of(g)?.clone();
        self.write(&t, ns, name, old, new, None, ctx, Some(()))
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        t: &ResourceType,
        ns: &str,
        name: &str,
        old: Value,
        mut new: Value,
        sub: Option<&str>,
        ctx: &Ctx,
        // Some: an internal write that may change spec and status at once.
        internal: Option<()>,
    ) -> Result<Value> {
        if !new.is_object() {
            return Err(ApiError::bad_request("the body is not a JSON object"));
        }
        match sub {
            Some("status") => {
                let status = new.get("status").cloned();
                new = old.clone();
                if let Some(m) = new.as_object_mut() {
                    match status {
                        Some(s) => m.insert("status".into(), s),
                        None => m.remove("status"),
                    };
                }
            }
            Some(other) => {
                return Err(ApiError::new(
                    404,
                    "NotFound",
                    format!("the simulator does not serve the {other} subresource"),
                ));
            }
            None if t.status && internal.is_none() => {
                if let Some(m) = new.as_object_mut() {
                    match old.get("status") {
                        Some(s) => m.insert("status".into(), s.clone()),
                        None => m.remove("status"),
                    };
                }
            }
            None => {}
        }
        // Fields the server owns.
        for k in [
            "uid",
            "creationTimestamp",
            "name",
            "namespace",
            "generation",
        ] {
            if let Some(v) = old.pointer(&format!("/metadata/{k}")).cloned()
                && let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut)
            {
                m.insert(k.into(), v);
            }
        }
        if let Some(m) = new.as_object_mut() {
            m.insert("apiVersion".into(), old["apiVersion"].clone());
            m.insert("kind".into(), old["kind"].clone());
            if !m.contains_key("metadata") {
                m.insert("metadata".into(), old["metadata"].clone());
            }
        }
        if !ctx.manager.is_empty()
            && new.get("metadata").and_then(|m| m.get("managedFields"))
                == old.pointer("/metadata/managedFields")
        {
            let fields = owned_by_writer(&old, &new, sub);
            if !fields.is_empty() {
                take_ownership(&mut new, &fields, &ctx.manager);
                set_managed(&mut new, &ctx.manager, "Update", sub, fields, ctx);
            }
        }
        self.commit(t, ns, name, &old, new, ctx)
    }

    fn commit(
        &mut self,
        t: &ResourceType,
        ns: &str,
        name: &str,
        old: &Value,
        mut new: Value,
        ctx: &Ctx,
    ) -> Result<Value> {
        let ns = if t.namespaced { ns } else { "" };
        if strip_meta_status(old) == strip_meta_status(&new)
            && old.get("metadata") == new.get("metadata")
            && old.get("status") == new.get("status")
        {
            return Ok(old.clone());
        }
        self.check_schema(t, name, &mut new, Some(old), ctx)?;
        if t.has_generation() && spec_of(old) != spec_of(&new) {
            let g = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                m.insert("generation".into(), json!(g + 1));
            }
        }
        self.rv += 1;
        if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
            m.insert("resourceVersion".into(), json!(self.rv.to_string()));
        }
        self.after_write(t, &mut new, ctx);
        self.objects
            .entry(t.gr())
            .or_default()
            .insert(Store::key(t, ns, name), new.clone());
        self.emit(&t.gr(), ns, EventType::Modified, new.clone());
        Ok(new)
    }

    /// Server-side apply: see docs/simulator.md for how ownership and conflicts are judged.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        t: &ResourceType,
        ns: &str,
        name: &str,
        applied: &Value,
        sub: Option<&str>,
        ctx: &Ctx,
        force: bool,
    ) -> Result<Value> {
        if ctx.manager.is_empty() {
            return Err(ApiError::bad_request(
                "PATCH with application/apply-patch+yaml requires a non-empty fieldManager",
            ));
        }
        if !applied.is_object() {
            return Err(ApiError::bad_request(
                "an applied configuration is an object",
            ));
        }
        if let Some(n) = applied.pointer("/metadata/name").and_then(Value::as_str)
            && n != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        let mut fields = applied.clone();
        if let Some(m) = fields.as_object_mut() {
            m.remove("apiVersion");
            m.remove("kind");
            match sub {
                Some("status") => m.retain(|k, _| k == "status"),
                _ if t.status => {
                    m.remove("status");
                }
                _ => {}
            }
            if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.retain(|k, _| {
                    matches!(
                        k.as_str(),
                        "labels" | "annotations" | "finalizers" | "ownerReferences"
                    )
                });
                if meta.is_empty() {
                    m.remove("metadata");
                }
            }
        }
        let applied_paths = leaf_paths(&fields);
        let existing = self.try_get(&t.gr(), ns, name).cloned();
        let mut live = existing.clone().unwrap_or_else(|| {
            json!({"apiVersion": t.api_version(&t.versions[0]), "kind": t.kind,
                   "metadata": {"name": name}})
        });
        let mut managers = managed_entries(&live);
        let mut conflicts: Vec<(String, Vec<String>)> = Vec::new();
        for m in managers.iter() {
            if m.manager == ctx.manager && m.operation == "Apply" {
                continue;
            }
            for p in m.paths.intersection(&applied_paths) {
                if get_path(&live, p) != get_path(&fields, p) {
                    conflicts.push((m.manager.clone(), p.clone()));
                }
            }
        }
        if !conflicts.is_empty() && !force {
            let list: Vec<String> = conflicts
                .iter()
                .map(|(m, p)| format!("conflict with \"{m}\": .{}", p.join(".")))
                .collect();
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Apply failed with {} conflict{}: {}",
                    conflicts.len(),
                    if conflicts.len() == 1 { "" } else { "s" },
                    list.join("\n")
                ),
            ));
        }
        for (mgr, p) in &conflicts {
            for m in managers.iter_mut().filter(|m| &m.manager == mgr) {
                m.paths.remove(p);
            }
        }
        let previous: BTreeSet<Vec<String>> = managers
            .iter()
            .filter(|m| m.manager == ctx.manager && m.operation == "Apply")
            .flat_map(|m| m.paths.iter().cloned())
            .collect();
        for p in previous.difference(&applied_paths) {
            let owned_elsewhere = managers.iter().any(|m| {
                !(m.manager == ctx.manager && m.operation == "Apply") && m.paths.contains(p)
            });
            if !owned_elsewhere {
                remove_path(&mut live, p);
            }
        }
        for p in &applied_paths {
            if let Some(v) = get_path(&fields, p) {
                set_path(&mut live, p, v.clone());
            }
        }
        managers.retain(|m| !(m.manager == ctx.manager && m.operation == "Apply"));
        managers.push(Managed {
            manager: ctx.manager.clone(),
            operation: "Apply".into(),
            subresource: sub.map(str::to_string),
            paths: applied_paths,
            time: timestamp(ctx.now),
            api_version: applied
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        });
        write_managed(&mut live, &managers);
        match existing {
            None => {
                let create = Ctx {
                    manager: String::new(),
                    ..ctx.clone()
                };
                let obj = self.insert_new(t, ns, live, &create)?;
                Ok(obj)
            }
            Some(old) => self.commit(t, ns, name, &old, live, ctx),
        }
    }

    /// DELETE an object. Finalizers are not simulated: the object goes at once.
    pub fn delete(&mut self, g: &Gr, ns: &str, name: &str) -> Result<Value> {
        let t = self.type_of(g)?.clone();
        let key = Store::key(&t, ns, name);
        let Some(obj) = self.objects.get_mut(g).and_then(|m| m.remove(&key)) else {
            return Err(ApiError::not_found(&t, name));
        };
        self.rv += 1;
        let mut obj = obj;
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.insert("resourceVersion".into(), json!(self.rv.to_string()));
        }
        if t.group == "apiextensions.k8s.io"
            && let Some(g2) = crd_gr(&obj)
        {
            self.types.remove(&g2);
            self.schemas.remove(&g2);
            self.objects.remove(&g2);
        }
        self.emit(g, &key.0, EventType::Deleted, obj.clone());
        Ok(obj)
    }

    /// An API request's object against its CRD's schema: unknown fields pruned (or refused
    /// when strict), field errors answered 422 as the API server words them.
    fn check_schema(
        &self,
        t: &ResourceType,
        name: &str,
        obj: &mut Value,
        old: Option<&Value>,
        ctx: &Ctx,
    ) -> Result<()> {
        let (Some(req), Some(schema)) = (ctx.request, self.schemas.get(&t.gr())) else {
            return Ok(());
        };
        let mut p = super::schema::check(schema, obj, old, false);
        // What the stored object already had is not this request's doing: errors there are
        // ratcheted (validation ratcheting, GA in Kubernetes 1.30), and unknown fields there
        // were written by a controller, not decoded from this body.
        if let Some(old) = old {
            let before = super::schema::check(schema, &mut old.clone(), None, false);
            p.invalid.retain(|e| !before.invalid.contains(e));
            p.unknown.retain(|f| !before.unknown.contains(f));
        }
        if req.strict && !p.unknown.is_empty() {
            let errs: Vec<String> = p
                .unknown
                .iter()
                .map(|f| format!("unknown field \"{f}\""))
                .collect();
            let strict = format!("strict decoding error: {}", errs.join(", "));
            return Err(if req.patch {
                ApiError::invalid(format!(
                    " \"\" is invalid: patch: Invalid value: \"{{...}}\": {strict}"
                ))
            } else {
                ApiError::bad_request(format!(
                    "{} in version {:?} cannot be handled as a {}: {strict}",
                    t.kind, t.versions[0], t.kind
                ))
            });
        }
        for f in &p.unknown {
            super::schema::remove(obj, f);
        }
        match p.invalid.as_slice() {
            [] => Ok(()),
            [one] => Err(ApiError::invalid(format!(
                "{}.{} {name:?} is invalid: {one}",
                t.kind, t.group
            ))),
            many => Err(ApiError::invalid(format!(
                "{}.{} {name:?} is invalid: [{}]",
                t.kind,
                t.group,
                many.join(", ")
            ))),
        }
    }

    /// Keep derived state in step with a written object: CRDs register their kinds.
    fn after_write(&mut self, t: &ResourceType, obj: &mut Value, ctx: &Ctx) {
        if t.group != "apiextensions.k8s.io" || t.plural != "customresourcedefinitions" {
            return;
        }
        match type_from_crd(obj) {
            Ok(rt) => {
                let names = obj.pointer("/spec/names").cloned().unwrap_or(json!({}));
                let now = timestamp(ctx.now);
                obj["status"] = json!({
                    "acceptedNames": names,
                    "storedVersions": [rt.versions[0]],
                    "conditions": [
                        {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                         "message": "no conflicts found", "lastTransitionTime": now},
                        {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                         "message": "the initial names have been accepted", "lastTransitionTime": now},
                    ],
                });
                match crd_schema(obj, &rt.versions[0]) {
                    Some(schema) => self.schemas.insert(rt.gr(), Arc::new(schema)),
                    None => self.schemas.remove(&rt.gr()),
                };
                self.types.insert(rt.gr(), rt);
            }
            Err(e) => {
                tracing::warn!(error = %e, "a CRD the simulator cannot serve");
            }
        }
    }

    /// Every object, for saving to a state directory.
    pub fn snapshot(&self) -> Value {
        let crd = gr("apiextensions.k8s.io", "customresourcedefinitions");
        let mut items: Vec<Value> = Vec::new();
        // CRDs first so that their kinds exist when the rest is loaded.
        for (g, m) in self.objects.iter() {
            if *g == crd {
                items.extend(
                    m.values()
                        .map(|o| json!({"group": g.0, "resource": g.1, "object": o})),
                );
            }
        }
        for (g, m) in self.objects.iter() {
            if *g != crd {
                items.extend(
                    m.values()
                        .map(|o| json!({"group": g.0, "resource": g.1, "object": o})),
                );
            }
        }
        json!({"resourceVersion": self.rv, "nextUid": self.next_uid, "items": items})
    }

    /// Load a snapshot made by [`Store::snapshot`] into an empty store.
    pub fn restore(&mut self, snap: &Value) -> std::result::Result<(), String> {
        let items = snap
            .get("items")
            .and_then(Value::as_array)
            .ok_or("the state file has no items")?;
        for it in items {
            let g = gr(
                it.get("group").and_then(Value::as_str).unwrap_or(""),
                it.get("resource").and_then(Value::as_str).unwrap_or(""),
            );
            let mut obj = it.get("object").cloned().ok_or("an item has no object")?;
            let t =
                self.types.get(&g).cloned().ok_or_else(|| {
                    format!("the state names an unknown resource {}.{}", g.1, g.0)
                })?;
            let ns = obj
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let name = obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            self.after_write(&t, &mut obj, &Ctx::new(Utc::now(), ""));
            self.objects
                .entry(g)
                .or_default()
                .insert(Store::key(&t, &ns, &name), obj);
        }
        self.rv = snap
            .get("resourceVersion")
            .and_then(Value::as_u64)
            .unwrap_or(self.rv);
        self.next_uid = snap
            .get("nextUid")
            .and_then(Value::as_u64)
            .unwrap_or(self.next_uid);
        self.window.clear();
        self.window_start = self.rv;
        Ok(())
    }
}

/// A non-empty `metadata.resourceVersion` in a write must be the object's current one.
fn check_precondition(t: &ResourceType, name: &str, write: &Value, old: &Value) -> Result<()> {
    let rv = |v: &Value| {
        v.pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let want = rv(write);
    if !want.is_empty() && want != rv(old) {
        return Err(conflict(t, name));
    }
    Ok(())
}

fn conflict(t: &ResourceType, name: &str) -> ApiError {
    ApiError::new(
        409,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            plural_group(t)
        ),
    )
}

fn plural_group(t: &ResourceType) -> String {
    if t.group.is_empty() {
        t.plural.clone()
    } else {
        format!("{}.{}", t.plural, t.group)
    }
}

fn builtin_group(g: &str) -> bool {
    matches!(
        g,
        "apps"
            | "batch"
            | "policy"
            | "coordination.k8s.io"
            | "events.k8s.io"
            | "apiextensions.k8s.io"
            | "rbac.authorization.k8s.io"
    )
}

fn validate_name(name: &str, t: &ResourceType) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "{} \"{name}\" is invalid: metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'",
            t.kind
        )))
    }
}

/// Everything but metadata and status: what `generation` tracks.
fn spec_of(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    v
}

fn strip_meta_status(v: &Value) -> Value {
    spec_of(v)
}

fn set_path(v: &mut Value, path: &[String], value: Value) {
    let mut cur = v;
    for k in path {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Value::Object(m) = cur else { return };
        cur = m.entry(k.clone()).or_insert(Value::Null);
    }
    *cur = value;
}

struct Managed {
    manager: String,
    operation: String,
    subresource: Option<String>,
    paths: BTreeSet<Vec<String>>,
    time: String,
    api_version: String,
}

/// A string member of a JSON object, or `default`.
fn text(v: &Value, key: &str, default: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or(default)
        .to_string()
}

fn managed_entries(obj: &Value) -> Vec<Managed> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| Managed {
            manager: text(e, "manager", ""),
            operation: text(e, "operation", ""),
            subresource: e
                .get("subresource")
                .and_then(Value::as_str)
                .map(str::to_string),
            paths: e
                .get("fieldsV1")
                .map(paths_from_fields_v1)
                .unwrap_or_default(),
            time: text(e, "time", ""),
            api_version: text(e, "apiVersion", ""),
        })
        .collect()
}

fn write_managed(obj: &mut Value, managers: &[Managed]) {
    let entries: Vec<Value> = managers
        .iter()
        .filter(|m| !m.paths.is_empty())
        .map(|m| {
            let mut e = json!({
                "manager": m.manager, "operation": m.operation, "apiVersion": m.api_version,
                "time": m.time, "fieldsType": "FieldsV1", "fieldsV1": fields_v1(&m.paths),
            });
            if let Some(s) = &m.subresource {
                e["subresource"] = json!(s);
            }
            e
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if entries.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(entries));
        }
    }
}

/// The leaf paths a non-apply write set or changed (metadata other than labels and annotations
/// is the server's).
fn owned_by_writer(old: &Value, new: &Value, sub: Option<&str>) -> BTreeSet<Vec<String>> {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("apiVersion");
            m.remove("kind");
            if sub == Some("status") {
                m.retain(|k, _| k == "status");
            }
            if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.retain(|k, _| {
                    matches!(
                        k.as_str(),
                        "labels" | "annotations" | "finalizers" | "ownerReferences"
                    )
                });
            }
        }
        v
    };
    let (o, n) = (strip(old), strip(new));
    leaf_paths(&n)
        .into_iter()
        .filter(|p| get_path(&o, p) != get_path(&n, p))
        .collect()
}

fn take_ownership(obj: &mut Value, fields: &BTreeSet<Vec<String>>, manager: &str) {
    let mut managers = managed_entries(obj);
    for m in managers.iter_mut().filter(|m| m.manager != manager) {
        m.paths.retain(|p| !fields.contains(p));
    }
    write_managed(obj, &managers);
}

fn set_managed(
    obj: &mut Value,
    manager: &str,
    operation: &str,
    sub: Option<&str>,
    fields: BTreeSet<Vec<String>>,
    ctx: &Ctx,
) {
    let mut managers = managed_entries(obj);
    let api_version = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    match managers.iter_mut().find(|m| {
        m.manager == manager && m.operation == operation && m.subresource.as_deref() == sub
    }) {
        Some(m) => {
            m.paths.extend(fields);
            m.time = timestamp(ctx.now);
        }
        None => managers.push(Managed {
            manager: manager.to_string(),
            operation: operation.to_string(),
            subresource: sub.map(str::to_string),
            paths: fields,
            time: timestamp(ctx.now),
            api_version,
        }),
    }
    write_managed(obj, &managers);
}

/// The `openAPIV3Schema` of a CRD's `version`.
fn crd_schema(crd: &Value, version: &str) -> Option<Value> {
    crd.pointer("/spec/versions")?
        .as_array()?
        .iter()
        .find(|v| v.get("name").and_then(Value::as_str) == Some(version))?
        .pointer("/schema/openAPIV3Schema")
        .cloned()
}

fn crd_gr(crd: &Value) -> Option<Gr> {
    Some(gr(
        crd.pointer("/spec/group")?.as_str()?,
        crd.pointer("/spec/names/plural")?.as_str()?,
    ))
}

/// The resource type a CustomResourceDefinition declares.
pub fn type_from_crd(crd: &Value) -> std::result::Result<ResourceType, String> {
    let s = |p: &str| {
        crd.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let strings = |p: &str| -> Vec<String> {
        crd.pointer(p)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    };
    let group = s("/spec/group");
    let plural = s("/spec/names/plural");
    let kind = s("/spec/names/kind");
    if group.is_empty() || plural.is_empty() || kind.is_empty() {
        return Err(format!(
            "CRD {} needs spec.group, spec.names.plural and spec.names.kind",
            s("/metadata/name")
        ));
    }
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let served: Vec<&Value> = versions
        .iter()
        .filter(|v| v.get("served").and_then(Value::as_bool).unwrap_or(true))
        .collect();
    let storage = served
        .iter()
        .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .or(served.first())
        .ok_or_else(|| format!("CRD {plural}.{group} serves no version"))?;
    let name_of = |v: &Value| {
        v.get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let mut names = vec![name_of(storage)];
    let first = names[0].clone();
    names.extend(served.iter().map(|v| name_of(v)).filter(|n| *n != first));
    let columns = storage
        .get("additionalPrinterColumns")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| Column {
            name: text(c, "name", ""),
            kind: text(c, "type", "string"),
            json_path: text(c, "jsonPath", ""),
            priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
            description: text(c, "description", ""),
        })
        .collect();
    Ok(ResourceType {
        singular: {
            let x = s("/spec/names/singular");
            if x.is_empty() { kind.to_lowercase() } else { x }
        },
        group,
        versions: names,
        plural,
        kind,
        namespaced: s("/spec/scope") != "Cluster",
        short_names: strings("/spec/names/shortNames"),
        categories: strings("/spec/names/categories"),
        status: storage.pointer("/subresources/status").is_some(),
        columns,
    })
}

fn builtin(
    group: &str,
    version: &str,
    plural: &str,
    kind: &str,
    namespaced: bool,
    status: bool,
    short: &[&str],
) -> ResourceType {
    ResourceType {
        group: group.into(),
        versions: vec![version.into()],
        plural: plural.into(),
        singular: kind.to_lowercase(),
        kind: kind.into(),
        namespaced,
        short_names: short.iter().map(|s| s.to_string()).collect(),
        categories: Vec::new(),
        status,
        columns: Vec::new(),
    }
}

/// The built-in kinds the simulated cluster serves.
pub fn builtin_types() -> Vec<ResourceType> {
    vec![
        builtin("", "v1", "namespaces", "Namespace", false, true, &["ns"]),
        builtin("", "v1", "nodes", "Node", false, true, &["no"]),
        builtin("", "v1", "pods", "Pod", true, true, &["po"]),
        builtin("", "v1", "events", "Event", true, false, &["ev"]),
        builtin("", "v1", "configmaps", "ConfigMap", true, false, &["cm"]),
        builtin("", "v1", "secrets", "Secret", true, false, &[]),
        builtin(
            "",
            "v1",
            "serviceaccounts",
            "ServiceAccount",
            true,
            false,
            &["sa"],
        ),
        builtin("", "v1", "services", "Service", true, true, &["svc"]),
        builtin(
            "apps",
            "v1",
            "deployments",
            "Deployment",
            true,
            true,
            &["deploy"],
        ),
        builtin("apps", "v1", "daemonsets", "DaemonSet", true, true, &["ds"]),
        builtin(
            "apps",
            "v1",
            "statefulsets",
            "StatefulSet",
            true,
            true,
            &["sts"],
        ),
        builtin("batch", "v1", "jobs", "Job", true, true, &[]),
        builtin(
            "policy",
            "v1",
            "poddisruptionbudgets",
            "PodDisruptionBudget",
            true,
            true,
            &["pdb"],
        ),
        builtin(
            "coordination.k8s.io",
            "v1",
            "leases",
            "Lease",
            true,
            false,
            &[],
        ),
        builtin(
            "events.k8s.io",
            "v1",
            "events",
            "Event",
            true,
            false,
            &["ev"],
        ),
        builtin(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
            true,
            &["crd", "crds"],
        ),
        // Stored, not enforced: deploy/'s RBAC can be applied, and tests/deploy.rs compares it
        // with what upkeep asked for (KubeSim::audit).
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterroles",
            "ClusterRole",
            false,
            false,
            &[],
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterrolebindings",
            "ClusterRoleBinding",
            false,
            false,
            &[],
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "roles",
            "Role",
            true,
            false,
            &[],
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "rolebindings",
            "RoleBinding",
            true,
            false,
            &[],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(m: &str) -> Ctx {
        Ctx::new(Utc::now(), m)
    }

    fn store() -> Store {
        let mut s = Store::new();
        let ns = gr("", "namespaces");
        let _ = s.create(&ns, "", json!({"metadata": {"name": "default"}}), &ctx("t"));
        s
    }

    #[test]
    fn optimistic_concurrency_and_generation() {
        let mut s = store();
        let g = gr("apps", "deployments");
        let d = s
            .create(
                &g,
                "default",
                json!({"metadata": {"name": "d"}, "spec": {"replicas": 1}}),
                &ctx("t"),
            )
            .unwrap_or_default();
        assert_eq!(d.pointer("/metadata/generation"), Some(&json!(1)));
        let mut stale = d.clone();
        stale["spec"]["replicas"] = json!(2);
        let d2 = s
            .replace(&g, "default", "d", stale.clone(), None, &ctx("t"))
            .unwrap_or_default();
        assert_eq!(d2.pointer("/metadata/generation"), Some(&json!(2)));
        let e = s.replace(&g, "default", "d", stale, None, &ctx("t"));
        assert_eq!(e.map_err(|e| e.code), Err(409));
        // Status writes do not bump generation.
        let d3 = s
            .patch(
                &g,
                "default",
                "d",
                PatchKind::Merge,
                &json!({"status": {"ready": 1}}),
                Some("status"),
                &ctx("t"),
            )
            .unwrap_or_default();
        assert_eq!(d3.pointer("/metadata/generation"), Some(&json!(2)));
        assert_eq!(d3.pointer("/status/ready"), Some(&json!(1)));
        // Main-resource writes cannot change status.
        let d4 = s
            .patch(
                &g,
                "default",
                "d",
                PatchKind::Merge,
                &json!({"status": {"ready": 5}}),
                None,
                &ctx("t"),
            )
            .unwrap_or_default();
        assert_eq!(d4.pointer("/status/ready"), Some(&json!(1)));
    }

    #[test]
    fn server_side_apply_owns_fields_and_reports_conflicts() {
        let mut s = store();
        let g = gr("", "configmaps");
        let cfg = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
            "data": {"a": "1", "b": "2"}});
        let apply = |s: &mut Store, body: &Value, m: &str, force: bool| {
            s.patch(
                &g,
                "default",
                "c",
                PatchKind::Apply { force },
                body,
                None,
                &ctx(m),
            )
        };
        assert!(apply(&mut s, &cfg, "upkeep", false).is_ok());
        // Another writer changes a field upkeep owns.
        assert!(
            s.patch(
                &g,
                "default",
                "c",
                PatchKind::Merge,
                &json!({"data": {"a": "9"}}),
                None,
                &ctx("kubectl-patch")
            )
            .is_ok()
        );
        let e = apply(&mut s, &cfg, "upkeep", false).map_err(|e| (e.code, e.message));
        assert!(
            matches!(&e, Err((409, m)) if m.contains("conflict with \"kubectl-patch\": .data.a")),
            "{e:?}"
        );
        let c = apply(&mut s, &cfg, "upkeep", true).unwrap_or_default();
        assert_eq!(c.pointer("/data/a"), Some(&json!("1")));
        // Dropping a field from the applied configuration removes it.
        let less = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}});
        let c = apply(&mut s, &less, "upkeep", false).unwrap_or_default();
        assert_eq!(c.pointer("/data/b"), None);
        assert!(c.pointer("/metadata/managedFields").is_some());
    }

    #[test]
    fn watch_window_expires() {
        let mut s = store();
        s.set_watch_window(2);
        let g = gr("", "configmaps");
        let start = s.resource_version();
        for i in 0..5 {
            let _ = s.create(
                &g,
                "default",
                json!({"metadata": {"name": format!("c{i}")}}),
                &ctx("t"),
            );
        }
        assert_eq!(s.events_since(start).map_err(|e| e.code).err(), Some(410));
        assert_eq!(
            s.events_since(s.resource_version() - 1).map(|e| e.len()),
            Ok(1)
        );
    }

    #[test]
    fn namespaced_objects_need_their_namespace() {
        let mut s = store();
        let e = s.create(
            &gr("", "configmaps"),
            "nope",
            json!({"metadata": {"name": "c"}}),
            &ctx("t"),
        );
        assert_eq!(e.map_err(|e| e.code), Err(404));
        let e = s.create(
            &gr("", "configmaps"),
            "default",
            json!({"metadata": {"name": "Bad_Name"}}),
            &ctx("t"),
        );
        assert_eq!(e.map_err(|e| e.code), Err(422));
    }
}
