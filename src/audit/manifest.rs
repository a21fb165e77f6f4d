//! Model manifests in the Model Openness Framework YAML format (the Model Openness Tool's),
//! extended under a `sotto:` key with what the audit needs and MOF lacks: the sha256 of each
//! weight file, the base model (lineage), the evidence files, and an honest statement of what
//! is known about the training data.
//!
//! The registry of manifests sotto knows ships in `assets/manifests/` and is compiled in.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::licence::{ContentType, Licence};

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read manifest {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid MOF manifest: {reason}")]
    Invalid { path: String, reason: String },
}

/// An error message cut to a readable length, keeping its end (where the line and column are).
fn shorten(message: &str) -> String {
    const HEAD: usize = 200;
    const TAIL: usize = 80;
    let chars: Vec<char> = message.chars().collect();
    if chars.len() <= HEAD + TAIL + 20 {
        return message.to_string();
    }
    let head: String = chars[..HEAD].iter().collect();
    let tail: String = chars[chars.len() - TAIL..].iter().collect();
    format!(
        "{head} … ({} characters cut) … {tail}",
        chars.len() - HEAD - TAIL
    )
}

/// The largest manifest read: MOF manifests are a few KiB.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// A whole manifest file.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Manifest {
    pub framework: Framework,
    pub release: Release,
    /// sotto's extension; absent in third-party MOF files.
    #[serde(default)]
    pub sotto: Option<Extension>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Framework {
    pub name: String,
    #[serde(default)]
    pub version: Option<serde_norway::Value>,
    #[serde(default)]
    pub date: Option<serde_norway::Value>,
}

