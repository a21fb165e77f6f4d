//! Models users bring: `sotto models add PATH` detects the format, imports or converts the
//! file in Rust into a directory of its own under the user's data directory
//! (`~/.local/share/sotto/models/NAME`, `~/Library/Application Support/sotto/models/NAME`, or
//! `$SOTTO_DATA_DIR/models/NAME`), never into the source tree, and records where it came from
//! and the sha256 of what it wrote in `model.toml`. A manifest given with it is kept beside the
//! files (with the licence texts it points to) and pinned to the written files' hashes, so the
//! audit judges exactly these bytes.
//!
//! Formats: Whisper as OpenAI-format PyTorch checkpoints (`.pt`, as OLMoASR publishes them),
//! CTranslate2 directories, or whisper.cpp ggml files as they are; llama-architecture GGUF
//! files (the tokenizer rebuilt from the GGUF's own vocabulary); Piper voices (`.onnx` with
//! its `.onnx.json`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ModelError, sha256_file};
use crate::audit::manifest::{Extension, Manifest, WeightFile};

/// What a model is used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Stt,
    Llm,
    Tts,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Stt => "stt",
            Role::Llm => "llm",
            Role::Tts => "tts",
        })
    }
}

/// The formats `models add` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    WhisperPytorch,
    WhisperCt2,
    WhisperHf,
    WhisperGgml,
    Gguf,
    PiperVoice,
}

impl Format {
    pub fn role(self) -> Role {
        match self {
            Format::WhisperPytorch
            | Format::WhisperCt2
            | Format::WhisperHf
            | Format::WhisperGgml => Role::Stt,
            Format::Gguf => Role::Llm,
            Format::PiperVoice => Role::Tts,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileHash {
    pub path: String,
    pub sha256: String,
}

/// `model.toml`: what was added, from where, and what was written.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    pub name: String,
    pub role: Role,
    pub format: Format,
    pub source: FileHash,
    /// Written files, relative to the model's directory; the first is the one engines load.
    pub files: Vec<FileHash>,
    /// `manifest.yml` beside the files, when one was given.
    #[serde(default)]
    pub manifest: bool,
    pub added: String,
}

impl Record {
    /// The model's own files: what was written, less the tokenizer and the voice's config.
    pub fn weights(&self) -> impl Iterator<Item = &FileHash> {
        self.files.iter().filter(|f| is_weight(&f.path))
    }
}

fn is_weight(path: &str) -> bool {
    path != "tokenizer.json" && !path.ends_with(".onnx.json")
}

#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Manifest(#[from] crate::audit::manifest::ManifestError),
    #[error("{path}: {reason}")]
    Unsupported { path: PathBuf, reason: String },
    #[error("{0} is already added; remove {1} first or choose another --name")]
    Exists(String, PathBuf),
    #[error("--role {given} does not fit {path}, which is a {actual} model")]
    WrongRole {
        given: Role,
        actual: Role,
        path: PathBuf,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where user models live.
pub fn user_models_dir() -> PathBuf {
    crate::config::data_dir().join("models")
}

/// A user model found by name (under [`user_models_dir`]) or by the path of its directory.
pub fn find(name_or_dir: &str) -> Option<(PathBuf, Record)> {
    let as_dir = Path::new(name_or_dir);
    let candidates = [user_models_dir().join(name_or_dir), as_dir.to_path_buf()];
    candidates.into_iter().find_map(|dir| {
        let text = std::fs::read_to_string(dir.join("model.toml")).ok()?;
        let record: Record = toml::from_str(&text).ok()?;
        Some((dir, record))
    })
}

/// Every user model, by name.
pub fn list() -> Vec<(PathBuf, Record)> {
    let Ok(entries) = std::fs::read_dir(user_models_dir()) else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, Record)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| find(&e.path().to_string_lossy()))
        .collect();
    out.sort_by(|a, b| a.1.name.cmp(&b.1.name));
    out
}

/// What a file or directory is, from its bytes (not its name).
pub fn detect(path: &Path) -> Result<Format, AddError> {
    let unsupported = |reason: String| AddError::Unsupported {
        path: path.to_path_buf(),
        reason,
    };
    if path.is_dir() {
        if path.join("model.bin").is_file() && path.join("tokenizer.json").is_file() {
            return Ok(Format::WhisperCt2);
        }
        if path.join("config.json").is_file() {
            let config = std::fs::read_to_string(path.join("config.json")).unwrap_or_default();
            let whisper = serde_json::from_str::<serde_json::Value>(&config)
                .is_ok_and(|c| c["model_type"] == "whisper");
            let has_weights = super::whisper_ggml::safetensors_files(path).is_ok();
            if whisper && has_weights && path.join("tokenizer.json").is_file() {
                return Ok(Format::WhisperHf);
            }
            return Err(unsupported(
                "a Hugging Face directory sotto cannot convert: it reads Whisper models \
                 (config.json with model_type \"whisper\", .safetensors weights and \
                 tokenizer.json)"
                    .into(),
            ));
        }
        return Err(unsupported(
            "a directory with no model sotto recognises (a CTranslate2 Whisper export has \
             model.bin and tokenizer.json)"
                .into(),
        ));
    }
    let mut head = [0u8; 8];
    {
        use std::io::Read;
        let mut f = super::open_regular(path).map_err(|e| ModelError::io(path, e))?;
        let n = f.read(&mut head).map_err(|e| ModelError::io(path, e))?;
        if n < 4 {
            return Err(unsupported("too short to be a model".into()));
        }
    }
    if head[..4] == super::whisper_ggml::MAGIC.to_le_bytes() {
        return Ok(Format::WhisperGgml);
    }
    if &head[..4] == b"GGUF" {
        return Ok(Format::Gguf);
    }
    if &head[..2] == b"PK" {
        return Ok(Format::WhisperPytorch);
    }
    let json = PathBuf::from(format!("{}.json", path.display()));
    if path.extension().is_some_and(|e| e == "onnx") {
        if json.is_file() {
            return Ok(Format::PiperVoice);
        }
        return Err(unsupported(format!(
            "an ONNX file without {}: a Piper voice comes as .onnx with its .onnx.json",
            json.display()
        )));
    }
    Err(unsupported(
        "not a format sotto reads (whisper.cpp ggml, OpenAI .pt, CTranslate2, GGUF, Piper .onnx)"
            .into(),
    ))
}

pub struct AddOptions<'a> {
    pub name: Option<String>,
    pub role: Option<Role>,
    pub manifest: Option<&'a Path>,
    /// Whisper's tokenizer.json, for a PyTorch checkpoint (which carries no vocabulary).
    pub tokenizer: Option<&'a Path>,
    /// The English Whisper tokenizer to use when none is given (the quick-start one).
    pub default_tokenizer: Option<PathBuf>,
}

