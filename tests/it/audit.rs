//! The openness audit on the real fetched files, on MOF fixtures, and as the startup gate.

use std::path::Path;

use sotto::audit::{
    self, AuditContext, identity::HashCache, manifest::Manifest, verdict::MofClass, verdict::Osaid,
};

use crate::util::*;

fn audit_json(dir: &Path, models: &[&str]) -> (Option<i32>, serde_json::Value) {
    let out = run(sotto_in(dir).args(["audit", "--json"]).args(models));
    let doc = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(&out), stderr(&out)));
    (out.status.code(), doc)
}

fn failing(model: &serde_json::Value) -> Vec<String> {
    model["judgement"]["elements"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ok"] == false)
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn quick_start_models_get_their_true_verdicts() {
    model(sotto::models::WHISPER_GGML);
    let dir = tempfile::tempdir().unwrap();
    let (code, doc) = audit_json(
        dir.path(),
        &[
            "smollm2-135m-instruct",
            "whisper-tiny.en",
            "piper-en_US-joe-medium",
        ],
    );
    // Whisper is below the default open-source policy, so the audit as a whole refuses.
    assert_eq!(code, Some(3));
    let m = doc["models"].as_array().unwrap();

    assert_eq!(m[0]["judgement"]["osaid"], "open-source", "{:#}", m[0]);
    assert_eq!(
        m[0]["files"][0]["metadata"]["general.license"],
        "apache-2.0"
    );
    assert_eq!(
        m[0]["evidence"][0]["analysis"]["text_match"]["spdx_id"],
        "Apache-2.0"
    );

    assert_eq!(m[1]["judgement"]["osaid"], "open-weight", "{:#}", m[1]);
    assert_eq!(failing(&m[1]), ["Code", "Data Information"]);
    let code_reason = m[1]["judgement"]["elements"][1]["reason"].as_str().unwrap();
    assert!(
        code_reason.contains("Training code: not released"),
        "{code_reason}"
    );
    assert!(m[1]["admitted"].is_null());

    // Piper joe: judged with its lineage (fine-tuned from lessac).
    assert_eq!(
        m[2]["lineage"][0]["id"], "piper-en_US-lessac-medium",
        "{:#}",
        m[2]
    );
    assert_eq!(m[2]["lineage"][0]["osaid"], "open-source");
    assert_eq!(m[2]["judgement"]["osaid"], "open-source");
    assert_eq!(m[2]["judgement"]["mof"], "None");
}

#[test]
fn gemma_is_restricted_quoting_its_terms() {
    let gguf = models_dir().join("gemma-3-270m/gemma-3-270m-q4_k_m.gguf");
    assert!(
        gguf.is_file(),
        "Gemma is missing: run scripts/setup --with-negative"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = run(sotto_in(dir.path()).args(["audit", "gemma-3-270m"]));
    assert_eq!(out.status.code(), Some(3));
    let text = stdout(&out);
    assert!(
        text.contains("gemma-3-270m") && text.contains("restricted"),
        "{text}"
    );
    assert!(
        text.contains("restrict (remotely or otherwise) usage"),
        "the remote-restriction clause is quoted: {text}"
    );
    assert!(text.contains("Prohibited Use Policy"), "{text}");
    assert!(text.contains("general.license = gemma"), "{text}");
}

#[test]
fn an_apache_label_over_a_restrictive_licence_text_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("LICENSE"),
        "Permission is granted to use this model, subject to Attachment A.\n\
         Attachment A - Use Restrictions. You agree not to use the Model or Derivatives of the \
         Model: in any way that violates any applicable law; to generate misinformation.\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("weights.bin"), b"not really weights").unwrap();
    let sha = sotto::models::sha256_file(&dir.path().join("weights.bin")).unwrap();
    let manifest = dir.path().join("model.yml");
    std::fs::write(
        &manifest,
        format!(
            "framework:\n  name: Model Openness Framework\n  version: '1.0'\n  date: '2024-12-15'\n\
             release:\n  name: labelled-apache\n  license:\n    distribution:\n      name: Apache-2.0\n\
             \x20 components:\n    - name: Model parameters (Final)\n      license: Apache-2.0\n\
             \x20   - name: Model architecture\n\
             sotto:\n  id: labelled-apache\n  weights:\n    - path: weights.bin\n      sha256: {sha}\n\
             \x20 evidence:\n    - path: LICENSE\n      kind: licence\n"
        ),
    )
    .unwrap();
    let out = run(sotto_in(dir.path())
        .args(["audit", "--manifest"])
        .arg(&manifest));
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.contains("restricted"), "{text}");
    assert!(
        text.contains(
            "the manifest labels the weights Apache-2.0, but LICENSE restricts their use"
        ),
        "the disagreement is reported: {text}"
    );
    assert!(
        text.contains("You agree not to use the Model"),
        "the clause is quoted: {text}"
    );
}

#[test]
fn changed_bytes_void_identity_and_exception() {
    let src = model(sotto::models::WHISPER_GGML);
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    let dst = models.join(sotto::models::WHISPER_GGML);
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::copy(&src, &dst).unwrap();
    let sotto_here = || {
        let mut c = sotto_in(dir.path());
        c.env("SOTTO_MODELS_DIR", &models);
        c
    };
    let out = run(sotto_here().args(["audit", "accept", "whisper-tiny.en", "--reason", "test"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(sotto_here().args(["audit", "whisper-tiny.en"]));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("loads by YOUR EXCEPTION"),
        "{}",
        stdout(&out)
    );

    // One byte changes (same size; a new mtime makes the cache hash again).
    let mut bytes = std::fs::read(&dst).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&dst, &bytes).unwrap();
    let out = run(sotto_here().args(["audit", "whisper-tiny.en"]));
    assert_eq!(out.status.code(), Some(3));
    let text = stdout(&out);
    assert!(
        text.contains("Identity  FAIL") || text.contains("Identity FAIL"),
        "{text}"
    );
    assert!(
        text.contains("not the bytes the manifest describes"),
        "{text}"
    );
    assert!(
        text.contains("for other bytes: it no longer applies"),
        "{text}"
    );
    assert!(text.contains("REFUSED"), "{text}");
}

/// A fixture's report: judged as `sotto audit --manifest` judges it.
fn judge(name: &str) -> sotto::audit::ModelReport {
    let path = repo().join("tests/fixtures/mof").join(name);
    let m = Manifest::read(&path).unwrap();
    let mut ctx = AuditContext {
        models_dir: repo(),
        cache: HashCache::in_memory(),
    };
    ctx.audit_manifest(&m, path.parent().unwrap(), &mut Vec::new())
        .unwrap()
}

fn judge_fixture(name: &str) -> (Osaid, MofClass, Vec<String>) {
    let r = judge(name);
    (r.judgement.osaid, r.judgement.mof, r.judgement.notes)
}

fn has(lines: &[String], needle: &str) -> bool {
    lines.iter().any(|n| n.contains(needle))
}

#[test]
fn mof_classes_from_fixtures() {
    let (osaid, mof, notes) = judge_fixture("class-1.yml");
    assert_eq!((osaid, mof), (Osaid::OpenSource, MofClass::I));
    assert!(
        has(&notes, "research paper stands in for the technical report"),
        "{notes:?}"
    );
    assert_eq!(judge_fixture("class-2.yml").1, MofClass::II);
    assert_eq!(judge_fixture("class-3.yml").1, MofClass::III);
    assert_eq!(judge_fixture("class-none.yml").1, MofClass::None);
    let (osaid, mof, _) = judge_fixture("class-restricted.yml");
    assert_eq!((osaid, mof), (Osaid::Restricted, MofClass::None));
}

#[test]
fn a_research_paper_stands_in_for_the_technical_report() {
    let (_, mof, notes) = judge_fixture("research-paper-no-technical-report.yml");
    assert_eq!(mof, MofClass::I);
    assert!(
        has(&notes, "research paper stands in for the technical report"),
        "{notes:?}"
    );
}

#[test]
fn a_model_card_does_not_stand_in_for_the_data_card_but_a_note_says_what_it_would_give() {
    let (_, mof, notes) = judge_fixture("model-card-no-data-card.yml");
    assert_eq!(mof, MofClass::None, "the Tool has no such substitution");
    assert!(
        has(&notes, "model card documenting the data") && has(&notes, "it would be Class III"),
        "{notes:?}"
    );
}

#[test]
fn open_content_and_open_data_licences_are_open() {
    // CC-BY-4.0 on the datasets: open (on the Tool's open-content list), of the wrong type
    // for data: a warning, and Class I stands.
    let r = judge("cc-by-datasets.yml");
    assert_eq!(
        (r.judgement.osaid, r.judgement.mof),
        (Osaid::OpenSource, MofClass::I)
    );
    assert!(
        has(&r.judgement.mof_warnings, "Datasets is under CC-BY-4.0"),
        "{:?}",
        r.judgement.mof_warnings
    );
    // CC-BY-4.0 on the weights: open terms; open source; Class I with a warning.
    let r = judge("cc-by-weights.yml");
    assert_eq!(
        (r.judgement.osaid, r.judgement.mof),
        (Osaid::OpenSource, MofClass::I)
    );
    assert!(has(
        &r.judgement.mof_warnings,
        "Model parameters (Final) is under CC-BY-4.0"
    ));
    // ODC-By-1.0 on the datasets: open data to sotto and to OSAID; the Tool's lists do not
    // carry it, so its rules stop at Class II, and the note says what it would be.
    let (osaid, mof, notes) = judge_fixture("odc-by-datasets.yml");
    assert_eq!((osaid, mof), (Osaid::OpenSource, MofClass::II));
    assert!(
        has(&notes, "Datasets under ODC-By-1.0") && has(&notes, "it would be Class I"),
        "{notes:?}"
    );
    // Weights and data under ODC-By-1.0 (as OLMo's manifest has them): open source, as OSI
    // validated OLMo; by the Tool's rules no class, with the note.
    let (osaid, mof, notes) = judge_fixture("odc-by-weights-and-data.yml");
    assert_eq!((osaid, mof), (Osaid::OpenSource, MofClass::None));
    assert!(
        has(&notes, "Model parameters (Final) under ODC-By-1.0") && has(&notes, "Class I"),
        "{notes:?}"
    );
}

#[test]
fn a_licence_of_the_wrong_type_is_a_warning_not_a_failure() {
    let r = judge("gpl-document.yml");
    assert_eq!(r.judgement.mof, MofClass::I);
    assert!(
        has(
            &r.judgement.mof_warnings,
            "Technical report is under GPL-3.0-only"
        ),
        "{:?}",
        r.judgement.mof_warnings
    );
}

#[test]
fn free_text_licence_names_are_not_ids_and_a_note_says_what_they_would_give() {
    let (osaid, mof, notes) = judge_fixture("free-text-names.yml");
    assert_eq!(mof, MofClass::None, "the Tool accepts exact ids only");
    assert!(
        has(&notes, "\"Apache 2.0\" read as Apache-2.0")
            && has(&notes, "\"MIT license\" read as MIT")
            && has(&notes, "it would be Class I"),
        "{notes:?}"
    );
    assert_eq!(
        osaid,
        Osaid::OpenSource,
        "OSAID reads the names as sotto does"
    );
}

#[test]
fn a_licence_path_to_a_restricted_text_under_an_apache_label_is_restricted() {
    let r = judge("licence-path/restricted.yml");
    assert_eq!(r.judgement.osaid, Osaid::Restricted);
    assert!(r.judgement.mof < MofClass::III, "{}", r.judgement.mof);
    assert!(
        has(
            &r.judgement.notes,
            "Model parameters (Final): the manifest labels it Apache-2.0, but WEIGHTS-LICENSE restricts its use"
        ),
        "{:?}",
        r.judgement.notes
    );
    assert!(
        r.findings
            .restrictions
            .iter()
            .any(|x| x.quote.contains("You agree not to use the Model")),
        "the clause is quoted: {:?}",
        r.findings.restrictions
    );
    let ev = r
        .evidence
        .iter()
        .find(|e| e.path == "WEIGHTS-LICENSE")
        .expect("the text is reported as evidence");
    assert!(ev.found);
    assert_eq!(ev.component.as_deref(), Some("Model parameters (Final)"));
}

#[test]
fn a_licence_path_that_is_a_url_is_unverified_and_the_label_alone_is_judged() {
    // An exact id: it stands, marked unverified.
    let r = judge("licence-path/url.yml");
    assert_eq!(r.judgement.osaid, Osaid::OpenSource);
    assert!(
        has(
            &r.judgement.notes,
            "https://example.org/LICENSE is a URL, not read"
        ),
        "{:?}",
        r.judgement.notes
    );
    let ev = r
        .evidence
        .iter()
        .find(|e| e.path == "https://example.org/LICENSE")
        .unwrap();
    assert!(!ev.found && ev.unverified.is_some(), "{ev:?}");
    // A free-text label with no readable text proves no licence.
    let r = judge("licence-path/url-free-text.yml");
    assert_eq!(
        r.judgement.osaid,
        Osaid::Unknown,
        "{:?}",
        r.judgement.elements
    );
    // The same label with the Apache-2.0 text beside it: the text proves it.
    let r = judge("licence-path/text-proves-free-text.yml");
    assert_eq!(r.judgement.osaid, Osaid::OpenSource);
    let ev = r
        .evidence
        .iter()
        .find(|e| e.path == "APACHE-2.0.txt")
        .unwrap();
    assert_eq!(
        ev.analysis
            .as_ref()
            .unwrap()
            .text_match
            .as_ref()
            .unwrap()
            .spdx_id,
        "Apache-2.0"
    );
}

#[test]
fn a_manifest_collection_is_judged_in_one_run_a_line_per_model() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = repo().join("tests/fixtures/mof");
    let out = run(sotto_in(dir.path())
        .args(["audit", "--json", "--manifest"])
        .arg(fixtures.join("osi"))
        .arg(fixtures.join("class-1.yml")));
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(lines.len() >= 7, "{}", stdout(&out));
    // Below-policy models among them: the run is a refusal (3), not an error.
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let text = run(sotto_in(dir.path())
        .args(["audit", "--manifest"])
        .arg(fixtures.join("osi")));
    let table = stdout(&text);
    let rows = table
        .lines()
        .filter(|l| l.ends_with("loads") || l.ends_with("REFUSED"))
        .count();
    assert_eq!(rows, lines.len() - 1, "{table}");
    assert!(table.contains("models judged in"), "{table}");
    // A broken manifest in a collection is named; the others are still judged.
    std::fs::write(dir.path().join("broken.yml"), "framework: [").unwrap();
    std::fs::copy(fixtures.join("class-1.yml"), dir.path().join("good.yml")).unwrap();
    let out = run(sotto_in(dir.path())
        .args(["audit", "--manifest"])
        .arg(dir.path()));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("broken.yml"), "{}", stderr(&out));
    assert!(stdout(&out).contains("class-1"), "{}", stdout(&out));
}

