//! Command-line interface: argument parsing and the commands' top-level flow.
//!
//! Each command is a function from parsed arguments to an exit code; errors carry context
//! naming the file or value at fault and are printed whole by `main`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use crate::audio;
use crate::audit::{self, AuditContext, AuditPass, identity::HashCache};
use crate::config::ConfigFile;
use crate::models::{self, ModelsDir, import};
use crate::settings::{Flags, Settings};
use crate::stt::{Stt, SttOptions};
use crate::transcript::{self, Format};

/// Exit codes beyond 0 (success) and 1 (an error, printed on stderr).
pub mod exit {
    /// Bad command-line usage (clap's own code).
    pub const USAGE: u8 = 2;
    /// A model was refused by the openness audit.
    pub const AUDIT_REFUSED: u8 = crate::audit::EXIT_REFUSED;
}

#[derive(Parser, Debug)]
#[command(
    name = "sotto",
    version,
    about = "A local voice agent that only runs open models"
)]
pub struct Cli {
    /// Directory holding the models (default: $SOTTO_MODELS_DIR, else the source tree's models/).
    #[arg(long, global = true, value_name = "DIR")]
    pub models_dir: Option<PathBuf>,
    /// Configuration file (default: the platform config dir's sotto/config.toml).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Lowest openness that may load, overriding the config (open-source or open-weight).
    #[arg(long, global = true, value_name = "POLICY")]
    pub policy: Option<String>,
    /// Speech recogniser for this run: a registry id, an added model's name, or its directory.
    #[arg(long, global = true, value_name = "MODEL")]
    pub stt_model: Option<String>,
    /// Language model for this run: a registry id, an added model's name, or its directory.
    #[arg(long, global = true, value_name = "MODEL")]
    pub llm_model: Option<String>,
    /// The language spoken, for a multilingual Whisper model: a code such as fr or de, or
    /// auto to detect it [models.language; en].
    #[arg(long, global = true, value_name = "CODE")]
    pub language: Option<String>,
    /// More log output on stderr (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Without a command: `sotto agent` with its defaults.
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The voice agent (the default): listens, answers aloud or runs a voice command.
    Agent(AgentArgs),
    /// Transcribe WAV files with Whisper.
    Transcribe(TranscribeArgs),
    /// Inspect and import the model files.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Judge the models' openness (OSAID 1.0 verdict, MOF class) and manage exceptions.
    Audit(AuditArgs),
    /// Talk to the on-device language model (one prompt, or a conversation on a terminal).
    Chat(ChatArgs),
    /// Speak text with the Piper voice, to the speaker or a WAV file.
    Say(SayArgs),
    /// Dictation: each utterance from the microphone (or --input FILE) printed as text.
    Dictate(DictateArgs),
    /// Serve the audited engines over the Wyoming protocol (Home Assistant, satellites):
    /// speech to text, text to speech and conversation.
    Serve(ServeArgs),
    /// List audio input and output devices.
    Devices,
    /// Run sotto as a service that starts at login (a systemd user unit on Linux, a launchd
    /// agent on macOS).
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Show the last dictated transcripts (the history kept in the data directory).
    History {
        /// How many, oldest first.
        #[arg(long, default_value_t = 10, value_name = "N")]
        last: usize,
        /// Also copy them (one per line) to the clipboard.
        #[arg(long)]
        copy: bool,
        /// One JSON object per line (time, text).
        #[arg(long)]
        json: bool,
    },
    /// Control a running `sotto dictate --ptt`: start, stop, toggle or cancel recording.
    Ctl {
        #[arg(value_parser = ["start", "stop", "toggle", "cancel"])]
        command: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ServiceCommand {
    /// Write the service (and, unless --no-start, enable and start it), running
    /// `sotto JOB ARGS…` at every login.
    Install {
        #[arg(value_enum, default_value = "dictate")]
        job: crate::service::Job,
        /// Only write the unit or plist.
        #[arg(long)]
        no_start: bool,
        /// The job's own flags, after `--` (e.g. `-- --ptt-key F9 --type`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Stop the service and remove it.
    Uninstall {
        #[arg(value_enum, default_value = "dictate")]
        job: crate::service::Job,
    },
    /// Whether the service is installed and running, and its last log lines.
    Status {
        #[arg(value_enum, default_value = "dictate")]
        job: crate::service::Job,
    },
}

#[derive(Args, Debug)]
pub struct DictateArgs {
    /// Input device by name (see `sotto devices`); default: the system's default input.
    #[arg(long, value_name = "NAME")]
    pub device: Option<String>,
    /// Feed a WAV file through the same path instead of a microphone, at real-time pace.
    #[arg(long, value_name = "FILE.wav")]
    pub input: Option<PathBuf>,
    /// With --input: as fast as the pipeline takes it.
    #[arg(long, requires = "input")]
    pub fast: bool,
    /// One JSON object per utterance (kind, text, start, end, latency_ms, split).
    #[arg(long)]
    pub jsonl: bool,
    /// Also report the text of each utterance while it is spoken, as it grows: JSON lines of
    /// kind "partial" with --jsonl, else lines on stderr.
    #[arg(long)]
    pub partials: bool,
    /// Also append each utterance to this file.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Voice activity detector [config: dictate.vad; default webrtc].
    #[arg(long, value_enum)]
    pub vad: Option<crate::vad::DetectorKind>,
    /// Detector aggressiveness, 0 (keeps most audio) to 3 [dictate.vad_aggressiveness; 2].
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=3))]
    pub vad_aggressiveness: Option<u8>,
    /// Silence that ends an utterance, in milliseconds [dictate.hangover_ms; 600].
    #[arg(long, value_name = "MS")]
    pub hangover_ms: Option<u32>,
    /// Longest utterance before it is split at a pause, in seconds [dictate.max_utterance_s; 25].
    #[arg(long, value_name = "S")]
    pub max_utterance_s: Option<u32>,
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Push-to-talk instead of voice activity: record between `sotto ctl start` and
    /// `sotto ctl stop` (hold), on each `sotto ctl toggle` / SIGUSR1 (toggle), or both on one
    /// key (auto: a tap toggles, a hold records until release).
    #[arg(long, value_enum, value_name = "MODE")]
    pub ptt: Option<crate::ptt::Mode>,
    /// Push-to-talk on a global hotkey, e.g. F9 or ctrl+alt+space (X11 or macOS session);
    /// implies --ptt auto (tap to toggle, hold to talk) unless --ptt says otherwise
    /// [dictate.ptt_key].
    #[arg(long, value_name = "KEY")]
    pub ptt_key: Option<String>,
    /// Beam width for Whisper; 1 decodes greedily (lower latency).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub beam_size: usize,
    /// Put each utterance on the clipboard (macOS, Wayland or X11 session).
    #[arg(long)]
    pub clipboard: bool,
    /// Type each utterance into the focused window (macOS, Wayland or X11 session).
    #[arg(long = "type")]
    pub type_text: bool,
    /// Words and phrases to spell as written, one per line (names, jargon, acronyms), given
    /// to Whisper as its prompt; replaces [dictate] vocabulary and vocabulary_file.
    #[arg(long, value_name = "FILE")]
    pub vocabulary: Option<PathBuf>,
    /// Replacement rules (FROM => TO, /regex/ => TO), applied in order to each transcript
    /// [dictate.replacements].
    #[arg(long, value_name = "FILE")]
    pub replacements: Option<PathBuf>,
    /// Take "comma", "period", "new line", "scratch that"… literally [dictate.spoken_formatting].
    #[arg(long)]
    pub no_spoken_formatting: bool,
    /// Keep no history of this session's transcripts [dictate.history].
    #[arg(long)]
    pub no_history: bool,
}

#[derive(Args, Debug, Default)]
pub struct AgentArgs {
    /// Input device by name (see `sotto devices`); default: the system's default input.
    #[arg(long, value_name = "NAME")]
    pub device: Option<String>,
    /// Listen to a WAV file (at real-time pace) instead of a microphone; the session ends
    /// when its last turn is answered.
    #[arg(long, value_name = "FILE.wav")]
    pub input: Option<PathBuf>,
    /// With --input: feed the file as fast as the pipeline takes it.
    #[arg(long, requires = "input")]
    pub fast: bool,
    /// Write what would be played to this WAV file (real-time timeline) instead of the speaker.
    #[arg(short, long, value_name = "FILE.wav")]
    pub output: Option<PathBuf>,
    /// Replace an existing --output file.
    #[arg(long)]
    pub force: bool,
    /// Append each turn's latencies (JSON lines) to this file.
    #[arg(long, value_name = "FILE.jsonl")]
    pub metrics: Option<PathBuf>,
    /// Print each turn as a JSON object instead of text.
    #[arg(long)]
    pub jsonl: bool,
    #[command(flatten)]
    pub engines: EngineArgs,
    /// Speech while sotto speaks interrupts it; turns the echo guard off while speaking, so
    /// use headphones [agent.barge_in].
    #[arg(long)]
    pub barge_in: bool,
    /// How long the microphone stays closed after sotto speaks, in ms [agent.echo_tail_ms; 300].
    #[arg(long, value_name = "MS")]
    pub echo_tail_ms: Option<u32>,
    /// Only take utterances that start with this phrase [agent.wake_phrase].
    #[arg(long, value_name = "PHRASE")]
    pub wake: Option<String>,
    /// Stop after this many turns.
    #[arg(long, value_name = "N")]
    pub turns: Option<usize>,
    /// Silence that ends an utterance, in milliseconds [dictate.hangover_ms; 600].
    #[arg(long, value_name = "MS")]
    pub hangover_ms: Option<u32>,
}