/// Imports `src` as a user model: detected, converted, hashed and recorded. Nothing existing
/// is overwritten: the model is assembled in a temporary directory and renamed into place.
pub fn add(
    src: &Path,
    opts: &AddOptions,
    mut progress: impl FnMut(&str, usize, usize),
) -> Result<(PathBuf, Record), AddError> {
    let format = detect(src)?;
    let role = format.role();
    if let Some(given) = opts.role
        && given != role
    {
        return Err(AddError::WrongRole {
            given,
            actual: role,
            path: src.to_path_buf(),
        });
    }
    let manifest = opts.manifest.map(Manifest::read).transpose()?;
    let name = opts.name.clone().unwrap_or_else(|| {
        let stem = src
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        stem.replace(|c: char| !(c.is_alphanumeric() || "-_.".contains(c)), "-")
    });
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(AddError::Unsupported {
            path: src.to_path_buf(),
            reason: format!("{name:?} cannot be a model name"),
        });
    }
    let root = user_models_dir();
    let dest = root.join(&name);
    if dest.exists() {
        return Err(AddError::Exists(name, dest));
    }
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| AddError::Write { path, source }
    };
    std::fs::create_dir_all(&root).map_err(write_err(&root))?;
    let tmp = root.join(format!(".{name}.{}.partial", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(write_err(&tmp))?;
    let result = (|| {
        let source_hash = if format == Format::WhisperHf {
            // The first shard by name stands for the source.
            sha256_file(&super::whisper_ggml::safetensors_files(src)?[0])?
        } else if src.is_dir() {
            sha256_file(&src.join("model.bin"))?
        } else {
            sha256_file(src)?
        };
        let mut files: Vec<String> = Vec::new();
        let copy = |from: &Path, to: &str| -> Result<(), AddError> {
            std::fs::copy(from, tmp.join(to)).map_err(write_err(&tmp.join(to)))?;
            Ok(())
        };
        match format {
            Format::WhisperGgml => {
                super::whisper_ggml::Header::read(src)?;
                copy(src, "ggml-model.bin")?;
                files.push("ggml-model.bin".into());
            }
            Format::WhisperCt2 => {
                super::whisper_ggml::convert_ct2(src, &tmp.join("ggml-model.bin"), |d, t| {
                    progress("converting", d, t)
                })?;
                files.push("ggml-model.bin".into());
            }
            Format::WhisperHf => {
                super::whisper_ggml::convert_hf(src, &tmp.join("ggml-model.bin"), |d, t| {
                    progress("converting", d, t)
                })?;
                files.push("ggml-model.bin".into());
            }
            Format::WhisperPytorch => {
                let tokenizer = opts
                    .tokenizer
                    .map(Path::to_path_buf)
                    .or(opts.default_tokenizer.clone())
                    .ok_or_else(|| AddError::Unsupported {
                        path: src.to_path_buf(),
                        reason: "a PyTorch checkpoint carries no vocabulary: give --tokenizer \
                                 PATH (Whisper's tokenizer.json)"
                            .into(),
                    })?;
                let out = tmp.join("ggml-model.bin");
                let h = super::whisper_ggml::convert_pt(src, &tokenizer, &out, |d, t| {
                    progress("converting", d, t)
                })?;
                let english = h.n_vocab == 51864;
                if !english && opts.tokenizer.is_none() {
                    return Err(AddError::Unsupported {
                        path: src.to_path_buf(),
                        reason: format!(
                            "a multilingual model (n_vocab {}): give --tokenizer PATH with its \
                             multilingual tokenizer.json",
                            h.n_vocab
                        ),
                    });
                }
                files.push("ggml-model.bin".into());
            }
            Format::Gguf => {
                let header = super::gguf::Header::read(src)?;
                let arch = header
                    .metadata
                    .get("general.architecture")
                    .and_then(|v| v.as_str())
                    .unwrap_or("(none)")
                    .to_string();
                if arch != "llama" {
                    return Err(AddError::Unsupported {
                        path: src.to_path_buf(),
                        reason: format!(
                            "GGUF architecture {arch:?}: sotto runs llama-architecture models \
                             only (SmolLM2, TinyLlama, Llama-style)"
                        ),
                    });
                }
                let file = src
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "model.gguf".into());
                copy(src, &file)?;
                super::import::write_tokenizer(&tmp.join(&file), &tmp.join("tokenizer.json"))?;
                files.push(file);
                files.push("tokenizer.json".into());
            }
            Format::PiperVoice => {
                let file = src
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "voice.onnx".into());
                copy(src, &file)?;
                copy(
                    &PathBuf::from(format!("{}.json", src.display())),
                    &format!("{file}.json"),
                )?;
                files.push(format!("{file}.json"));
                files.insert(files.len() - 1, file);
            }
        }
        let files: Vec<FileHash> = files
            .into_iter()
            .map(|f| {
                Ok(FileHash {
                    sha256: sha256_file(&tmp.join(&f))?,
                    path: f,
                })
            })
            .collect::<Result<_, ModelError>>()?;
        let has_manifest = if let (Some(mut m), Some(mpath)) = (manifest.clone(), opts.manifest) {
            pin_manifest(&mut m, &name, &files, mpath, &tmp)?;
            let text = serde_norway::to_string(&m).map_err(|e| AddError::Unsupported {
                path: mpath.to_path_buf(),
                reason: format!("cannot write it back: {e}"),
            })?;
            std::fs::write(tmp.join("manifest.yml"), text)
                .map_err(write_err(&tmp.join("manifest.yml")))?;
            true
        } else {
            false
        };
        let record = Record {
            name: name.clone(),
            role,
            format,
            source: FileHash {
                path: std::fs::canonicalize(src)
                    .unwrap_or_else(|_| src.to_path_buf())
                    .display()
                    .to_string(),
                sha256: source_hash,
            },
            files,
            manifest: has_manifest,
            added: crate::audit::identity::now_rfc3339(),
        };
        let text = toml::to_string(&record).map_err(|e| AddError::Unsupported {
            path: tmp.join("model.toml"),
            reason: e.to_string(),
        })?;
        std::fs::write(tmp.join("model.toml"), text).map_err(write_err(&tmp.join("model.toml")))?;
        Ok(record)
    })();
    match result {
        Ok(record) => {
            std::fs::rename(&tmp, &dest).map_err(write_err(&dest))?;
            Ok((dest, record))
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

/// Makes the user's manifest describe exactly the written files, and copies the local licence
/// texts and evidence it points to (relative paths) beside it.
fn pin_manifest(
    m: &mut Manifest,
    name: &str,
    files: &[FileHash],
    manifest_path: &Path,
    dir: &Path,
) -> Result<(), AddError> {
    let from = manifest_path.parent().unwrap_or(Path::new("."));
    let mut local: Vec<String> = m
        .release
        .components
        .iter()
        .flat_map(|c| [c.license_path.clone(), c.component_path.clone()])
        .flatten()
        .collect();
    if let Some(l) = &m.release.license {
        for np in [&l.distribution, &l.code, &l.data, &l.document]
            .into_iter()
            .flatten()
        {
            local.extend(np.path.clone());
        }
    }
    let ext = m.sotto.get_or_insert_with(|| Extension {
        id: name.to_string(),
        weights: Vec::new(),
        base_model: None,
        evidence: Vec::new(),
        data_information: None,
        remedy: None,
        published_verdict: None,
    });
    ext.id = name.to_string();
    ext.weights = files
        .iter()
        .filter(|f| is_weight(&f.path))
        .map(|f| WeightFile {
            path: f.path.clone(),
            sha256: f.sha256.clone(),
        })
        .collect();
    local.extend(ext.evidence.iter().map(|e| e.path.clone()));
    for rel in local {
        let p = Path::new(&rel);
        if rel.contains("://") || p.is_absolute() || rel.contains("..") || rel.trim().is_empty() {
            continue;
        }
        let src = from.join(p);
        if !src.is_file() {
            continue;
        }
        let dst = dir.join(p);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(|source| AddError::Write {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        std::fs::copy(&src, &dst).map_err(|source| AddError::Write { path: dst, source })?;
    }
    Ok(())
}