#[test]
fn osis_validated_models_get_osis_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(sotto_in(dir.path())
        .args(["audit", "--json", "--manifest"])
        .arg(repo().join("tests/fixtures/mof/osi")));
    let mut seen = 0;
    for line in stdout(&out).lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        let (name, osaid) = (
            r["name"].as_str().unwrap(),
            r["judgement"]["osaid"].as_str().unwrap(),
        );
        let passes = ["Amber", "CrystalCoder", "T5"]
            .iter()
            .any(|p| name.starts_with(p));
        if passes {
            assert_eq!(osaid, "open-source", "{name}: {}", r["judgement"]);
        } else {
            assert_ne!(
                osaid, "open-source",
                "{name} fails OSAID: {}",
                r["judgement"]
            );
        }
        seen += 1;
    }
    assert_eq!(seen, 6, "{}", stdout(&out));
}

#[test]
fn reference_models_match_osis_published_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    let (_, doc) = audit_json(
        dir.path(),
        &["pythia-6.9b", "olmo-7b", "llama-2-7b", "olmoasr-tiny.en"],
    );
    let verdicts: Vec<&str> = doc["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["judgement"]["osaid"].as_str().unwrap())
        .collect();
    assert_eq!(
        verdicts,
        ["open-source", "open-source", "restricted", "open-source"]
    );
}

