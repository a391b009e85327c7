//! Where each component's version is written: the objects that carry it (SUC Plans for k3s, a
//! FluxInstance or the flux-instance chart's values for Flux, a HelmRelease's chart version or
//! its OCIRepository's tag for a chart, an image tag in Helm values), found in the repository
//! as Flux builds it ([`super::build`]) and never guessed from a name: a HelmRelease named like
//! the component but deploying another chart is refused, and two candidates are an error that
//! names both.

use super::build::{DataSource, KsId, Layout, Loc, Obj};
use super::files::Files;
use super::subst::{Substituted, substitute};
use super::yaml::Node;
use crate::diag::{Diagnostic, Pos};
use crate::model::Runs;

/// What kind of field carries the version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Field {
    /// A SUC Plan's `spec.version`.
    PlanVersion,
    /// A HelmRelease's `spec.chart.spec.version`.
    ChartVersion,
    /// An OCIRepository's `spec.ref.tag` (a HelmRelease's `chartRef`).
    OciTag,
    /// A FluxInstance's `spec.distribution.version`.
    FluxDistribution,
    /// The flux-instance chart's `instance.distribution.version`.
    FluxInstanceValues,
    /// An image's tag (Helm values or a workload's container).
    ImageTag,
}

impl Field {
    pub fn path(self) -> &'static str {
        match self {
            Field::PlanVersion => "spec.version",
            Field::ChartVersion => "spec.chart.spec.version",
            Field::OciTag => "spec.ref.tag",
            Field::FluxDistribution => "spec.distribution.version",
            Field::FluxInstanceValues => "instance.distribution.version",
            Field::ImageTag => "tag",
        }
    }
}

/// Where upkeep writes a new version: a scalar, with text around the version kept.
#[derive(Debug, Clone, PartialEq)]
pub struct EditAt {
    pub loc: Loc,
    /// Text kept before and after the version in that scalar (`v` of `v${VERSION}`, an image's
    /// `repository:`).
    pub prefix: String,
    pub suffix: String,
    /// The postBuild variable written there, and where it comes from.
    pub variable: Option<(String, String)>,
}

/// One object field that carries a component's version.
#[derive(Debug, Clone, PartialEq)]
pub struct Carrier {
    /// `Kind namespace/name` of the object that carries it.
    pub object: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub field: Field,
    /// As written in git (`${KUBE_VERSION}`, `1.9.1`).
    pub written: String,
    /// After Flux's substitution: the version this carrier asks for.
    pub value: String,
    /// Where to write a new version, or why upkeep cannot.
    pub edit: Result<EditAt, String>,
    pub applied_by: Option<KsId>,
    /// Where the field (or the object) is written, for messages.
    pub file: String,
    pub pos: Pos,
}

impl Carrier {
    /// `file:line:column`.
    pub fn at(&self) -> String {
        format!("{}:{}:{}", self.file, self.pos.line, self.pos.column)
    }

    /// The version it carries, read as a version: an OCI tag's `_` is Helm's `+` (OCI tags
    /// allow no `+`).
    pub fn version(&self) -> String {
        match self.field {
            Field::OciTag => self.value.replace('_', "+"),
            _ => self.value.clone(),
        }
    }
}

/// A component's carriers and what is wrong with them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mapping {
    pub carriers: Vec<Carrier>,
    pub problems: Vec<Diagnostic>,
    /// Nothing in the repository carries the version (the component is applied in the cluster
    /// only, or not deployed).
    pub absent: bool,
}

/// The carriers of `component`, which `runs` as versions.yaml (or the built-in knowledge) says.
pub fn carriers(files: &Files, layout: &Layout, component: &str, runs: &Runs) -> Mapping {
    let mut m = Mapping::default();
    match runs {
        Runs::K3s => k3s(layout, &mut m),
        Runs::Flux => flux(files, layout, &mut m),
        Runs::Chart { chart, release } => {
            chart_of(layout, component, chart, release.as_deref(), &mut m)
        }
        Runs::Image { image, release } => {
            image_of(layout, component, image, release.as_deref(), &mut m)
        }
        Runs::Unknown => {
            named_like(layout, component, None, &mut m);
        }
    }
    m.absent = m.carriers.is_empty();
    m
}

