//! Pure JSON operations the Kubernetes emulator is built on: the three patch formats, label and
//! field selectors, the JSONPath subset of printer columns, and field sets for server-side apply.
//! No I/O, no store: plain functions over `serde_json::Value`, unit-tested here.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// RFC 7386 JSON merge patch: objects merge, `null` deletes, everything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// The merge key of a list field under Kubernetes' strategic merge patch, for the fields of the
/// core kinds upkeep patches. Lists not named here are replaced whole, as with a merge patch.
fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "conditions" => "type",
        "containers"
        | "initContainers"
        | "volumes"
        | "env"
        | "volumeMounts"
        | "imagePullSecrets"
        | "ephemeralContainers" => "name",
        "ports" => "containerPort",
        "addresses" => "type",
        _ => return None,
    })
}

/// Strategic merge patch, the subset upkeep and kubectl use on core kinds: a merge patch in
/// which lists with a known merge key (`conditions` by `type`, `containers`/`env`/`volumes` by
/// `name`, ...) merge element by element, an element `{"$patch": "delete", <key>: ..}` removes
/// one, and `$patch: replace` on a map replaces it. `$retainKeys`, `$setElementOrder` and
/// `$deleteFromPrimitiveList` directives are accepted and ignored.
pub fn strategic_merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut p = p.clone();
        p.remove("$patch");
        *target = Value::Object(p);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else { return };
    for (k, v) in p {
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        match (merge_key(k), v) {
            (Some(key), Value::Array(items)) => {
                let cur = t.entry(k.clone()).or_insert(Value::Array(Vec::new()));
                if !cur.is_array() {
                    *cur = Value::Array(Vec::new());
                }
                if let Value::Array(cur) = cur {
                    for item in items {
                        let id = item.get(key);
                        let pos = id.and_then(|id| cur.iter().position(|c| c.get(key) == Some(id)));
                        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                        match (pos, delete) {
                            (Some(i), true) => {
                                cur.remove(i);
                            }
                            (None, true) => {}
                            (Some(i), false) => strategic_merge_patch(&mut cur[i], item),
                            (None, false) => cur.push(item.clone()),
                        }
                    }
                }
            }
            _ => strategic_merge_patch(t.entry(k.clone()).or_insert(Value::Null), v),
        }
    }
}

/// An error applying a JSON patch, with the operation's index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("JSON patch operation {index} ({op} {path}): {why}")]
pub struct JsonPatchError {
    pub index: usize,
    pub op: String,
    pub path: String,
    pub why: String,
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn split_pointer(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| "a JSON pointer starts with '/'".to_string())?;
    Ok(rest.split('/').map(unescape).collect())
}

fn parent_mut<'a>(doc: &'a mut Value, tokens: &[String]) -> Result<&'a mut Value, String> {
    let mut cur = doc;
    for t in tokens {
        cur = match cur {
            Value::Object(m) => m.get_mut(t).ok_or_else(|| format!("no member {t:?}"))?,
            Value::Array(a) => {
                let i: usize = t.parse().map_err(|_| format!("{t:?} is not an index"))?;
                a.get_mut(i)
                    .ok_or_else(|| format!("index {i} is out of range"))?
            }
            _ => return Err(format!("{t:?} is inside a scalar")),
        };
    }
    Ok(cur)
}

fn pointer_get(doc: &Value, path: &str) -> Result<Value, String> {
    let tokens = split_pointer(path)?;
    let mut cur = doc;
    for t in &tokens {
        cur = match cur {
            Value::Object(m) => m.get(t).ok_or_else(|| format!("no member {t:?}"))?,
            Value::Array(a) => {
                let i: usize = t.parse().map_err(|_| format!("{t:?} is not an index"))?;
                a.get(i)
                    .ok_or_else(|| format!("index {i} is out of range"))?
            }
            _ => return Err(format!("{t:?} is inside a scalar")),
        };
    }
    Ok(cur.clone())
}

