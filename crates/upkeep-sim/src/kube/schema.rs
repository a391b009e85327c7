//! Custom resources checked against their CRD's `openAPIV3Schema`, as the API server does
//! (kubernetes/apiextensions-apiserver `pkg/registry/customresource/strategy.go` `Validate`,
//! `pkg/apiserver/validation/validation.go` `kubeOpenAPIResultToFieldErrors`,
//! `pkg/apiserver/customresource_handler.go` pruning and `schemaCoercingDecoder`): types,
//! `required`, `enum`, lengths and bounds, `nullable`, unknown fields (pruned, or refused under
//! `fieldValidation=Strict`), `x-kubernetes-preserve-unknown-fields`,
//! `x-kubernetes-int-or-string`, and the `x-kubernetes-validations` rules written in the small
//! part of CEL that the shipped CRDs use (`has()`, `!`, `&&`, `||`, comparisons, `startsWith`,
//! `size()`, `self` and `oldSelf`). A rule outside that part is skipped, not failed.
//!
//! Messages are the API server's: `spec.concurrency: Invalid value: "string": spec.concurrency
//! in body must be of type integer: "string"`, `spec.upgrade: Required value`, `spec.x:
//! Unsupported value: "x": supported values: "a", "b"`.

use serde_json::Value;

/// What a check found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Problems {
    /// Field errors (422 Invalid).
    pub invalid: Vec<String>,
    /// Unknown fields, as `spec.foo` (pruned unless the request is strict).
    pub unknown: Vec<String>,
}

/// Check `obj` against `schema`, pruning unknown fields and non-nullable nulls when `prune`.
/// `old` is the stored object on an update, for transition rules (`oldSelf`).
pub fn check(schema: &Value, obj: &mut Value, old: Option<&Value>, prune: bool) -> Problems {
    let mut out = Problems::default();
    walk(schema, obj, old, "", true, prune, &mut out);
    out
}