fn carrier(obj: &Obj, field: Field, loc: Loc, edit_loc: Option<Loc>) -> Carrier {
    let written = loc.node.as_str().unwrap_or("").to_string();
    let s = if obj.substitutes {
        substitute(&written, &obj.vars)
    } else {
        Substituted {
            text: written.clone(),
            used: Vec::new(),
            undefined: Vec::new(),
        }
    };
    let edit = editable(obj, &written, &s, edit_loc.unwrap_or_else(|| loc.clone()));
    Carrier {
        object: obj.describe(),
        kind: obj.kind.clone(),
        namespace: obj.namespace.clone(),
        name: obj.name.clone(),
        field,
        value: s.text,
        written,
        edit,
        applied_by: obj.applied_by.clone(),
        file: loc.file.clone(),
        pos: loc.pos(),
    }
}

/// Where a new version goes: the scalar itself, or the variable it names where that is defined.
fn editable(obj: &Obj, written: &str, s: &Substituted, loc: Loc) -> Result<EditAt, String> {
    if loc.inline.is_some() {
        return Err(format!(
            "it is written inside a block of text at {}:{} (an inline patch or values), which upkeep does not edit",
            loc.file,
            loc.pos().line
        ));
    }
    if s.used.is_empty() && written.contains("${") {
        return Err(format!(
            "it is written {written:?}, a variable, but {} substitutes no variables in git (no postBuild); define the variable in git (postBuild.substitute or a ConfigMap given by substituteFrom), or write a plain version",
            match &obj.applied_by {
                Some(k) => format!("Kustomization {k}"),
                None => "nothing".to_string(),
            }
        ));
    }
    if s.used.is_empty() {
        return Ok(EditAt {
            loc,
            prefix: String::new(),
            suffix: String::new(),
            variable: None,
        });
    }
    let Some((prefix, name, suffix)) = Substituted::single(written) else {
        return Err(format!(
            "{written:?} mixes several variables; write one variable (or a plain version)"
        ));
    };
    match obj.vars.get(&name) {
        Some(v) => match &v.at {
            // The variable holds the version alone; text around `${...}` (a `v`) stays where
            // it is written, and the new value follows the variable's own spelling.
            Some(at) if prefix.is_empty() || prefix == "v" && suffix.is_empty() => Ok(EditAt {
                loc: at.clone(),
                prefix: String::new(),
                suffix: String::new(),
                variable: Some((name, v.from.clone())),
            }),
            Some(_) => Err(format!(
                "{written:?} puts text around the variable {name}; write the variable alone"
            )),
            None => Err(format!(
                "it is the variable {name} from {}, which upkeep cannot change there (generated, or a Secret); define {name} in a ConfigMap manifest or in postBuild.substitute",
                v.from
            )),
        },
        None => Err(format!(
            "it is the variable {name}, which is not defined in this repository{}; define {name} in postBuild.substitute or a ConfigMap in git",
            match &obj.applied_by {
                Some(k) => format!(" (Kustomization {k})"),
                None => String::new(),
            }
        )),
    }
}

fn problem(file: &str, pos: Pos, message: String, hint: &str) -> Diagnostic {
    Diagnostic::error(file, pos, message).hint(hint)
}

fn k3s(layout: &Layout, m: &mut Mapping) {
    for p in layout.of_kind("Plan") {
        if p.group() != "upgrade.cattle.io" {
            continue;
        }
        let image = p.field_str(&["spec", "upgrade", "image"]);
        if !image.contains("k3s-upgrade") {
            continue;
        }
        match p.field(&["spec", "version"]) {
            Some(loc) if loc.node.as_str().is_some() => {
                m.carriers.push(carrier(p, Field::PlanVersion, loc, None));
            }
            _ => {
                let channel = p.field_str(&["spec", "channel"]);
                m.problems.push(problem(
                    &p.file,
                    p.pos(),
                    if channel.is_empty() {
                        format!("{} upgrades k3s but has no spec.version", p.describe())
                    } else {
                        format!(
                            "{} follows the channel {channel}: SUC upgrades the nodes whenever the channel moves, so upkeep cannot hold k3s to versions.yaml",
                            p.describe()
                        )
                    },
                    "write `version:` in the Plan (upkeep then changes it through git in a window), or delete the Plan and let upkeep create its own",
                ));
            }
        }
    }
}

