//! User configuration: a TOML file in the platform's config directory
//! (`~/.config/sotto/config.toml` on Linux, `~/Library/Application Support/sotto/` on macOS),
//! or `--config FILE`, or `$SOTTO_CONFIG_DIR/config.toml`.
//!
//! Two levels, as ripgrep does: [`RawConfig`] is the file as written (unknown keys rejected
//! with their line), [`Config`] is validated with defaults applied. Audit exceptions are
//! appended with `toml_edit`, so the user's comments and layout survive.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::audit::verdict::Osaid;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
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
    pub speed: Option<f32>,
}

/// Validated agent defaults, paths resolved.
#[derive(Clone, Debug)]
pub struct AgentDefaults {
    pub wake_phrase: Option<String>,
    /// The commands file: as configured, else `commands.toml` beside the config if present.
    pub commands: Option<PathBuf>,
    pub action_log: PathBuf,
    pub barge_in: bool,
    pub echo_tail_ms: u32,
    pub speed: f32,
}

/// `[dictate]`: defaults for `sotto dictate` (its flags override them).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDictate {
    pub device: Option<String>,
    pub vad: Option<crate::vad::DetectorKind>,
    pub vad_aggressiveness: Option<u8>,
    pub hangover_ms: Option<u32>,
    pub max_utterance_s: Option<u32>,
    pub ptt_key: Option<String>,
}

/// Validated dictation defaults.
#[derive(Clone, Debug)]
pub struct DictateDefaults {
    pub device: Option<String>,
    pub vad: crate::vad::DetectorKind,
    pub vad_aggressiveness: u8,
    pub hangover_ms: u32,
    pub max_utterance_s: u32,
    /// The push-to-talk hotkey used with `--ptt`.
    pub ptt_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLlm {
    pub system_prompt: Option<String>,
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

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    pub policy: Osaid,
    pub exceptions: Vec<Exception>,
    pub stt_model: String,
    pub llm_model: String,
    pub tts_model: String,
    pub system_prompt: String,
    pub dictate: DictateDefaults,
    pub agent: AgentDefaults,
}

impl Config {
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

    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let policy = match raw.audit.policy.as_deref() {
            None => Osaid::OpenSource,
            Some(p) => p
                .parse()
                .map_err(|e: String| invalid(format!("audit.{e}")))?,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: PathBuf| if p.is_relative() { dir.join(p) } else { p };
        let speed = raw.agent.speed.unwrap_or(1.0);
        if !(0.25..=4.0).contains(&speed) {
            return Err(invalid(format!(
                "agent.speed = {speed}: expected 0.25 to 4"
            )));
        }
        let agent = AgentDefaults {
            wake_phrase: raw.agent.wake_phrase.filter(|w| !w.trim().is_empty()),
            commands: raw
                .agent
                .commands
                .map(resolve)
                .or_else(|| Some(dir.join("commands.toml")).filter(|p| p.is_file())),
            action_log: raw
                .agent
                .action_log
                .map(resolve)
                .unwrap_or_else(crate::commands::ActionLog::default_path),
            barge_in: raw.agent.barge_in.unwrap_or(false),
            echo_tail_ms: raw.agent.echo_tail_ms.unwrap_or(300),
            speed,
        };
        Ok(Self {
            path: path.to_path_buf(),
            policy,
            agent,
            exceptions: raw.audit.exceptions,
            stt_model: raw.models.stt.unwrap_or_else(|| "whisper-tiny.en".into()),
            llm_model: raw
                .models
                .llm
                .unwrap_or_else(|| "smollm2-135m-instruct".into()),
            tts_model: raw
                .models
                .tts
                .unwrap_or_else(|| "piper-en_US-joe-medium".into()),
            system_prompt: raw
                .llm
                .system_prompt
                .unwrap_or_else(|| crate::llm::DEFAULT_SYSTEM_PROMPT.into()),
            dictate: DictateDefaults {
                device: raw.dictate.device,
                vad: raw.dictate.vad.unwrap_or(crate::vad::DetectorKind::Webrtc),
                vad_aggressiveness: match raw.dictate.vad_aggressiveness {
                    None => 2,
                    Some(a @ 0..=3) => a,
                    Some(a) => {
                        return Err(invalid(format!(
                            "dictate.vad_aggressiveness = {a}: expected 0 to 3"
                        )));
                    }
                },
                hangover_ms: raw.dictate.hangover_ms.unwrap_or(600),
                max_utterance_s: raw.dictate.max_utterance_s.unwrap_or(25),
                ptt_key: raw.dictate.ptt_key,
            },
        })
    }

