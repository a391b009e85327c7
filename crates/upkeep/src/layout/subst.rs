//! Flux's postBuild substitution, for reading: what a value written `${KUBE_VERSION}` becomes,
//! and which variable it came from (so that upkeep changes the variable where it is defined,
//! not the reference).
//!
//! As fluxcd/pkg `envsubst` (a fork of drone/envsubst) does: only `${...}` is expanded;
//! `$$` outside braces is a `$`; `${v:=d}`, `${v:-d}` and `${v=d}` take the default when `v`
//! is unset or empty; a variable with no value and no default is empty (and, in strict mode,
//! the default since kustomize-controller v1.9, an error: reported by the caller).

use super::build::{Var, Vars};

/// What substitution made of a value.
#[derive(Debug, Clone, PartialEq)]
pub struct Substituted {
    pub text: String,
    /// The variables used, in order: (name, its definition; `None` when it had no value and a
    /// default was used, or it is undefined).
    pub used: Vec<(String, Option<Var>)>,
    /// Variables with neither a value nor a default.
    pub undefined: Vec<String>,
}

impl Substituted {
    /// When the whole value is one variable, with at most a fixed prefix and suffix around it
    /// (`v${VERSION}`): (prefix, name, suffix).
    pub fn single(raw: &str) -> Option<(String, String, String)> {
        let start = raw.find("${")?;
        let end = raw[start..].find('}')? + start;
        let body = &raw[start + 2..end];
        let name = body.split([':', '=']).next().unwrap_or("").to_string();
        let (prefix, suffix) = (&raw[..start], &raw[end + 1..]);
        if name.is_empty() || prefix.contains('$') || suffix.contains('$') || !valid_name(&name) {
            return None;
        }
        Some((prefix.to_string(), name, suffix.to_string()))
    }
}

/// Flux's variable names: `^[_[:alpha:]][_[:alpha:][:digit:]]*$`.
pub fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

pub fn substitute(raw: &str, vars: &Vars) -> Substituted {
    let mut out = Substituted {
        text: String::with_capacity(raw.len()),
        used: Vec::new(),
        undefined: Vec::new(),
    };
    let mut rest = raw;
    while let Some(i) = rest.find('$') {
        out.text.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(a) = after.strip_prefix('$') {
            out.text.push('$');
            rest = a;
            continue;
        }
        let Some(body) = after.strip_prefix('{') else {
            out.text.push('$');
            rest = after;
            continue;
        };
        let Some(end) = body.find('}') else {
            out.text.push('$');
            rest = after;
            continue;
        };
        let expr = &body[..end];
        let (name, default) = match expr.find([':', '=']) {
            Some(k) if expr[k..].starts_with(":=") || expr[k..].starts_with(":-") => {
                (&expr[..k], Some(&expr[k + 2..]))
            }
            Some(k) if expr[k..].starts_with('=') => (&expr[..k], Some(&expr[k + 1..])),
            _ => (expr, None),
        };
        if !valid_name(name) {
            out.text.push_str("${");
            rest = body;
            continue;
        }
        match vars.get(name).filter(|v| !v.value.is_empty()) {
            Some(v) => {
                out.text.push_str(&v.value);
                out.used.push((name.to_string(), Some(v.clone())));
            }
            None => {
                match default {
                    Some(d) => out.text.push_str(d),
                    None => out.undefined.push(name.to_string()),
                }
                out.used.push((name.to_string(), None));
            }
        }
        rest = &body[end + 1..];
    }
    out.text.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    Var {
                        value: v.to_string(),
                        at: None,
                        from: "test".into(),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn substitutes_like_flux_and_says_what_it_used() {
        let v = vars(&[("KUBE_VERSION", "v1.33.4+k3s1"), ("EMPTY", "")]);
        let s = substitute("${KUBE_VERSION}", &v);
        assert_eq!(s.text, "v1.33.4+k3s1");
        assert_eq!(s.used[0].0, "KUBE_VERSION");
        let s = substitute("a ${MISSING:=7} $${kept} ${EMPTY:-d} ${X=y} ${NONE}", &v);
        assert_eq!(s.text, "a 7 ${kept} d y ");
        assert_eq!(s.undefined, vec!["NONE".to_string()]);
        assert_eq!(substitute("$5 ${not valid}", &v).text, "$5 ${not valid}");
    }

    #[test]
    fn a_value_that_is_one_variable() {
        assert_eq!(
            Substituted::single("v${VERSION}"),
            Some(("v".into(), "VERSION".into(), String::new()))
        );
        assert_eq!(
            Substituted::single("${A:=1.0}"),
            Some((String::new(), "A".into(), String::new()))
        );
        assert_eq!(Substituted::single("${A}-${B}"), None);
        assert_eq!(Substituted::single("1.0"), None);
    }
}
