//! Settings: configuration's second level. The configuration file as written
//! ([`crate::config::ConfigFile`]) and a command's flags ([`Flags`]) go in; one validated
//! [`Settings`] comes out, which every command reads (ripgrep's LowArgs → HiArgs). A flag wins
//! over the file, the file over the default. Every default and every range is in [`LIMITS`]
//! and the constants beside it, and a value out of range is an error naming the flag (or the
//! key and its file) and the range — the same check whichever way the value came in.

use std::path::PathBuf;
use std::time::Duration;

use crate::audit::{Policy, verdict::Osaid};
use crate::config::ConfigFile;
use crate::pipeline::listen::{ListenOptions, Source};
use crate::vad::{DetectorKind, SegmenterConfig};

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{name} = {value} is out of range: {range}")]
    OutOfRange {
        name: String,
        value: String,
        range: String,
    },
    #[error("{name}: {message}")]
    Invalid { name: String, message: String },
}

/// One setting's limits: its flag, its key in the config file, its range and unit.
pub struct Limit {
    pub flag: &'static str,
    pub key: Option<&'static str>,
    pub min: u64,
    pub max: u64,
    pub unit: &'static str,
    pub why: &'static str,
}

pub const HANGOVER_MS: Limit = Limit {
    flag: "--hangover-ms",
    key: Some("dictate.hangover_ms"),
    min: 100,
    max: 5_000,
    unit: "ms",
    why: "silence that ends an utterance",
};
pub const MAX_UTTERANCE_S: Limit = Limit {
    flag: "--max-utterance-s",
    key: Some("dictate.max_utterance_s"),
    min: 2,
    max: 30,
    unit: "s",
    why: "Whisper hears 30 s at a time",
};
pub const VAD_AGGRESSIVENESS: Limit = Limit {
    flag: "--vad-aggressiveness",
    key: Some("dictate.vad_aggressiveness"),
    min: 0,
    max: 3,
    unit: "",
    why: "the WebRTC detector's modes",
};
pub const ECHO_TAIL_MS: Limit = Limit {
    flag: "--echo-tail-ms",
    key: Some("agent.echo_tail_ms"),
    min: 0,
    max: 5_000,
    unit: "ms",
    why: "how long the microphone stays closed after sotto speaks",
};
pub const CONFIRM_TIMEOUT_S: Limit = Limit {
    flag: "--confirm-timeout-s",
    key: Some("agent.confirm_timeout_s"),
    min: 1,
    max: 120,
    unit: "s",
    why: "how long a confirmation question waits",
};
pub const TURNS: Limit = Limit {
    flag: "--turns",
    key: None,
    min: 1,
    max: 1_000_000,
    unit: "",
    why: "turns before the agent stops",
};
pub const MAX_TOKENS: Limit = Limit {
    flag: "--max-tokens",
    key: Some("llm.max_tokens"),
    min: 1,
    max: 4_096,
    unit: "tokens",
    why: "the longest reply",
};
pub const BEAM_SIZE: Limit = Limit {
    flag: "--beam-size",
    key: None,
    min: 1,
    max: 16,
    unit: "",
    why: "Whisper's beam width",
};
pub const THREADS: Limit = Limit {
    flag: "--threads",
    key: None,
    min: 1,
    max: 1_024,
    unit: "",
    why: "CPU threads per engine",
};
/// Speaking rate (a float, checked on its own): 0.25 to 4.
pub const SPEED: (f32, f32) = (0.25, 4.0);
/// The longest system prompt, in bytes: it is prefilled into the model's context.
pub const SYSTEM_PROMPT_BYTES: usize = 16 * 1024;

/// Every ranged setting, for `--help`-style listings and the README.
pub const LIMITS: [&Limit; 9] = [
    &HANGOVER_MS,
    &MAX_UTTERANCE_S,
    &VAD_AGGRESSIVENESS,
    &ECHO_TAIL_MS,
    &CONFIRM_TIMEOUT_S,
    &TURNS,
    &MAX_TOKENS,
    &BEAM_SIZE,
    &THREADS,
];

