//! The two verdicts, as pure functions of a manifest and what the evidence said.
//!
//! OSAID 1.0: open-source needs Parameters, Code and Data Information, all under open terms,
//! with no field-of-use restriction anywhere in the model or its lineage. MOF: classes III ⊂ II ⊂
//! I by component, each component open for its content type (rules in `assets/mof/`).

use serde::Serialize;

use super::licence::{self, ContentType, Licence, Restriction};
use super::manifest::Manifest;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Osaid {
    // Ordered from least to most open: the lineage caps a model at its base's level.
    Restricted,
    Unknown,
    OpenWeight,
    OpenSource,
}

impl std::fmt::Display for Osaid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Osaid::Restricted => "restricted",
            Osaid::Unknown => "unknown",
            Osaid::OpenWeight => "open-weight",
            Osaid::OpenSource => "open-source",
        })
    }
}

impl std::str::FromStr for Osaid {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "open-source" => Ok(Osaid::OpenSource),
            "open-weight" => Ok(Osaid::OpenWeight),
            other => Err(format!(
                "policy {other:?}: expected \"open-source\" or \"open-weight\""
            )),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum MofClass {
    // Ordered from least to most open.
    None,
    III,
    II,
    I,
}

impl std::fmt::Display for MofClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MofClass::None => "none",
            MofClass::III => "Class III (open model)",
            MofClass::II => "Class II (open tooling)",
            MofClass::I => "Class I (open science)",
        })
    }
}

/// One OSAID element's finding.
#[derive(Clone, Debug, Serialize)]
pub struct Element {
    pub name: &'static str,
    pub ok: bool,
    pub reason: String,
}

/// What the audit found in the evidence, beyond the manifest.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Findings {
    pub restrictions: Vec<Restriction>,
    /// Label/text disagreements, each already resolved to the stricter reading.
    pub disagreements: Vec<String>,
    /// Set when evidence shows the parameters' licence is not the manifest's label.
    pub parameters_licence_override: Option<Licence>,
    /// Components whose licence text (`license_path`) showed stricter terms than their label:
    /// the stricter reading applies.
    pub component_overrides: Vec<(String, Licence)>,
    /// Components whose licence text could not be read here (a URL: no network at run
    /// time; or a path that is not there), with the path and why: judged on their label
    /// alone, which proves openness only as an exact SPDX id.
    pub unverified: Vec<Unverified>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Unverified {
    pub component: String,
    pub path: String,
    pub why: String,
}

impl Findings {
    fn is_unverified(&self, component: &str) -> bool {
        self.unverified
            .iter()
            .any(|u| u.component.eq_ignore_ascii_case(component))
    }

