//! A small validator for OpenAPI 3.0 schemas (`$ref`, `nullable`, `allOf`/`anyOf`/`oneOf`,
//! required properties, types, enums, date-time and uri formats), for checking that the
//! simulators answer in the shapes of GitHub's REST API description.

use chrono::DateTime;
use serde_json::Value;

pub struct OpenApi(pub Value);

impl OpenApi {
    pub fn load() -> OpenApi {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/github/api.github.com.subset.json");
        OpenApi(
            serde_json::from_str(&std::fs::read_to_string(p).expect("the OpenAPI fixture"))
                .expect("JSON"),
        )
    }

    /// The schema of the `status` answer of `method path` (a path template of the description).
    pub fn response_schema(&self, method: &str, path: &str, status: u16) -> Value {
        let r = &self.0["paths"][path][method.to_lowercase()]["responses"][status.to_string()];
        self.resolve(r)["content"]["application/json"]["schema"].clone()
    }

    /// Every violation by `body` of the schema of that answer; an answer the description does
    /// not list is a violation too.
    pub fn violations(&self, method: &str, path: &str, status: u16, body: &Value) -> Vec<String> {
        let r = &self.0["paths"][path][method.to_lowercase()]["responses"][status.to_string()];
        if r.is_null() {
            return vec![format!("{method} {path} does not answer {status}")];
        }
        let schema = self.response_schema(method, path, status);
        let mut errs = Vec::new();
        if !schema.is_null() {
            self.check(&schema, body, "$", &mut errs);
        }
        errs
    }

    pub fn resolve<'a>(&'a self, mut s: &'a Value) -> &'a Value {
        while let Some(r) = s.get("$ref").and_then(Value::as_str) {
            let mut cur = &self.0;
            for part in r.trim_start_matches("#/").split('/') {
                cur = &cur[part];
            }
            s = cur;
        }
        s
    }

    /// Every violation of `schema` by `v`, with JSON paths.
    pub fn check(&self, schema: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
        let s = self.resolve(schema);
        if v.is_null() {
            if !s["nullable"].as_bool().unwrap_or(false) && s.get("type").is_some() {
                errs.push(format!("{at}: null but not nullable"));
            }
            return;
        }
        for key in ["allOf"] {
            for sub in s[key].as_array().into_iter().flatten() {
                self.check(sub, v, at, errs);
            }
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(subs) = s[key].as_array() {
                let ok = subs.iter().any(|sub| {
                    let mut e = Vec::new();
                    self.check(sub, v, at, &mut e);
                    e.is_empty()
                });
                if !ok {
                    errs.push(format!("{at}: matches none of {key}"));
                }
            }
        }
        let ty = s["type"].as_str();
        let type_ok = match ty {
            Some("object") => v.is_object(),
            Some("array") => v.is_array(),
            Some("string") => v.is_string(),
            Some("integer") => v.is_i64() || v.is_u64(),
            Some("number") => v.is_number(),
            Some("boolean") => v.is_boolean(),
            _ => true,
        };
        if !type_ok {
            errs.push(format!("{at}: expected {}, got {v}", ty.unwrap_or("?")));
            return;
        }
        if let (Some("date-time"), Some(t)) = (s["format"].as_str(), v.as_str())
            && DateTime::parse_from_rfc3339(t).is_err()
        {
            errs.push(format!("{at}: `{t}` is not a date-time"));
        }
        if let (Some("uri"), Some(t)) = (s["format"].as_str(), v.as_str())
            && !t.contains("://")
        {
            errs.push(format!("{at}: `{t}` is not a URI"));
        }
        if let Some(e) = s["enum"].as_array()
            && !e.contains(v)
        {
            errs.push(format!("{at}: {v} not in enum"));
        }
        if let Some(obj) = v.as_object() {
            for req in s["required"].as_array().into_iter().flatten() {
                let k = req.as_str().unwrap_or_default();
                if !obj.contains_key(k) {
                    errs.push(format!("{at}: missing required `{k}`"));
                }
            }
            if let Some(props) = s["properties"].as_object() {
                for (k, val) in obj {
                    if let Some(ps) = props.get(k) {
                        self.check(ps, val, &format!("{at}.{k}"), errs);
                    }
                }
            }
        }
        if let (Some(items), Some(arr)) = (s.get("items"), v.as_array()) {
            for (i, x) in arr.iter().enumerate() {
                self.check(items, x, &format!("{at}[{i}]"), errs);
            }
        }
    }
}