/// What a command's flags say (None: not given). Each command fills in what it has.
#[derive(Clone, Debug, Default)]
pub struct Flags {
    pub policy: Option<String>,
    pub threads: Option<usize>,
    pub device: Option<String>,
    pub vad: Option<DetectorKind>,
    pub vad_aggressiveness: Option<u8>,
    pub hangover_ms: Option<u32>,
    pub max_utterance_s: Option<u32>,
    pub ptt: Option<crate::ptt::Mode>,
    pub ptt_key: Option<String>,
    pub beam_size: Option<usize>,
    pub barge_in: bool,
    pub echo_tail_ms: Option<u32>,
    pub confirm_timeout_s: Option<u32>,
    pub wake: Option<String>,
    pub turns: Option<usize>,
    pub max_tokens: Option<usize>,
    pub speed: Option<f32>,
    pub commands: Option<PathBuf>,
    pub action_log: Option<PathBuf>,
    pub system_prompt: Option<String>,
    pub voice: Option<String>,
    pub stt_model: Option<String>,
    pub llm_model: Option<String>,
    pub language: Option<String>,
}

/// The models each role uses: registry ids, added models' names, or model directories.
#[derive(Clone, Debug)]
pub struct Models {
    pub stt: String,
    pub llm: String,
    pub tts: String,
}

/// How a command listens.
#[derive(Clone, Debug)]
pub struct Listening {
    pub device: Option<String>,
    pub detector: DetectorKind,
    pub aggressiveness: u8,
    pub hangover: Duration,
    pub max_utterance: Duration,
    pub ptt: Option<crate::ptt::Mode>,
    pub ptt_key: Option<String>,
}

/// The agent's behaviour.
#[derive(Clone, Debug)]
pub struct Agent {
    pub barge_in: bool,
    pub echo_tail: Duration,
    pub confirm_timeout: Duration,
    pub wake_phrase: Option<String>,
    pub turns: Option<usize>,
    /// The voice commands file: as given, else `commands.toml` beside the config if present.
    pub commands: Option<PathBuf>,
    pub action_log: PathBuf,
}

#[derive(Clone, Debug)]
pub struct Settings {
    pub config_path: PathBuf,
    pub policy: Policy,
    pub models: Models,
    /// Threads per engine: as asked, at most the machine's cores (a warning says so).
    pub threads: usize,
    pub beam_size: usize,
    /// What Whisper is told is spoken: a language code or "auto" (checked against the model
    /// when it loads, [`crate::stt::Stt::check_language`]).
    pub language: String,
    pub listening: Listening,
    pub agent: Agent,
    pub system_prompt: String,
    pub max_tokens: Option<usize>,
    pub speed: f32,
}

/// Where a value came from, for error messages.
fn origin(limit: &Limit, from_flag: bool, file: &ConfigFile) -> String {
    match (from_flag, limit.key) {
        (false, Some(key)) => format!("{key} in {}", file.path.display()),
        _ => limit.flag.to_string(),
    }
}

/// The flag's value, else the file's, checked against `limit`; None when neither gave one.
fn ranged<T>(
    limit: &Limit,
    flag: Option<T>,
    key: Option<T>,
    file: &ConfigFile,
) -> Result<Option<T>, SettingsError>
where
    T: Copy + Into<u64> + std::fmt::Display,
{
    let (value, from_flag) = match (flag, key) {
        (Some(v), _) => (v, true),
        (None, Some(v)) => (v, false),
        (None, None) => return Ok(None),
    };
    let v: u64 = value.into();
    if v < limit.min || v > limit.max {
        return Err(SettingsError::OutOfRange {
            name: origin(limit, from_flag, file),
            value: if limit.unit.is_empty() {
                value.to_string()
            } else {
                format!("{value} {}", limit.unit)
            },
            range: format!(
                "{} to {}{}{} ({})",
                limit.min,
                limit.max,
                if limit.unit.is_empty() { "" } else { " " },
                limit.unit,
                limit.why
            ),
        });
    }
    Ok(Some(value))
}