/// What `agent` and `serve` answer with: voice commands, the reply's length, the threads.
#[derive(Args, Debug, Default)]
pub struct EngineArgs {
    /// Voice commands file (TOML) [config: agent.commands; default commands.toml beside it].
    #[arg(long, value_name = "FILE")]
    pub commands: Option<PathBuf>,
    /// Where actions are logged (JSON lines) [agent.action_log; the data dir's sotto/actions.jsonl].
    #[arg(long, value_name = "FILE")]
    pub action_log: Option<PathBuf>,
    /// Longest reply, in tokens.
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<usize>,
    /// CPU threads for Whisper and the language model (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// Where to listen: tcp://HOST:PORT or unix:///PATH.
    #[arg(long, default_value = "tcp://0.0.0.0:10300", value_name = "URI")]
    pub uri: String,
    /// Offer speech to text (with none of --asr/--tts/--handle, all three are offered).
    #[arg(long)]
    pub asr: bool,
    /// Offer text to speech.
    #[arg(long)]
    pub tts: bool,
    /// Offer conversation: voice commands first, the language model otherwise.
    #[arg(long)]
    pub handle: bool,
    /// Announce the server on the local network (mDNS `_wyoming._tcp`) under this name.
    #[arg(long, value_name = "NAME")]
    pub zeroconf: Option<String>,
    /// Clients connected at once; one more is told `busy`.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub max_clients: usize,
    /// Requests waiting per engine; one more is told `busy`.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub queue: usize,
    /// Longest utterance transcribed, in seconds.
    #[arg(long, default_value_t = 60, value_name = "S")]
    pub max_utterance_s: u64,
    /// Largest event payload accepted, in bytes.
    #[arg(long, default_value_t = 1 << 20, value_name = "BYTES")]
    pub max_payload: usize,
    /// Whisper's beam search width (1 = greedy) [stt.beam_size; 1].
    #[arg(long, value_name = "N")]
    pub beam_size: Option<usize>,
    #[command(flatten)]
    pub engines: EngineArgs,
}

#[derive(Args, Debug)]
pub struct ChatArgs {
    /// One prompt; without it, a conversation on stdin (one line per turn).
    #[arg(value_name = "PROMPT")]
    pub prompt: Option<String>,
    /// System prompt (default: `[llm] system_prompt` in the config, else a short-answer prompt).
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    /// Sampling temperature; 0 decodes greedily.
    #[arg(long, default_value_t = 0.2)]
    pub temperature: f64,
    /// Nucleus sampling threshold.
    #[arg(long, default_value_t = 0.9)]
    pub top_p: f64,
    #[arg(long, default_value_t = 299_792_458)]
    pub seed: u64,
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub max_tokens: usize,
    #[arg(long, default_value_t = 1.1)]
    pub repeat_penalty: f32,
    /// Print token counts and speeds on stderr after each reply.
    #[arg(long)]
    pub stats: bool,
    /// CPU threads for the model (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Print the model's perplexity on the text in FILE (JSON) instead of chatting; for
    /// scripts/compare_llm.py.
    #[arg(long, value_name = "FILE", hide = true)]
    pub perplexity: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct SayArgs {
    /// What to say; `-` reads stdin.
    #[arg(value_name = "TEXT")]
    pub text: String,
    /// Write a WAV file instead of playing.
    #[arg(short, long, value_name = "FILE.wav")]
    pub output: Option<PathBuf>,
    /// Voice: a registry id (default: the configured voice).
    #[arg(long, value_name = "VOICE")]
    pub voice: Option<String>,
    /// Speaking rate; 1.0 is the voice's own, 1.5 faster.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f32,
    /// Replace the output file if it exists.
    #[arg(long)]
    pub force: bool,
    /// Print synthesis timing on stderr (time to first audio, real-time factor).
    #[arg(long)]
    pub stats: bool,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub action: Option<AuditAction>,
    /// Registry ids or model files to audit (default: the configured models).
    #[arg(value_name = "MODEL")]
    pub models: Vec<String>,
    /// Print the reports as JSON.
    #[arg(long)]
    pub json: bool,
    /// Judge MOF YAML manifests: files, or directories searched for *.yml / *.yaml (paths
    /// in a manifest are relative to its directory). More than one: a line per model.
    #[arg(long, value_name = "FILE.yml|DIR", num_args = 1..)]
    pub manifest: Vec<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum AuditAction {
    /// Admit a model below the policy, pinned to the sha256 of its current bytes.
    Accept {
        #[arg(value_name = "MODEL")]
        model: String,
        /// Why you accept it (recorded in the config, shown on every start).
        #[arg(long)]
        reason: String,
    },
    /// Show the configured models' verdicts and ask, for each one below the policy, whether
    /// to accept it. Without a terminal only models named by --accept or $SOTTO_ACCEPT
    /// (comma-separated) are accepted.
    Review {
        #[arg(long = "accept", value_name = "MODEL")]
        accept: Vec<String>,
    },
}

#[derive(Args, Debug)]
pub struct TranscribeArgs {
    /// WAV files (8–48 kHz, mono or stereo, 16/24/32-bit int or float); `-` reads stdin.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Output file (one input) or directory (several inputs); default stdout.
    #[arg(short, long, value_name = "OUT")]
    pub output: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Txt)]
    pub format: Format,
    /// CPU threads for whisper (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Beam width; 1 decodes greedily.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub beam_size: usize,
    /// A whisper.cpp ggml model to use instead of the imported tiny.en.
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Replace output files that already exist.
    #[arg(long)]
    pub force: bool,
}

#[derive(Subcommand, Debug)]
pub enum ModelsCommand {
    /// Show what each role uses, every pinned model file (size, sha256, verified or not) and
    /// the models you added.
    List,
    /// Add a model you brought: detected, converted in Rust, recorded with its sha256 in your
    /// data directory, and judged by the openness audit at once.
    Add {
        /// A whisper.cpp ggml file, an OpenAI-format Whisper .pt checkpoint, a CTranslate2
        /// Whisper directory, a llama-architecture GGUF, or a Piper voice (.onnx beside its
        /// .onnx.json).
        #[arg(value_name = "PATH")]
        path: PathBuf,
        /// A MOF manifest describing the model (kept beside it, pinned to the written bytes).
        #[arg(long, value_name = "FILE.yml")]
        manifest: Option<PathBuf>,
        /// The role it is for (checked against what the file is).
        #[arg(long, value_enum)]
        role: Option<models::user::Role>,
        /// Its name in sotto (default: the file's name).
        #[arg(long)]
        name: Option<String>,
        /// Whisper's tokenizer.json, for a .pt checkpoint (default: the quick-start English one).
        #[arg(long, value_name = "FILE")]
        tokenizer: Option<PathBuf>,
    },
    /// Convert the fetched models into the formats sotto loads (Rust, no Python).
    Import {
        /// Convert again even when the outputs already verify.
        #[arg(long)]
        force: bool,
    },
}

/// When the command started (start-up times are reported from here).
pub fn process_start() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

