//! The `info` sotto answers `describe` with: one program per role offered, each naming its
//! model, languages and maker — and, in the model's description, the openness audit's
//! verdict (OSAID 1.0) and MOF class, which no other Wyoming server states.

use std::path::Path;

use serde_json::{Value, json};

use super::Engines;
use crate::audit::{Admission, AuditPass, ModelReport};

fn sotto_attribution() -> Value {
    json!({"name": "sotto", "url": env!("CARGO_PKG_REPOSITORY")})
}

/// What the audit said, in one line.
pub fn verdict(report: &ModelReport) -> String {
    let how = match &report.admitted {
        Some(Admission::Exception { reason, .. }) => {
            format!("; loaded only by the user's exception ({reason})")
        }
        _ => String::new(),
    };
    format!(
        "{}: {} (OSAID 1.0), MOF {}; judged by sotto's openness audit at start-up{how}",
        report.name, report.judgement.osaid, report.judgement.mof
    )
}

fn model(pass: &AuditPass, path: &Path, languages: Vec<String>) -> Value {
    let report = pass.report_for(path);
    let name = report
        .map(|r| r.name.clone())
        .unwrap_or_else(|| path.display().to_string());
    let attribution = json!({
        "name": report.and_then(|r| r.producer.clone()).unwrap_or_else(|| "unknown".into()),
        "url": report.and_then(|r| r.contact.clone()).unwrap_or_default(),
    });
    json!({
        "name": name,
        "attribution": attribution,
        "installed": true,
        "description": report.map(verdict).unwrap_or_else(|| "not audited".into()),
        "version": report.and_then(|r| r.version.clone()),
        "languages": languages,
    })
}

pub fn describe(
    pass: &AuditPass,
    engines: &Engines,
    whisper: Option<&Path>,
    gguf: Option<&Path>,
    onnx: Option<&Path>,
) -> Value {
    let version = env!("CARGO_PKG_VERSION");
    let mut info =
        json!({"asr": [], "tts": [], "handle": [], "intent": [], "wake": [], "mic": [], "snd": []});
    if let (Some(asr), Some(path)) = (&engines.asr, whisper) {
        info["asr"] = json!([{
            "name": "sotto-whisper",
            "attribution": sotto_attribution(),
            "installed": true,
            "description": "sotto: Whisper speech recognition (whisper.cpp) on audited open models",
            "version": version,
            "models": [model(pass, path, asr.stt.languages())],
            "supports_transcript_streaming": true,
            "requires_external_vad": true,
        }]);
    }
    if let (Some(tts), Some(path)) = (&engines.tts, onnx) {
        let mut voice = model(pass, path, vec![tts.tts.language().to_string()]);
        voice["speakers"] = Value::Null;
        info["tts"] = json!([{
            "name": "sotto-piper",
            "attribution": sotto_attribution(),
            "installed": true,
            "description": "sotto: Piper text to speech on audited open voices",
            "version": version,
            "voices": [voice],
            "supports_synthesize_streaming": true,
        }]);
    }
    if let (Some(_), Some(path)) = (&engines.handle, gguf) {
        info["handle"] = json!([{
            "name": "sotto-agent",
            "attribution": sotto_attribution(),
            "installed": true,
            "description": "sotto: allowlisted voice commands first, an on-device language model otherwise",
            "version": version,
            "models": [model(pass, path, vec!["en".to_string()])],
            "supports_handled_streaming": true,
            "supports_home_control": false,
        }]);
    }
    info
}
