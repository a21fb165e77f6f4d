//! The startup openness audit: before any weights are read into an engine, every model is
//! identified (sha256 of each weight file, file metadata, licence texts, lineage) and judged
//! against the OSI Open Source AI Definition 1.0 and the Model Openness Framework.
//!
//! Under the default policy only `open-source` models load. A model below the policy stops
//! startup with a report, unless the user recorded an exception pinned to the exact bytes
//! (`sotto audit accept`). Engines take an [`AuditPass`], which only [`gate`] makes: no engine
//! can be built before the audit has passed.
//!
//! Runs on the main thread at startup. Hashes are cached by path, size and mtime, and licence
//! analyses by the evidence file's hash, so a warm start costs milliseconds.

pub mod identity;
pub mod licence;
pub mod manifest;
pub mod verdict;

use std::path::{Path, PathBuf};

use serde::Serialize;

use identity::{FileIdentity, HashCache};
use licence::{ContentType, Licence};
use manifest::{EvidenceKind, Manifest};
use serde::Deserialize;
use verdict::{Findings, Judgement, MofClass, Osaid};

/// Exit code of a command refused by the audit.
pub const EXIT_REFUSED: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    #[error(transparent)]
    Model(#[from] crate::models::ModelError),
    #[error("model {0:?} is not in sotto's manifest registry (known: {1})")]
    UnknownModel(String, String),
    #[error("lineage of {0} loops back on itself")]
    LineageLoop(String),
}

/// Where the audit reads from.
pub struct AuditContext {
    /// Base directory for the weight and evidence paths of registry manifests.
    pub models_dir: PathBuf,
    pub cache: HashCache,
}

/// One model's full report.
#[derive(Clone, Debug, Serialize)]
pub struct ModelReport {
    pub id: String,
    pub name: String,
    /// Who made it and where it is from, as its manifest says (`release.producer`,
    /// `release.contact`): what a Wyoming `info` attributes it to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub producer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    /// `release.version` of its manifest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub files: Vec<FileIdentity>,
    pub identity_ok: bool,
    pub evidence: Vec<EvidenceReport>,
    pub lineage: Vec<LineageStep>,
    pub judgement: Judgement,
    pub findings: Findings,
    pub remedy: Option<String>,
    /// A model added under a name of the user's whose bytes are a release sotto knows: that
    /// release's id. An exception recorded for the release's bytes admits it too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// Set by the gate.
    pub admitted: Option<Admission>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LineageStep {
    pub id: String,
    pub osaid: Osaid,
    pub mof: MofClass,
}

#[derive(Clone, Debug, Serialize)]
pub struct EvidenceReport {
    pub path: String,
    pub kind: EvidenceKind,
    pub found: bool,
    pub analysis: Option<identity::EvidenceAnalysis>,
    /// The MOF component whose `license_path` or `component_path` named it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// Why it was not read (a URL: no network at run time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unverified: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "by", rename_all = "kebab-case")]
pub enum Admission {
    Policy,
    Exception { reason: String, recorded: String },
}

impl AuditContext {
    pub fn new(models_dir: &Path) -> Self {
        Self {
            models_dir: models_dir.to_path_buf(),
            cache: HashCache::load_default(),
        }
    }

    /// Audits a registry model by id, or a model file by path (which, without a manifest,
    /// is `unknown`).
    pub fn audit_id(&mut self, id: &str) -> Result<ModelReport, AuditError> {
        let found = manifest::registry_manifest(id);
        if found.is_none()
            && let Some((dir, record)) = crate::models::user::find(id)
        {
            return self.audit_user_model(&dir, &record);
        }
        if found.is_none() && Path::new(id).is_file() {
            return self.audit_bare_file(Path::new(id));
        }
        let m = found.ok_or_else(|| {
            let known: Vec<String> = manifest::REGISTRY
                .iter()
                .map(|(n, _)| n.trim_end_matches(".yml").to_string())
                .collect();
            AuditError::UnknownModel(id.to_string(), known.join(", "))
        })??;
        let base = self.models_dir.clone();
        self.audit_manifest(&m, &base, &mut Vec::new())
    }