fn pointer_add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let tokens = split_pointer(path)?;
    let Some((last, parents)) = tokens.split_last() else {
        *doc = value;
        return Ok(());
    };
    match parent_mut(doc, parents)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(value);
                return Ok(());
            }
            let i: usize = last
                .parse()
                .map_err(|_| format!("{last:?} is not an index"))?;
            if i > a.len() {
                return Err(format!("index {i} is out of range"));
            }
            a.insert(i, value);
            Ok(())
        }
        _ => Err("the parent is a scalar".to_string()),
    }
}

fn pointer_remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let tokens = split_pointer(path)?;
    let Some((last, parents)) = tokens.split_last() else {
        return Err("cannot remove the whole document".to_string());
    };
    match parent_mut(doc, parents)? {
        Value::Object(m) => m.remove(last).ok_or_else(|| format!("no member {last:?}")),
        Value::Array(a) => {
            let i: usize = last
                .parse()
                .map_err(|_| format!("{last:?} is not an index"))?;
            if i >= a.len() {
                return Err(format!("index {i} is out of range"));
            }
            Ok(a.remove(i))
        }
        _ => Err("the parent is a scalar".to_string()),
    }
}

/// RFC 6902 JSON patch (add, remove, replace, move, copy, test), all or nothing.
pub fn json_patch(doc: &Value, ops: &Value) -> Result<Value, JsonPatchError> {
    let mut out = doc.clone();
    let Value::Array(ops) = ops else {
        return Err(JsonPatchError {
            index: 0,
            op: String::new(),
            path: String::new(),
            why: "a JSON patch is an array of operations".to_string(),
        });
    };
    for (index, op) in ops.iter().enumerate() {
        let name = op
            .get("op")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let fail = |why: String| JsonPatchError {
            index,
            op: name.clone(),
            path: path.clone(),
            why,
        };
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| fail("no value".into()))
        };
        let from = || {
            op.get("from")
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| fail("no from".into()))
        };
        match name.as_str() {
            "add" => pointer_add(&mut out, &path, value()?).map_err(fail)?,
            "remove" => {
                pointer_remove(&mut out, &path).map_err(fail)?;
            }
            "replace" => {
                pointer_get(&out, &path).map_err(fail)?;
                if path.is_empty() {
                    out = value()?;
                } else {
                    pointer_remove(&mut out, &path).map_err(fail)?;
                    pointer_add(&mut out, &path, value()?).map_err(fail)?;
                }
            }
            "move" => {
                let v = pointer_remove(&mut out, &from()?).map_err(fail)?;
                pointer_add(&mut out, &path, v).map_err(fail)?;
            }
            "copy" => {
                let v = pointer_get(&out, &from()?).map_err(fail)?;
                pointer_add(&mut out, &path, v).map_err(fail)?;
            }
            "test" => {
                if pointer_get(&out, &path).map_err(fail)? != value()? {
                    return Err(fail("the value differs".into()));
                }
            }
            other => return Err(fail(format!("unknown operation {other:?}"))),
        }
    }
    Ok(out)
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