#[test]
fn the_audit_finishes_before_any_engine_is_built() {
    model(sotto::models::WHISPER_GGML);
    // Refused: the engine is never constructed.
    let dir = tempfile::tempdir().unwrap();
    let out = run(sotto_in(dir.path())
        .args(["-v", "transcribe"])
        .arg(jfk_wav()));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("startup stopped by the openness audit"),
        "{err}"
    );
    assert!(!err.contains("whisper model loaded"), "{err}");
    assert!(stdout(&out).is_empty());

    // Admitted (by exception): the audit's log line comes before the engine's, and the
    // exception is named on start.
    let out = run(sotto().args(["-v", "transcribe"]).arg(jfk_wav()));
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    let audit_at = err.find("openness audit finished").expect("audit logged");
    let engine_at = err.find("whisper model loaded").expect("engine logged");
    assert!(audit_at < engine_at, "{err}");
    assert!(
        err.contains("loads only because of your exception"),
        "{err}"
    );
}

#[test]
fn warm_audit_uses_the_cache() {
    model(sotto::models::WHISPER_GGML);
    let dir = tempfile::tempdir().unwrap();
    let out = run(sotto_in(dir.path()).args(["audit", "smollm2-135m-instruct"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let cache = dir.path().join("cache/audit-cache.json");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cache).unwrap()).unwrap();
    let entry = doc["files"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| k.ends_with("SmolLM2-135M-Instruct.Q4_1.gguf"))
        .expect("weights cached");
    assert_eq!(
        entry.1["sha256"],
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    );
}

#[test]
fn malformed_manifests_and_gguf_headers_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yml");
    std::fs::write(&bad, "framework: [unclosed\n").unwrap();
    let out = run(sotto_in(dir.path()).args(["audit", "--manifest"]).arg(&bad));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("bad.yml"), "{}", stderr(&out));

    // Mutations of a real GGUF header: every one parses or errors, none panics.
    let gguf = model(sotto::models::SMOLLM2_GGUF);
    let mut head = vec![0u8; 4096];
    use std::io::Read;
    std::fs::File::open(&gguf)
        .unwrap()
        .read_exact(&mut head)
        .unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..2000 {
        let mut b = head.clone();
        for _ in 0..4 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let i = (seed as usize) % b.len();
            b[i] = (seed >> 32) as u8;
        }
        let cut = (seed as usize >> 8) % b.len();
        let _ = sotto::models::gguf::Header::parse(&b[..cut], b.len() as u64);
        let _ = Manifest::parse("fuzz", &String::from_utf8_lossy(&b[..cut.min(300)]));
    }
}

