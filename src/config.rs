//! User configuration: a TOML file in the platform's config directory
//! (`~/.config/sotto/config.toml` on Linux, `~/Library/Application Support/sotto/` on macOS),
//! or `--config FILE`, or `$SOTTO_CONFIG_DIR/config.toml`.
//!
//! The first of two levels, as ripgrep has them: [`RawConfig`] is the file as written (unknown
//! keys rejected with their line); [`crate::settings::Settings`] merges it with a command's
//! flags and checks every value against its range. Audit exceptions are appended with
//! `toml_edit`, so the user's comments and layout survive.

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::audit::Exception;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("{path}: cannot edit it")]
    Edit {
        path: PathBuf,
        #[source]
        source: Box<toml_edit::TomlError>,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub audit: RawAudit,
    #[serde(default)]
    pub models: RawModels,
    #[serde(default)]
    pub llm: RawLlm,
    #[serde(default)]
    pub dictate: RawDictate,
    #[serde(default)]
    pub agent: RawAgent,
}

/// `[agent]`: defaults for `sotto agent` (its flags override them).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgent {
    pub wake_phrase: Option<String>,
    /// Voice commands file; relative paths are relative to the config file.
    pub commands: Option<PathBuf>,
    pub action_log: Option<PathBuf>,
    pub barge_in: Option<bool>,
    pub echo_tail_ms: Option<u32>,
    pub confirm_timeout_s: Option<u32>,
    pub speed: Option<f32>,
}

/// `[dictate]`: defaults for listening, in `sotto dictate` and `sotto agent`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDictate {
    pub device: Option<String>,
    pub vad: Option<crate::vad::DetectorKind>,
    pub vad_aggressiveness: Option<u8>,
    pub hangover_ms: Option<u32>,
    pub max_utterance_s: Option<u32>,
    pub ptt_key: Option<String>,
    /// Words and phrases Whisper should spell as written (names, jargon, acronyms).
    pub vocabulary: Option<Vec<String>>,
    /// A file of them, one per line; relative to the config file.
    pub vocabulary_file: Option<PathBuf>,
    /// Replacement rules applied to each transcript; relative to the config file.
    pub replacements: Option<PathBuf>,
    /// "comma", "new line", "scratch that"… said while dictating (default true).
    pub spoken_formatting: Option<bool>,
    /// Your own spoken phrases and what they become, e.g. `smiley = ":)"`.
    pub spoken: Option<std::collections::BTreeMap<String, String>>,
    /// Keep a history of transcripts in the data directory (default true).
    pub history: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLlm {
    pub system_prompt: Option<String>,
    pub max_tokens: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    pub policy: Option<String>,
    #[serde(default)]
    pub exceptions: Vec<Exception>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModels {
    pub stt: Option<String>,
    pub llm: Option<String>,
    pub tts: Option<String>,
    /// The language spoken: an ISO 639-1 code ("fr") or "auto"; a multilingual Whisper model
    /// only (default "en").
    pub language: Option<String>,
}

/// sotto's data directory, where added models and the dictation history live:
/// `$SOTTO_DATA_DIR`, else the platform's (`~/.local/share/sotto`,
/// `~/Library/Application Support/sotto`).
pub fn data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SOTTO_DATA_DIR") {
        return PathBuf::from(d);
    }
    dirs::data_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("sotto")
}

/// The configuration file: where it is and what it says, as written (values are checked
/// when [`crate::settings::Settings`] are made from it).
#[derive(Debug)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub raw: RawConfig,
}

impl ConfigFile {
    /// The config file to use: `--config`, else `$SOTTO_CONFIG_DIR/config.toml`, else the
    /// platform's config directory.
    pub fn default_path(flag: Option<PathBuf>) -> PathBuf {
        flag.unwrap_or_else(|| {
            let dir = std::env::var_os("SOTTO_CONFIG_DIR")
                .map(PathBuf::from)
                .or_else(|| dirs::config_dir().map(|d| d.join("sotto")))
                .unwrap_or_else(|| PathBuf::from(".sotto"));
            dir.join("config.toml")
        })
    }

    /// Loads the file (a missing file means all defaults).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        Self::parse(path, &text)
    }

    /// Parses the text of the file at `path`; unknown keys are errors naming their line.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            raw,
        })
    }

    /// The directory relative paths in the file are relative to.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// Appends an exception to the file, keeping everything else as written.
    pub fn record_exception(&mut self, e: Exception) -> Result<(), ConfigError> {
        let invalid = |message: &str| ConfigError::Invalid {
            path: self.path.clone(),
            message: message.to_string(),
        };
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let mut doc: toml_edit::DocumentMut =
            text.parse()
                .map_err(|source: toml_edit::TomlError| ConfigError::Edit {
                    path: self.path.clone(),
                    source: Box::new(source),
                })?;
        let audit = doc
            .entry("audit")
            .or_insert_with(|| toml_edit::Item::Table(toml_edit::Table::new()));
        let Some(audit) = audit.as_table_like_mut() else {
            return Err(invalid("`audit` is not a table"));
        };
        let list = audit
            .entry("exceptions")
            .or_insert(toml_edit::Item::ArrayOfTables(
                toml_edit::ArrayOfTables::new(),
            ));
        let Some(list) = list.as_array_of_tables_mut() else {
            return Err(invalid("`audit.exceptions` is not an array of tables"));
        };
        let mut t = toml_edit::Table::new();
        t["model"] = toml_edit::value(e.model.as_str());
        let mut hashes = toml_edit::Array::new();
        for h in &e.sha256 {
            hashes.push(h.as_str());
        }
        t["sha256"] = toml_edit::value(hashes);
        t["reason"] = toml_edit::value(e.reason.as_str());
        t["recorded"] = toml_edit::value(e.recorded.as_str());
        list.push(t);
        let write = |source| ConfigError::Write {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(write)?;
        }
        let tmp = self.path.with_extension("toml.partial");
        std::fs::write(&tmp, doc.to_string()).map_err(write)?;
        std::fs::rename(&tmp, &self.path).map_err(write)?;
        self.raw.audit.exceptions.push(e);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_rejected_with_their_line() {
        let e = ConfigFile::parse(
            Path::new("c.toml"),
            "[audit]\npolicy = \"open-source\"\npolcy = 1\n",
        )
        .unwrap_err();
        let e = format!("{e}: {}", std::error::Error::source(&e).unwrap());
        assert!(
            e.contains("c.toml") && e.contains("line 3") && e.contains("polcy"),
            "{e}"
        );
        let e =
            ConfigFile::parse(Path::new("c.toml"), "[dictate]\nvad = \"neural\"\n").unwrap_err();
        let e = format!("{e}: {}", std::error::Error::source(&e).unwrap());
        assert!(e.contains("neural") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn exceptions_are_appended_keeping_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "# my settings\n[audit]\npolicy = \"open-source\" # strict\n",
        )
        .unwrap();
        let mut c = ConfigFile::load(&path).unwrap();
        c.record_exception(Exception {
            model: "m".into(),
            sha256: vec!["ab".into()],
            reason: "testing".into(),
            recorded: "now".into(),
        })
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("# my settings") && text.contains("# strict"),
            "{text}"
        );
        let again = ConfigFile::load(&path).unwrap();
        assert_eq!(again.raw.audit.exceptions.len(), 1);
        assert_eq!(again.raw.audit.exceptions[0].reason, "testing");
    }
}