impl Requirement {
    pub fn matches(&self, labels: &Map<String, Value>) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        match self {
            Requirement::Eq(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEq(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        }
    }
}

/// Split at commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

/// Parse a label selector string (`a=b,c!=d,e in (f,g),!h,i`).
pub fn parse_label_selector(s: &str) -> Result<Vec<Requirement>, String> {
    let mut out = Vec::new();
    for part in split_top(s) {
        let set = |rest: &str| -> Result<Vec<String>, String> {
            let inner = rest
                .trim()
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| format!("{part:?}: a set needs parentheses"))?;
            Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
        };
        let r = if let Some(k) = part.strip_prefix('!') {
            Requirement::NotExists(k.trim().to_string())
        } else if let Some((k, v)) = part.split_once("!=") {
            Requirement::NotEq(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = part.split_once("==") {
            Requirement::Eq(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = part.split_once('=') {
            Requirement::Eq(k.trim().into(), v.trim().into())
        } else if let Some((k, rest)) = part.split_once(" notin ") {
            Requirement::NotIn(k.trim().into(), set(rest)?)
        } else if let Some((k, rest)) = part.split_once(" in ") {
            Requirement::In(k.trim().into(), set(rest)?)
        } else if part.contains(' ') || part.contains('(') {
            return Err(format!("cannot parse label selector requirement {part:?}"));
        } else {
            Requirement::Exists(part.to_string())
        };
        out.push(r);
    }
    Ok(out)
}

/// A `metav1.LabelSelector` (matchLabels and matchExpressions) as requirements.
pub fn label_selector_from_object(sel: &Value) -> Vec<Requirement> {
    let mut out = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in m {
            out.push(Requirement::Eq(
                k.clone(),
                v.as_str().unwrap_or("").to_string(),
            ));
        }
    }
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e
            .get("key")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let values: Vec<String> = e
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        out.push(
            match e.get("operator").and_then(Value::as_str).unwrap_or("") {
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" => Requirement::Exists(key),
                _ => Requirement::NotExists(key),
            },
        );
    }
    out
}

pub fn labels_match(reqs: &[Requirement], obj: &Value) -> bool {
    let empty = Map::new();
    let labels = obj
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    reqs.iter().all(|r| r.matches(labels))
}

/// Parse a field selector (`metadata.name=x,spec.nodeName!=y`) into (path, equal?, value).
pub fn parse_field_selector(s: &str) -> Result<Vec<(String, bool, String)>, String> {
    split_top(s)
        .into_iter()
        .map(|part| {
            if let Some((k, v)) = part.split_once("!=") {
                Ok((k.trim().to_string(), false, v.trim().to_string()))
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Ok((k.trim().to_string(), true, v.trim().to_string()))
            } else {
                Err(format!("cannot parse field selector {part:?}"))
            }
        })
        .collect()
}

pub fn fields_match(sel: &[(String, bool, String)], obj: &Value) -> bool {
    sel.iter().all(|(path, eq, want)| {
        let pointer = format!("/{}", path.replace('.', "/"));
        let got = match obj.pointer(&pointer) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(v) => v.to_string(),
        };
        (got == *want) == *eq
    })
}

/// Evaluate the JSONPath subset of CRD printer columns: `.a.b`, `.a[0]`, `.a[*].b`,
/// `.a[?(@.type=="Ready")].status` (also `!=`, single quotes) and `\.` inside a name. Returns
/// every match, in order.
pub fn jsonpath(obj: &Value, path: &str) -> Vec<Value> {
    let mut cur = vec![obj.clone()];
    let mut rest = path.trim().trim_start_matches('{').trim_end_matches('}');
    rest = rest.strip_prefix('$').unwrap_or(rest);
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let mut name = String::new();
            let mut chars = r.char_indices().peekable();
            let mut end = r.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            name.push(n);
                        }
                    }
                    '.' | '[' => {
                        end = i;
                        break;
                    }
                    _ => name.push(c),
                }
            }
            rest = &r[end..];
            cur = cur.iter().filter_map(|v| v.get(&name).cloned()).collect();
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(close) = find_close(r) else {
                return Vec::new();
            };
            let inner = &r[..close];
            rest = &r[close + 1..];
            cur = index(cur, inner);
        } else {
            return Vec::new();
        }
    }
    cur
}

fn find_close(s: &str) -> Option<usize> {
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '[') => depth += 1,
            (None, ']') if depth == 0 => return Some(i),
            (None, ']') => depth -= 1,
            _ => {}
        }
    }
    None
}