fn flux(files: &Files, layout: &Layout, m: &mut Mapping) {
    for fi in layout.of_kind("FluxInstance") {
        if let Some(loc) = fi.field(&["spec", "distribution", "version"]) {
            m.carriers
                .push(carrier(fi, Field::FluxDistribution, loc, None));
        }
    }
    for hr in layout.of_kind("HelmRelease") {
        if chart_name(layout, hr).as_deref() != Some("flux-instance") {
            continue;
        }
        match values_field(files, layout, hr, &["instance", "distribution", "version"]) {
            Some((loc, owner)) => {
                let mut c = carrier(owner.unwrap_or(hr), Field::FluxInstanceValues, loc, None);
                c.object = hr.describe();
                c.kind = hr.kind.clone();
                c.namespace = hr.namespace.clone();
                c.name = hr.name.clone();
                m.carriers.push(c);
            }
            None => m.problems.push(problem(
                &hr.file,
                hr.pos(),
                format!(
                    "{} (the flux-instance chart) sets no instance.distribution.version: the chart's default (`2.x`) follows every Flux 2 release",
                    hr.describe()
                ),
                "set `instance.distribution.version` to the version in versions.yaml, in the HelmRelease's values or its values file",
            )),
        }
    }
    // Flux installed without flux-operator: the flux-manifests OCIRepository (cluster-template
    // before flux-operator) or `flux bootstrap`'s gotk-components.yaml. upkeep upgrades Flux
    // through a FluxInstance only.
    if m.carriers.is_empty() {
        let manifests = layout.of_kind("OCIRepository").find(|o| {
            o.field_str(&["spec", "url"])
                .trim_end_matches('/')
                .ends_with("/flux-manifests")
        });
        let gotk = layout
            .objects
            .iter()
            .find(|o| o.file.ends_with("gotk-components.yaml"));
        if let Some(o) = manifests.or(gotk) {
            m.problems.push(problem(
                &o.file,
                o.pos(),
                format!(
                    "Flux is installed here without flux-operator ({}), which upkeep does not upgrade: it upgrades Flux through flux-operator's FluxInstance only",
                    if manifests.is_some() {
                        format!("{}, the flux-manifests OCI artifact", o.describe())
                    } else {
                        "flux bootstrap's gotk-components.yaml".to_string()
                    }
                ),
                "leave `flux` out of versions.yaml (and keep upgrading Flux as you do), or move to flux-operator (a FluxInstance, or the flux-instance chart) and upkeep applies Flux in windows",
            ));
        }
    }
    if m.carriers.len() > 1 {
        let list = m
            .carriers
            .iter()
            .map(|c| format!("{} ({})", c.object, c.at()))
            .collect::<Vec<_>>()
            .join(", ");
        let first = m.carriers[0].clone();
        m.problems.push(problem(
            &first.file,
            first.pos,
            format!("Flux is installed {} times in this reading: {list}", m.carriers.len()),
            "keep one FluxInstance per cluster; with several clusters in one repository, keep a versions.yaml in each cluster's directory and run upkeep with --subdir",
        ));
    }
}

/// The chart a HelmRelease deploys: `spec.chart.spec.chart`, or the last segment of its
/// `chartRef` OCIRepository's URL (a HelmChart's `spec.chart`).
pub fn chart_name(layout: &Layout, hr: &Obj) -> Option<String> {
    let direct = hr.field_str(&["spec", "chart", "spec", "chart"]);
    if !direct.is_empty() {
        return Some(direct.rsplit('/').next().unwrap_or(&direct).to_string());
    }
    let (src, _) = chart_ref(layout, hr)?;
    match src.kind.as_str() {
        "OCIRepository" => {
            let url = src.field_str(&["spec", "url"]);
            let last = url.trim_end_matches('/').rsplit('/').next().unwrap_or("");
            (!last.is_empty()).then(|| last.to_string())
        }
        _ => Some(src.field_str(&["spec", "chart"])).filter(|c| !c.is_empty()),
    }
}

/// The source object of a HelmRelease's `chartRef`, and its kind as written.
fn chart_ref<'a>(layout: &'a Layout, hr: &Obj) -> Option<(&'a Obj, String)> {
    let kind = hr.field_str(&["spec", "chartRef", "kind"]);
    let name = hr.field_str(&["spec", "chartRef", "name"]);
    if name.is_empty() {
        return None;
    }
    let ns = match hr.field_str(&["spec", "chartRef", "namespace"]) {
        n if n.is_empty() => hr.namespace.clone(),
        n => n,
    };
    layout.find(&kind, &ns, &name).map(|o| (o, kind))
}