/// `release`: MOT files carry more keys (repository, huggingface, treatment…); they are kept
/// out of the way rather than rejected.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Release {
    pub name: String,
    #[serde(default)]
    pub version: Option<serde_norway::Value>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub architecture: Option<String>,
    #[serde(default)]
    pub origin: Option<String>,
    #[serde(default)]
    pub producer: Option<String>,
    #[serde(default)]
    pub contact: Option<String>,
    #[serde(default)]
    pub license: Option<ReleaseLicences>,
    #[serde(default)]
    pub components: Vec<Component>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ReleaseLicences {
    #[serde(default)]
    pub distribution: Option<NamePath>,
    #[serde(default)]
    pub code: Option<NamePath>,
    #[serde(default)]
    pub data: Option<NamePath>,
    #[serde(default)]
    pub document: Option<NamePath>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct NamePath {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Component {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// `license_name` in the Model Openness Tool's older files.
    #[serde(default, alias = "license_name")]
    pub license: Option<String>,
    #[serde(default)]
    pub license_path: Option<String>,
    /// `location` in the older files.
    #[serde(default, alias = "location")]
    pub component_path: Option<String>,
}

/// The `sotto:` extension.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Extension {
    /// The name sotto uses for the model (`whisper-tiny.en`).
    pub id: String,
    /// Weight files, relative to the models directory, with their sha256.
    #[serde(default)]
    pub weights: Vec<WeightFile>,
    /// The id of the manifest this model was fine-tuned or converted from.
    #[serde(default)]
    pub base_model: Option<String>,
    /// Files under the models directory that carry licence, use-policy or model-card text.
    #[serde(default)]
    pub evidence: Vec<Evidence>,
    /// Whether the training data is described completely enough to rebuild the model
    /// (OSAID's Data Information), with the reason.
    #[serde(default)]
    pub data_information: Option<DataInformation>,
    /// Where a user can get a fully open alternative.
    #[serde(default)]
    pub remedy: Option<String>,
    /// Published verdicts this manifest reproduces (OSI's validation), for reference models.
    #[serde(default)]
    pub published_verdict: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WeightFile {
    pub path: String,
    pub sha256: String,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    pub path: String,
    pub kind: EvidenceKind,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum EvidenceKind {
    /// A licence text for the weights or the release.
    Licence,
    /// Terms of use or a use policy.
    Terms,
    ModelCard,
    /// Package metadata that states a licence.
    PackageMetadata,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DataInformation {
    pub complete: bool,
    pub reason: String,
}

impl Manifest {
    pub fn parse(name: &str, text: &str) -> Result<Self, ManifestError> {
        let m: Manifest = serde_norway::from_str(text).map_err(|e| ManifestError::Invalid {
            path: name.to_string(),
            // The YAML error quotes the offending value, which may be megabytes long.
            reason: shorten(&e.to_string()),
        })?;
        if m.framework.name != "Model Openness Framework" {
            return Err(ManifestError::Invalid {
                path: name.to_string(),
                reason: format!(
                    "framework.name is {:?}, expected \"Model Openness Framework\"",
                    m.framework.name
                ),
            });
        }
        if m.release.name.trim().is_empty() {
            return Err(ManifestError::Invalid {
                path: name.to_string(),
                reason: "release.name is empty".into(),
            });
        }
        Ok(m)
    }

    /// Reads the manifest at `path`: a regular file of at most [`MAX_MANIFEST_BYTES`] (a
    /// MOF manifest is a few KiB; a pipe, a device or a huge file is refused, not read).
    pub fn read(path: &Path) -> Result<Self, ManifestError> {
        let io = |source| ManifestError::Io {
            path: path.display().to_string(),
            source,
        };
        let bytes =
            crate::models::read_regular(path, MAX_MANIFEST_BYTES, "a manifest").map_err(io)?;
        let text = String::from_utf8(bytes).map_err(|_| ManifestError::Invalid {
            path: path.display().to_string(),
            reason: "not UTF-8 text".into(),
        })?;
        Self::parse(&path.display().to_string(), &text)
    }

    /// The id of this model: the extension's, else the release name.
    pub fn id(&self) -> &str {
        self.sotto
            .as_ref()
            .map(|s| s.id.as_str())
            .unwrap_or(&self.release.name)
    }

    /// A released component by name. The Model Openness Tool's "Component not included"
    /// marks one that is listed but was not released.
    pub fn component(&self, name: &str) -> Option<&Component> {
        self.release.components.iter().find(|c| {
            c.name.trim().eq_ignore_ascii_case(name)
                && !c
                    .license
                    .as_deref()
                    .is_some_and(|l| l.trim().eq_ignore_ascii_case("Component not included"))
        })
    }

    /// The licence id that applies to a component, as the Model Openness Tool resolves it: the
    /// component's own `license` when the key is there (empty: none), else the release licence
    /// for its content type, else the distribution licence. Exactly as written.
    pub fn licence_raw(&self, component: &Component, ty: ContentType) -> Option<String> {
        if let Some(own) = &component.license {
            return Some(own.clone()).filter(|l| !l.is_empty());
        }
        self.release_licences(ty)
            .find_map(|np| np.name.clone().filter(|n| !n.is_empty()))
    }

    /// The release licences a component of type `ty` inherits, in order: the one for its
    /// content type, then the distribution licence.
    fn release_licences(&self, ty: ContentType) -> impl Iterator<Item = &NamePath> {
        let defaults = self.release.license.as_ref();
        let by_type = defaults.and_then(|d| match ty {
            ContentType::Code => d.code.as_ref(),
            ContentType::Data => d.data.as_ref(),
            ContentType::Document => d.document.as_ref(),
        });
        [by_type, defaults.and_then(|d| d.distribution.as_ref())]
            .into_iter()
            .flatten()
    }

    /// Where the licence text of a component is said to be: its own `license_path`, else that
    /// of the release licence it inherits.
    pub fn licence_path_of(&self, component: &Component, ty: ContentType) -> Option<String> {
        if component.license.is_some() {
            return component
                .license_path
                .clone()
                .filter(|p| !p.trim().is_empty());
        }
        let defaults = self.release.license.clone().unwrap_or_default();
        let by_type = match ty {
            ContentType::Code => defaults.code,
            ContentType::Data => defaults.data,
            ContentType::Document => defaults.document,
        };
        let inherited = [by_type, defaults.distribution]
            .into_iter()
            .flatten()
            .find(|np| np.name.as_ref().is_some_and(|n| !n.is_empty()));
        inherited
            .and_then(|np| np.path)
            .or_else(|| component.license_path.clone())
            .filter(|p| !p.trim().is_empty())
    }

    /// The licence that applies to a component, per the MOF rule: its own licence, else the
    /// release default for its content type, else the distribution licence, else none.
    pub fn licence_of(&self, component: &Component, ty: ContentType) -> Licence {
        if let Some(own) = &component.license {
            return Licence::from_name(own);
        }
        self.release_licences(ty)
            .find_map(|np| np.name.as_deref().filter(|n| !n.trim().is_empty()))
            .map(Licence::from_name)
            .unwrap_or(Licence::Undisclosed)
    }
}

/// The manifests sotto ships, by file name.
pub const REGISTRY: &[(&str, &str)] = &[
    (
        "whisper-tiny.en.yml",
        include_str!("../../assets/manifests/whisper-tiny.en.yml"),
    ),
    (
        "whisper-base.yml",
        include_str!("../../assets/manifests/whisper-base.yml"),
    ),
    (
        "smollm2-135m-instruct.yml",
        include_str!("../../assets/manifests/smollm2-135m-instruct.yml"),
    ),
    (
        "smollm2-135m.yml",
        include_str!("../../assets/manifests/smollm2-135m.yml"),
    ),
    (
        "piper-en_US-joe-medium.yml",
        include_str!("../../assets/manifests/piper-en_US-joe-medium.yml"),
    ),
    (
        "piper-en_US-lessac-medium.yml",
        include_str!("../../assets/manifests/piper-en_US-lessac-medium.yml"),
    ),
    (
        "piper-en_US-ljspeech-medium.yml",
        include_str!("../../assets/manifests/piper-en_US-ljspeech-medium.yml"),
    ),
    (
        "piper-fr_FR-mls-medium.yml",
        include_str!("../../assets/manifests/piper-fr_FR-mls-medium.yml"),
    ),
    (
        "piper-de_DE-thorsten-medium.yml",
        include_str!("../../assets/manifests/piper-de_DE-thorsten-medium.yml"),
    ),
    (
        "piper-fr_FR-siwis-medium.yml",
        include_str!("../../assets/manifests/piper-fr_FR-siwis-medium.yml"),
    ),
    (
        "gemma-3-270m.yml",
        include_str!("../../assets/manifests/gemma-3-270m.yml"),
    ),
    (
        "olmoasr-tiny.en.yml",
        include_str!("../../assets/manifests/olmoasr-tiny.en.yml"),
    ),
    (
        "olmoasr-base.en.yml",
        include_str!("../../assets/manifests/olmoasr-base.en.yml"),
    ),
    (
        "olmoasr-small.en.yml",
        include_str!("../../assets/manifests/olmoasr-small.en.yml"),
    ),
    (
        "olmoasr-medium.en.yml",
        include_str!("../../assets/manifests/olmoasr-medium.en.yml"),
    ),
    (
        "olmoasr-large.en-v1.yml",
        include_str!("../../assets/manifests/olmoasr-large.en-v1.yml"),
    ),
    (
        "olmoasr-large.en-v2.yml",
        include_str!("../../assets/manifests/olmoasr-large.en-v2.yml"),
    ),
    (
        "smollm2-360m-instruct.yml",
        include_str!("../../assets/manifests/smollm2-360m-instruct.yml"),
    ),
    (
        "smollm2-360m.yml",
        include_str!("../../assets/manifests/smollm2-360m.yml"),
    ),
    (
        "smollm2-1.7b-instruct.yml",
        include_str!("../../assets/manifests/smollm2-1.7b-instruct.yml"),
    ),
    (
        "smollm2-1.7b.yml",
        include_str!("../../assets/manifests/smollm2-1.7b.yml"),
    ),
    (
        "silero-vad.yml",
        include_str!("../../assets/manifests/silero-vad.yml"),
    ),
    (
        "pythia-6.9b.yml",
        include_str!("../../assets/manifests/pythia-6.9b.yml"),
    ),
    (
        "olmo-7b.yml",
        include_str!("../../assets/manifests/olmo-7b.yml"),
    ),
    (
        "llama-2-7b.yml",
        include_str!("../../assets/manifests/llama-2-7b.yml"),
    ),
];

/// The registry, parsed once per process: (file name, manifest or why it is invalid).
fn registry_parsed() -> &'static [(&'static str, Result<Manifest, String>)] {
    static PARSED: std::sync::OnceLock<Vec<(&str, Result<Manifest, String>)>> =
        std::sync::OnceLock::new();
    PARSED.get_or_init(|| {
        REGISTRY
            .iter()
            .map(|(name, text)| {
                let m = Manifest::parse(name, text).map_err(|e| match e {
                    ManifestError::Invalid { reason, .. } => reason,
                    other => other.to_string(),
                });
                (*name, m)
            })
            .collect()
    })
}

/// Every valid registry manifest.
pub fn registry_manifests() -> impl Iterator<Item = &'static Manifest> {
    registry_parsed()
        .iter()
        .filter_map(|(_, m)| m.as_ref().ok())
}

/// Finds a registry manifest by model id.
pub fn registry_manifest(id: &str) -> Option<Result<Manifest, ManifestError>> {
    registry_parsed().iter().find_map(|(name, m)| match m {
        Ok(m) if m.id() == id => Some(Ok(m.clone())),
        Err(reason) if name.trim_end_matches(".yml") == id => Some(Err(ManifestError::Invalid {
            path: name.to_string(),
            reason: reason.clone(),
        })),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registry_manifest_parses() {
        for (name, text) in REGISTRY {
            let m = Manifest::parse(name, text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(format!("{}.yml", m.id()), *name);
        }
    }

    #[test]
    fn the_mof_sample_parses_and_inherits_licences() {
        let m = Manifest::parse(
            "sample",
            include_str!("../../tests/fixtures/mof/sample_model.yml"),
        )
        .unwrap();
        let c = m.component("Training code").unwrap();
        assert_eq!(
            m.licence_of(c, ContentType::Code),
            Licence::Spdx("MIT".into())
        );
        let c = m.component("Model parameters (Intermediate)").unwrap();
        assert_eq!(
            m.licence_of(c, ContentType::Data),
            Licence::Spdx("Apache-2.0".into())
        );
        let c = m.component("Model architecture").unwrap();
        assert_eq!(m.licence_of(c, ContentType::Code), Licence::Unlicensed);
    }

    #[test]
    fn malformed_yaml_is_an_error() {
        for text in [
            "",
            "[",
            "framework: 3",
            "framework:\n  name: Other\nrelease:\n  name: x\n",
            ":\n -",
        ] {
            assert!(Manifest::parse("bad", text).is_err(), "{text:?}");
        }
    }
}
