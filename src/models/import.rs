//! `sotto models import`: derives the files sotto loads from the files setup fetched.
//!
//! - whisper-tiny.en: CTranslate2 `model.bin` + `tokenizer.json` → whisper.cpp ggml `.bin`;
//! - SmolLM2: the tokenizer embedded in the GGUF → `tokenizer.json`.
//!
//! Sources are verified against their pins first; outputs are written to a temporary name and
//! renamed into place, then checked against their own pins (conversion is deterministic). A
//! record of source and output sha256 goes to `models/imports.json`.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::whisper_ggml::{self, TempOut};
use super::{
    IMPORT_SET, ModelError, ModelsDir, Pin, SMOLLM2_GGUF, SMOLLM2_TOKENIZER, WHISPER_CT2_DIR,
    WHISPER_GGML, gguf, gguf_tokenizer, pins, verify_file,
};

/// What one import step did.
#[derive(Debug, Serialize)]
pub struct Imported {
    pub output: String,
    pub sha256: String,
    pub bytes: u64,
    pub sources: Vec<Source>,
    /// False when the output already verified and nothing was done.
    pub converted: bool,
}

#[derive(Debug, Serialize)]
pub struct Source {
    pub path: String,
    pub sha256: String,
}

fn pin_of(dest: &str) -> Result<Pin, ModelError> {
    pins()
        .into_iter()
        .find(|p| p.dest == dest)
        .ok_or_else(|| ModelError::Format {
            path: PathBuf::from(dest),
            reason: "not listed in models/pins.tsv".into(),
        })
}

/// Verifies the fetched files an import step reads, returning their records.
fn verified_sources(dir: &ModelsDir, dests: &[&str]) -> Result<Vec<Source>, ModelError> {
    dests
        .iter()
        .map(|d| {
            let pin = pin_of(d)?;
            dir.verify(&pin)?;
            Ok(Source {
                path: d.to_string(),
                sha256: pin.sha256,
            })
        })
        .collect()
}

/// Runs every import step. `force` converts again even when the output verifies.
/// `progress(step, done, total)` reports long steps.
pub fn import_all(
    dir: &ModelsDir,
    force: bool,
    mut progress: impl FnMut(&str, usize, usize),
) -> Result<Vec<Imported>, ModelError> {
    let mut done = Vec::new();
    for pin in pins().into_iter().filter(|p| p.set == IMPORT_SET) {
        let out = dir.path(&pin.dest);
        let sources: Vec<&str> = pin.member.split(',').collect();
        if !force && verify_file(&out, &pin).is_ok() {
            done.push(Imported {
                output: pin.dest.clone(),
                sha256: pin.sha256.clone(),
                bytes: pin.bytes,
                sources: verified_sources(dir, &sources)?,
                converted: false,
            });
            continue;
        }
        let records = verified_sources(dir, &sources)?;
        match pin.dest.as_str() {
            WHISPER_GGML => {
                whisper_ggml::convert_ct2(&dir.path(WHISPER_CT2_DIR), &out, |d, t| {
                    progress(&pin.dest, d, t)
                })?;
            }
            SMOLLM2_TOKENIZER => write_tokenizer(&dir.path(SMOLLM2_GGUF), &out)?,
            other => {
                return Err(ModelError::Format {
                    path: PathBuf::from(other),
                    reason: "pinned as an import output, but no importer produces it".into(),
                });
            }
        }
        if let Err(e) = verify_file(&out, &pin) {
            // The converter no longer reproduces the pinned bytes: a bug, never a silent pass.
            let _ = std::fs::remove_file(&out);
            return Err(ModelError::Format {
                path: out,
                reason: format!(
                    "the converted file does not match its pin in models/pins.tsv ({e}); \
                     the importer changed or the pin is stale"
                ),
            });
        }
        done.push(Imported {
            output: pin.dest.clone(),
            sha256: pin.sha256.clone(),
            bytes: pin.bytes,
            sources: records,
            converted: true,
        });
    }
    write_record(&dir.root.join("imports.json"), &done)?;
    Ok(done)
}

/// Writes `tokenizer.json` for the GGUF at `gguf_path`.
pub fn write_tokenizer(gguf_path: &Path, out: &Path) -> Result<(), ModelError> {
    let header = gguf::Header::read(gguf_path)?;
    let json = gguf_tokenizer::tokenizer_json(gguf_path, &header)?;
    let text = serde_json::to_string(&json).map_err(|source| ModelError::Json {
        path: out.to_path_buf(),
        source,
    })?;
    let mut tmp = TempOut::new(out)?;
    std::io::Write::write_all(&mut tmp.file, text.as_bytes())
        .map_err(|e| ModelError::io(&tmp.path, e))?;
    tmp.persist()
}

fn write_record(path: &Path, imported: &[Imported]) -> Result<(), ModelError> {
    let text = serde_json::to_string_pretty(&serde_json::json!({
        "converter": concat!("sotto ", env!("CARGO_PKG_VERSION")),
        "outputs": imported,
    }))
    .map_err(|source| ModelError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    let mut tmp = TempOut::new(path)?;
    std::io::Write::write_all(&mut tmp.file, text.as_bytes())
        .map_err(|e| ModelError::io(&tmp.path, e))?;
    tmp.persist()
}