/// Flips the last byte of `path` and puts its modification time back as it was.
fn flip_last_byte_keeping_mtime(path: &std::path::Path) {
    let mtime = std::fs::metadata(path).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(path, &bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_eq!(std::fs::metadata(path).unwrap().modified().unwrap(), mtime);
}

#[test]
fn a_byte_changed_with_its_mtime_restored_is_refused_despite_a_warm_cache() {
    let src = model(sotto::models::WHISPER_GGML);
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    let dst = models.join(sotto::models::WHISPER_GGML);
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::copy(&src, &dst).unwrap();
    let sotto_here = || {
        let mut c = sotto_in(dir.path());
        c.env("SOTTO_MODELS_DIR", &models);
        c
    };
    let out = run(sotto_here().args(["audit", "accept", "whisper-tiny.en", "--reason", "test"]));
    assert!(out.status.success(), "{}", stderr(&out));
    // A warm cache now holds this file's hash.
    let out = run(sotto_here().args(["audit", "whisper-tiny.en"]));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(dir.path().join("cache/audit-cache.json").is_file());

    flip_last_byte_keeping_mtime(&dst);
    let out = run(sotto_here().args(["audit", "whisper-tiny.en"]));
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains("not the bytes the manifest describes"),
        "{text}"
    );
    assert!(
        text.contains("for other bytes: it no longer applies"),
        "{text}"
    );
}