/// Remove the field at `path` (`spec.a`, `status.conditions[0].x`) from `obj`.
pub fn remove(obj: &mut Value, path: &str) {
    let mut steps: Vec<String> = Vec::new();
    for part in path.split('.') {
        let mut rest = part;
        if let Some(i) = rest.find('[') {
            steps.push(rest[..i].to_string());
            rest = &rest[i..];
            while let Some(end) = rest.find(']') {
                steps.push(rest[..=end].to_string());
                rest = &rest[end + 1..];
            }
        } else {
            steps.push(rest.to_string());
        }
    }
    let Some((last, parents)) = steps.split_last() else {
        return;
    };
    let mut cur = obj;
    for step in parents {
        let next = match step.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
            Some(i) => i.parse::<usize>().ok().and_then(|i| cur.get_mut(i)),
            None => cur.get_mut(step.as_str()),
        };
        let Some(next) = next else {
            return;
        };
        cur = next;
    }
    if let Some(m) = cur.as_object_mut() {
        m.remove(last);
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A value as the API server prints it in a field error: strings quoted, the rest as JSON.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn type_ok(want: &str, v: &Value, int_or_string: bool) -> bool {
    if int_or_string {
        return matches!(json_type(v), "integer" | "string");
    }
    match want {
        "" => true,
        "number" => matches!(json_type(v), "integer" | "number"),
        w => json_type(v) == w,
    }
}

#[allow(clippy::too_many_arguments)]
fn walk(
    schema: &Value,
    v: &mut Value,
    old: Option<&Value>,
    path: &str,
    root: bool,
    prune: bool,
    out: &mut Problems,
) {
    let flag = |k: &str| schema.get(k).and_then(Value::as_bool) == Some(true);
    let want = schema.get("type").and_then(Value::as_str).unwrap_or("");
    if !type_ok(want, v, flag("x-kubernetes-int-or-string")) {
        let t = json_type(v);
        out.invalid.push(format!(
            "{path}: Invalid value: \"{t}\": {path} in body must be of type {want}: \"{t}\""
        ));
        return;
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(v)
    {
        let list: Vec<String> = options.iter().map(shown).collect();
        out.invalid.push(format!(
            "{path}: Unsupported value: {}: supported values: {}",
            shown(v),
            list.join(", ")
        ));
    }
    let num = |k: &str| schema.get(k).and_then(Value::as_f64);
    match v {
        Value::String(s) => {
            if let Some(max) = num("maxLength")
                && s.chars().count() as f64 > max
            {
                out.invalid.push(format!(
                    "{path}: Too long: may not be more than {max} bytes"
                ));
            }
            if let Some(min) = num("minLength")
                && (s.chars().count() as f64) < min
            {
                out.invalid.push(format!(
                    "{path}: Invalid value: {}: {path} in body should be at least {min} chars long",
                    shown(v)
                ));
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if let Some(min) = num("minimum")
                && x < min
            {
                out.invalid.push(format!(
                    "{path}: Invalid value: {n}: {path} in body should be greater than or equal to {min}"
                ));
            }
            if let Some(max) = num("maximum")
                && x > max
            {
                out.invalid.push(format!(
                    "{path}: Invalid value: {n}: {path} in body should be less than or equal to {max}"
                ));
            }
        }
        Value::Array(items) => {
            if let Some(max) = num("maxItems")
                && items.len() as f64 > max
            {
                out.invalid.push(format!(
                    "{path}: Too many: {}: must have at most {max} items",
                    items.len()
                ));
            }
            if let Some(item) = schema.get("items") {
                for (i, x) in items.iter_mut().enumerate() {
                    walk(item, x, None, &format!("{path}[{i}]"), false, prune, out);
                }
            }
        }
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let extra = schema.get("additionalProperties").filter(|a| a.is_object());
            let keep_unknown = flag("x-kubernetes-preserve-unknown-fields")
                || schema.get("additionalProperties") == Some(&Value::Bool(true));
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                let here = join(path, &k);
                if root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                let sub = props.and_then(|p| p.get(&k)).or(extra);
                let Some(sub) = sub else {
                    if !keep_unknown {
                        out.unknown.push(here);
                        if prune {
                            map.remove(&k);
                        }
                    }
                    continue;
                };
                let null_ok = sub.get("nullable").and_then(Value::as_bool) == Some(true);
                if map.get(&k) == Some(&Value::Null) && !null_ok {
                    // A null where the schema does not allow one is dropped before validation.
                    map.remove(&k);
                    continue;
                }
                let old_k = old.and_then(|o| o.get(&k));
                if let Some(x) = map.get_mut(&k) {
                    walk(sub, x, old_k, &here, false, prune, out);
                }
            }
            for r in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !map.contains_key(r) {
                    out.invalid
                        .push(format!("{}: Required value", join(path, r)));
                }
            }
        }
        _ => {}
    }
    for rule in schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(expr) = rule.get("rule").and_then(Value::as_str) else {
            continue;
        };
        // Transition rules run on updates only.
        if expr.contains("oldSelf") && old.is_none() {
            continue;
        }
        if cel::eval(expr, v, old) == Some(false) {
            let message = rule
                .get("message")
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map_or_else(|| format!("failed rule: {expr}"), str::to_string);
            let field = rule
                .get("fieldPath")
                .and_then(Value::as_str)
                .map_or(path.to_string(), |f| format!("{path}{f}"));
            out.invalid.push(format!(
                "{field}: Invalid value: \"{}\": {message}",
                json_type(v)
            ));
        }
    }
}

/// The part of CEL the shipped CRDs' rules use. `eval` answers `None` for anything else.
mod cel {
    use serde_json::Value;

    #[derive(Debug, Clone, PartialEq)]
    enum Tok {
        Ident(String),
        Str(String),
        Num(f64),
        Op(&'static str),
    }

    fn lex(s: &str) -> Option<Vec<Tok>> {
        let c: Vec<char> = s.chars().collect();
        let mut i = 0;
        let mut out = Vec::new();
        while i < c.len() {
            let ch = c[i];
            if ch.is_whitespace() {
                i += 1;
            } else if ch.is_ascii_alphabetic() || ch == '_' {
                let start = i;
                while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '_') {
                    i += 1;
                }
                out.push(Tok::Ident(c[start..i].iter().collect()));
            } else if ch.is_ascii_digit() {
                let start = i;
                while i < c.len() && (c[i].is_ascii_digit() || c[i] == '.') {
                    i += 1;
                }
                out.push(Tok::Num(
                    c[start..i].iter().collect::<String>().parse().ok()?,
                ));
            } else if ch == '\'' || ch == '"' {
                let q = ch;
                i += 1;
                let start = i;
                while i < c.len() && c[i] != q {
                    i += 1;
                }
                if i >= c.len() {
                    return None;
                }
                out.push(Tok::Str(c[start..i].iter().collect()));
                i += 1;
            } else {
                let two: String = c[i..(i + 2).min(c.len())].iter().collect();
                let op = ["&&", "||", "==", "!=", ">=", "<="]
                    .into_iter()
                    .find(|o| *o == two);
                if let Some(o) = op {
                    out.push(Tok::Op(o));
                    i += 2;
                } else {
                    let one = ["!", "(", ")", ".", ">", "<", ","]
                        .into_iter()
                        .find(|o| o.starts_with(ch))?;
                    out.push(Tok::Op(one));
                    i += 1;
                }
            }
        }
        Some(out)
    }