fn index(cur: Vec<Value>, inner: &str) -> Vec<Value> {
    let items = cur.into_iter().flat_map(|v| match v {
        Value::Array(a) => a,
        _ => Vec::new(),
    });
    if inner == "*" {
        return items.collect();
    }
    if let Ok(i) = inner.parse::<usize>() {
        return items.skip(i).take(1).collect();
    }
    let Some(filter) = inner
        .strip_prefix("?(")
        .and_then(|f| f.strip_suffix(')'))
        .and_then(|f| f.strip_prefix("@."))
    else {
        return Vec::new();
    };
    let (field, eq, lit) = if let Some((f, l)) = filter.split_once("!=") {
        (f, false, l)
    } else if let Some((f, l)) = filter.split_once("==") {
        (f, true, l)
    } else {
        return items.filter(|v| v.get(filter.trim()).is_some()).collect();
    };
    let lit = lit.trim().trim_matches(|c| c == '\'' || c == '"');
    let field = field.trim();
    items
        .filter(|v| {
            let got = match v.get(field) {
                Some(Value::String(s)) => s.clone(),
                Some(x) => x.to_string(),
                None => return !eq,
            };
            (got == lit) == eq
        })
        .collect()
}

/// The leaf paths of an object, for server-side apply field ownership. Maps are walked; lists
/// and scalars are leaves (lists are owned whole: see docs/simulator.md).
pub fn leaf_paths(v: &Value) -> BTreeSet<Vec<String>> {
    let mut out = BTreeSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

fn walk(v: &Value, at: &mut Vec<String>, out: &mut BTreeSet<Vec<String>>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                at.push(k.clone());
                walk(child, at, out);
                at.pop();
            }
        }
        _ => {
            if !at.is_empty() {
                out.insert(at.clone());
            }
        }
    }
}

pub fn get_path<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, k| cur.get(k))
}

