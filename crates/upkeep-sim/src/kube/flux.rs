//! Flux's source-controller and kustomize-controller, as far as upkeep meets them: a
//! GitRepository's artifact (the files of its branch's tip, from a bare repository on disk that
//! a test or `sim serve` names), and each Kustomization built from its path in that artifact,
//! substituted (`postBuild`), and applied with server-side apply and forced ownership as the
//! field manager `kustomize-controller`, on every interval, so that drift from git is corrected.
//!
//! Upstream: fluxcd/kustomize-controller `internal/controller/kustomization_controller.go`
//! (`reconcile`, `apply`: `ssa.ResourceManager.ApplyAllStaged` with `Force: true`),
//! fluxcd/pkg `kustomize/kustomize_varsub.go` (`SubstituteVariables`, `substituteFrom`,
//! `${var:=default}`, the `kustomize.toolkit.fluxcd.io/substitute: disabled` annotation),
//! fluxcd/pkg `ssa` (`IfNotPresent`), fluxcd/pkg `runtime/predicates` (`reconcile.fluxcd.io/
//! requestedAt`). See docs/fidelity.md for what is left out.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

/// A GitRepository's artifact: the commit (`<branch>@sha1:<sha>`) and its files by path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Artifact {
    pub revision: String,
    pub files: BTreeMap<String, String>,
}

/// source-controller's artifact of `branch` in the bare repository at `repo`, or why not.
pub fn artifact(repo: &Path, branch: &str) -> Result<Artifact, String> {
    let r = git2::Repository::open_bare(repo).map_err(|e| e.message().to_string())?;
    let commit = r
        .find_reference(&format!("refs/heads/{branch}"))
        .and_then(|x| x.peel_to_commit())
        .map_err(|e| format!("branch {branch}: {}", e.message()))?;
    let mut files = BTreeMap::new();
    let tree = commit.tree().map_err(|e| e.message().to_string())?;
    tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
        if entry.kind() == Some(git2::ObjectType::Blob)
            && let Ok(name) = entry.name()
            && let Ok(obj) = entry.to_object(&r)
            && let Some(blob) = obj.as_blob()
            && let Ok(text) = std::str::from_utf8(blob.content())
        {
            files.insert(format!("{dir}{name}"), text.to_string());
        }
        git2::TreeWalkResult::Ok
    })
    .map_err(|e| e.message().to_string())?;
    Ok(Artifact {
        revision: format!("{branch}@sha1:{}", commit.id()),
        files,
    })
}

/// Flux's variable substitution in one document: `${var}`, `${var:=default}` (and `:-`), `$$`
/// escapes `$`. A variable with no value and no default becomes empty (the non-strict mode).
pub fn substitute(doc: &str, vars: &BTreeMap<String, String>) -> String {
    try_substitute(doc, vars, false).unwrap_or_default()
}

/// [`substitute`], and in strict mode (kustomize-controller's default from v1.9, the
/// `StrictPostBuildSubstitutions` feature gate) a variable with no value and no default is an
/// error that fails the build, as fluxcd/pkg `kustomize/kustomize_varsub.go`
/// `SubstituteVariables` with `envsubst` in strict mode does.
pub fn try_substitute(
    doc: &str,
    vars: &BTreeMap<String, String>,
    strict: bool,
) -> Result<String, String> {
    let mut out = String::with_capacity(doc.len());
    let mut rest = doc;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(a) = after.strip_prefix('$') {
            out.push('$');
            rest = a;
            continue;
        }
        let Some(body) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let Some(end) = body.find('}') else {
            out.push('$');
            rest = after;
            continue;
        };
        let expr = &body[..end];
        let (name, default) = match expr.find([':']) {
            Some(k) if expr[k..].starts_with(":=") || expr[k..].starts_with(":-") => {
                (&expr[..k], Some(&expr[k + 2..]))
            }
            _ => (expr, None),
        };
        let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            out.push_str("${");
            rest = body;
            continue;
        }
        // Strict mode asks only that the variable exists (an empty value is a value); a
        // default stands in for an unset or empty one.
        match (vars.get(name), default) {
            (Some(v), _) if !v.is_empty() => out.push_str(v),
            (Some(_), d) => out.push_str(d.unwrap_or("")),
            (None, Some(d)) => out.push_str(d),
            (None, None) if strict => {
                return Err(format!("variable not set (strict mode): \"{name}\""));
            }
            (None, None) => {}
        }
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// [`substitute`] in every string (keys too) of an object built by kustomize. Upstream
/// substitutes the YAML text and parses it again, so a value that was a whole variable and
/// becomes a number or a boolean takes that type (`replicas: ${N}`); so here.
pub fn substitute_value(v: &Value, vars: &BTreeMap<String, String>) -> Value {
    try_substitute_value(v, vars, false).unwrap_or_else(|_| v.clone())
}