fn chart_of(layout: &Layout, component: &str, chart: &str, release: Option<&str>, m: &mut Mapping) {
    let mut candidates: Vec<&Obj> = layout
        .of_kind("HelmRelease")
        .filter(|hr| chart_name(layout, hr).as_deref() == Some(chart))
        .collect();
    if let Some(r) = release {
        let named: Vec<&Obj> = layout
            .of_kind("HelmRelease")
            .filter(|hr| format!("{}/{}", hr.namespace, hr.name) == r)
            .collect();
        if let Some(hr) = named.first()
            && chart_name(layout, hr).as_deref() != Some(chart)
        {
            m.problems.push(problem(
                &hr.file,
                hr.pos(),
                format!(
                    "{} deploys the chart {}, not {chart}: it does not carry {component}'s version",
                    hr.describe(),
                    chart_name(layout, hr).unwrap_or_else(|| "(unknown)".into())
                ),
                "name the HelmRelease of this chart in `release:`, or say `image:` if the version is an image tag in its values",
            ));
            return;
        }
        candidates.retain(|hr| format!("{}/{}", hr.namespace, hr.name) == r);
    }
    if candidates.is_empty() {
        named_like(layout, component, Some(chart), m);
        return;
    }
    if candidates.len() > 1 {
        let list = candidates
            .iter()
            .map(|c| format!("{} ({}:{})", c.describe(), c.file, c.pos().line))
            .collect::<Vec<_>>()
            .join(", ");
        m.problems.push(problem(
            &candidates[0].file,
            candidates[0].pos(),
            format!("{} HelmReleases deploy the chart {chart}: {list}; upkeep will not guess which is {component}", candidates.len()),
            "say which with `release: <namespace>/<name>` under the component in versions.yaml",
        ));
        return;
    }
    let hr = candidates[0];
    match chart_ref(layout, hr) {
        Some((src, kind)) if kind == "OCIRepository" => {
            // source-controller's order (ocirepository_controller.go `getArtifactRef`): a
            // digest, else a semver range, else a tag; a tag beside a range is ignored there.
            if let Some(d) = src.field(&["spec", "ref", "digest"]) {
                m.problems.push(problem(
                    &d.file,
                    d.pos(),
                    format!(
                        "{} pins {chart} by digest: upkeep cannot move a digest",
                        src.describe()
                    ),
                    "pin it with `ref.tag` instead",
                ));
            } else if let Some(r) = src.field(&["spec", "ref", "semver"]) {
                m.problems.push(
                    Diagnostic::warning(
                        &r.file,
                        r.pos(),
                        format!(
                            "{} follows the range {:?}: source-controller moves {chart} within it whenever a release appears; upkeep reports the range and does not pin it",
                            src.describe(),
                            r.node.as_str().unwrap_or("")
                        ),
                    )
                    .hint("write `ref.tag: <version>` (and drop `ref.semver`, which wins over a tag) to let upkeep apply versions in windows"),
                );
            } else if let Some(t) = src.field(&["spec", "ref", "tag"]) {
                let mut c = carrier(src, Field::OciTag, t, None);
                c.object = format!("{} (chart of {})", src.describe(), hr.describe());
                m.carriers.push(c);
            } else {
                m.problems.push(problem(
                    &src.file,
                    src.pos(),
                    format!("{} has no ref: it follows the `latest` tag", src.describe()),
                    "write `ref.tag: <version>`",
                ));
            }
        }
        Some((src, _)) => match src.field(&["spec", "version"]) {
            Some(loc) => {
                let mut c = carrier(src, Field::ChartVersion, loc, None);
                c.object = format!("{} (chart of {})", src.describe(), hr.describe());
                m.carriers.push(c);
            }
            None => m.problems.push(problem(
                &src.file,
                src.pos(),
                format!("{} sets no version", src.describe()),
                "write `version: <version>`",
            )),
        },
        None if hr.field_str(&["spec", "chartRef", "name"]).is_empty() => {
            match hr.field(&["spec", "chart", "spec", "version"]) {
                Some(loc) => m.carriers.push(carrier(hr, Field::ChartVersion, loc, None)),
                None => m.problems.push(problem(
                    &hr.file,
                    hr.pos(),
                    format!(
                        "{} sets no chart version: Flux installs the newest {chart} whenever it appears",
                        hr.describe()
                    ),
                    "write `spec.chart.spec.version: <version>`",
                )),
            }
        }
        None => m.problems.push(problem(
            &hr.file,
            hr.pos(),
            format!(
                "{} takes its chart from {} {}, which is not in this repository",
                hr.describe(),
                hr.field_str(&["spec", "chartRef", "kind"]),
                hr.field_str(&["spec", "chartRef", "name"])
            ),
            "keep the OCIRepository in the repository Flux reads",
        )),
    }
}