fn usize_ranged(
    limit: &Limit,
    flag: Option<usize>,
    file: &ConfigFile,
) -> Result<Option<usize>, SettingsError> {
    Ok(ranged(limit, flag.map(|v| v as u64), None, file)?.map(|v| v as usize))
}

impl Settings {
    /// Merges flags over the file over the defaults and checks every value.
    pub fn resolve(file: &ConfigFile, flags: &Flags) -> Result<Settings, SettingsError> {
        let raw = &file.raw;
        let policy_text = flags.policy.as_deref().or(raw.audit.policy.as_deref());
        let minimum = match policy_text {
            None => Osaid::OpenSource,
            Some(p) => p
                .parse()
                .map_err(|message: String| SettingsError::Invalid {
                    name: if flags.policy.is_some() {
                        "--policy".into()
                    } else {
                        format!("audit.policy in {}", file.path.display())
                    },
                    message,
                })?,
        };
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let threads = match usize_ranged(&THREADS, flags.threads, file)? {
            Some(t) if t > cores => {
                tracing::warn!(
                    threads = t,
                    cores,
                    "--threads above the number of cores; using {cores}"
                );
                eprintln!(
                    "warning: --threads {t} is more than this machine's {cores} cores; using {cores} \
                     (more threads than cores only wait for each other)"
                );
                cores
            }
            Some(t) => t,
            None => cores,
        };
        let d = &raw.dictate;
        let hangover_ms =
            ranged(&HANGOVER_MS, flags.hangover_ms, d.hangover_ms, file)?.unwrap_or(600);
        let max_utterance_s = ranged(
            &MAX_UTTERANCE_S,
            flags.max_utterance_s,
            d.max_utterance_s,
            file,
        )?
        .unwrap_or(25);
        let aggressiveness = ranged(
            &VAD_AGGRESSIVENESS,
            flags.vad_aggressiveness,
            d.vad_aggressiveness,
            file,
        )?
        .unwrap_or(2);
        let a = &raw.agent;
        let echo_tail_ms =
            ranged(&ECHO_TAIL_MS, flags.echo_tail_ms, a.echo_tail_ms, file)?.unwrap_or(300);
        let confirm_timeout_s = ranged(
            &CONFIRM_TIMEOUT_S,
            flags.confirm_timeout_s,
            a.confirm_timeout_s,
            file,
        )?
        .unwrap_or(8);
        let turns = usize_ranged(&TURNS, flags.turns, file)?;
        let max_tokens = ranged(
            &MAX_TOKENS,
            flags.max_tokens.map(|v| v as u64),
            raw.llm.max_tokens.map(u64::from),
            file,
        )?
        .map(|v| v as usize);
        let beam_size = usize_ranged(&BEAM_SIZE, flags.beam_size, file)?.unwrap_or(1);
        let speed = flags.speed.or(a.speed).unwrap_or(1.0);
        if !(SPEED.0..=SPEED.1).contains(&speed) {
            return Err(SettingsError::OutOfRange {
                name: if flags.speed.is_some() {
                    "--speed".into()
                } else {
                    format!("agent.speed in {}", file.path.display())
                },
                value: speed.to_string(),
                range: format!("{} to {} (the voice's speaking rate)", SPEED.0, SPEED.1),
            });
        }
        let system_prompt = flags
            .system_prompt
            .clone()
            .or_else(|| raw.llm.system_prompt.clone())
            .unwrap_or_else(|| crate::llm::DEFAULT_SYSTEM_PROMPT.into());
        if system_prompt.len() > SYSTEM_PROMPT_BYTES {
            return Err(SettingsError::OutOfRange {
                name: if flags.system_prompt.is_some() {
                    "--system".into()
                } else {
                    format!("llm.system_prompt in {}", file.path.display())
                },
                value: format!("{} bytes", system_prompt.len()),
                range: format!(
                    "at most {SYSTEM_PROMPT_BYTES} bytes (it is prefilled into the model's context)"
                ),
            });
        }
        let dir = file.dir();
        let resolve = |p: &PathBuf| {
            if p.is_relative() {
                dir.join(p)
            } else {
                p.clone()
            }
        };
        Ok(Settings {
            config_path: file.path.clone(),
            policy: Policy {
                minimum,
                exceptions: raw.audit.exceptions.clone(),
            },
            models: Models {
                stt: flags
                    .stt_model
                    .clone()
                    .or_else(|| raw.models.stt.clone())
                    .unwrap_or_else(|| "whisper-tiny.en".into()),
                llm: flags
                    .llm_model
                    .clone()
                    .or_else(|| raw.models.llm.clone())
                    .unwrap_or_else(|| "smollm2-135m-instruct".into()),
                tts: flags
                    .voice
                    .clone()
                    .or_else(|| raw.models.tts.clone())
                    .unwrap_or_else(|| "piper-en_US-joe-medium".into()),
            },
            threads,
            beam_size,
            language: flags
                .language
                .clone()
                .or_else(|| file.raw.models.language.clone())
                .unwrap_or_else(|| "en".into())
                .trim()
                .to_ascii_lowercase(),
            listening: Listening {
                device: flags.device.clone().or_else(|| d.device.clone()),
                detector: flags.vad.or(d.vad).unwrap_or(DetectorKind::Webrtc),
                aggressiveness,
                hangover: Duration::from_millis(hangover_ms.into()),
                max_utterance: Duration::from_secs(max_utterance_s.into()),
                // A hotkey alone means one key, two gestures: tap to toggle, hold to talk.
                ptt: flags
                    .ptt
                    .or(flags.ptt_key.as_ref().map(|_| crate::ptt::Mode::Auto)),
                ptt_key: flags
                    .ptt_key
                    .clone()
                    .or_else(|| flags.ptt.and(d.ptt_key.clone())),
            },
            agent: Agent {
                barge_in: flags.barge_in || a.barge_in.unwrap_or(false),
                echo_tail: Duration::from_millis(echo_tail_ms.into()),
                confirm_timeout: Duration::from_secs(confirm_timeout_s.into()),
                wake_phrase: flags
                    .wake
                    .clone()
                    .or_else(|| a.wake_phrase.clone())
                    .filter(|w| !w.trim().is_empty()),
                turns,
                commands: flags
                    .commands
                    .clone()
                    .or_else(|| a.commands.as_ref().map(resolve))
                    .or_else(|| Some(dir.join("commands.toml")).filter(|p| p.is_file())),
                action_log: flags
                    .action_log
                    .clone()
                    .or_else(|| a.action_log.as_ref().map(resolve))
                    .unwrap_or_else(crate::commands::ActionLog::default_path),
            },
            system_prompt,
            max_tokens,
            speed,
        })
    }