#[test]
fn a_file_changed_after_the_gate_is_caught_by_the_background_check() {
    let src = model(sotto::models::WHISPER_GGML);
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join(sotto::models::WHISPER_GGML);
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::copy(&src, &dst).unwrap();
    let policy = audit::Policy {
        minimum: Osaid::OpenWeight,
        ..Default::default()
    };
    let mut ctx = AuditContext {
        models_dir: dir.path().to_path_buf(),
        cache: HashCache::in_memory(),
    };
    let pass = audit::gate(&mut ctx, &policy, &["whisper-tiny.en"])
        .unwrap()
        .expect("open-weight policy admits tiny.en");
    // Unchanged: the check finds nothing.
    let (tx, rx) = std::sync::mpsc::channel();
    let t = tx.clone();
    pass.reverify(move |p| t.send(p).unwrap()).join().unwrap();
    assert!(rx.try_recv().is_err(), "no mismatch on the same bytes");
    // Changed after the gate (mtime restored): reported.
    flip_last_byte_keeping_mtime(&dst);
    pass.reverify(move |p| tx.send(p).unwrap()).join().unwrap();
    let problem = rx.try_recv().expect("the change is reported");
    assert!(problem.contains("changed after the audit"), "{problem}");
}

#[test]
fn a_licence_path_outside_the_manifests_directory_is_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("m.yml");
    std::fs::write(
        &manifest,
        "framework:\n  name: Model Openness Framework\nrelease:\n  name: escape\n  components:\n\
         \x20   - name: Model parameters (Final)\n      license: Apache-2.0\n\
         \x20     license_path: ../../../../etc/passwd\n\
         \x20   - name: Model card\n      license: Apache-2.0\n      license_path: /etc/hostname\n",
    )
    .unwrap();
    let m = Manifest::read(&manifest).unwrap();
    let mut ctx = AuditContext {
        models_dir: repo(),
        cache: HashCache::in_memory(),
    };
    let r = ctx.audit_manifest(&m, dir.path(), &mut Vec::new()).unwrap();
    for path in ["../../../../etc/passwd", "/etc/hostname"] {
        let ev = r.evidence.iter().find(|e| e.path == path).unwrap();
        assert!(!ev.found && ev.analysis.is_none(), "{ev:?}");
        assert!(
            ev.unverified
                .as_deref()
                .is_some_and(|u| u.contains("outside the manifest's directory")),
            "{ev:?}"
        );
    }
}