    /// A model added with `sotto models add`: judged by its own manifest when it came with one;
    /// else, when its bytes are a release sotto knows (sha256 of every weight file), by that
    /// release's manifest; else it is a bare file, `unknown`.
    fn audit_user_model(
        &mut self,
        dir: &Path,
        record: &crate::models::user::Record,
    ) -> Result<ModelReport, AuditError> {
        if record.manifest {
            let m = Manifest::read(&dir.join("manifest.yml"))?;
            return self.audit_manifest(&m, dir, &mut Vec::new());
        }
        for registered in manifest::registry_manifests() {
            let mut m = registered.clone();
            let Some(ext) = m.sotto.as_mut() else {
                continue;
            };
            // Every weight file of the release is among the added files, byte for byte.
            let found: Vec<Option<&crate::models::user::FileHash>> = ext
                .weights
                .iter()
                .map(|w| {
                    record
                        .files
                        .iter()
                        .find(|f| w.sha256.eq_ignore_ascii_case(&f.sha256))
                })
                .collect();
            if ext.weights.is_empty() || found.iter().any(Option::is_none) {
                continue;
            }
            // These bytes are that release: judge them where they are, with its evidence.
            for (w, f) in ext.weights.iter_mut().zip(found.into_iter().flatten()) {
                w.path = dir.join(&f.path).display().to_string();
            }
            let base = self.models_dir.clone();
            let mut r = self.audit_manifest(&m, &base, &mut Vec::new())?;
            r.judgement.notes.insert(
                0,
                format!(
                    "{}: its sha256 is that of the known release {}, judged by its manifest",
                    record.name, r.id
                ),
            );
            // Named as the user named it: what `--stt-model`, `audit` and `audit accept` take.
            r.release = Some(std::mem::replace(&mut r.id, record.name.clone()));
            return Ok(r);
        }
        let first = record.weights().next().map(|f| dir.join(&f.path));
        let path = first.unwrap_or_else(|| dir.join("model.toml"));
        let mut r = self.audit_bare_file(&path)?;
        r.id = record.name.clone();
        r.name = record.name.clone();
        r.remedy = Some(format!(
            "add it again with its manifest: sotto models add {} --manifest FILE.yml --name {} \
             (after removing {}), or admit these bytes: sotto audit accept {}",
            record.source.path,
            record.name,
            dir.display(),
            record.name
        ));
        Ok(r)
    }

    /// A model file no manifest describes: identified, but nothing is known of its licence,
    /// code or data, so it is `unknown` — never open by default.
    fn audit_bare_file(&mut self, path: &Path) -> Result<ModelReport, AuditError> {
        let id = path.display().to_string();
        let file = self.cache.identify(path, &id)?;
        let mut findings = Findings::default();
        if let Some(declared) = file.metadata.get("general.license") {
            findings.disagreements.push(format!(
                "the file declares general.license = {declared:?}, but no manifest backs it"
            ));
        }
        let judgement = Judgement {
            osaid: Osaid::Unknown,
            elements: vec![verdict::Element {
                name: "Manifest",
                ok: false,
                reason: "no manifest describes this file: its licence, code, data and lineage are unknown".into(),
            }],
            mof: MofClass::None,
            mof_missing: Vec::new(),
            mof_warnings: Vec::new(),
            notes: findings.disagreements.clone(),
        };
        Ok(ModelReport {
            id: id.clone(),
            name: id,
            producer: None,
            contact: None,
            version: None,
            identity_ok: true,
            files: vec![file],
            evidence: Vec::new(),
            lineage: Vec::new(),
            judgement,
            findings,
            remedy: Some(
                "write a MOF manifest for it and judge it with `sotto audit --manifest FILE.yml`"
                    .into(),
            ),
            release: None,
            admitted: None,
        })
    }