    /// Where and how to listen: `input`, a decoded WAV, instead of the configured device.
    pub fn listen_options(&self, input: Option<Source>) -> ListenOptions {
        let l = &self.listening;
        let frames = |d: Duration| (d.as_millis() as usize).div_ceil(crate::vad::FRAME_MS as usize);
        ListenOptions {
            source: input.unwrap_or_else(|| Source::Device(l.device.clone())),
            detector: l.detector,
            aggressiveness: l.aggressiveness,
            segmenter: SegmenterConfig {
                hangover_frames: frames(l.hangover),
                max_utterance_frames: frames(l.max_utterance),
                ..SegmenterConfig::default()
            },
            ptt: l.ptt,
            ptt_key: l.ptt_key.clone(),
            speculate: false,
            partials_every: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn file(text: &str) -> ConfigFile {
        ConfigFile::parse(Path::new("/home/u/.config/sotto/config.toml"), text).unwrap()
    }

    fn err(text: &str, flags: Flags) -> String {
        Settings::resolve(&file(text), &flags)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_the_defaults() {
        let f = file("[dictate]\nhangover_ms = 900\nvad = \"energy\"\n[agent]\nbarge_in = true\n");
        let s = Settings::resolve(&f, &Flags::default()).unwrap();
        assert_eq!(s.listening.hangover, Duration::from_millis(900));
        assert_eq!(s.listening.detector, DetectorKind::Energy);
        assert_eq!(s.listening.max_utterance, Duration::from_secs(25));
        assert!(s.agent.barge_in);
        assert_eq!(s.agent.echo_tail, Duration::from_millis(300));
        assert_eq!(s.agent.confirm_timeout, Duration::from_secs(8));
        let s = Settings::resolve(
            &f,
            &Flags {
                hangover_ms: Some(400),
                ..Flags::default()
            },
        )
        .unwrap();
        assert_eq!(s.listening.hangover, Duration::from_millis(400));
    }

    #[test]
    fn out_of_range_values_are_errors_naming_the_flag_or_the_key_and_file() {
        let e = err(
            "",
            Flags {
                hangover_ms: Some(u32::MAX),
                ..Flags::default()
            },
        );
        assert!(
            e.contains("--hangover-ms") && e.contains("100 to 5000 ms"),
            "{e}"
        );
        let e = err(
            "",
            Flags {
                echo_tail_ms: Some(u32::MAX),
                ..Flags::default()
            },
        );
        assert!(
            e.contains("--echo-tail-ms") && e.contains("0 to 5000 ms"),
            "{e}"
        );
        // The same range whichever way it came: an agent and a dictation flag alike.
        let e = err("[dictate]\nmax_utterance_s = 90\n", Flags::default());
        assert!(
            e.contains("dictate.max_utterance_s in /home/u/.config/sotto/config.toml")
                && e.contains("2 to 30 s"),
            "{e}"
        );
        let e = err("[dictate]\nvad_aggressiveness = 9\n", Flags::default());
        assert!(e.contains("0 to 3"), "{e}");
        let e = err("[agent]\nspeed = 9.0\n", Flags::default());
        assert!(e.contains("agent.speed"), "{e}");
        let e = err(
            "",
            Flags {
                turns: Some(0),
                ..Flags::default()
            },
        );
        assert!(e.contains("--turns"), "{e}");
        let e = err(
            "",
            Flags {
                system_prompt: Some("x".repeat(SYSTEM_PROMPT_BYTES + 1)),
                ..Flags::default()
            },
        );
        assert!(e.contains("--system") && e.contains("bytes"), "{e}");
        let e = err("[audit]\npolicy = \"anything\"\n", Flags::default());
        assert!(e.contains("audit.policy") && e.contains("anything"), "{e}");
    }

    #[test]
    fn threads_above_the_cores_are_capped() {
        let cores = std::thread::available_parallelism().unwrap().get();
        let s = Settings::resolve(
            &file(""),
            &Flags {
                threads: Some(cores + 62),
                ..Flags::default()
            },
        )
        .unwrap();
        assert_eq!(s.threads, cores);
    }

    #[test]
    fn agent_paths_resolve_beside_the_config() {
        let s = Settings::resolve(
            &file("[agent]\nwake_phrase = \"hey sotto\"\ncommands = \"cmds.toml\"\n"),
            &Flags::default(),
        )
        .unwrap();
        assert_eq!(s.agent.wake_phrase.as_deref(), Some("hey sotto"));
        assert_eq!(
            s.agent.commands,
            Some(PathBuf::from("/home/u/.config/sotto/cmds.toml"))
        );
    }
}