pub fn run() -> anyhow::Result<ExitCode> {
    process_start();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { exit::USAGE } else { 0 };
            let _ = e.print();
            return Ok(ExitCode::from(code));
        }
    };
    init_logging(cli.verbose);
    let models = ModelsDir::resolve(cli.models_dir.clone());
    let mut file = ConfigFile::load(&ConfigFile::default_path(cli.config.clone()))?;
    // The flags every command shares; each command adds its own before resolving.
    let global = Flags {
        policy: cli.policy.clone(),
        stt_model: cli.stt_model.clone(),
        llm_model: cli.llm_model.clone(),
        language: cli.language.clone(),
        ..Flags::default()
    };
    match cli.command.unwrap_or(Command::Agent(AgentArgs::default())) {
        Command::Agent(args) => agent(&models, &file, global, args),
        Command::Transcribe(args) => transcribe(&models, &file, global, args),
        Command::Models(ModelsCommand::List) => {
            let settings = Settings::resolve(&file, &global)?;
            models_list(&models, &settings)
        }
        Command::Models(ModelsCommand::Add {
            path,
            manifest,
            role,
            name,
            tokenizer,
        }) => {
            let settings = Settings::resolve(&file, &global)?;
            let opts = models::user::AddOptions {
                name,
                role,
                manifest: manifest.as_deref(),
                tokenizer: tokenizer.as_deref(),
                default_tokenizer: Some(models.path("whisper-tiny.en-ct2/tokenizer.json"))
                    .filter(|p| p.is_file()),
            };
            models_add(&models, &settings, &path, &opts)
        }
        Command::Models(ModelsCommand::Import { force }) => models_import(&models, force),
        Command::Audit(args) => audit_command(&models, &mut file, global, args),
        Command::Chat(args) => chat(&models, &file, global, args),
        Command::Say(args) => say(&models, &file, global, args),
        Command::Dictate(args) => dictate(&models, &file, global, args),
        Command::Serve(args) => serve(&models, &file, global, args),
        Command::History { last, copy, json } => history(last, copy, json),
        Command::Service(cmd) => service(cmd),
        Command::Ctl { command } => {
            crate::ptt::send(&command)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Devices => {
            for line in crate::capture::list_devices() {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Runs the startup audit for the models a command is about to load. On refusal prints the
/// report and returns the exit code; on success names every model admitted by exception.
pub fn startup_gate(
    ctx: &mut AuditContext,
    settings: &Settings,
    ids: &[&str],
) -> anyhow::Result<Result<AuditPass, ExitCode>> {
    match audit::gate(ctx, &settings.policy, ids)? {
        Ok(pass) => {
            for (r, reason) in pass.excepted() {
                eprintln!(
                    "note: {} is {} and loads only because of your exception ({reason}); \
                     `sotto audit {}` shows why",
                    r.id, r.judgement.osaid, r.id
                );
            }
            Ok(Ok(pass))
        }
        Err(refusal) => {
            eprint!("{}", audit::render(&refusal.reports, refusal.policy));
            eprintln!(
                "\nerror: startup stopped by the openness audit: a model is below the \
                 `{}` policy (config: {})",
                refusal.policy,
                settings.config_path.display()
            );
            Ok(Err(ExitCode::from(exit::AUDIT_REFUSED)))
        }
    }
}

fn audit_command(
    models: &ModelsDir,
    file: &mut ConfigFile,
    flags: Flags,
    args: AuditArgs,
) -> anyhow::Result<ExitCode> {
    let settings = Settings::resolve(file, &flags)?;
    let mut ctx = AuditContext::new(&models.root);
    match args.action {
        Some(AuditAction::Accept { model, reason }) => {
            if reason.trim().is_empty() {
                bail!("--reason must say why you accept {model}");
            }
            let report = ctx.audit_id(&model)?;
            ctx.cache.save();
            if report.files.is_empty() {
                bail!("{model} has no weight files here to pin an exception to (fetch it first)");
            }
            let e = audit::exception_for(&report, &reason);
            file.record_exception(e.clone())?;
            println!(
                "recorded in {}: {} ({}) admitted for sha256 {} — any change to these bytes \
                 voids it",
                file.path.display(),
                e.model,
                report.judgement.osaid,
                e.sha256.join(", ")
            );
            return Ok(ExitCode::SUCCESS);
        }
        Some(AuditAction::Review { accept }) => {
            return audit_review(&mut ctx, file, &settings, accept);
        }
        None => {}
    }
    if !args.manifest.is_empty() {
        return audit_manifests(&mut ctx, &args, &settings);
    }
    let reports = {
        let ids: Vec<String> = if args.models.is_empty() {
            let m = &settings.models;
            vec![m.stt.clone(), m.llm.clone(), m.tts.clone()]
        } else {
            args.models.clone()
        };
        ids.iter()
            .map(|id| ctx.audit_id(id))
            .collect::<Result<Vec<_>, _>>()?
    };
    ctx.cache.save();
    let mut reports = reports;
    let ok = audit::apply(&mut reports, &settings.policy);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "policy": settings.policy.minimum,
                "models": reports,
            }))?
        );
    } else {
        print!("{}", audit::render(&reports, settings.policy.minimum));
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::AUDIT_REFUSED)
    })
}

/// Every manifest file named, directories searched recursively, in a stable order.
fn manifest_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read the directory {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out)?;
            } else if p
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("yml") || e.eq_ignore_ascii_case("yaml"))
            {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk(p, &mut out)?;
        } else {
            out.push(p.clone());
        }
    }
    if out.is_empty() {
        bail!(
            "no *.yml or *.yaml manifest found in {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(out)
}

/// `sotto audit --manifest …`: one manifest gets the full report; a collection gets a line
/// per model (`--json`: an object per line). A manifest that cannot be read or judged is
/// reported by name and the rest are still judged; the exit status says so.
fn audit_manifests(
    ctx: &mut AuditContext,
    args: &AuditArgs,
    settings: &Settings,
) -> anyhow::Result<ExitCode> {
    let files = manifest_files(&args.manifest)?;
    let single = files.len() == 1 && !args.manifest[0].is_dir();
    let t0 = std::time::Instant::now();
    let mut reports = Vec::new();
    let mut failed = 0usize;
    for path in &files {
        let judged = audit::manifest::Manifest::read(path)
            .map_err(anyhow::Error::from)
            .and_then(|m| {
                let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
                Ok(ctx.audit_manifest(&m, &base, &mut Vec::new())?)
            });
        match judged {
            Ok(r) => reports.push(r),
            Err(e) if single => return Err(e),
            Err(e) => {
                failed += 1;
                eprintln!("error: {}: {e:#}", path.display());
            }
        }
    }
    ctx.cache.save();
    let ok = audit::apply(&mut reports, &settings.policy);
    let mut stdout = std::io::stdout().lock();
    if args.json {
        for r in &reports {
            writeln!(stdout, "{}", serde_json::to_string(r)?)?;
        }
    } else if single {
        write!(
            stdout,
            "{}",
            audit::render(&reports, settings.policy.minimum)
        )?;
    } else {
        write!(
            stdout,
            "{}",
            audit::render_table(&reports, settings.policy.minimum)
        )?;
        writeln!(
            stdout,
            "\n{} models judged in {} ms{}",
            reports.len(),
            t0.elapsed().as_millis(),
            if failed > 0 {
                format!("; {failed} manifests could not be judged (above)")
            } else {
                String::new()
            }
        )?;
    }
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::AUDIT_REFUSED)
    })
}

fn audit_review(
    ctx: &mut AuditContext,
    file: &mut ConfigFile,
    settings: &Settings,
    mut accept: Vec<String>,
) -> anyhow::Result<ExitCode> {
    if let Ok(env) = std::env::var("SOTTO_ACCEPT") {
        accept.extend(
            env.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty()),
        );
    }
    let m = &settings.models;
    let ids = [m.stt.clone(), m.llm.clone(), m.tts.clone()];
    let mut reports = ids
        .iter()
        .map(|id| ctx.audit_id(id))
        .collect::<Result<Vec<_>, _>>()?;
    ctx.cache.save();
    let minimum = settings.policy.minimum;
    let all = audit::apply(&mut reports, &settings.policy);
    print!("{}", audit::render(&reports, minimum));
    if all {
        return Ok(ExitCode::SUCCESS);
    }
    let tty = std::io::stdin().is_terminal();
    let mut policy = settings.policy.clone();
    for r in reports.iter().filter(|r| r.admitted.is_none()) {
        let reason = if accept.iter().any(|a| a == &r.id) {
            Some(format!(
                "accepted at set-up by name (--accept / SOTTO_ACCEPT): {}",
                r.judgement.osaid
            ))
        } else if tty && !r.files.is_empty() {
            eprint!(
                "\n{} is {}, below the `{minimum}` policy. To admit these exact bytes anyway, \
                 type your reason and press Enter (empty refuses): ",
                r.id, r.judgement.osaid
            );
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            Some(line.trim().to_string()).filter(|l| !l.is_empty())
        } else {
            None
        };
        match reason {
            Some(reason) if !r.files.is_empty() => {
                let e = audit::exception_for(r, &reason);
                file.record_exception(e.clone())?;
                println!(
                    "accepted {} (sha256 {}): {reason}",
                    e.model,
                    e.sha256.join(", ")
                );
                policy.exceptions.push(e);
            }
            _ => println!(
                "not accepted: {} stays refused; accept it later with \
                 `sotto audit accept {} --reason \"...\"`",
                r.id, r.id
            ),
        }
    }
    let mut reports = ids
        .iter()
        .map(|id| ctx.audit_id(id))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(if audit::apply(&mut reports, &policy) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::AUDIT_REFUSED)
    })
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SOTTO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The Whisper model to load: `--model`, else the imported tiny.en, verified against its pin.
/// The pin check hashes through the audit's cache, so the audit that follows does not hash
/// the file a second time.
fn whisper_model(
    models: &ModelsDir,
    cache: &mut HashCache,
    flag: Option<PathBuf>,
    role_id: &str,
) -> anyhow::Result<PathBuf> {
    let path = match flag {
        Some(p) => p,
        None => model_weight(models, "stt", role_id)?,
    };
    if models.pin_for(&path).is_some() {
        verify_pinned(models, &path, cache)?;
    } else if !path.exists() {
        bail!("{}: model file not found", path.display());
    }
    // A damaged file is reported as damaged, before the audit judges what it is.
    models::whisper_ggml::Header::read(&path)?;
    Ok(path)
}