    /// Audits a manifest whose relative paths resolve against `base`.
    pub fn audit_manifest(
        &mut self,
        m: &Manifest,
        base: &Path,
        seen: &mut Vec<String>,
    ) -> Result<ModelReport, AuditError> {
        let id = m.id().to_string();
        if seen.contains(&id) {
            return Err(AuditError::LineageLoop(id));
        }
        seen.push(id.clone());
        let ext = m.sotto.clone();
        let mut files = Vec::new();
        let mut identity_problems = Vec::new();
        for w in ext.iter().flat_map(|e| &e.weights) {
            let path = base.join(&w.path);
            if !path.exists() {
                identity_problems.push(format!("{}: weight file not present", w.path));
                continue;
            }
            let f = self.cache.identify(&path, &w.path)?;
            if f.sha256 != w.sha256.to_ascii_lowercase() {
                identity_problems.push(format!(
                    "{}: sha256 {} is not the manifest's {} — these are not the bytes the \
                     manifest describes",
                    w.path, f.sha256, w.sha256
                ));
            }
            files.push(f);
        }

        let mut findings = Findings::default();
        let mut evidence = Vec::new();
        let params_label = m
            .component("Model parameters (Final)")
            .map(|c| m.licence_of(c, ContentType::Data));
        for ev in ext.iter().flat_map(|e| &e.evidence) {
            let path = base.join(&ev.path);
            if !path.exists() {
                evidence.push(EvidenceReport {
                    path: ev.path.clone(),
                    kind: ev.kind,
                    found: false,
                    analysis: None,
                    component: None,
                    unverified: None,
                });
                continue;
            }
            let a = self.cache.analyse_evidence(&path, ev.kind)?;
            findings
                .restrictions
                .extend(a.restrictions.iter().cloned().map(|mut r| {
                    r.quote = format!("{} ({})", r.quote, ev.path);
                    r
                }));
            compare_label(&mut findings, params_label.as_ref(), &ev.path, &a);
            evidence.push(EvidenceReport {
                path: ev.path.clone(),
                kind: ev.kind,
                found: true,
                analysis: Some(a),
                component: None,
                unverified: None,
            });
        }
        self.read_component_texts(m, base, &mut findings, &mut evidence)?;
        // The licence a GGUF file declares about itself is evidence too.
        for f in &files {
            if let Some(declared) = f.metadata.get("general.license") {
                let declared_licence = Licence::from_name(declared);
                let label_differs = params_label.as_ref() != Some(&declared_licence);
                if label_differs {
                    findings.disagreements.push(format!(
                        "{} declares general.license = {declared:?}, the manifest says {}",
                        f.path,
                        params_label
                            .as_ref()
                            .map(|l| l.to_string())
                            .unwrap_or_else(|| "nothing".into())
                    ));
                    if !declared_licence.is_open_for(ContentType::Data) {
                        findings.parameters_licence_override = Some(declared_licence);
                    }
                }
            }
        }
        findings.restrictions.dedup_by(|a, b| a.family == b.family);

        let mut judgement = verdict::judge(m, &findings);
        if !identity_problems.is_empty() {
            judgement.osaid = judgement.osaid.min(Osaid::Unknown);
            judgement.elements.insert(
                0,
                verdict::Element {
                    name: "Identity",
                    ok: false,
                    reason: identity_problems.join("; "),
                },
            );
        }
        let mut lineage = Vec::new();
        if let Some(base_id) = ext.as_ref().and_then(|e| e.base_model.clone()) {
            let base_m = manifest::registry_manifest(&base_id).ok_or_else(|| {
                AuditError::UnknownModel(base_id.clone(), "the lineage of ".to_string() + &id)
            })??;
            let base_report = self.audit_manifest(&base_m, base, seen)?;
            verdict::cap_by_lineage(&mut judgement, &base_id, &base_report.judgement);
            lineage.push(LineageStep {
                id: base_id,
                osaid: base_report.judgement.osaid,
                mof: base_report.judgement.mof,
            });
            lineage.extend(base_report.lineage);
        }
        Ok(ModelReport {
            id,
            name: m.release.name.clone(),
            producer: m.release.producer.clone(),
            contact: m.release.contact.clone(),
            version: m.release.version.as_ref().and_then(|v| match v {
                serde_norway::Value::String(s) => Some(s.clone()),
                serde_norway::Value::Number(n) => Some(n.to_string()),
                _ => None,
            }),
            identity_ok: identity_problems.is_empty(),
            files,
            evidence,
            lineage,
            judgement,
            findings,
            remedy: ext.and_then(|e| e.remedy),
            release: None,
            admitted: None,
        })
    }
}

impl AuditContext {
    /// Reads the licence texts the manifest points to (`license_path`, of a component or of
    /// the release licence it inherits) and the cards its `component_path` names, and judges
    /// them like any licence text: a use restriction or a different, less open licence in the
    /// text overrides the label (the stricter reading, reported). A URL cannot be read here:
    /// it is reported as unverified and the label alone is judged.
    fn read_component_texts(
        &mut self,
        m: &Manifest,
        base: &Path,
        findings: &mut Findings,
        evidence: &mut Vec<EvidenceReport>,
    ) -> Result<(), AuditError> {
        for c in &m.release.components {
            let ty = verdict::content_type_of(&c.name);
            let mut texts = Vec::new();
            if let Some(p) = m.licence_path_of(c, ty) {
                texts.push((p, EvidenceKind::Licence));
            }
            let is_card = ["Model card", "Data card"]
                .iter()
                .any(|n| c.name.trim().eq_ignore_ascii_case(n));
            if is_card && let Some(p) = c.component_path.clone().filter(|p| !is_url(p)) {
                texts.push((p, EvidenceKind::ModelCard));
            }
            for (p, kind) in texts {
                let mut report = EvidenceReport {
                    path: p.clone(),
                    kind,
                    found: false,
                    analysis: None,
                    component: Some(c.name.clone()),
                    unverified: None,
                };
                let path = base.join(&p);
                let outside = Path::new(&p).is_absolute()
                    || Path::new(&p)
                        .components()
                        .any(|c| matches!(c, std::path::Component::ParentDir));
                let why = if is_url(&p) {
                    Some("a URL, not read (no network at run time)")
                } else if outside {
                    Some("outside the manifest's directory, not read")
                } else if !path.is_file() {
                    Some("not there")
                } else {
                    None
                };
                if let Some(why) = why {
                    report.unverified = Some(format!("{why}; the label alone is judged"));
                    if kind == EvidenceKind::Licence {
                        findings.unverified.push(verdict::Unverified {
                            component: c.name.clone(),
                            path: p.clone(),
                            why: why.into(),
                        });
                    }
                    evidence.push(report);
                    continue;
                }
                let a = self.cache.analyse_evidence(&path, kind)?;
                let label = m.licence_of(c, ty);
                if let Some(r) = a.restrictions.first() {
                    findings.disagreements.push(format!(
                        "{}: the manifest labels it {label}, but {p} restricts its use ({}); \
                         the stricter reading applies",
                        c.name, r.family
                    ));
                    findings
                        .component_overrides
                        .push((c.name.clone(), Licence::Other(format!("terms in {p}"))));
                    findings
                        .restrictions
                        .extend(a.restrictions.iter().cloned().map(|mut r| {
                            r.quote = format!("{} ({p})", r.quote);
                            r
                        }));
                } else if let Some(t) = &a.text_match
                    && Some(t.spdx_id.as_str()) != label.spdx_id()
                {
                    let text = Licence::Spdx(t.spdx_id.clone());
                    let stricter = label.is_open_terms() && !text.is_open_terms();
                    findings.disagreements.push(format!(
                        "{}: the manifest labels it {label}, but the text of {p} is {}{}",
                        c.name,
                        t.spdx_id,
                        if stricter {
                            "; the stricter reading applies"
                        } else {
                            ""
                        }
                    ));
                    if stricter {
                        findings.component_overrides.push((c.name.clone(), text));
                    }
                }
                report.found = true;
                report.analysis = Some(a);
                evidence.push(report);
            }
        }
        findings.restrictions.dedup_by(|a, b| a.family == b.family);
        Ok(())
    }
}

fn is_url(p: &str) -> bool {
    p.contains("://") || p.starts_with("www.")
}

/// Compares what an evidence file says with the manifest's label for the weights, keeping the
/// stricter reading.
fn compare_label(
    findings: &mut Findings,
    label: Option<&Licence>,
    path: &str,
    a: &identity::EvidenceAnalysis,
) {
    let label_text = label
        .map(|l| l.to_string())
        .unwrap_or_else(|| "nothing".into());
    let label_open = label.is_some_and(|l| l.is_open_for(ContentType::Data));
    if !a.restrictions.is_empty() && label_open {
        findings.disagreements.push(format!(
            "the manifest labels the weights {label_text}, but {path} restricts their use \
             ({}); the stricter reading applies",
            a.restrictions[0].family
        ));
        findings.parameters_licence_override = Some(Licence::Other(format!("terms in {path}")));
    }
    let text_id = a
        .text_match
        .as_ref()
        .map(|t| Licence::Spdx(t.spdx_id.clone()));
    let stated = a.stated_licence.as_deref().map(Licence::from_name);
    for (what, found) in [("licence text", text_id), ("stated licence", stated)] {
        let Some(found) = found else { continue };
        if Some(&found) != label {
            findings.disagreements.push(format!(
                "{path}: its {what} is {found}, the manifest says {label_text}"
            ));
            if !found.is_open_for(ContentType::Data) {
                findings.parameters_licence_override = Some(found);
            }
        }
    }
}

/// Proof that the audit ran and admitted every model an engine is about to load.
#[derive(Debug)]
pub struct AuditPass {
    reports: Vec<ModelReport>,
}

impl AuditPass {
    /// The admitted models' reports.
    pub fn reports(&self) -> &[ModelReport] {
        &self.reports
    }