/// HelmReleases named like the component that deploy something else: said, never used.
fn named_like(layout: &Layout, component: &str, chart: Option<&str>, m: &mut Mapping) {
    for hr in layout
        .of_kind("HelmRelease")
        .filter(|hr| hr.name == component)
    {
        let deploys = chart_name(layout, hr).unwrap_or_else(|| "(unknown)".into());
        if Some(deploys.as_str()) == chart {
            continue;
        }
        let image = hr
            .doc
            .at(&["spec", "values"])
            .and_then(first_image)
            .unwrap_or_default();
        let hint = if image.is_empty() {
            format!(
                "if {component}'s version is an image tag in this release's values, say `image: <repository>` (and `release: {}/{}`) under {component} in versions.yaml",
                hr.namespace, hr.name
            )
        } else {
            format!(
                "if {component}'s version is the tag of {image} in this release's values, say `image: {image}` under {component} in versions.yaml"
            )
        };
        m.problems.push(problem(
            &hr.file,
            hr.pos(),
            format!(
                "{} is named like the component {component} but deploys the chart {deploys}{}: upkeep does not take a release for a component by its name, and will not change it",
                hr.describe(),
                match chart {
                    Some(c) => format!(", not {c}"),
                    None => String::new(),
                }
            ),
            &hint,
        ));
    }
}

/// Strip the registry a reference defaults to, so `docker.io/rancher/x` matches `rancher/x`.
pub fn image_key(r: &str) -> String {
    let r = r
        .trim_start_matches("docker.io/")
        .trim_start_matches("index.docker.io/")
        .trim_start_matches("registry-1.docker.io/");
    r.strip_prefix("library/").unwrap_or(r).to_string()
}

fn image_of(layout: &Layout, component: &str, image: &str, release: Option<&str>, m: &mut Mapping) {
    let want = image_key(image);
    let mut found: Vec<Carrier> = Vec::new();
    for hr in layout.of_kind("HelmRelease") {
        if release.is_some_and(|r| format!("{}/{}", hr.namespace, hr.name) != r) {
            continue;
        }
        if let Some(values) = hr.doc.at(&["spec", "values"]) {
            let mut hits = Vec::new();
            image_tags(values, &mut Vec::new(), &want, &mut hits);
            for path in hits {
                let full: Vec<&str> = ["spec", "values"]
                    .into_iter()
                    .chain(path.iter().map(String::as_str))
                    .collect();
                if let Some(loc) = hr.field(&full) {
                    found.push(tag_carrier(hr, loc, &want));
                }
            }
        }
    }
    for w in layout.objects.iter().filter(|o| {
        matches!(o.kind.as_str(), "Deployment" | "StatefulSet" | "DaemonSet") && release.is_none()
    }) {
        for (i, c) in w
            .doc
            .at(&["spec", "template", "spec", "containers"])
            .map(Node::items)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let img = c.str_at(&["image"]);
            let (repo, _) = img.rsplit_once(':').unwrap_or((img, ""));
            if image_key(repo) == want {
                let idx = i.to_string();
                if let Some(loc) =
                    w.field(&["spec", "template", "spec", "containers", &idx, "image"])
                {
                    found.push(tag_carrier(w, loc, &want));
                }
            }
        }
    }
    if found.is_empty() {
        m.problems.push(
            Diagnostic::warning(
                "versions.yaml",
                Pos::START,
                format!(
                    "no HelmRelease values or workload in this repository use the image {image}{}: upkeep cannot apply {component}",
                    release.map(|r| format!(" in {r}")).unwrap_or_default()
                ),
            )
            .hint("check `image:` (the repository, without a tag) and `release:`"),
        );
    } else if found.len() > 1 {
        let list = found
            .iter()
            .map(|c| format!("{} ({})", c.object, c.at()))
            .collect::<Vec<_>>()
            .join(", ");
        m.problems.push(problem(
            &found[0].file,
            found[0].pos,
            format!("the image {image} is used in {} places: {list}; upkeep will not guess which is {component}", found.len()),
            "say which release with `release: <namespace>/<name>`",
        ));
    } else {
        m.carriers.extend(found);
    }
}

