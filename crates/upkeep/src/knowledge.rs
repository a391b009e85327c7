//! Built-in knowledge of the components upkeep knows by name (k3s, Flux, Longhorn): version
//! scheme, default sources and track, and upgrade-path rules. The rules live in
//! `policies/components.yaml` at the top of the project, embedded in the binary, in the same
//! format a config repo uses to override them (`componentRules:`).

use std::sync::OnceLock;

use crate::model::files::{ComponentRuleEntry, PolicyFile};
use crate::model::load::parse_yaml;

/// The embedded built-in rules file.
pub const BUILTIN_PATH: &str = "policies/components.yaml (built in)";
pub const BUILTIN_YAML: &str = include_str!("../../../policies/components.yaml");

/// The built-in component rules by name. The embedded file is checked by tests; should it ever
/// fail to parse, no built-in rules are used and every component must then state its own.
pub fn builtin() -> &'static [(String, ComponentRuleEntry)] {
    static RULES: OnceLock<Vec<(String, ComponentRuleEntry)>> = OnceLock::new();
    RULES.get_or_init(
        || match parse_yaml::<PolicyFile>(BUILTIN_PATH, BUILTIN_YAML) {
            Ok(p) => p
                .component_rules
                .0
                .into_iter()
                .map(|(k, v)| (k.value, v))
                .collect(),
            Err(d) => {
                tracing::error!(%d, "built-in component rules do not parse");
                Vec::new()
            }
        },
    )
}

pub fn builtin_rule(name: &str) -> Option<&'static ComponentRuleEntry> {
    builtin().iter().find(|(n, _)| n == name).map(|(_, r)| r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::versions::{Downgrade, Scheme};

    #[test]
    fn builtin_rules_parse_and_say_what_upstream_says() {
        let path = |name: &str| {
            let p = builtin_rule(name)
                .unwrap()
                .upgrade_path
                .as_ref()
                .unwrap()
                .value;
            (p.max_minor_step, p.downgrade)
        };
        let k3s = builtin_rule("k3s").expect("k3s rules");
        assert_eq!(k3s.scheme.as_ref().map(|s| s.value), Some(Scheme::K3s));
        assert_eq!(path("k3s"), (Some(1), Downgrade::Never));
        assert_eq!(path("longhorn"), (Some(1), Downgrade::Never));
        assert_eq!(path("flux"), (None, Downgrade::WithinMinor));
    }
}