    /// Whether `path` is one of the admitted weight files.
    pub fn covers(&self, path: &Path) -> bool {
        self.report_for(path).is_some()
    }

    /// The report of the admitted model whose weight file `path` is.
    pub fn report_for(&self, path: &Path) -> Option<&ModelReport> {
        let want = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        self.reports
            .iter()
            .find(|r| r.files.iter().any(|f| f.abs_path == want))
    }

    /// Hashes every admitted weight file again on a background thread ("audit-reverify"),
    /// after the engines have read them: the cached hash the gate may have used is proven
    /// against the bytes on disk once more. On a mismatch (or a file gone), `on_mismatch` is
    /// called with what differs; the caller stops.
    pub fn reverify(
        &self,
        on_mismatch: impl FnOnce(String) + Send + 'static,
    ) -> std::thread::JoinHandle<()> {
        let files: Vec<(PathBuf, String, String)> = self
            .reports
            .iter()
            .flat_map(|r| &r.files)
            .map(|f| (f.abs_path.clone(), f.path.clone(), f.sha256.clone()))
            .collect();
        std::thread::Builder::new()
            .name("audit-reverify".into())
            .spawn(move || {
                // Behind the engines: a transcription that starts meanwhile gets every core.
                let _quiet = crate::cpu::background();
                let t0 = std::time::Instant::now();
                for (abs, shown, want) in files {
                    let problem = match crate::models::sha256_file(&abs) {
                        Ok(got) if got == want => continue,
                        Ok(got) => format!(
                            "{shown} changed after the audit: its sha256 is now {got}, the audit judged {want}"
                        ),
                        Err(e) => format!("{shown} cannot be read after the audit: {e}"),
                    };
                    tracing::error!(stage = "audit", problem, "model file changed under sotto");
                    on_mismatch(problem);
                    return;
                }
                tracing::info!(stage = "audit", ms = t0.elapsed().as_millis() as u64, "model files re-verified");
            })
            .expect("spawning a thread only fails when the OS is out of resources")
    }