/// The first `{repository: ..., tag: ...}` image in a values tree.
fn first_image(n: &Node) -> Option<String> {
    let repo = n.str_at(&["repository"]);
    if !repo.is_empty() && n.get("tag").is_some() {
        return Some(repo.to_string());
    }
    n.entries()
        .iter()
        .map(|(_, v)| v)
        .chain(n.items())
        .find_map(first_image)
}

/// Paths (under a values tree) of mappings `{repository: <want>, tag: ...}`.
fn image_tags(n: &Node, path: &mut Vec<String>, want: &str, out: &mut Vec<Vec<String>>) {
    if path.len() > 16 {
        return;
    }
    if image_key(n.str_at(&["repository"])) == want && n.get("tag").is_some() {
        let mut p = path.clone();
        p.push("tag".into());
        out.push(p);
    }
    for (k, v) in n.entries() {
        if let Some(k) = k.as_str() {
            path.push(k.to_string());
            image_tags(v, path, want, out);
            path.pop();
        }
    }
    for (i, v) in n.items().iter().enumerate() {
        path.push(i.to_string());
        image_tags(v, path, want, out);
        path.pop();
    }
}

/// An image tag carrier; a tag written with its repository (`repo:tag`) keeps the repository,
/// and one pinned by digest cannot be moved.
fn tag_carrier(obj: &Obj, loc: Loc, want: &str) -> Carrier {
    let mut c = carrier(obj, Field::ImageTag, loc, None);
    let text = c.value.clone();
    let (prefix, tag) = match text.rsplit_once(':') {
        Some((repo, tag)) if image_key(repo) == want => (format!("{repo}:"), tag.to_string()),
        _ => (String::new(), text.clone()),
    };
    if let Some((tag, _)) = tag.split_once('@') {
        c.value = tag.to_string();
        c.edit = Err(format!(
            "the tag is pinned by digest ({}): upkeep cannot compute the new digest; drop `@sha256:...` to let upkeep change the tag",
            c.written
        ));
        return c;
    }
    c.value = tag;
    if let Ok(e) = &mut c.edit {
        e.prefix = prefix;
    }
    c
}

/// A value of a HelmRelease as Helm merges it: `spec.values` wins, else the last `valuesFrom`
/// that sets it. The location, and the object whose variables apply to it.
fn values_field<'a>(
    files: &Files,
    layout: &'a Layout,
    hr: &'a Obj,
    path: &[&str],
) -> Option<(Loc, Option<&'a Obj>)> {
    let full: Vec<&str> = ["spec", "values"]
        .iter()
        .copied()
        .chain(path.iter().copied())
        .collect();
    if let Some(loc) = hr.field(&full) {
        return Some((loc, None));
    }
    let refs = hr
        .doc
        .at(&["spec", "valuesFrom"])
        .map(Node::items)
        .unwrap_or_default();
    for r in refs.iter().rev() {
        let kind = match r.str_at(&["kind"]) {
            "" => "ConfigMap",
            k => k,
        };
        let name = r.str_at(&["name"]);
        let key = match r.str_at(&["valuesKey"]) {
            "" => "values.yaml",
            k => k,
        };
        let Some(src) = layout.find(kind, &hr.namespace, name) else {
            continue;
        };
        if let Some(g) = &src.generated {
            if let Some(DataSource::File(f)) = g.get(key)
                && let Some(docs) = files.docs(f)
                && let Ok(docs) = docs.as_ref()
                && let Some(n) = docs.first().and_then(|d| d.at(path))
            {
                return Some((
                    Loc {
                        file: f.clone(),
                        node: n.clone(),
                        inline: None,
                    },
                    Some(src),
                ));
            }
            continue;
        }
        if let Some(text) = src.doc.at(&["data", key])
            && let Some(body) = text.as_str()
            && let Ok(docs) = super::yaml::parse_stream(body)
            && let Some(n) = docs.first().and_then(|d| d.at(path))
        {
            return Some((
                Loc {
                    file: src.file.clone(),
                    node: n.clone(),
                    inline: Some(text.pos),
                },
                Some(src),
            ));
        }
    }
    None
}