    #[derive(Debug, Clone, PartialEq)]
    enum Val {
        Json(Value),
        Missing,
    }

    struct P<'a> {
        t: Vec<Tok>,
        i: usize,
        this: &'a Value,
        old: Option<&'a Value>,
    }

    impl P<'_> {
        fn peek(&self) -> Option<&Tok> {
            self.t.get(self.i)
        }
        fn eat(&mut self, op: &str) -> bool {
            if self.peek()
                == Some(&Tok::Op(match op {
                    "&&" => "&&",
                    "||" => "||",
                    "!" => "!",
                    "(" => "(",
                    ")" => ")",
                    "." => ".",
                    "," => ",",
                    _ => return false,
                }))
            {
                self.i += 1;
                true
            } else {
                false
            }
        }
        fn or(&mut self) -> Option<bool> {
            let mut v = self.and()?;
            while self.eat("||") {
                let r = self.and()?;
                v = v || r;
            }
            Some(v)
        }
        fn and(&mut self) -> Option<bool> {
            let mut v = self.unary()?;
            while self.eat("&&") {
                let r = self.unary()?;
                v = v && r;
            }
            Some(v)
        }
        fn unary(&mut self) -> Option<bool> {
            if self.eat("!") {
                return self.unary().map(|b| !b);
            }
            if self.eat("(") {
                let v = self.or()?;
                return self.eat(")").then_some(v);
            }
            let left = self.value()?;
            let op = match self.peek() {
                Some(Tok::Op(o)) if ["==", "!=", ">", "<", ">=", "<="].contains(o) => *o,
                _ => {
                    return match left {
                        Val::Json(Value::Bool(b)) => Some(b),
                        _ => None,
                    };
                }
            };
            self.i += 1;
            let right = self.value()?;
            let (Val::Json(a), Val::Json(b)) = (left, right) else {
                return None;
            };
            let same = match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) => x == y,
                _ => a == b,
            };
            match op {
                "==" => Some(same),
                "!=" => Some(!same),
                _ => {
                    let (x, y) = (a.as_f64()?, b.as_f64()?);
                    Some(match op {
                        ">" => x > y,
                        "<" => x < y,
                        ">=" => x >= y,
                        _ => x <= y,
                    })
                }
            }
        }
        /// A literal, a path from `self`/`oldSelf`, `has(path)`, `size(path)`, or
        /// `path.startsWith('x')`.
        fn value(&mut self) -> Option<Val> {
            let tok = self.peek()?.clone();
            self.i += 1;
            match tok {
                Tok::Str(s) => Some(Val::Json(Value::String(s))),
                Tok::Num(n) => Some(Val::Json(serde_json::json!(n))),
                Tok::Ident(id) if id == "true" || id == "false" => {
                    Some(Val::Json(Value::Bool(id == "true")))
                }
                Tok::Ident(id) if id == "has" || id == "size" => {
                    if !self.eat("(") {
                        return None;
                    }
                    let inner = self.path()?;
                    if !self.eat(")") {
                        return None;
                    }
                    Some(Val::Json(if id == "has" {
                        Value::Bool(inner != Val::Missing)
                    } else {
                        match inner {
                            Val::Json(Value::String(s)) => serde_json::json!(s.chars().count()),
                            Val::Json(Value::Array(a)) => serde_json::json!(a.len()),
                            Val::Json(Value::Object(o)) => serde_json::json!(o.len()),
                            _ => return None,
                        }
                    }))
                }
                Tok::Ident(_) => {
                    self.i -= 1;
                    self.path()
                }
                Tok::Op(_) => None,
            }
        }
        fn path(&mut self) -> Option<Val> {
            let Some(Tok::Ident(root)) = self.peek().cloned() else {
                return None;
            };
            self.i += 1;
            let mut cur = match root.as_str() {
                "self" => Val::Json(self.this.clone()),
                "oldSelf" => self.old.map_or(Val::Missing, |o| Val::Json(o.clone())),
                _ => return None,
            };
            while self.eat(".") {
                let Some(Tok::Ident(field)) = self.peek().cloned() else {
                    return None;
                };
                self.i += 1;
                if field == "startsWith" {
                    if !self.eat("(") {
                        return None;
                    }
                    let Some(Tok::Str(prefix)) = self.peek().cloned() else {
                        return None;
                    };
                    self.i += 1;
                    if !self.eat(")") {
                        return None;
                    }
                    let Val::Json(Value::String(s)) = &cur else {
                        return None;
                    };
                    return Some(Val::Json(Value::Bool(s.starts_with(&prefix))));
                }
                cur = match cur {
                    Val::Json(Value::Object(m)) => {
                        m.get(&field).cloned().map_or(Val::Missing, Val::Json)
                    }
                    _ => Val::Missing,
                };
            }
            Some(cur)
        }
    }

    /// Whether `rule` holds for `this` (and `old`); `None` when it is not in the supported part.
    pub fn eval(rule: &str, this: &Value, old: Option<&Value>) -> Option<bool> {
        let mut p = P {
            t: lex(rule)?,
            i: 0,
            this,
            old,
        };
        let v = p.or()?;
        (p.i == p.t.len()).then_some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plan_schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["upgrade"], "properties": {
                "concurrency": {"type": "integer", "format": "int64"},
                "upgrade": {"type": "object", "properties": {"image": {"type": "string"}}},
                "mode": {"type": "string", "enum": ["a", "b"]},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "port": {"x-kubernetes-int-or-string": true}}},
            "status": {"type": "object", "nullable": true}}})
    }

    #[test]
    fn types_required_and_enums_in_the_api_servers_words() {
        let mut o = json!({"apiVersion": "x/v1", "kind": "Plan", "metadata": {"name": "p"},
            "spec": {"concurrency": "1", "mode": "c", "port": "http"}});
        let p = check(&plan_schema(), &mut o, None, true);
        assert_eq!(
            p.invalid,
            vec![
                r#"spec.concurrency: Invalid value: "string": spec.concurrency in body must be of type integer: "string""#,
                r#"spec.mode: Unsupported value: "c": supported values: "a", "b""#,
                "spec.upgrade: Required value",
            ]
        );
    }

    #[test]
    fn unknown_fields_are_pruned_or_reported_and_preserved_where_the_schema_says() {
        let mut o = json!({"spec": {"upgrade": {}, "foo": 1, "free": {"any": {"thing": 1}}}});
        let p = check(&plan_schema(), &mut o, None, true);
        assert_eq!(p.unknown, vec!["spec.foo"]);
        let mut nested = json!({"status": {"conditions": [{"a": 1, "x": 2}]}});
        remove(&mut nested, "status.conditions[0].x");
        assert_eq!(nested, json!({"status": {"conditions": [{"a": 1}]}}));
        assert!(p.invalid.is_empty());
        assert_eq!(
            o,
            json!({"spec": {"upgrade": {}, "free": {"any": {"thing": 1}}}})
        );
    }

    #[test]
    fn cel_rules_of_the_shipped_crds() {
        let s = json!({"type": "object", "x-kubernetes-validations": [
            {"rule": "(has(self.chart) && !has(self.chartRef)) || (!has(self.chart) && has(self.chartRef))",
             "message": "either chart or chartRef must be set"}],
            "properties": {"chart": {"type": "object"}, "chartRef": {"type": "object"}}});
        let mut both = json!({"chart": {}, "chartRef": {}});
        assert_eq!(
            check(&s, &mut both, None, true).invalid,
            vec![r#": Invalid value: "object": either chart or chartRef must be set"#]
        );
        let mut one = json!({"chartRef": {}});
        assert!(check(&s, &mut one, None, true).invalid.is_empty());
        assert_eq!(
            cel::eval("!self.startsWith('-')", &json!("-x"), None),
            Some(false)
        );
        assert_eq!(
            cel::eval("self == oldSelf", &json!(1), Some(&json!(2))),
            Some(false)
        );
        assert_eq!(
            cel::eval(
                "oldSelf == 0 || self == oldSelf",
                &json!(1),
                Some(&json!(0))
            ),
            Some(true)
        );
        assert_eq!(
            cel::eval("self.all(x, x > 0)", &json!([1]), None),
            None,
            "unsupported: skipped"
        );
        assert_eq!(
            cel::eval(
                "!has(self.retryInterval) || self.name == 'RetryOnFailure'",
                &json!({"name": "RetryOnFailure", "retryInterval": "1m"}),
                None
            ),
            Some(true)
        );
    }
}