/// [`substitute_value`], strict or not (see [`try_substitute`]).
pub fn try_substitute_value(
    v: &Value,
    vars: &BTreeMap<String, String>,
    strict: bool,
) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) => {
            let out = try_substitute(s, vars, strict)?;
            let whole = s.starts_with("${") && s.ends_with('}') && s.matches("${").count() == 1;
            if whole && out != *s {
                if let Ok(n) = out.parse::<i64>() {
                    return Ok(json!(n));
                }
                if out == "true" || out == "false" {
                    return Ok(json!(out == "true"));
                }
            }
            Value::String(out)
        }
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| try_substitute_value(x, vars, strict))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| {
                    Ok((
                        try_substitute(k, vars, strict)?,
                        try_substitute_value(x, vars, strict)?,
                    ))
                })
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// `kustomize.toolkit.fluxcd.io/<key>` on an object.
pub fn flux_annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer("/metadata/annotations")?
        .get(format!("kustomize.toolkit.fluxcd.io/{key}"))?
        .as_str()
}

/// The inventory entry id of an object, as kustomize-controller writes it
/// (`<namespace>_<name>_<group>_<kind>`).
pub fn inventory_id(obj: &Value, namespace: &str) -> Value {
    let api = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let (group, version) = api.rsplit_once('/').unwrap_or(("", api));
    json!({"id": format!("{namespace}_{}_{group}_{}",
        obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or(""),
        obj.get("kind").and_then(Value::as_str).unwrap_or("")), "v": version})
}

/// A Go duration (`10m`, `1h30m`, `30s`, `5m0s`) in seconds.
pub fn duration_secs(s: &str) -> Option<u64> {
    let mut total = 0u64;
    let mut num = String::new();
    let mut any = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().ok()?;
        num.clear();
        let unit = match c {
            'h' => 3600,
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                0
            }
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        total += n * unit;
        any = true;
    }
    (any && num.is_empty()).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_like_flux() {
        let vars: BTreeMap<String, String> =
            [("longhorn_version".to_string(), "1.10.2".to_string())].into();
        assert_eq!(
            substitute(
                "version: ${longhorn_version}\nx: ${missing:=7} $${kept} ${empty}",
                &vars
            ),
            "version: 1.10.2\nx: 7 ${kept} "
        );
        assert_eq!(
            substitute("cost: $5 ${not valid}", &vars),
            "cost: $5 ${not valid}"
        );
        // Strict (kustomize-controller's default since v1.9): an unset variable without a
        // default fails the build; a default or an escape does not.
        assert_eq!(
            try_substitute("x: ${missing}", &vars, true),
            Err("variable not set (strict mode): \"missing\"".to_string())
        );
        assert_eq!(
            try_substitute("x: ${missing:=7} $${kept}", &vars, true),
            Ok("x: 7 ${kept}".to_string())
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(duration_secs("10m"), Some(600));
        assert_eq!(duration_secs("1h30m"), Some(5400));
        assert_eq!(duration_secs("5m0s"), Some(300));
        assert_eq!(duration_secs("250ms"), Some(0));
        assert_eq!(duration_secs("x"), None);
    }
}