    /// Models admitted only by the user's exception: named on every start.
    pub fn excepted(&self) -> impl Iterator<Item = (&ModelReport, &str)> {
        self.reports.iter().filter_map(|r| match &r.admitted {
            Some(Admission::Exception { reason, .. }) => Some((r, reason.as_str())),
            _ => None,
        })
    }
}

/// The audit refused at least one model.
#[derive(Debug)]
pub struct Refusal {
    pub reports: Vec<ModelReport>,
    pub policy: Osaid,
}

/// The weights' sha256, in manifest order: what an exception is pinned to.
pub fn weight_hashes(r: &ModelReport) -> Vec<String> {
    r.files.iter().map(|f| f.sha256.clone()).collect()
}

/// What may load: the lowest openness the policy admits, and the user's exceptions (each
/// pinned to the exact bytes of a model below it).
#[derive(Clone, Debug)]
pub struct Policy {
    pub minimum: Osaid,
    pub exceptions: Vec<Exception>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            minimum: Osaid::OpenSource,
            exceptions: Vec::new(),
        }
    }
}

/// A recorded, hash-pinned admission of a model below the policy.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Exception {
    pub model: String,
    /// sha256 of every weight file, in manifest order, at the time of acceptance.
    pub sha256: Vec<String>,
    pub reason: String,
    pub recorded: String,
}