fn transcribe(
    models: &ModelsDir,
    file: &ConfigFile,
    flags: Flags,
    args: TranscribeArgs,
) -> anyhow::Result<ExitCode> {
    let settings = Settings::resolve(
        file,
        &Flags {
            threads: args.threads,
            beam_size: Some(args.beam_size),
            ..flags
        },
    )?;
    if args.files.len() > 1 && args.output.is_none() && args.format != Format::Json {
        bail!(
            "{} inputs in {} format need -o DIR (on stdout only json, one object per line, \
             keeps them apart)",
            args.files.len(),
            args.format.extension()
        );
    }
    let outputs = output_paths(&args)?;
    let mut audit_ctx = AuditContext::new(&models.root);
    let model_path = whisper_model(
        models,
        &mut audit_ctx.cache,
        args.model.clone(),
        &settings.models.stt,
    )?;
    let model_id = match &args.model {
        Some(path) => path.display().to_string(),
        None => settings.models.stt.clone(),
    };
    let pass = match startup_gate(&mut audit_ctx, &settings, &[&model_id])? {
        Ok(pass) => pass,
        Err(code) => return Ok(code),
    };
    let mut stt = Stt::load(&pass, &model_path)?;
    let language = stt.check_language(&settings.language)?;
    let reverify = Reverify::start(&pass, None);
    let opts = SttOptions {
        threads: settings.threads,
        beam_size: settings.beam_size,
        language,
        ..SttOptions::default()
    };
    let mut failed = 0;
    for (file, out) in args.files.iter().zip(outputs) {
        if let Err(e) = transcribe_one(&mut stt, &opts, &args, file, out.as_deref()) {
            eprintln!("error: {e:#}");
            failed += 1;
        }
    }
    if let Some(code) = reverify.finish() {
        return Ok(code);
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Where each input's transcript goes (None = stdout). Refuses to replace existing files
/// unless `--force`: a transcript the user already has is never silently overwritten.
fn output_paths(args: &TranscribeArgs) -> anyhow::Result<Vec<Option<PathBuf>>> {
    let Some(out) = &args.output else {
        return Ok(vec![None; args.files.len()]);
    };
    let paths: Vec<PathBuf> = if args.files.len() == 1 && !out.is_dir() {
        vec![out.clone()]
    } else {
        std::fs::create_dir_all(out)
            .with_context(|| format!("cannot create output directory {}", out.display()))?;
        // Inputs with the same name from different directories each keep their transcript:
        // the second talk.wav writes talk-2.txt (said on stderr), never over the first.
        let mut taken = std::collections::HashSet::new();
        let mut paths = Vec::with_capacity(args.files.len());
        for f in &args.files {
            let stem = f
                .file_stem()
                .filter(|_| f != Path::new("-"))
                .unwrap_or("stdin".as_ref())
                .to_string_lossy()
                .into_owned();
            let ext = args.format.extension();
            let mut path = out.join(format!("{stem}.{ext}"));
            let mut n = 2;
            while !taken.insert(path.clone()) {
                path = out.join(format!("{stem}-{n}.{ext}"));
                n += 1;
            }
            if n > 2 {
                eprintln!(
                    "note: {} goes to {}: another input has the same name",
                    f.display(),
                    path.display()
                );
            }
            paths.push(path);
        }
        paths
    };
    for p in &paths {
        if p.exists() && !args.force {
            bail!("{} already exists; pass --force to replace it", p.display());
        }
    }
    Ok(paths.into_iter().map(Some).collect())
}

/// Audio longer than this shows progress on stderr.
const PROGRESS_AFTER_S: f64 = 30.0;

fn transcribe_one(
    stt: &mut Stt,
    opts: &SttOptions,
    args: &TranscribeArgs,
    file: &Path,
    out: Option<&Path>,
) -> anyhow::Result<()> {
    let clip = audio::read_for_whisper(file)?;
    let name = file.display().to_string();
    let progress: Option<Box<dyn FnMut(i32)>> = if clip.duration_s() > PROGRESS_AFTER_S {
        let tty = std::io::stderr().is_terminal();
        let name = name.clone();
        let mut last = -1;
        Some(Box::new(move |pct: i32| {
            if tty {
                eprint!("\rtranscribing {name}: {pct:3}%");
                if pct >= 100 {
                    eprintln!();
                }
            } else if pct / 10 > last / 10 {
                eprintln!("transcribing {name}: {pct}%");
            }
            last = pct;
        }))
    } else {
        None
    };
    let t0 = Instant::now();
    let segments = stt
        .transcribe(&clip.samples, opts, progress)
        .with_context(|| format!("transcribing {name}"))?;
    let elapsed = t0.elapsed();
    tracing::info!(
        stage = "stt",
        file = %name,
        audio_s = clip.duration_s(),
        ms = elapsed.as_millis() as u64,
        "transcribed"
    );
    let model = stt.model_path.display().to_string();
    let text = transcript::render(
        args.format,
        &segments,
        &transcript::Meta {
            file: &name,
            model: &model,
            duration_s: clip.duration_s(),
            threads: stt.last_threads,
            language: &stt.last_language,
            transcribe_ms: elapsed.as_millis() as u64,
        },
    );
    match out {
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(text.as_bytes())?;
            stdout.flush()?;
        }
        Some(path) => write_new_file(path, text.as_bytes())?,
    }
    Ok(())
}

/// Writes a file through a temporary name in the same directory, so a crash never leaves a
/// half-written transcript under the real name.
fn write_new_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut tmp = crate::audio::temp_file_beside(path)?;
    tmp.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// `sotto models add`: imports the model, then judges it at once.
fn models_add(
    models: &ModelsDir,
    settings: &Settings,
    path: &Path,
    opts: &models::user::AddOptions,
) -> anyhow::Result<ExitCode> {
    let t0 = Instant::now();
    let mut last = 0;
    let (dir, record) = models::user::add(path, opts, |what, done, total| {
        let pct = done * 100 / total.max(1);
        if pct >= last + 10 || done == total {
            last = pct;
            eprintln!("{what} {}: {pct}%", path.display());
        }
    })?;
    eprintln!(
        "added {} ({} model, {:?}) in {} ms: {}",
        record.name,
        record.role,
        record.format,
        t0.elapsed().as_millis(),
        dir.display()
    );
    for f in &record.files {
        eprintln!("  {} sha256 {}", f.path, f.sha256);
    }
    eprintln!(
        "  from {} sha256 {}",
        record.source.path, record.source.sha256
    );
    let mut ctx = AuditContext::new(&models.root);
    let mut reports = vec![ctx.audit_id(&record.name)?];
    ctx.cache.save();
    let ok = audit::apply(&mut reports, &settings.policy);
    print!("{}", audit::render(&reports, settings.policy.minimum));
    println!(
        "\nuse it: [models] {} = \"{}\" in the config, or --{}-model {} (--voice for a voice)",
        record.role, record.name, record.role, record.name
    );
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::AUDIT_REFUSED)
    })
}

fn models_list(models: &ModelsDir, settings: &Settings) -> anyhow::Result<ExitCode> {
    let m = &settings.models;
    for (role, id) in [("stt", &m.stt), ("llm", &m.llm), ("tts", &m.tts)] {
        let where_ = match model_weight(models, role, id) {
            Ok(p) => p.display().to_string(),
            Err(e) => format!("NOT USABLE: {e:#}"),
        };
        println!("{role:<4} {id:<28} {where_}");
    }
    println!();
    println!("models directory: {}", models.root.display());
    let mut bad = 0;
    let platform_runtime = runtime_set();
    for pin in models::pins() {
        if pin.set.starts_with("runtime-") && pin.set != platform_runtime {
            continue;
        }
        let path = models.path(&pin.dest);
        // Pieces of a joined model are removed once joined.
        if pin.dest.contains("/parts/") {
            continue;
        }
        let state = models::file_state(&path, &pin);
        let optional = matches!(pin.set.as_str(), "negative" | "silero" | "tokenizer-tests");
        let optional_absent = optional && !path.exists();
        if !matches!(state, models::FileState::Verified) && !optional_absent {
            bad += 1;
        }
        let state = match state {
            models::FileState::Missing if optional => "not fetched (optional)".to_string(),
            s => s.to_string(),
        };
        println!(
            "{:<58} {:>11} {}  {}",
            pin.dest,
            human_bytes(pin.bytes),
            &pin.sha256[..16],
            state
        );
    }
    if bad > 0 {
        eprintln!("{bad} file(s) missing or not matching their pins: run scripts/setup");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// A file setup fetched or made is checked against its pin (sha256, through the identity
/// cache) before anything loads it: a truncated or replaced file is an error naming it, not a
/// crash inside a loader. A file with no pin (the user's own, e.g. `$ORT_DYLIB_PATH`) is
/// theirs to vouch for.
fn verify_pinned(models: &ModelsDir, path: &Path, cache: &mut HashCache) -> anyhow::Result<()> {
    if let Some(pin) = models.pin_for(path) {
        models::verify_file_hashed(path, &pin, || Ok(cache.identify(path, &pin.dest)?.sha256))?;
    }
    Ok(())
}

fn runtime_set() -> String {
    let os = if cfg!(target_os = "macos") {
        "macos"
    } else {
        std::env::consts::OS
    };
    let arch = match std::env::consts::ARCH {
        "aarch64" => "arm64",
        a => a,
    };
    format!("runtime-{os}-{arch}")
}

fn human_bytes(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1 << 20) as f64)
    } else if n >= 1 << 10 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{n} B")
    }
}