/// Remove the value at `path`, and then every parent map left empty by it.
pub fn remove_path(v: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = &mut *v;
    for k in parents {
        match cur.get_mut(k) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Value::Object(m) = cur {
        m.remove(last);
        if m.is_empty() && !parents.is_empty() {
            remove_path(v, parents);
        }
    }
}

/// Field paths as the `fieldsV1` trie Kubernetes shows in `managedFields`.
pub fn fields_v1(paths: &BTreeSet<Vec<String>>) -> Value {
    let mut root = Map::new();
    for p in paths {
        let mut cur = &mut root;
        for k in p {
            let entry = cur
                .entry(format!("f:{k}"))
                .or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(next) = entry else { break };
            cur = next;
        }
    }
    Value::Object(root)
}

/// The inverse of [`fields_v1`].
pub fn paths_from_fields_v1(v: &Value) -> BTreeSet<Vec<String>> {
    fn go(v: &Value, at: &mut Vec<String>, out: &mut BTreeSet<Vec<String>>) {
        let Some(m) = v.as_object() else { return };
        let mut leaf = true;
        for (k, child) in m {
            if let Some(name) = k.strip_prefix("f:") {
                leaf = false;
                at.push(name.to_string());
                go(child, at, out);
                at.pop();
            }
        }
        if leaf && !at.is_empty() {
            out.insert(at.clone());
        }
    }
    let mut out = BTreeSet::new();
    go(v, &mut Vec::new(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
        let mut t = json!({"a": [1, 2]});
        merge_patch(&mut t, &json!({"a": [3]}));
        assert_eq!(t, json!({"a": [3]}));
    }

    #[test]
    fn strategic_merge_merges_keyed_lists() {
        let mut t = json!({"status": {"conditions": [
            {"type": "Ready", "status": "False"}, {"type": "MemoryPressure", "status": "False"}
        ]}, "spec": {"taints": [{"key": "a"}]}});
        strategic_merge_patch(
            &mut t,
            &json!({"status": {"conditions": [{"type": "Ready", "status": "True"},
                {"type": "MemoryPressure", "$patch": "delete"}, {"type": "New", "status": "x"}]},
                "spec": {"taints": [{"key": "b"}]}}),
        );
        assert_eq!(
            t,
            json!({"status": {"conditions": [
                {"type": "Ready", "status": "True"}, {"type": "New", "status": "x"}
            ]}, "spec": {"taints": [{"key": "b"}]}})
        );
    }

    #[test]
    fn json_patch_is_all_or_nothing() {
        let doc = json!({"a": {"b": [1, 2]}});
        let out = json_patch(
            &doc,
            &json!([
                {"op": "add", "path": "/a/b/-", "value": 3},
                {"op": "replace", "path": "/a/b/0", "value": 0},
                {"op": "copy", "from": "/a/b", "path": "/c"},
                {"op": "move", "from": "/c", "path": "/d"},
                {"op": "test", "path": "/d/2", "value": 3},
                {"op": "remove", "path": "/a/b/1"}
            ]),
        );
        assert_eq!(out, Ok(json!({"a": {"b": [0, 3]}, "d": [0, 2, 3]})));
        let err = json_patch(&doc, &json!([{"op": "remove", "path": "/x"}]));
        assert_eq!(err.map_err(|e| e.index), Err(0));
        let err = json_patch(&doc, &json!([{"op": "test", "path": "/a/b/0", "value": 9}]));
        assert!(err.is_err());
    }

    #[test]
    fn selectors() {
        let obj = json!({"metadata": {"name": "n1", "labels": {"a": "1", "role": "server"}},
            "spec": {"nodeName": "n2"}});
        let ok = |s: &str| labels_match(&parse_label_selector(s).unwrap_or_default(), &obj);
        assert!(ok("a=1,role in (server, agent)"));
        assert!(ok("a==1,!b,role notin (agent)"));
        assert!(!ok("a!=1"));
        assert!(!ok("b"));
        assert!(parse_label_selector("a in b").is_err());
        let f = parse_field_selector("metadata.name=n1,spec.nodeName!=n3").unwrap_or_default();
        assert!(fields_match(&f, &obj));
        let f = parse_field_selector("spec.nodeName=n1").unwrap_or_default();
        assert!(!fields_match(&f, &obj));
        let sel = json!({"matchExpressions": [
            {"key": "role", "operator": "In", "values": ["server"]},
            {"key": "x", "operator": "DoesNotExist"}]});
        assert!(labels_match(&label_selector_from_object(&sel), &obj));
    }

    #[test]
    fn printer_column_paths() {
        let obj = json!({"metadata": {"labels": {"app.kubernetes.io/version": "v2"}},
            "status": {"conditions": [
                {"type": "Progressing", "status": "False", "message": ""},
                {"type": "Ready", "status": "True", "message": "ok"}],
            "applying": ["a", "b"]}});
        assert_eq!(
            jsonpath(&obj, r#".status.conditions[?(@.type=="Ready")].status"#),
            vec![json!("True")]
        );
        assert_eq!(
            jsonpath(&obj, ".status.conditions[?(@.message!='')].message"),
            vec![json!("ok")]
        );
        assert_eq!(jsonpath(&obj, ".status.applying[1]"), vec![json!("b")]);
        assert_eq!(jsonpath(&obj, ".status.conditions[*].type").len(), 2);
        assert_eq!(
            jsonpath(&obj, r".metadata.labels.app\.kubernetes\.io/version"),
            vec![json!("v2")]
        );
        assert!(jsonpath(&obj, ".spec.none").is_empty());
    }

    #[test]
    fn field_sets_round_trip() {
        let v = json!({"spec": {"version": "v1", "nodeSelector": {"matchLabels": {"a": "b"}},
            "args": ["x"]}, "metadata": {"labels": {"l": "1"}}});
        let paths = leaf_paths(&v);
        assert_eq!(paths.len(), 4);
        assert_eq!(paths_from_fields_v1(&fields_v1(&paths)), paths);
        let mut v = v;
        remove_path(
            &mut v,
            &[
                "spec".into(),
                "nodeSelector".into(),
                "matchLabels".into(),
                "a".into(),
            ],
        );
        assert_eq!(v.pointer("/spec/nodeSelector"), None);
        assert_eq!(v.pointer("/spec/version"), Some(&json!("v1")));
    }
}