/// An exception for a model's current bytes (written to the config by the caller).
pub fn exception_for(report: &ModelReport, reason: &str) -> Exception {
    Exception {
        model: report.id.clone(),
        sha256: weight_hashes(report),
        reason: reason.to_string(),
        recorded: identity::now_rfc3339(),
    }
}

/// Applies the policy and the user's exceptions to reports: each is marked admitted (by the
/// policy or an exception) or left unadmitted. True when every one is admitted.
pub fn apply(reports: &mut [ModelReport], policy: &Policy) -> bool {
    let mut all = true;
    for r in reports.iter_mut() {
        if r.identity_ok && r.judgement.osaid >= policy.minimum {
            r.admitted = Some(Admission::Policy);
            continue;
        }
        let hashes = weight_hashes(r);
        let exception = policy.exceptions.iter().rev().find(|e| {
            let named = e.model == r.id || r.release.as_ref() == Some(&e.model);
            named && !hashes.is_empty() && e.sha256 == hashes
        });
        match exception {
            Some(e) => {
                r.admitted = Some(Admission::Exception {
                    reason: e.reason.clone(),
                    recorded: e.recorded.clone(),
                })
            }
            None => {
                if policy.exceptions.iter().any(|e| e.model == r.id) {
                    r.judgement.notes.push(
                        "an exception was recorded for this model, but for other bytes: it no \
                         longer applies"
                            .into(),
                    );
                }
                all = false;
            }
        }
    }
    all
}

/// Audits the given models and applies the policy: the only way to an [`AuditPass`], which
/// every engine requires. Call before building any engine.
pub fn gate(
    ctx: &mut AuditContext,
    policy: &Policy,
    ids: &[&str],
) -> Result<Result<AuditPass, Refusal>, AuditError> {
    let t0 = std::time::Instant::now();
    let mut reports = ids
        .iter()
        .map(|id| ctx.audit_id(id))
        .collect::<Result<Vec<_>, _>>()?;
    ctx.cache.save();
    let admitted = apply(&mut reports, policy);
    tracing::info!(
        stage = "audit",
        models = ids.len(),
        ms = t0.elapsed().as_millis() as u64,
        passed = admitted,
        "openness audit finished"
    );
    Ok(if admitted {
        Ok(AuditPass { reports })
    } else {
        Err(Refusal {
            reports,
            policy: policy.minimum,
        })
    })
}

