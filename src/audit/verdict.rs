//! The two verdicts, as pure functions of a manifest and what the evidence said.
//!
//! OSAID 1.0: open-source needs Parameters, Code and Data Information, all under open terms,
//! with no field-of-use restriction anywhere in the model or its lineage. MOF: classes III ⊂ II ⊂
//! I by component, each component open for its content type (rules in `assets/mof/`).

use serde::Serialize;

use super::licence::{ContentType, Licence, Restriction};
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
}

#[derive(Clone, Debug, Serialize)]
pub struct Judgement {
    pub osaid: Osaid,
    pub elements: Vec<Element>,
    pub mof: MofClass,
    /// Missing or closed components for the next MOF class up.
    pub mof_missing: Vec<String>,
    pub notes: Vec<String>,
}

const CODE_FOR_OSAID: &[&str] = &[
    "Model architecture",
    "Training code",
    "Inference code",
    "Data preprocessing code",
];

const CLASS_III: &[(&str, ContentType)] = &[
    ("Model architecture", ContentType::Code),
    ("Model parameters (Final)", ContentType::Data),
    ("Model card", ContentType::Document),
    ("Data card", ContentType::Document),
    ("Technical report", ContentType::Document),
    ("Evaluation results", ContentType::Document),
];
const CLASS_II: &[(&str, ContentType)] = &[
    ("Training code", ContentType::Code),
    ("Inference code", ContentType::Code),
    ("Evaluation code", ContentType::Code),
    ("Evaluation data", ContentType::Data),
];
const CLASS_I: &[(&str, ContentType)] = &[
    ("Datasets", ContentType::Data),
    ("Data preprocessing code", ContentType::Code),
    ("Model parameters (Intermediate)", ContentType::Data),
    ("Research paper", ContentType::Document),
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

/// Is the component present and open for its type?
fn open_component(m: &Manifest, name: &str, ty: ContentType) -> Result<Licence, String> {
    match component_licence(m, name, ty) {
        None => Err(format!("{name}: not released")),
        Some(l) if l.is_open_for(ty) => Ok(l),
        Some(l) => Err(format!("{name}: {l}")),
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

    let parameters = match &params {
        None => Element {
            name: "Parameters",
            ok: false,
            reason: "weights not released".into(),
        },
        Some(l) if l.is_open_for(ContentType::Data) => Element {
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
        .filter_map(|n| open_component(m, n, ContentType::Code).err())
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
    let (mof, mof_missing) = mof_class(m, findings, &mut notes);
    notes.extend(findings.disagreements.iter().cloned());
    Judgement {
        osaid,
        elements,
        mof,
        mof_missing,
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

fn content_type_of(name: &str) -> ContentType {
    CLASS_III
        .iter()
        .chain(CLASS_II)
        .chain(CLASS_I)
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .unwrap_or(match name {
            "Model metadata" => ContentType::Data,
            "Sample model outputs" => ContentType::Document,
            _ => ContentType::Code,
        })
}

fn mof_class(
    m: &Manifest,
    findings: &Findings,
    notes: &mut Vec<String>,
) -> (MofClass, Vec<String>) {
    let di_complete = data_information(m).ok;
    let check = |(name, ty): &(&str, ContentType), notes: &mut Vec<String>| -> Result<(), String> {
        let mut result = open_component(m, name, *ty);
        if *name == "Model parameters (Final)"
            && let Some(l) = &findings.parameters_licence_override
            && !l.is_open_for(*ty)
        {
            result = Err(format!("{name}: {l}"));
        }
        match (result, *name) {
            (Ok(_), _) => Ok(()),
            // A model card that carries the data information stands in for a data card.
            (Err(e), "Data card") => {
                if di_complete && open_component(m, "Model card", ContentType::Document).is_ok() {
                    notes.push("MOF: the model card stands in for the data card".into());
                    Ok(())
                } else {
                    Err(e)
                }
            }
            // A research paper stands in for a technical report.
            (Err(e), "Technical report") => {
                if open_component(m, "Research paper", ContentType::Document).is_ok() {
                    notes.push("MOF: the research paper stands in for the technical report".into());
                    Ok(())
                } else {
                    Err(e)
                }
            }
            (Err(e), _) => Err(e),
        }
    };
    let restricted = !findings.restrictions.is_empty();
    let mut class = MofClass::None;
    for (level, comps) in [
        (MofClass::III, CLASS_III),
        (MofClass::II, CLASS_II),
        (MofClass::I, CLASS_I),
    ] {
        let missing: Vec<String> = comps.iter().filter_map(|c| check(c, notes).err()).collect();
        if !missing.is_empty() || restricted {
            let mut missing = missing;
            if restricted {
                missing.push("a field-of-use restriction applies".into());
            }
            notes.dedup();
            return (class, missing);
        }
        class = level;
    }
    notes.dedup();
    (class, Vec::new())
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