fn models_import(models: &ModelsDir, force: bool) -> anyhow::Result<ExitCode> {
    let tty = std::io::stderr().is_terminal();
    let mut last_pct = 0;
    let imported = import::import_all(models, force, |step, done, total| {
        let pct = done * 100 / total.max(1);
        if tty {
            eprint!("\rconverting {step}: {pct:3}%");
            if done == total {
                eprintln!();
            }
        } else if pct / 25 != last_pct / 25 || done == total {
            eprintln!("converting {step}: {pct}%");
        }
        last_pct = pct;
    })?;
    for i in &imported {
        let what = if i.converted {
            "converted"
        } else {
            "up to date"
        };
        println!(
            "{what:<10} {} ({}, sha256 {})",
            i.output,
            human_bytes(i.bytes),
            &i.sha256[..16]
        );
        for s in &i.sources {
            println!("           from {} (sha256 {})", s.path, &s.sha256[..16]);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The first weight file of a registry model (the file its engine loads).
/// The file an engine loads for `role`, whose model is `id`: a registry id (its file in the
/// models directory), or a model added with `sotto models add` (by name or directory),
/// checked against the sha256 recorded when it was added.
fn model_weight(models: &ModelsDir, role: &str, id: &str) -> anyhow::Result<PathBuf> {
    if audit::manifest::registry_manifest(id).is_some() {
        return registry_weight(models, id).with_context(|| format!("the {role} model {id}"));
    }
    let Some((dir, record)) = models::user::find(id) else {
        bail!(
            "the {role} model {id:?} is neither a registry id, nor a model added with \
             `sotto models add` ({}), nor a directory holding one",
            models::user::user_models_dir().display()
        );
    };
    let f = record
        .files
        .first()
        .with_context(|| format!("the {role} model {id}: its model.toml lists no file"))?;
    let path = dir.join(&f.path);
    let got = models::sha256_file(&path).with_context(|| {
        format!(
            "the {role} model {id}: {} is missing or unreadable",
            path.display()
        )
    })?;
    if got != f.sha256 {
        bail!(
            "the {role} model {id}: {} has sha256 {got}, not the {} recorded when it was added: \
             the file changed or is damaged; add it again",
            path.display(),
            f.sha256
        );
    }
    Ok(path)
}

fn registry_weight(models: &ModelsDir, id: &str) -> anyhow::Result<PathBuf> {
    let m = audit::manifest::registry_manifest(id)
        .with_context(|| format!("model {id:?} is not in sotto's manifest registry"))??;
    let w = m
        .sotto
        .as_ref()
        .and_then(|s| s.weights.first())
        .with_context(|| format!("the manifest of {id} lists no weight file"))?;
    let path = models.path(&w.path);
    if !path.is_file() {
        let remedy = models
            .pin_for(&path)
            .map(|p| p.remedy())
            .unwrap_or("run scripts/setup");
        bail!("{}: model file is missing; {remedy}", path.display());
    }
    Ok(path)
}

fn chat(
    models: &ModelsDir,
    file: &ConfigFile,
    flags: Flags,
    args: ChatArgs,
) -> anyhow::Result<ExitCode> {
    let settings = Settings::resolve(
        file,
        &Flags {
            threads: args.threads,
            max_tokens: Some(args.max_tokens),
            system_prompt: args.system.clone(),
            ..flags
        },
    )?;
    let gguf = model_weight(models, "llm", &settings.models.llm)?;
    let tokenizer = gguf.with_file_name("tokenizer.json");
    let mut ctx = AuditContext::new(&models.root);
    let pass = match startup_gate(&mut ctx, &settings, &[&settings.models.llm])? {
        Ok(pass) => pass,
        Err(code) => return Ok(code),
    };
    let mut llm = crate::llm::Llm::load(
        &pass,
        &gguf,
        &tokenizer,
        Some(settings.system_prompt.clone()),
        settings.threads,
    )?;
    let reverify = Reverify::start(&pass, None);
    let params = crate::llm::GenParams {
        temperature: args.temperature,
        top_p: Some(args.top_p).filter(|p| *p < 1.0),
        seed: args.seed,
        repeat_penalty: args.repeat_penalty,
        max_tokens: settings.max_tokens.unwrap_or(256),
        ..crate::llm::GenParams::default()
    };
    if let Some(path) = &args.perplexity {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let p = llm.perplexity(&text, 512)?;
        println!("{}", serde_json::to_string(&p)?);
        return Ok(reverify.finish().unwrap_or(ExitCode::SUCCESS));
    }
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let turn = |llm: &mut crate::llm::Llm, prompt: &str| -> anyhow::Result<()> {
        let mut stdout = std::io::stdout().lock();
        let reply = llm.respond(prompt, &params, &cancel, |piece| {
            let _ = stdout.write_all(piece.as_bytes());
            let _ = stdout.flush();
        })?;
        writeln!(stdout)?;
        if args.stats {
            eprintln!(
                "[{} prompt tokens ({} run) in {} ms = {:.0} tok/s; {} tokens in {} ms = {:.1} tok/s; stop: {:?}]",
                reply.prompt_tokens,
                reply.prefilled_tokens,
                reply.prefill.as_millis(),
                reply.prefilled_tokens as f64 / reply.prefill.as_secs_f64().max(1e-9),
                reply.tokens,
                reply.decode.as_millis(),
                reply.tokens as f64 / reply.decode.as_secs_f64().max(1e-9),
                reply.stop
            );
        }
        Ok(())
    };
    if let Some(prompt) = &args.prompt {
        turn(&mut llm, prompt)?;
        return Ok(reverify.finish().unwrap_or(ExitCode::SUCCESS));
    }
    llm.warm_up()?;
    let tty = std::io::stdin().is_terminal();
    let mut line = String::new();
    loop {
        if tty {
            eprint!("> ");
        }
        line.clear();
        if std::io::stdin().read_line(&mut line)? == 0 {
            break;
        }
        let prompt = line.trim();
        if prompt.is_empty() {
            continue;
        }
        turn(&mut llm, prompt)?;
    }
    Ok(reverify.finish().unwrap_or(ExitCode::SUCCESS))
}

fn say(
    models: &ModelsDir,
    file: &ConfigFile,
    flags: Flags,
    args: SayArgs,
) -> anyhow::Result<ExitCode> {
    let settings = Settings::resolve(
        file,
        &Flags {
            speed: Some(args.speed),
            voice: args.voice.clone(),
            ..flags
        },
    )?;
    let text = if args.text == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read stdin")?
    } else {
        args.text.clone()
    };
    if text.trim().is_empty() {
        bail!("nothing to say: the text is empty");
    }
    if let Some(out) = &args.output
        && out.exists()
        && !args.force
    {
        bail!(
            "{} already exists; pass --force to replace it",
            out.display()
        );
    }
    let voice = &settings.models.tts;
    let onnx = model_weight(models, "tts", voice)?;
    let runtime = crate::tts::default_runtime_path(&models.root);
    let mut ctx = AuditContext::new(&models.root);
    verify_pinned(models, &runtime, &mut ctx.cache)?;
    let pass = match startup_gate(&mut ctx, &settings, &[voice])? {
        Ok(pass) => pass,
        Err(code) => return Ok(code),
    };
    let mut tts = crate::tts::Tts::load(
        &pass,
        &onnx,
        &runtime,
        crate::tts::Waiting::for_a_voice_alone(),
    )?;
    let reverify = Reverify::start(&pass, None);
    // Clause by clause, so playback can start after the first one; where a clause is cut in
    // two, its pieces' speech meets without a pause.
    let mut chunker = crate::chunker::Chunker::new();
    let mut chunks = chunker.push_chunks(&text);
    chunks.extend(chunker.finish_chunk());
    let t0 = Instant::now();
    let mut first_audio = None;
    let mut first_since_start = None;
    let mut audio_s = 0.0;
    let mut synth_time = std::time::Duration::ZERO;
    let mut seams = crate::tts::Seams::default();
    let mut synth = |tts: &mut crate::tts::Tts,
                     chunk: &crate::chunker::Chunk|
     -> anyhow::Result<crate::tts::Speech> {
        let mut speech = tts.synthesize(&chunk.text, settings.speed)?;
        seams.close(&mut speech.samples, speech.sample_rate_hz, chunk.mid_clause);
        first_audio.get_or_insert(t0.elapsed());
        first_since_start.get_or_insert(process_start().elapsed());
        synth_time += speech.took;
        audio_s += speech.samples.len() as f64 / speech.sample_rate_hz as f64;
        Ok(speech)
    };
    match &args.output {
        Some(out) => {
            // As Piper's own command line writes a file: 200 ms more between sentences and
            // clauses (none inside a clause).
            let mut all = Vec::new();
            let gap = vec![0.0; tts.sample_rate_hz as usize / 5];
            for chunk in &chunks {
                let speech = synth(&mut tts, chunk)?;
                all.extend_from_slice(&speech.samples);
                if !chunk.mid_clause {
                    all.extend_from_slice(&gap);
                }
            }
            let tmp = audio::temp_file_beside(out)?;
            audio::write_wav(tmp.path(), &all, tts.sample_rate_hz)?;
            tmp.persist(out)
                .with_context(|| format!("cannot write {}", out.display()))?;
        }
        None => {
            use crate::playback::Output;
            let mut speaker = crate::playback::Speaker::open_default()?;
            for chunk in &chunks {
                let speech = synth(&mut tts, chunk)?;
                speaker.queue(&speech.samples, speech.sample_rate_hz)?;
            }
            speaker.wait();
        }
    }
    if args.stats {
        let synth_s = synth_time.as_secs_f64();
        eprintln!(
            "[first audio after {} ms (first audio {} ms after start); {:.2} s of speech synthesized in {:.0} ms: real-time factor {:.3}]",
            first_audio.unwrap_or_default().as_millis(),
            first_since_start.unwrap_or_default().as_millis(),
            audio_s,
            synth_s * 1000.0,
            synth_s / audio_s.max(1e-9)
        );
    }
    Ok(reverify.finish().unwrap_or(ExitCode::SUCCESS))
}

fn dictate(
    models: &ModelsDir,
    file: &ConfigFile,
    flags: Flags,
    args: DictateArgs,
) -> anyhow::Result<ExitCode> {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    let settings = Settings::resolve(
        file,
        &Flags {
            threads: args.threads,
            device: args.device.clone(),
            vad: args.vad,
            vad_aggressiveness: args.vad_aggressiveness,
            hangover_ms: args.hangover_ms,
            max_utterance_s: args.max_utterance_s,
            ptt: args.ptt,
            ptt_key: args.ptt_key.clone(),
            beam_size: Some(args.beam_size),
            ..flags
        },
    )?;

    // Fail on a bad file before loading anything: a WAV input is checked whole here, then read
    // as it is played.
    let input = args
        .input
        .as_deref()
        .map(|p| crate::pipeline::listen::Source::input(p, args.fast))
        .transpose()?;
    if (args.clipboard || args.type_text) && crate::desktop::session().is_none() {
        bail!(
            "{} needs a desktop session (macOS, or Wayland/X11 with WAYLAND_DISPLAY or DISPLAY set)",
            if args.clipboard {
                "--clipboard"
            } else {
                "--type"
            }
        );
    }
    // What is done to each transcript, checked before anything loads.
    let text_rules = DictationText::resolve(file, &args)?;
    let mut audit_ctx = AuditContext::new(&models.root);
    let model_path = whisper_model(models, &mut audit_ctx.cache, None, &settings.models.stt)?;
    let pass = match startup_gate(&mut audit_ctx, &settings, &[&settings.models.stt])? {
        Ok(pass) => pass,
        Err(code) => return Ok(code),
    };
    let stt = Stt::load(&pass, &model_path)?;
    let language = stt.check_language(&settings.language)?;
    let (prompt, cut) = stt.vocabulary_prompt(&text_rules.vocabulary);
    if !cut.is_empty() {
        eprintln!(
            "warning: the vocabulary is longer than Whisper's prompt takes ({} tokens); left \
             out: {}",
            crate::stt::VOCABULARY_TOKENS,
            cut.join(", ")
        );
    }

    // First Ctrl-C: finish the utterance in progress, print it, exit. Second: exit now.
    let stop = stop_on_signals()?;
    let reverify = Reverify::start(&pass, Some(stop.clone()));

    let mut listen = settings.listen_options(input);
    if args.partials {
        listen.partials_every = Some(std::time::Duration::from_secs(1));
    }
    let transcriber = Box::new(crate::pipeline::transcribe::Whisper {
        stt,
        opts: SttOptions {
            threads: settings.threads,
            beam_size: settings.beam_size,
            language,
            prompt: (!prompt.is_empty()).then_some(prompt),
        },
    });
    let mut append = open_append(args.output.as_deref())?;
    // Where this session's last line in --output began, and the text it last typed: what
    // "scratch that" removes.
    let mut last_line_at: Option<u64> = None;
    let mut last_typed = 0usize;
    let mut write_error = None;
    // A reader that went away (`sotto dictate | head -1`) ends dictation: nobody reads on.
    // Noticed when a write fails, and sooner on Unix by watching stdout for the pipe's hang-up.
    let stop_reading = stop.clone();
    let stdout_closed = Arc::new(AtomicBool::new(false));
    #[cfg(unix)]
    {
        let (stop, closed) = (stop.clone(), stdout_closed.clone());
        std::thread::Builder::new()
            .name("stdout-watch".into())
            .spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let mut fd = libc::pollfd {
                        fd: 1,
                        events: 0,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd for the duration of the call.
                    let n = unsafe { libc::poll(&mut fd, 1, 250) };
                    if n > 0 && fd.revents & (libc::POLLERR | libc::POLLHUP) != 0 {
                        closed.store(true, std::sync::atomic::Ordering::SeqCst);
                        stop.store(true, std::sync::atomic::Ordering::SeqCst);
                        return;
                    }
                    if n < 0 || fd.revents & libc::POLLNVAL != 0 {
                        return;
                    }
                }
            })?;
    }
    let mut reader_gone = false;
    let mut print = |line: &str| {
        let mut stdout = std::io::stdout().lock();
        let written = writeln!(stdout, "{line}").and_then(|_| stdout.flush());
        if written.is_err() && !reader_gone {
            reader_gone = true;
            stop_reading.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    };
    let stats = crate::dictation::run(listen, transcriber, stop, |t| {
        if t.kind == crate::dictation::Kind::Partial {
            if args.jsonl {
                print(&serde_json::to_string(t).unwrap_or_default());
            } else {
                eprintln!("… {}", t.text);
            }
            return;
        }
        let (text, scratch) = text_rules.finish(&t.text);
        let t = crate::dictation::Transcript {
            heard: (text != t.text).then(|| t.text.clone()),
            text,
            scratch_previous: scratch,
            ..t.clone()
        };
        if scratch {
            if let (Some(f), Some(at)) = (append.as_mut(), last_line_at.take())
                && let Err(e) = f.set_len(at)
            {
                write_error.get_or_insert(e);
            }
            if args.type_text && last_typed > 0 {
                for _ in 0..last_typed.min(2_000) {
                    if let Err(e) = crate::desktop::press_keys("BackSpace") {
                        eprintln!("warning: {e}");
                        break;
                    }
                }
                last_typed = 0;
            }
        }
        if t.text.is_empty() && !args.jsonl {
            return;
        }
        let line = if args.jsonl {
            serde_json::to_string(&t).unwrap_or_default()
        } else {
            t.text.clone()
        };
        print(&line);
        if t.text.is_empty() {
            return;
        }
        if let Some(f) = append.as_mut() {
            last_line_at = f.metadata().ok().map(|m| m.len());
            if let Err(e) = writeln!(f, "{}", if args.jsonl { &line } else { &t.text }) {
                write_error.get_or_insert(e);
            }
        }
        if let Some(path) = &text_rules.history
            && let Err(e) = crate::dictation::history::append(path, &t.text)
        {
            eprintln!("warning: history {}: {e}", path.display());
        }
        // The desktop outputs warn and go on: the text is on stdout already.
        if args.clipboard
            && let Err(e) = crate::desktop::copy_to_clipboard(&t.text)
        {
            eprintln!("warning: {e}");
        }
        if args.type_text {
            let typed = format!("{} ", t.text.trim());
            match crate::desktop::type_text(&typed) {
                Ok(()) => last_typed = typed.chars().count(),
                Err(e) => eprintln!("warning: {e}"),
            }
        }
    })?;
    if let Some(code) = reverify.finish() {
        return Ok(code);
    }
    if let Some(e) = write_error {
        return Err(anyhow::Error::new(e).context("cannot append to the output file"));
    }
    if reader_gone || stdout_closed.load(std::sync::atomic::Ordering::SeqCst) {
        // As a process killed by SIGPIPE reports itself to the shell.
        return Ok(ExitCode::from(141));
    }
    if stats.dropped_samples > 0 {
        eprintln!(
            "warning: {} samples were dropped because processing fell behind",
            stats.dropped_samples
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn agent(
    models: &ModelsDir,
    file: &ConfigFile,
    flags: Flags,
    args: AgentArgs,
) -> anyhow::Result<ExitCode> {
    use crate::agent;

    let settings = Settings::resolve(
        file,
        &Flags {
            threads: args.engines.threads,
            device: args.device.clone(),
            hangover_ms: args.hangover_ms,
            barge_in: args.barge_in,
            echo_tail_ms: args.echo_tail_ms,
            wake: args.wake.clone(),
            turns: args.turns,
            max_tokens: args.engines.max_tokens,
            commands: args.engines.commands.clone(),
            action_log: args.engines.action_log.clone(),
            ..flags
        },
    )?;
    // Everything the user named is checked before a model loads; a WAV input is checked
    // whole here, then read as it is played.
    let input = args
        .input
        .as_deref()
        .map(|p| crate::pipeline::listen::Source::input(p, args.fast))
        .transpose()?;
    if let Some(out) = &args.output
        && out.exists()
        && !args.force
    {
        bail!(
            "{} already exists; pass --force to replace it",
            out.display()
        );
    }
    let a = &settings.agent;
    let commands = match &a.commands {
        Some(path) => crate::commands::Commands::load(path)?,
        None => crate::commands::Commands::default(),
    };
    let mut metrics = open_append(args.metrics.as_deref())?;

    let mut ctx = AuditContext::new(&models.root);
    let m = &settings.models;
    let whisper = whisper_model(models, &mut ctx.cache, None, &settings.models.stt)?;
    let gguf = model_weight(models, "llm", &m.llm)?;
    let onnx = model_weight(models, "tts", &m.tts)?;
    let pass = match startup_gate(&mut ctx, &settings, &[&m.stt, &m.llm, &m.tts])? {
        Ok(pass) => pass,
        Err(code) => return Ok(code),
    };
    let t0 = Instant::now();
    let runtime = crate::tts::default_runtime_path(&models.root);
    verify_pinned(models, &runtime, &mut ctx.cache)?;
    let engines = load_engines(
        &pass,
        &settings,
        Some(&whisper),
        Some(&gguf),
        Some(&onnx),
        &runtime,
    )?;
    let (Some((stt, language)), Some(llm), Some(tts)) = (engines.stt, engines.llm, engines.tts)
    else {
        unreachable!("all three engines were asked for");
    };
    let tts_rate_hz = tts.sample_rate_hz;
    tracing::info!(
        stage = "agent",
        ms = t0.elapsed().as_millis() as u64,
        since_start_ms = process_start().elapsed().as_millis() as u64,
        "models loaded and warm"
    );

    let output: agent::OutputFactory = match args.output.clone() {
        Some(path) => Box::new(move |started| {
            Ok(Box::new(crate::playback::Recorder::with_start(
                &path,
                tts_rate_hz,
                started,
            )) as Box<dyn crate::playback::Output>)
        }),
        None => Box::new(|_| {
            Ok(Box::new(crate::playback::Speaker::open_default()?)
                as Box<dyn crate::playback::Output>)
        }),
    };
    let stages = agent::Stages {
        transcriber: Box::new(crate::pipeline::transcribe::Whisper {
            stt,
            opts: SttOptions {
                threads: settings.threads,
                beam_size: settings.beam_size,
                language,
                ..SttOptions::default()
            },
        }),
        responder: Box::new(crate::pipeline::respond::Model {
            llm,
            params: crate::llm::GenParams {
                max_tokens: settings.max_tokens.unwrap_or(96),
                ..crate::llm::GenParams::default()
            },
        }),
        voice: Box::new(crate::pipeline::speak::Piper {
            tts,
            speed: settings.speed,
        }),
        output,
    };
    let listen = settings.listen_options(input);
    let coordinator = agent::Settings {
        barge_in: a.barge_in,
        echo_tail: a.echo_tail,
        confirm_timeout: a.confirm_timeout,
        wake_phrase: a.wake_phrase.clone(),
        max_turns: a.turns,
        commands,
        action_log: Some(a.action_log.clone()),
        ..agent::Settings::default()
    };

    // First Ctrl-C: finish the turn in progress, then exit. Second: exit now.
    let stop = stop_on_signals()?;
    let reverify = Reverify::start(&pass, Some(stop.clone()));
    if args.input.is_none() {
        eprintln!("listening… (Ctrl-C to stop)");
    }

    let mut write_error = None;
    let summary = agent::run(listen, stages, coordinator, stop, |turn| {
        let mut stdout = std::io::stdout().lock();
        if args.jsonl {
            let _ = writeln!(
                stdout,
                "{}",
                serde_json::to_string(turn).unwrap_or_default()
            );
        } else if turn.outcome != agent::TurnOutcome::Ignored || !turn.transcript.is_empty() {
            let _ = writeln!(stdout, "you:   {}", turn.transcript);
            if !turn.reply.is_empty() {
                let _ = writeln!(stdout, "sotto: {}", turn.reply);
            }
            let _ = writeln!(stdout, "       {}", describe_turn(turn));
        }
        let _ = stdout.flush();
        if let Some(f) = metrics.as_mut()
            && let Err(e) = writeln!(f, "{}", serde_json::to_string(turn).unwrap_or_default())
        {
            write_error.get_or_insert(e);
        }
    })?;
    if let Some(code) = reverify.finish() {
        return Ok(code);
    }
    if let Some(e) = write_error {
        return Err(anyhow::Error::new(e).context("cannot append to the metrics file"));
    }
    if summary.dropped_samples > 0 {
        eprintln!(
            "warning: {} samples were dropped because processing fell behind",
            summary.dropped_samples
        );
    }
    if summary.muted_speech > 0 {
        eprintln!(
            "note: speech was heard {} time(s) while sotto spoke and was not transcribed (the \
             echo guard mutes the microphone then; through speakers that is mostly sotto's own \
             voice; with headphones, --barge-in lets you interrupt)",
            summary.muted_speech
        );
    }
    if args.metrics.is_some() {
        eprintln!(
            "speculation: {}",
            serde_json::to_string(&summary.speculation).unwrap_or_default()
        );
    }
    if let Some(out) = &args.output {
        eprintln!("wrote {}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The engines a command runs, each loaded (and warmed) on its own thread at once: on 2 cores
/// the voice's ONNX session and the LLM's weights overlap instead of queueing. A role without
/// a model path is not loaded.
struct Engines {
    /// The speech recogniser and the language it decodes (checked against the model).
    stt: Option<(Stt, String)>,
    llm: Option<crate::llm::Llm>,
    tts: Option<crate::tts::Tts>,
}

fn load_engines(
    pass: &AuditPass,
    settings: &Settings,
    whisper: Option<&Path>,
    gguf: Option<&Path>,
    onnx: Option<&Path>,
    runtime: &Path,
) -> anyhow::Result<Engines> {
    let (stt, llm, tts) = std::thread::scope(|s| {
        let stt = s.spawn(|| -> anyhow::Result<Option<(Stt, String)>> {
            let Some(whisper) = whisper else {
                return Ok(None);
            };
            let stt = Stt::load(pass, whisper)?;
            let language = stt.check_language(&settings.language)?;
            Ok(Some((stt, language)))
        });
        let llm = s.spawn(|| -> anyhow::Result<Option<crate::llm::Llm>> {
            let Some(gguf) = gguf else { return Ok(None) };
            let mut llm = crate::llm::Llm::load(
                pass,
                gguf,
                &gguf.with_file_name("tokenizer.json"),
                Some(settings.system_prompt.clone()),
                settings.threads,
            )?;
            llm.warm_up()?;
            Ok(Some(llm))
        });
        let tts = s.spawn(|| -> anyhow::Result<Option<crate::tts::Tts>> {
            let Some(onnx) = onnx else { return Ok(None) };
            Ok(Some(crate::tts::Tts::load(
                pass,
                onnx,
                runtime,
                crate::tts::Waiting::Sleep,
            )?))
        });
        let panicked = |what| anyhow::anyhow!("loading the {what} panicked");
        (
            stt.join().map_err(|_| panicked("speech recogniser")),
            llm.join().map_err(|_| panicked("language model")),
            tts.join().map_err(|_| panicked("voice")),
        )
    });
    Ok(Engines {
        stt: stt??,
        llm: llm??,
        tts: tts??,
    })
}

/// The flag that ends a session: the first Ctrl-C (or SIGTERM) sets it and the session
/// finishes what it is doing; a second Ctrl-C exits at once (status 130).
fn stop_on_signals() -> anyhow::Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    signal_hook::flag::register_conditional_shutdown(
        signal_hook::consts::SIGINT,
        130,
        stop.clone(),
    )?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    Ok(stop)
}

/// `sotto serve`: the engines asked for, audited, loaded and warmed at once, then the
/// Wyoming server until Ctrl-C or SIGTERM.
fn serve(
    models: &ModelsDir,
    file: &ConfigFile,
    flags: Flags,
    args: ServeArgs,
) -> anyhow::Result<ExitCode> {
    use crate::wyoming;

    let uri: wyoming::Uri = args
        .uri
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--uri {e}"))?;
    let all = !(args.asr || args.tts || args.handle);
    let (want_asr, want_tts, want_handle) = (all || args.asr, all || args.tts, all || args.handle);
    let settings = Settings::resolve(
        file,
        &Flags {
            threads: args.engines.threads,
            max_tokens: args.engines.max_tokens,
            beam_size: args.beam_size,
            commands: args.engines.commands.clone(),
            action_log: args.engines.action_log.clone(),
            ..flags
        },
    )?;
    let commands = match (&settings.agent.commands, want_handle) {
        (Some(path), true) => crate::commands::Commands::load(path)?,
        _ => crate::commands::Commands::default(),
    };
    let mut ctx = AuditContext::new(&models.root);
    let m = &settings.models;
    let whisper = want_asr
        .then(|| whisper_model(models, &mut ctx.cache, None, &m.stt))
        .transpose()?;
    let gguf = want_handle
        .then(|| model_weight(models, "llm", &m.llm))
        .transpose()?;
    let onnx = want_tts
        .then(|| model_weight(models, "tts", &m.tts))
        .transpose()?;
    let mut ids: Vec<&str> = Vec::new();
    if want_asr {
        ids.push(&m.stt);
    }
    if want_handle {
        ids.push(&m.llm);
    }
    if want_tts {
        ids.push(&m.tts);
    }
    let pass = match startup_gate(&mut ctx, &settings, &ids)? {
        Ok(pass) => pass,
        Err(code) => return Ok(code),
    };
    // Bind before loading: a port in use is an error in milliseconds, not after the models.
    let listener = wyoming::Listener::bind(&uri)?;
    let t0 = Instant::now();
    let runtime = crate::tts::default_runtime_path(&models.root);
    if want_tts {
        verify_pinned(models, &runtime, &mut ctx.cache)?;
    }
    let loaded = load_engines(
        &pass,
        &settings,
        whisper.as_deref(),
        gguf.as_deref(),
        onnx.as_deref(),
        &runtime,
    )?;
    let engines = wyoming::Engines {
        asr: loaded.stt.map(|(stt, language)| wyoming::AsrEngine {
            stt,
            opts: SttOptions {
                threads: settings.threads,
                beam_size: settings.beam_size,
                language,
                ..SttOptions::default()
            },
        }),
        handle: loaded.llm.map(|llm| wyoming::HandleEngine {
            llm,
            params: crate::llm::GenParams {
                max_tokens: settings.max_tokens.unwrap_or(96),
                ..crate::llm::GenParams::default()
            },
            commands,
            log: Some(crate::commands::ActionLog {
                path: settings.agent.action_log.clone(),
            }),
        }),
        tts: loaded.tts.map(|tts| wyoming::TtsEngine {
            tts,
            speed: settings.speed,
        }),
    };
    let info = wyoming::info::describe(
        &pass,
        &engines,
        whisper.as_deref(),
        gguf.as_deref(),
        onnx.as_deref(),
    );
    let stop = stop_on_signals()?;
    let _announcement = match (&args.zeroconf, listener.port()) {
        (Some(name), Some(port)) => Some(wyoming::zeroconf::announce(name, port)?),
        (Some(_), None) => bail!("--zeroconf announces a TCP port; a unix:// socket has none"),
        _ => None,
    };
    let reverify = Reverify::start(&pass, Some(stop.clone()));
    let offered: Vec<&str> = [
        ("asr", want_asr),
        ("tts", want_tts),
        ("handle", want_handle),
    ]
    .iter()
    .filter(|(_, on)| *on)
    .map(|(r, _)| *r)
    .collect();
    tracing::info!(
        stage = "serve",
        ms = t0.elapsed().as_millis() as u64,
        "models loaded and warm"
    );
    // Tests and scripts wait for this line.
    eprintln!(
        "serving {} on {} (Ctrl-C to stop)",
        offered.join(", "),
        listener.describe()
    );
    let options = wyoming::Options {
        limits: wyoming::Limits {
            max_payload: args.max_payload,
            ..wyoming::Limits::default()
        },
        max_clients: args.max_clients.max(1),
        queue: args.queue.max(1),
        max_utterance: std::time::Duration::from_secs(args.max_utterance_s.max(1)),
        ..wyoming::Options::default()
    };
    wyoming::serve(listener, engines, info, options, stop)?;
    if let Some(code) = reverify.finish() {
        return Ok(code);
    }
    Ok(ExitCode::SUCCESS)
}

/// The background re-verification of the admitted model files (see
/// [`AuditPass::reverify`]): a mismatch sets `stop` (the session ends as on Ctrl-C) and is
/// reported by [`Reverify::finish`].
struct Reverify {
    handle: std::thread::JoinHandle<()>,
    problem: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl Reverify {
    fn start(
        pass: &AuditPass,
        stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    ) -> Self {
        let problem = std::sync::Arc::new(std::sync::Mutex::new(None));
        let found = problem.clone();
        let handle = pass.reverify(move |p| {
            *found.lock().unwrap_or_else(|e| e.into_inner()) = Some(p);
            if let Some(stop) = stop {
                stop.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        });
        Self { handle, problem }
    }

    /// Waits for the check; on a mismatch prints it and returns the audit's exit code.
    fn finish(self) -> Option<ExitCode> {
        let _ = self.handle.join();
        let problem = self
            .problem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()?;
        eprintln!(
            "error: {problem}; what ran is not what the openness audit judged. Run the command \
             again to audit the file as it is now."
        );
        Some(ExitCode::from(exit::AUDIT_REFUSED))
    }
}

/// Opens a file to append lines to (created if missing), if one was named.
fn service(cmd: ServiceCommand) -> anyhow::Result<ExitCode> {
    use crate::service;
    match cmd {
        ServiceCommand::Install {
            job,
            no_start,
            args,
        } => {
            let (path, said) = service::install(job, &args, !no_start)?;
            println!("{}: {said}", path.display());
        }
        ServiceCommand::Uninstall { job } => {
            let (path, _) = service::paths(job)?;
            if service::uninstall(job)? {
                println!("removed {}", path.display());
            } else {
                println!(
                    "sotto {} was not installed ({})",
                    job.name(),
                    path.display()
                );
            }
        }
        ServiceCommand::Status { job } => print!("{}", service::status(job)?),
    }
    Ok(ExitCode::SUCCESS)
}

fn history(last: usize, copy: bool, json: bool) -> anyhow::Result<ExitCode> {
    let path = crate::dictation::history::default_path();
    let entries = crate::dictation::history::last(&path, last)
        .with_context(|| format!("cannot read the history {}", path.display()))?;
    if entries.is_empty() {
        eprintln!("no transcripts in {} yet", path.display());
        return Ok(ExitCode::SUCCESS);
    }
    for e in &entries {
        if json {
            println!("{}", serde_json::to_string(e)?);
        } else {
            println!("{}  {}", e.time, e.text);
        }
    }
    if copy {
        let text: Vec<&str> = entries.iter().map(|e| e.text.as_str()).collect();
        crate::desktop::copy_to_clipboard(&text.join("\n"))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// What dictation does to each final transcript: spoken formatting, then the replacement
/// rules; and the vocabulary given to Whisper, and where the history goes.
struct DictationText {
    vocabulary: Vec<String>,
    spoken: Option<crate::dictation::spoken::SpokenFormatting>,
    replacements: Option<crate::dictation::replace::Replacements>,
    history: Option<PathBuf>,
}

impl DictationText {
    fn resolve(file: &ConfigFile, args: &DictateArgs) -> anyhow::Result<Self> {
        let d = &file.raw.dictate;
        let rel = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                file.dir().join(p)
            }
        };
        let read_list = |path: &Path| -> anyhow::Result<Vec<String>> {
            let bytes = crate::models::read_regular(path, 1 << 20, "a vocabulary file")
                .with_context(|| format!("cannot read vocabulary {}", path.display()))?;
            Ok(String::from_utf8_lossy(&bytes)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from)
                .collect())
        };
        let vocabulary = match (&args.vocabulary, &d.vocabulary_file) {
            (Some(f), _) => read_list(f)?,
            (None, Some(f)) => {
                let mut v = d.vocabulary.clone().unwrap_or_default();
                v.extend(read_list(&rel(f))?);
                v
            }
            (None, None) => d.vocabulary.clone().unwrap_or_default(),
        };
        let replacements = args
            .replacements
            .clone()
            .or_else(|| d.replacements.as_deref().map(rel))
            .map(|p| crate::dictation::replace::Replacements::load(&p))
            .transpose()?;
        let spoken =
            (!args.no_spoken_formatting && d.spoken_formatting.unwrap_or(true)).then(|| {
                d.spoken.iter().flatten().fold(
                    crate::dictation::spoken::SpokenFormatting::default(),
                    |s, (phrase, output)| s.with(phrase, output),
                )
            });
        let history = (!args.no_history && d.history.unwrap_or(true))
            .then(crate::dictation::history::default_path);
        Ok(Self {
            vocabulary,
            spoken,
            replacements,
            history,
        })
    }

    /// The transcript as printed, and whether it scratches the one before.
    fn finish(&self, text: &str) -> (String, bool) {
        let (mut text, scratch) = match &self.spoken {
            Some(s) => {
                let f = s.apply(text);
                (f.text, f.scratch_previous)
            }
            None => (text.to_string(), false),
        };
        if let Some(r) = &self.replacements {
            text = r.apply(&text);
        }
        (text, scratch)
    }
}

fn open_append(path: Option<&Path>) -> anyhow::Result<Option<std::fs::File>> {
    path.map(|path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {} for appending", path.display()))
    })
    .transpose()
}

/// One line on a finished turn: what happened and how long each step took.
fn describe_turn(t: &crate::agent::TurnRecord) -> String {
    use crate::agent::TurnOutcome;
    let l = &t.latency;
    let step = |name: &str, v: Option<u64>| v.map(|ms| format!("{name} {ms} ms"));
    let steps: Vec<String> = [
        step("transcript", l.transcript_ms),
        step("first token", l.first_token_ms),
        step("first clause", l.first_clause_ms),
        step("first audio", l.first_audio_ms),
        step("action", l.action_ms),
    ]
    .into_iter()
    .flatten()
    .collect();
    let what = match t.outcome {
        TurnOutcome::Command => match (&t.command, &t.action) {
            (Some(c), Some(a)) => format!(
                "[command {} → {}]",
                c.command,
                serde_json::to_string(a).unwrap_or_default()
            ),
            _ => "[command]".into(),
        },
        TurnOutcome::Interrupted => format!(
            "[interrupted; playback stopped {} ms after speech was detected]",
            t.barge_in_stop_ms.unwrap_or_default()
        ),
        other => format!(
            "[{}]",
            serde_json::to_value(other)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default()
        ),
    };
    format!("{what} after the last word: {}", steps.join(", "))
}