#[test]
fn alias_bombs_and_deep_nesting_in_a_manifest_cost_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = vec![
        "framework:".to_string(),
        "  name: Model Openness Framework".into(),
        "release:".into(),
        "  name: x".into(),
        "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]".into(),
    ];
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 9].join(", ");
        lines.push(format!("a{i}: &a{i} [{refs}]"));
    }
    let laughs = dir.path().join("laughs.yml");
    std::fs::write(&laughs, lines.join("\n") + "\n").unwrap();
    let deep = dir.path().join("deep.yml");
    std::fs::write(
        &deep,
        format!(
            "framework:\n  name: Model Openness Framework\nrelease:\n  name: x\nd: {}{}\n",
            "[".repeat(5000),
            "]".repeat(5000)
        ),
    )
    .unwrap();
    for m in [&laughs, &deep] {
        let t0 = std::time::Instant::now();
        let out = run(sotto_in(dir.path()).args(["audit", "--manifest"]).arg(m));
        // Judged (or refused as malformed) by name, promptly: never expanded into gigabytes.
        assert!(matches!(out.status.code(), Some(1 | 3)), "{}", stderr(&out));
        assert!(t0.elapsed() < std::time::Duration::from_secs(10));
    }
}

#[test]
fn a_pipe_a_device_or_a_huge_file_as_a_manifest_is_refused_by_name_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.yml");
    let st = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(st.success());
    let huge = dir.path().join("huge.yml");
    // One YAML string of 3 MB: its parse error would quote all of it.
    std::fs::write(&huge, "x".repeat(3 << 20)).unwrap();
    for (path, says) in [
        (std::path::PathBuf::from("/dev/zero"), "not a regular file"),
        (fifo.clone(), "not a regular file"),
        (huge.clone(), "a manifest is at most 1024 KiB"),
    ] {
        let t0 = std::time::Instant::now();
        let mut child = sotto_in(dir.path())
            .args(["audit", "--manifest"])
            .arg(&path)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A hang is the failure this test exists for: kill it rather than wait forever.
        while child.try_wait().unwrap().is_none() {
            if t0.elapsed() > std::time::Duration::from_secs(20) {
                let _ = child.kill();
                panic!("audit --manifest {} did not finish", path.display());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{}: {err}", path.display());
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains(says), "{err}");
        assert!(
            err.len() < 2_000,
            "a short message, not the file: {} bytes",
            err.len()
        );
    }
    // And a model path that is a pipe is refused the same way by `models add`.
    let out = run(sotto_in(dir.path())
        .env("SOTTO_DATA_DIR", dir.path().join("data"))
        .args(["models", "add"])
        .arg(&fifo));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not a regular file"),
        "{}",
        stderr(&out)
    );
}

/// The Piper voices whose datasets are public, as a user would bring them: the two trained
/// from scratch have no lineage; the two fine-tuned from lessac name it, and the audit follows
/// it to lessac's own verdict.
#[test]
fn piper_voices_with_public_datasets_are_judged_with_their_lineage() {
    let dir = tempfile::tempdir().unwrap();
    let ids = [
        "piper-en_US-ljspeech-medium",
        "piper-fr_FR-mls-medium",
        "piper-de_DE-thorsten-medium",
        "piper-fr_FR-siwis-medium",
    ];
    let (_, doc) = audit_json(dir.path(), &ids);
    let models = doc["models"].as_array().unwrap();
    assert_eq!(models.len(), 4, "{doc}");
    for (m, id) in models.iter().zip(ids) {
        assert_eq!(m["id"], id);
        assert_eq!(m["judgement"]["osaid"], "open-source", "{id}: {m}");
        let lineage: Vec<&str> = m["lineage"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["id"].as_str().unwrap())
            .collect();
        let fine_tuned = id.contains("thorsten") || id.contains("siwis");
        let expected: &[&str] = if fine_tuned {
            &["piper-en_US-lessac-medium"]
        } else {
            &[]
        };
        assert_eq!(lineage, expected, "{id}");
    }
}