    /// What the evidence says the component's licence really is, when it overrides the label.
    fn override_for(&self, component: &str) -> Option<&Licence> {
        if component == "Model parameters (Final)"
            && let Some(l) = &self.parameters_licence_override
        {
            return Some(l);
        }
        self.component_overrides
            .iter()
            .find(|(c, _)| c.eq_ignore_ascii_case(component))
            .map(|(_, l)| l)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Judgement {
    pub osaid: Osaid,
    pub elements: Vec<Element>,
    pub mof: MofClass,
    /// Missing or closed components for the next MOF class up.
    pub mof_missing: Vec<String>,
    /// Open licences of the wrong content type (the Model Openness Tool warns, and counts them).
    pub mof_warnings: Vec<String>,
    pub notes: Vec<String>,
}

const CODE_FOR_OSAID: &[&str] = &[
    "Model architecture",
    "Training code",
    "Inference code",
    "Data preprocessing code",
];

/// One MOF component, as the Model Openness Tool's `mof.settings.yml` defines it.
struct MofComponent {
    name: &'static str,
    ty: ContentType,
    /// The lowest class that requires it (3 = Class III … 1 = Class I).
    class: u8,
    required: bool,
}

const fn comp(name: &'static str, ty: ContentType, class: u8, required: bool) -> MofComponent {
    MofComponent {
        name,
        ty,
        class,
        required,
    }
}

const MOF_COMPONENTS: &[MofComponent] = &[
    comp("Model architecture", ContentType::Code, 3, true),
    comp("Model parameters (Final)", ContentType::Data, 3, true),
    comp("Evaluation results", ContentType::Document, 3, true),
    comp("Model card", ContentType::Document, 3, true),
    comp("Data card", ContentType::Document, 3, true),
    comp("Technical report", ContentType::Document, 3, true),
    comp("Sample model outputs", ContentType::Document, 3, false),
    comp("Training code", ContentType::Code, 2, true),
    comp("Inference code", ContentType::Code, 2, true),
    comp("Evaluation code", ContentType::Code, 2, true),
    comp("Evaluation data", ContentType::Data, 2, true),
    comp(
        "Supporting libraries and tools",
        ContentType::Code,
        2,
        false,
    ),
    comp("Datasets", ContentType::Data, 1, true),
    comp("Data preprocessing code", ContentType::Code, 1, true),
    comp(
        "Model parameters (Intermediate)",
        ContentType::Data,
        1,
        true,
    ),
    comp("Model metadata", ContentType::Data, 1, false),
    comp("Research paper", ContentType::Document, 1, true),
];

/// Licence names that are field-of-use licences by family, whatever text accompanies them.
const RESTRICTIVE_NAME_FAMILIES: &[&str] = &[
    "llama",
    "gemma",
    "rail",
    "qwen",
    "tongyi",
    "-nc",
    "noncommercial",
    "non-commercial",
    "research",
];

fn restrictive_name(l: &Licence) -> Option<String> {
    let name = match l {
        Licence::Other(n) => n.to_lowercase(),
        Licence::Spdx(id) => id.to_lowercase(),
        _ => return None,
    };
    RESTRICTIVE_NAME_FAMILIES
        .iter()
        .find(|f| name.contains(*f))
        .map(|f| format!("licence {l} belongs to a field-of-use family ({f})"))
}

fn component_licence(m: &Manifest, name: &str, ty: ContentType) -> Option<Licence> {
    m.component(name).map(|c| m.licence_of(c, ty))
}

/// Is the component present and under open terms (sotto's reading, evidence applied)?
fn open_component(
    m: &Manifest,
    findings: &Findings,
    name: &str,
    ty: ContentType,
) -> Result<Licence, String> {
    let licence = match (component_licence(m, name, ty), findings.override_for(name)) {
        (None, _) => return Err(format!("{name}: not released")),
        (Some(_), Some(stricter)) if !stricter.is_open_terms() => stricter.clone(),
        (Some(l), _) => l,
    };
    if licence.is_open_terms() {
        Ok(licence)
    } else {
        Err(format!("{name}: {licence}"))
    }
}

/// Judges a manifest on its own, given what the evidence showed. Lineage is applied by
/// [`cap_by_lineage`].
pub fn judge(m: &Manifest, findings: &Findings) -> Judgement {
    let mut notes = Vec::new();
    let params = findings
        .parameters_licence_override
        .clone()
        .or_else(|| component_licence(m, "Model parameters (Final)", ContentType::Data));
    let mut restricted: Vec<String> = findings
        .restrictions
        .iter()
        .map(|r| format!("{}: \"{}\"", r.family, r.quote))
        .collect();
    for c in &m.release.components {
        let ty = content_type_of(&c.name);
        if c.name == "Datasets" || c.name == "Evaluation data" {
            // Training data need not be openly licensed under OSAID; MOF judges it below.
            continue;
        }
        if let Some(r) = restrictive_name(&m.licence_of(c, ty)) {
            restricted.push(format!("{}: {r}", c.name));
        }
    }
    restricted.dedup();

    let params_raw = m
        .component("Model parameters (Final)")
        .and_then(|c| m.licence_raw(c, ContentType::Data));
    let label_only_free_text = findings.parameters_licence_override.is_none()
        && findings.is_unverified("Model parameters (Final)")
        && params.as_ref().and_then(Licence::spdx_id) != params_raw.as_deref();
    let parameters = match &params {
        Some(_) if label_only_free_text => Element {
            name: "Parameters",
            ok: false,
            reason: format!(
                "weights labelled {:?}, not an SPDX id, and their licence text cannot be read \
                 here: the label proves no licence",
                params_raw.unwrap_or_default()
            ),
        },
        None => Element {
            name: "Parameters",
            ok: false,
            reason: "weights not released".into(),
        },
        Some(l) if l.is_open_terms() => Element {
            name: "Parameters",
            ok: true,
            reason: format!("weights under {l}"),
        },
        Some(l) => Element {
            name: "Parameters",
            ok: false,
            reason: format!("weights under {l}, not open terms"),
        },
    };
    let code_missing: Vec<String> = CODE_FOR_OSAID
        .iter()
        .filter_map(|n| open_component(m, findings, n, ContentType::Code).err())
        .collect();
    let code = Element {
        name: "Code",
        ok: code_missing.is_empty(),
        reason: if code_missing.is_empty() {
            "architecture, training, data processing and inference code under open licences".into()
        } else {
            code_missing.join("; ")
        },
    };
    let data = data_information(m);
    let osaid = if !restricted.is_empty() {
        Osaid::Restricted
    } else if !parameters.ok {
        match params {
            Some(Licence::Spdx(_)) | None => Osaid::Unknown,
            _ => Osaid::Unknown,
        }
    } else if code.ok && data.ok {
        Osaid::OpenSource
    } else {
        Osaid::OpenWeight
    };
    let mut elements = vec![parameters, code, data];
    if !restricted.is_empty() {
        elements.push(Element {
            name: "Field of use",
            ok: false,
            reason: restricted.join("; "),
        });
    }
    let mof = mof_class(m, findings, data_information(m).ok);
    notes.extend(mof.notes);
    notes.extend(findings.disagreements.iter().cloned());
    // One note per licence path that could not be read, naming the components it covers.
    let mut paths: Vec<(&str, &str, Vec<&str>)> = Vec::new();
    for u in &findings.unverified {
        match paths.iter_mut().find(|(p, _, _)| *p == u.path) {
            Some((_, _, comps)) => comps.push(&u.component),
            None => paths.push((&u.path, &u.why, vec![&u.component])),
        }
    }
    for (path, why, comps) in paths {
        notes.push(format!(
            "unverified: the licence text {path} is {why}; {} judged on the label alone",
            comps.join(", ")
        ));
    }
    Judgement {
        osaid,
        elements,
        mof: mof.class,
        mof_missing: mof.missing,
        mof_warnings: mof.warnings,
        notes,
    }
}

fn data_information(m: &Manifest) -> Element {
    if let Some(di) = m.sotto.as_ref().and_then(|s| s.data_information.as_ref()) {
        return Element {
            name: "Data Information",
            ok: di.complete,
            reason: di.reason.clone(),
        };
    }
    // A plain MOF file: the data must be listed (with any licence but undisclosed) and
    // described in a data card, model card, technical report or paper.
    let listed = component_licence(m, "Datasets", ContentType::Data)
        .is_some_and(|l| l != Licence::Undisclosed);
    let described = [
        "Data card",
        "Model card",
        "Technical report",
        "Research paper",
    ]
    .iter()
    .any(|n| m.component(n).is_some());
    Element {
        name: "Data Information",
        ok: listed && described,
        reason: match (listed, described) {
            (true, true) => "training data listed and described".into(),
            (false, _) => "training data not disclosed".into(),
            (true, false) => "training data listed but not described".into(),
        },
    }
}

pub(crate) fn content_type_of(name: &str) -> ContentType {
    MOF_COMPONENTS
        .iter()
        .find(|c| c.name.eq_ignore_ascii_case(name.trim()))
        .map(|c| c.ty)
        .unwrap_or(ContentType::Code)
}

/// How a component stands for MOF.
#[derive(Clone, Debug, PartialEq)]
enum Status {
    Missing,
    /// Under an open licence; `type_ok` when the licence is one for its content type.
    Included {
        licence: String,
        type_ok: bool,
    },
    Unlicensed,
    NotOpen(String),
}

/// Whose rules decide what an open licence is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// The Model Openness Tool's, exactly: ids as written, its lists and flags.
    Tool,
    /// sotto's: free-text names normalised, open-data licences off the Tool's lists counted
    /// as open, a model card that documents the data standing in for the data card.
    Sotto,
}

fn status(m: &Manifest, findings: &Findings, c: &MofComponent, reading: Reading) -> Status {
    let Some(component) = m.component(c.name) else {
        return Status::Missing;
    };
    if let Some(stricter) = findings.override_for(c.name)
        && !stricter.is_open_terms()
    {
        return Status::NotOpen(stricter.to_string());
    }
    let Some(raw) = m.licence_raw(component, c.ty) else {
        return Status::Unlicensed;
    };
    let (id, open) = match reading {
        Reading::Tool => (raw.clone(), licence::mot_is_open(&raw)),
        Reading::Sotto => match Licence::from_name(&raw) {
            Licence::Spdx(id) => {
                // A label whose text cannot be read proves openness only as an exact id.
                let unverified = findings.is_unverified(c.name);
                let open = Licence::Spdx(id.clone()).is_open_terms() && (!unverified || id == raw);
                (id, open)
            }
            Licence::Unlicensed => return Status::Unlicensed,
            other => (other.to_string(), false),
        },
    };
    if open {
        let type_ok = licence::type_appropriate(&id, c.ty)
            || (reading == Reading::Sotto
                && c.ty != ContentType::Code
                && licence::OPEN_DATA.contains(&id.as_str()));
        Status::Included {
            licence: id,
            type_ok,
        }
    } else if raw.trim().eq_ignore_ascii_case("unlicensed") {
        Status::Unlicensed
    } else {
        Status::NotOpen(raw)
    }
}

struct MofResult {
    class: MofClass,
    missing: Vec<String>,
    warnings: Vec<String>,
    notes: Vec<String>,
}

/// The class one reading gives, and what the next class up lacks.
fn classify(
    m: &Manifest,
    findings: &Findings,
    reading: Reading,
    data_information: bool,
) -> (MofClass, Vec<String>) {
    let statuses: Vec<(&MofComponent, Status)> = MOF_COMPONENTS
        .iter()
        .map(|c| (c, status(m, findings, c, reading)))
        .collect();
    let included = |name: &str| {
        statuses
            .iter()
            .any(|(c, s)| c.name == name && matches!(s, Status::Included { .. }))
    };
    let why = |c: &MofComponent, s: &Status| match s {
        Status::Missing => format!("{}: not released", c.name),
        Status::Unlicensed => format!("{}: unlicensed", c.name),
        Status::NotOpen(l) => format!("{}: {l} is not an open licence", c.name),
        Status::Included { .. } => String::new(),
    };
    let mut class = MofClass::None;
    for (level, number) in [(MofClass::III, 3), (MofClass::II, 2), (MofClass::I, 1)] {
        let mut lacking = Vec::new();
        for (c, s) in statuses
            .iter()
            .filter(|(c, _)| c.required && c.class >= number)
        {
            if matches!(s, Status::Included { .. }) {
                continue;
            }
            // The research paper may stand in for the technical report (the Tool's only
            // substitution).
            if c.name == "Technical report" && included("Research paper") {
                continue;
            }
            if reading == Reading::Sotto
                && c.name == "Data card"
                && data_information
                && included("Model card")
            {
                continue;
            }
            lacking.push(why(c, s));
        }
        if !lacking.is_empty() {
            return (class, lacking);
        }
        class = level;
    }
    (class, Vec::new())
}

fn mof_class(m: &Manifest, findings: &Findings, data_information: bool) -> MofResult {
    let (class, missing) = classify(m, findings, Reading::Tool, data_information);
    let mut warnings = Vec::new();
    let mut notes = Vec::new();
    let mut substituted = false;
    for c in MOF_COMPONENTS {
        match status(m, findings, c, Reading::Tool) {
            Status::Included { licence, type_ok } if !type_ok => warnings.push(format!(
                "{} is under {licence}, which the MOF does not list for {}: an open licence \
                 of the wrong type (counted, with this warning)",
                c.name,
                type_name(c.ty)
            )),
            Status::Missing if c.name == "Technical report" => {
                substituted = m.component("Research paper").is_some();
            }
            _ => {}
        }
    }
    if substituted && class >= MofClass::III {
        notes.push("MOF: the research paper stands in for the technical report".into());
    }
    // Where sotto's reading differs, it says so beside the class, never by changing it.
    let (sotto_class, _) = classify(m, findings, Reading::Sotto, data_information);
    if sotto_class > class {
        let mut reasons = Vec::new();
        let needed = match sotto_class {
            MofClass::I => 1,
            MofClass::II => 2,
            _ => 3,
        };
        for c in MOF_COMPONENTS.iter().filter(|c| c.class >= needed) {
            let tool = status(m, findings, c, Reading::Tool);
            let ours = status(m, findings, c, Reading::Sotto);
            let (Status::Included { licence, .. }, false) =
                (&ours, matches!(tool, Status::Included { .. }))
            else {
                continue;
            };
            let raw = m
                .component(c.name)
                .and_then(|comp| m.licence_raw(comp, c.ty))
                .unwrap_or_default();
            if raw != *licence {
                reasons.push(format!("{}'s \"{raw}\" read as {licence}", c.name));
            } else if licence::OPEN_DATA.contains(&licence.as_str()) {
                reasons.push(format!(
                    "{} under {licence}, an open-data licence the Tool's lists do not carry",
                    c.name
                ));
            }
        }
        if m.component("Data card").is_none()
            && data_information
            && m.component("Model card").is_some()
        {
            reasons.push("the model card documenting the data in place of a data card".into());
        }
        notes.push(format!(
            "MOF: by the Model Openness Tool's rules {class}; with {}, it would be {sotto_class}",
            reasons.join(", and ")
        ));
    }
    MofResult {
        class,
        missing,
        warnings,
        notes,
    }
}

fn type_name(ty: ContentType) -> &'static str {
    match ty {
        ContentType::Code => "code",
        ContentType::Data => "data",
        ContentType::Document => "documents",
    }
}

/// Caps a judgement by its base model's: a fine-tune is no more open than what it came from.
pub fn cap_by_lineage(j: &mut Judgement, base_id: &str, base: &Judgement) {
    if base.osaid < j.osaid {
        j.notes.push(format!(
            "lineage: base model {base_id} is {}, which caps this model",
            base.osaid
        ));
        j.osaid = base.osaid;
    }
    if base.mof < j.mof {
        j.notes.push(format!(
            "lineage: base model {base_id} reaches MOF {}, which caps this model",
            base.mof
        ));
        j.mof = base.mof;
    }
}