/// The failing elements, short.
fn failing(r: &ModelReport) -> String {
    let f: Vec<&str> = r
        .judgement
        .elements
        .iter()
        .filter(|e| !e.ok)
        .map(|e| e.name)
        .collect();
    if f.is_empty() {
        "—".into()
    } else {
        f.join(", ")
    }
}

/// Human-readable report: a table, then details per model.
pub fn render(reports: &[ModelReport], policy: Osaid) -> String {
    let mut out = render_table(reports, policy);
    out += &render_details(reports);
    out
}

/// The summary: a line per model.
pub fn render_table(reports: &[ModelReport], policy: Osaid) -> String {
    let mut out = format!("openness audit (policy: {policy})\n\n");
    out += &format!(
        "{:<26} {:<12} {:<24} {:<34} {}\n",
        "model", "OSAID", "MOF", "failing elements", "status"
    );
    for r in reports {
        let status = match &r.admitted {
            Some(Admission::Policy) => "loads".to_string(),
            Some(Admission::Exception { .. }) => "loads by YOUR EXCEPTION".to_string(),
            None => "REFUSED".to_string(),
        };
        out += &format!(
            "{:<26} {:<12} {:<24} {:<34} {}\n",
            r.id,
            r.judgement.osaid.to_string(),
            r.judgement.mof.to_string(),
            failing(r),
            status
        );
    }
    out
}

/// Each model's evidence, elements, notes and remedy.
fn render_details(reports: &[ModelReport]) -> String {
    let mut out = String::new();
    for r in reports {
        out += &format!("\n{} — {}\n", r.id, r.name);
        for f in &r.files {
            out += &format!(
                "  file      {} sha256 {} ({} bytes)\n",
                f.path, f.sha256, f.bytes
            );
            for (k, v) in &f.metadata {
                out += &format!("            {k} = {v}\n");
            }
        }
        for e in &r.judgement.elements {
            out += &format!(
                "  {:<9} {} {}\n",
                short(e.name),
                if e.ok { "ok  " } else { "FAIL" },
                e.reason
            );
        }
        if !r.judgement.mof_missing.is_empty() {
            out += &format!(
                "  MOF       next class needs: {}\n",
                r.judgement.mof_missing.join("; ")
            );
        }
        for w in &r.judgement.mof_warnings {
            out += &format!("  warning   {w}\n");
        }
        for ev in &r.evidence {
            let what = match (&ev.analysis, ev.found) {
                (_, false) => "not present".to_string(),
                (Some(a), true) => a.summary(),
                (None, true) => String::new(),
            };
            out += &format!("  evidence  {} ({:?}): {what}\n", ev.path, ev.kind);
        }
        for r in &r.findings.restrictions {
            out += &format!("  clause    [{}] {}: \"{}\"\n", r.family, r.why, r.quote);
        }
        if !r.lineage.is_empty() {
            let chain: Vec<String> = r
                .lineage
                .iter()
                .map(|l| format!("{} ({}, MOF {})", l.id, l.osaid, l.mof))
                .collect();
            out += &format!("  lineage   {} ← {}\n", r.id, chain.join(" ← "));
        }
        for n in &r.judgement.notes {
            out += &format!("  note      {n}\n");
        }
        match &r.admitted {
            Some(Admission::Exception { reason, recorded }) => {
                out += &format!("  EXCEPTION accepted by you on {recorded}: {reason}\n")
            }
            None => {
                out += &format!(
                    "  remedy    {}\n            or admit these exact bytes: sotto audit accept {} --reason \"...\"\n",
                    r.remedy
                        .as_deref()
                        .unwrap_or("use a model that passes the policy"),
                    r.id
                );
            }
            _ => {}
        }
    }
    out
}

fn short(name: &str) -> &str {
    match name {
        "Data Information" => "Data",
        "Field of use" => "Use",
        n => n,
    }
}