    /// Appends an exception to the file, keeping everything else as written.
    pub fn record_exception(&mut self, e: Exception) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let mut doc: toml_edit::DocumentMut =
            text.parse()
                .map_err(|err: toml_edit::TomlError| ConfigError::Invalid {
                    path: self.path.clone(),
                    message: err.to_string(),
                })?;
        let audit = doc
            .entry("audit")
            .or_insert_with(|| toml_edit::Item::Table(toml_edit::Table::new()));
        let Some(audit) = audit.as_table_like_mut() else {
            return Err(ConfigError::Invalid {
                path: self.path.clone(),
                message: "`audit` is not a table".into(),
            });
        };
        let list = audit
            .entry("exceptions")
            .or_insert(toml_edit::Item::ArrayOfTables(
                toml_edit::ArrayOfTables::new(),
            ));
        let Some(list) = list.as_array_of_tables_mut() else {
            return Err(ConfigError::Invalid {
                path: self.path.clone(),
                message: "`audit.exceptions` is not an array of tables".into(),
            });
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
        self.exceptions.push(e);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_rejected_with_their_line() {
        let e = Config::parse(
            Path::new("c.toml"),
            "[audit]\npolicy = \"open-source\"\npolcy = 1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("c.toml") && e.contains("line 3") && e.contains("polcy"),
            "{e}"
        );
    }

    #[test]
    fn dictation_defaults_come_from_the_config() {
        let c = Config::parse(
            Path::new("c.toml"),
            "[dictate]\nvad = \"energy\"\nhangover_ms = 900\n",
        )
        .unwrap();
        assert_eq!(c.dictate.vad, crate::vad::DetectorKind::Energy);
        assert_eq!(
            (c.dictate.hangover_ms, c.dictate.max_utterance_s),
            (900, 25)
        );
        let e = Config::parse(Path::new("c.toml"), "[dictate]\nvad = \"neural\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("neural") && e.contains("line 2"), "{e}");
        let e = Config::parse(Path::new("c.toml"), "[dictate]\nvad_aggressiveness = 9\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("0 to 3"), "{e}");
    }

    #[test]
    fn agent_settings_resolve_paths_beside_the_config() {
        let c = Config::parse(
            Path::new("/home/u/.config/sotto/config.toml"),
            "[agent]\nwake_phrase = \"hey sotto\"\ncommands = \"cmds.toml\"\nbarge_in = true\n",
        )
        .unwrap();
        assert_eq!(c.agent.wake_phrase.as_deref(), Some("hey sotto"));
        assert_eq!(
            c.agent.commands,
            Some(PathBuf::from("/home/u/.config/sotto/cmds.toml"))
        );
        assert!(c.agent.barge_in);
        assert_eq!(c.agent.echo_tail_ms, 300);
        let e = Config::parse(Path::new("c.toml"), "[agent]\nspeed = 9.0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("agent.speed"), "{e}");
        let e = Config::parse(Path::new("c.toml"), "[agent]\nwake = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("wake") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn bad_policy_is_named() {
        let e = Config::parse(Path::new("c.toml"), "[audit]\npolicy = \"anything\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("anything"), "{e}");
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
        let mut c = Config::load(&path).unwrap();
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
        let again = Config::load(&path).unwrap();
        assert_eq!(again.exceptions.len(), 1);
        assert_eq!(again.exceptions[0].reason, "testing");
    }
}
