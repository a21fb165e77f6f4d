//! Text to speech: a Piper voice (VITS, ONNX) on ONNX Runtime, phonemized by espeak-ng.
//!
//! [`Tts`] owns the voice (ONNX Runtime sessions); it is built once after the openness audit
//! and used by the thread that owns it. A Piper voice is cut in two at load ([`graph`]): its
//! front turns a clause into latent frames, its decoder turns those into samples a window of
//! [`DECODER_WINDOW_FRAMES`] at a time, so a long clause takes the memory of a short one. The
//! decoder's convolutions are made 2-D where that is safe, and then one single-threaded session
//! per core decodes a clause's windows side by side ([`DECODER_WORKERS_MAX`]), on scoped
//! threads that live for the clause.
//! ONNX Runtime is loaded dynamically from the library setup fetched: [`init_onnx_runtime`] checks the file exists and really is an ONNX Runtime
//! library before the first `ort` call, because `ort` hangs forever on a bad path.
//!
//! Phonemes: espeak-rs drops clause punctuation and the space between clauses ("Hello! This
//! is" → `həlˈoʊðɪs ɪz`), which makes Piper run sentences together. So the text is split into
//! clauses here, each clause is phonemized alone, and the clauses are joined again with their
//! punctuation and a space.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::audit::AuditPass;

pub mod graph;

#[derive(Debug, thiserror::Error)]
pub enum TtsError {
    #[error("{0}: not admitted by the openness audit; run the audit before loading a model")]
    NotAudited(PathBuf),
    #[error("ONNX Runtime library {path}: {reason}; run scripts/setup, or set ORT_DYLIB_PATH")]
    Runtime { path: PathBuf, reason: String },
    #[error("{path}: cannot read the voice's configuration")]
    Config {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{path}: ONNX Runtime cannot load the voice")]
    Load {
        path: PathBuf,
        #[source]
        source: ort::Error,
    },
    #[error(
        "cannot phonemize {text:?} (is espeak-ng-data installed? set PIPER_ESPEAKNG_DATA_DIRECTORY)"
    )]
    Phonemize {
        text: String,
        #[source]
        source: espeak_rs::ESpeakError,
    },
    #[error("speech synthesis failed")]
    Synthesize(#[source] ort::Error),
    #[error(
        "{path}: the voice speaks through espeak-ng's {voice:?} voice, which this espeak-ng \
         does not have (install its language data, or check espeak.voice in the file)"
    )]
    EspeakVoice {
        path: PathBuf,
        voice: String,
        #[source]
        source: espeak_rs::ESpeakError,
    },
}

/// How long ONNX Runtime may take to initialise before we give up rather than hang.
const ORT_INIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Loads ONNX Runtime from `lib` once per process. The path is checked first (exists, is a
/// loadable library exporting `OrtGetApiBase`), and the initialisation itself runs on a helper
/// thread with a timeout, so a bad library gives an error within seconds, never a hang.
pub fn init_onnx_runtime(lib: &Path) -> Result<(), TtsError> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    let bad = |reason: String| TtsError::Runtime {
        path: lib.to_path_buf(),
        reason,
    };
    if !lib.is_file() {
        return Err(bad("no such file".into()));
    }
    {
        // SAFETY: loading a shared library runs its initialisers; this is the ONNX Runtime
        // library setup fetched and pinned (or the user's ORT_DYLIB_PATH). The handle is
        // dropped at the end of this block: ort loads the library again itself.
        let probe = unsafe { libloading::Library::new(lib) }
            .map_err(|e| bad(format!("cannot be loaded: {e}")))?;
        // SAFETY: only the symbol's presence is checked; it is never called through here.
        unsafe {
            probe.get::<unsafe extern "C" fn() -> *const std::ffi::c_void>(b"OrtGetApiBase\0")
        }
        .map_err(|_| bad("is not an ONNX Runtime library (no OrtGetApiBase)".into()))?;
    }
    let result = INIT.get_or_init(|| {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let path = lib.to_path_buf();
        // Detached on purpose: if ort hangs, the thread is abandoned and we report an error.
        let _ = std::thread::Builder::new()
            .name("ort-init".into())
            .spawn(move || {
                let r = ort::init_from(&path)
                    .map(|b| {
                        b.with_name("sotto").commit();
                    })
                    .map_err(|e| e.to_string());
                let _ = tx.send(r);
            });
        match rx.recv_timeout(ORT_INIT_TIMEOUT) {
            Ok(r) => r,
            Err(_) => Err(format!(
                "did not initialise within {} s",
                ORT_INIT_TIMEOUT.as_secs()
            )),
        }
    });
    result.clone().map_err(bad)
}

/// The ONNX Runtime library: `$ORT_DYLIB_PATH`, else the one setup put in the models dir.
pub fn default_runtime_path(models_root: &Path) -> PathBuf {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        return PathBuf::from(p);
    }
    let name = if cfg!(target_os = "macos") {
        "libonnxruntime.1.32.0.dylib"
    } else {
        "libonnxruntime.so.1.32.0"
    };
    models_root.join("onnxruntime").join(name)
}

/// Points espeak-rs at the system's espeak-ng-data when the user has not. Call at startup,
/// before any thread is spawned.
pub fn locate_espeak_data() {
    const VAR: &str = "PIPER_ESPEAKNG_DATA_DIRECTORY";
    if std::env::var_os(VAR).is_some() {
        return;
    }
    let candidates = [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib",
        "/usr/share",
        "/usr/local/share",
        "/opt/homebrew/share",
    ];
    if let Some(dir) = candidates
        .iter()
        .find(|d| Path::new(d).join("espeak-ng-data/phontab").is_file())
    {
        // SAFETY: called from `main` before any other thread exists, so nothing reads the
        // environment concurrently.
        unsafe { std::env::set_var(VAR, dir) };
    }
}

pub struct Tts {
    /// The voice's front (phonemes to latent frames), or the whole voice when it cannot be cut
    /// in two (see [`graph`]).
    front: ort::session::Session,
    /// The voice's decoder, run a window at a time.
    decoder: Option<Decoder>,
    /// The most latent frames the decoder runs on at once (see [`DECODER_WINDOW_FRAMES`]).
    window_frames: usize,
    run_options: ort::session::RunOptions,
    /// For [`Tts::release_memory`]: ONNX Runtime's arena grows to fit the longest sentence so
    /// far and otherwise never shrinks (the joe voice went from 158 to 215 MB over nine
    /// sentences of different lengths); a run with these options gives it back. Not every
    /// run: that made each sentence ~20 % slower.
    shrink: ort::session::RunOptions,
    config: piper_rs::ModelConfig,
    espeak_voice: String,
    language: String,
    pub sample_rate_hz: u32,
    pub model_path: PathBuf,
}

/// The decoder's part of a voice cut in two.
struct Decoder {
    /// With 2-D convolutions ([`graph`]), one session per core, each on one thread, that
    /// decode a clause's windows side by side ([`DECODER_WORKERS_MAX`]); else one session on
    /// all cores, as the front.
    sessions: Vec<ort::session::Session>,
    /// The name of its input of latent frames.
    latent: String,
    /// It takes the speaker too (`sid`, a voice of several speakers; see [`graph::split`]).
    needs_speaker: bool,
    /// It takes the latent frames as `[1, channels, 1, frames]` ([`graph::Split::decoder_2d`]).
    two_d: bool,
}

/// The most sessions decoding one clause's windows side by side. Why side by side: ONNX
/// Runtime's 2-D convolution kernels gain little from a second thread within one run (joe
/// voice, 308 frames: 86 ms on one thread, 70 on two), while two windows on one thread each
/// take the time of one. Measured on 2 cores (onnxruntime 1.32, Python, 15 interleaved runs):
/// a 316-frame clause 48 ms side by side against 59 (spinning) or 65 (sleeping) for the 1-D
/// decoder on two threads, a 694-frame one 112 against 140 / 146. Beyond four, windows get
/// short and their context costs more than a core gives (not measured: this machine has two).
pub const DECODER_WORKERS_MAX: usize = 4;

/// The most latent frames one session of the decoder runs on at once: ~2.2 s of speech (86
/// frames a second at 22.05 kHz). Its memory follows the window, not the clause: a clause of
/// 689 frames (8 s) took 150-180 MiB decoded whole by the 1-D decoder, 97-99 MiB in windows of
/// 256 frames (onnxruntime 1.32, joe voice, fresh process each). With two 2-D sessions side by
/// side (the tts bench serving a 7.5 s clause eight times, twice each): windows of 192 peaked
/// at 233 MB and decoded a 575-frame clause in 93-96 ms, windows of 128 at 209 MB in 100-104
/// ms.
pub const DECODER_WINDOW_FRAMES: usize = 192;

/// The same for a decoder left 1-D, run by one session on all cores: windows of 256 frames cost
/// nothing that showed against the voice run whole (within 2 %, either side), 192 +1-3 %, 128
/// +5-8 %.
pub const DECODER_WINDOW_FRAMES_1D: usize = 256;

/// The fewest latent frames a window is cut to so that every session has one: shorter, and
/// the context on its sides costs more than a second core gives.
const DECODER_WINDOW_FRAMES_MIN: usize = 24;

/// How long a voice keeps its working memory after it last spoke before it is given back
/// ([`Tts::release_memory`]). Kept, it is ~90 MB of the decoder's buffers (bounded by
/// [`DECODER_WINDOW_FRAMES`], however long the clauses); given back, the next clause took
/// ~20 ms longer while ONNX Runtime's arenas grew again (`sotto serve`, a sentence after 3 s
/// idle: 117-122 ms to first audio against 98-99 kept, joe voice). A conversation's next
/// question comes within seconds; after this long nobody is waiting. The agent has the voice
/// give it back sooner, as soon as someone starts speaking ([`crate::pipeline::speak::Job::Rest`]):
/// Whisper's state for the utterance would otherwise come on top of it.
pub const KEEP_WARM: Duration = Duration::from_secs(20);

/// How ONNX Runtime's threads wait for each other between the steps of the voice's network.
///
/// Measured here (joe voice, 2 cores, `scripts/compare_tts.py --runs 9`, warm real-time factor
/// against piper-tts, whose ONNX Runtime spins; sentence / paragraph, three runs): quiet,
/// spinning 1.02-1.10 / 0.97-1.03 and sleeping 0.95-1.00 / 0.93; with another process keeping
/// one core busy, spinning 0.70-1.20 / 0.81-0.98 and sleeping 1.16-1.54 / 1.16-1.37. Spinning
/// gains a few percent on an idle machine and loses up to half on a busy one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waiting {
    /// Spin while a sentence is synthesized, as ONNX Runtime does by default, and stop as soon
    /// as it is done (`session.force_spinning_stop`).
    Spin,
    /// Sleep at once: for a voice that shares the cores with sotto's other engines (the agent
    /// and `serve` write the next clause with the LLM while this one is synthesized) or with
    /// other programs.
    Sleep,
}

impl Waiting {
    /// For a voice that has the process to itself for a few seconds (`sotto say`): spin when
    /// no other program is running at this moment, else sleep.
    pub fn for_a_voice_alone() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cores > 1 && crate::cpu::threads_free_now(cores) == cores {
            Waiting::Spin
        } else {
            Waiting::Sleep
        }
    }
}

/// One synthesized stretch of speech.
#[derive(Clone, Debug)]
pub struct Speech {
    pub samples: Vec<f32>,
    pub sample_rate_hz: u32,
    pub took: Duration,
}

impl Tts {
    /// Loads a Piper voice (`voice.onnx` + `voice.onnx.json`) and warms it up (the first run of
    /// an ONNX Runtime session plans its memory and is several times slower than the next),
    /// so the first sentence costs what the tenth does. Logs load and warm-up time.
    pub fn load(
        audited: &AuditPass,
        onnx: &Path,
        runtime: &Path,
        waiting: Waiting,
    ) -> Result<Self, TtsError> {
        if !audited.covers(onnx) {
            return Err(TtsError::NotAudited(onnx.to_path_buf()));
        }
        init_onnx_runtime(runtime)?;
        let config_path = onnx.with_extension("onnx.json");
        let t0 = Instant::now();
        let bad_config = |source: Box<dyn std::error::Error + Send + Sync>| TtsError::Config {
            path: config_path.clone(),
            source,
        };
        let text = std::fs::read_to_string(&config_path).map_err(|e| bad_config(e.into()))?;
        let config: piper_rs::ModelConfig =
            serde_json::from_str(&text).map_err(|e| bad_config(e.into()))?;
        let espeak_voice = config.espeak.voice.clone();
        // Piper's own language code ("en_US"), as Piper's voice list and Home Assistant name it.
        let language = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("language")?.get("code")?.as_str().map(str::to_string))
            .unwrap_or_else(|| espeak_voice.clone());
        // A voice brought for another language needs that language in espeak-ng: said now,
        // not at the first sentence.
        espeak_rs::text_to_phonemes("a", &espeak_voice, None).map_err(|source| {
            TtsError::EspeakVoice {
                path: config_path.clone(),
                voice: espeak_voice.clone(),
                source,
            }
        })?;
        let sample_rate_hz = config.audio.sample_rate;
        let bad_model = |source: ort::Error| TtsError::Load {
            path: onnx.to_path_buf(),
            source,
        };
        let unreadable = |reason: String| TtsError::Load {
            path: onnx.to_path_buf(),
            source: ort::Error::new(reason),
        };
        let bytes = std::fs::read(onnx).map_err(|e| unreadable(e.to_string()))?;
        // The parts name the weights by their place in the voice's file, when ONNX Runtime can
        // be told where that is (a UTF-8 path); else they carry copies.
        let (weights_folder, weights_file) = match (
            onnx.parent().and_then(Path::to_str),
            onnx.file_name().and_then(|n| n.to_str()),
        ) {
            (Some(""), Some(name)) => (Some("."), Some(name)),
            (Some(folder), Some(name)) => (Some(folder), Some(name)),
            _ => (None, None),
        };
        let builder = |on: Threads| session_builder(waiting, weights_folder, on);
        let split = graph::split(&bytes, weights_file).map_err(|e| unreadable(e.to_string()))?;
        let (front, decoder) = match split {
            Some(split) => {
                drop(bytes);
                let (on, count) = if split.decoder_2d {
                    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                    (Threads::One, cores.clamp(1, DECODER_WORKERS_MAX))
                } else {
                    (Threads::All, 1)
                };
                // The decoder's sessions are made while the front's is (the voice loads ~25 ms
                // sooner on 2 cores than one after the other).
                let (front, sessions) = std::thread::scope(|scope| {
                    let made: Vec<_> = (0..count)
                        .map(|_| scope.spawn(|| builder(on)?.commit_from_memory(&split.decoder)))
                        .collect();
                    let front =
                        builder(Threads::All).and_then(|mut b| b.commit_from_memory(&split.front));
                    let sessions = (made.into_iter())
                        .map(|m| m.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                        .collect::<Result<Vec<_>, _>>();
                    (front, sessions)
                });
                let (front, sessions) = (front.map_err(bad_model)?, sessions.map_err(bad_model)?);
                let needs_speaker = sessions[0].inputs().iter().any(|i| i.name() == "sid");
                let decoder = Decoder {
                    sessions,
                    latent: split.latent,
                    needs_speaker,
                    two_d: split.decoder_2d,
                };
                (front, Some(decoder))
            }
            None => {
                let whole = builder(Threads::All).and_then(|mut b| b.commit_from_memory(&bytes));
                (whole.map_err(bad_model)?, None)
            }
        };
        let window_frames = match &decoder {
            Some(d) if d.two_d => DECODER_WINDOW_FRAMES,
            _ => DECODER_WINDOW_FRAMES_1D,
        };
        let run_options = ort::session::RunOptions::new().map_err(bad_model)?;
        let mut shrink = ort::session::RunOptions::new().map_err(bad_model)?;
        shrink
            .add_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
            .map_err(bad_model)?;
        let loaded = t0.elapsed();
        let mut tts = Self {
            front,
            decoder,
            window_frames,
            run_options,
            shrink,
            config,
            espeak_voice,
            language,
            sample_rate_hz,
            model_path: onnx.to_path_buf(),
        };
        let t1 = Instant::now();
        let ready = phoneme_ids(
            &tts.config.phoneme_id_map,
            &phonemize("Ready.", &tts.espeak_voice)?,
        );
        tts.infer(ready, tts.config.inference.length_scale, Pass::WarmUp)
            .map_err(TtsError::Synthesize)?;
        tracing::info!(
            stage = "tts",
            voice = %onnx.display(),
            load_ms = loaded.as_millis() as u64,
            warm_up_ms = t1.elapsed().as_millis() as u64,
            decoder = match &tts.decoder {
                Some(d) if d.two_d => "2-D, sessions side by side",
                Some(_) => "1-D",
                None => "not cut",
            },
            decoder_sessions = tts.decoder.as_ref().map_or(0, |d| d.sessions.len()),
            "voice loaded and warmed up"
        );
        Ok(tts)
    }

    /// The voice's language as Piper names it (`language.code` of its .onnx.json, e.g.
    /// "en_US"), else its espeak-ng voice.
    pub fn language(&self) -> &str {
        &self.language
    }

    /// Synthesizes one sentence or clause. `speed` > 1 speaks faster.
    pub fn synthesize(&mut self, text: &str, speed: f32) -> Result<Speech, TtsError> {
        let t0 = Instant::now();
        let phonemes = phonemize(text, &self.espeak_voice)?;
        if phonemes.trim().is_empty() {
            return Ok(Speech {
                samples: Vec::new(),
                sample_rate_hz: self.sample_rate_hz,
                took: t0.elapsed(),
            });
        }
        let length_scale = self.config.inference.length_scale / speed.clamp(0.25, 4.0);
        let samples = self
            .infer(
                phoneme_ids(&self.config.phoneme_id_map, &phonemes),
                length_scale,
                Pass::Speak,
            )
            .map_err(TtsError::Synthesize)?;
        Ok(Speech {
            samples,
            sample_rate_hz: self.sample_rate_hz,
            took: t0.elapsed(),
        })
    }

    /// Gives ONNX Runtime's buffers back to the system (a tiny run that shrinks its arenas,
    /// ~10 ms). Call when nothing has been said for a while ([`KEEP_WARM`]).
    pub fn release_memory(&mut self) -> Result<(), TtsError> {
        let map = &self.config.phoneme_id_map;
        let ids = phoneme_ids(map, "ə");
        self.infer(ids, self.config.inference.length_scale, Pass::Shrink)
            .map(|_| ())
            .map_err(TtsError::Synthesize)
    }

    /// One run of the voice's network: phoneme ids in, samples out.
    fn infer(
        &mut self,
        ids: Vec<i64>,
        length_scale: f32,
        pass: Pass,
    ) -> Result<Vec<f32>, ort::Error> {
        use ort::value::Tensor;
        let inf = &self.config.inference;
        let n = ids.len();
        let input = Tensor::<i64>::from_array(([1usize, n], ids.into_boxed_slice()))?;
        let lengths = Tensor::<i64>::from_array(([1usize], vec![n as i64].into_boxed_slice()))?;
        let scales = Tensor::<f32>::from_array((
            [3usize],
            vec![inf.noise_scale, length_scale, inf.noise_w].into_boxed_slice(),
        ))?;
        let options = match pass {
            Pass::Shrink => &self.shrink,
            Pass::Speak | Pass::WarmUp => &self.run_options,
        };
        let outputs = if self.config.num_speakers > 1 {
            self.front.run_with_options(
                ort::inputs![input, lengths, scales, first_speaker()?],
                options,
            )?
        } else {
            self.front
                .run_with_options(ort::inputs![input, lengths, scales], options)?
        };
        let Some(decoder) = &mut self.decoder else {
            let (_, audio) = outputs[0].try_extract_tensor::<f32>()?;
            return Ok(audio.to_vec());
        };
        // The latent frames, [1, channels, frames].
        let (shape, latent) = outputs[0].try_extract_tensor::<f32>()?;
        let &[1, channels, frames] = &shape[..] else {
            return Err(ort::Error::new(format!(
                "the voice's latent frames have shape {shape:?}, not [1, channels, frames]"
            )));
        };
        let latent = Latent {
            frames: latent,
            channels: channels as usize,
            len: frames as usize,
        };
        match pass {
            Pass::Speak => decoder.decode(&latent, self.window_frames, options),
            Pass::WarmUp | Pass::Shrink => {
                let (sessions, feed) = decoder.parts();
                let all = 0..latent.len;
                let each = |session: &mut ort::session::Session, _| {
                    feed.run(session, &latent, all.clone(), all.clone(), options)
                };
                side_by_side(sessions, &each)
                    .into_iter()
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Vec::new())
            }
        }
    }

    /// The most latent frames a session of the decoder runs on at once
    /// ([`DECODER_WINDOW_FRAMES`], or [`DECODER_WINDOW_FRAMES_1D`] for a decoder left 1-D,
    /// unless set here): smaller windows hold less memory and cost more time.
    pub fn set_decoder_window(&mut self, frames: usize) {
        self.window_frames = frames.max(1);
    }

    /// Whether the voice was cut in two and decodes in windows (see [`graph`]); a voice that
    /// could not be is run whole.
    pub fn decodes_in_windows(&self) -> bool {
        self.decoder.is_some()
    }

    /// Whether the voice's decoder was made 2-D ([`graph`]), and how many sessions decode a
    /// clause's windows side by side (0 for a voice run whole).
    pub fn decoder_sessions(&self) -> (bool, usize) {
        self.decoder
            .as_ref()
            .map_or((false, 0), |d| (d.two_d, d.sessions.len()))
    }

    /// Piper's two noise scales: how much the voice's sound (`noise_scale`) and timing
    /// (`noise_w`) vary from one run to the next; 0 and 0 say a text the same way every time.
    /// The voice's .onnx.json sets them (joe: 0.667 and 0.8).
    pub fn set_noise(&mut self, noise_scale: f32, noise_w: f32) {
        self.config.inference.noise_scale = noise_scale;
        self.config.inference.noise_w = noise_w;
    }
}

/// The threads a session runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Threads {
    /// ONNX Runtime's default: one per core.
    All,
    /// The calling thread (a 2-D decoder's session, one of several side by side).
    One,
}

/// A session builder with ONNX Runtime's defaults (every graph optimisation, and one thread per
/// core unless `threads` says one), as piper-tts uses them, its threads waiting as `waiting`
/// says, and the voice's weights read from `weights_folder` (see [`graph::split`]). ONNX
/// Runtime's memory arena stays on: ort's `CPU::default()` provider turns it off, which
/// measured 25-35 % slower.
fn session_builder(
    waiting: Waiting,
    weights_folder: Option<&str>,
    threads: Threads,
) -> Result<ort::session::builder::SessionBuilder, ort::Error> {
    let spin = waiting == Waiting::Spin;
    let mut builder = ort::session::Session::builder()?.with_intra_op_spinning(spin)?;
    if spin {
        builder = builder.with_config_entry("session.force_spinning_stop", "1")?;
    }
    if let Some(folder) = weights_folder {
        builder = builder.with_config_entry(
            "session.model_external_initializers_file_folder_path",
            folder,
        )?;
    }
    if threads == Threads::One {
        // Without memory patterns (plans of a run's buffers by input shape, and a window's
        // length changes with each clause): same speed, less memory (the tts bench's peak with
        // two sessions: 209 MB against 248 on windows of 128 frames, 233 against 310 on 192).
        builder = builder.with_intra_threads(1)?.with_memory_pattern(false)?;
    }
    Ok(builder)
}

/// What a run of the voice is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    Speak,
    /// The first run of each session (see [`Tts::load`]): every decoder session runs once.
    WarmUp,
    /// Every session gives its arena's memory back (see [`Tts::release_memory`]).
    Shrink,
}

/// A clause's latent frames, as the front gives them: `[1, channels, len]`, channel-major.
struct Latent<'a> {
    frames: &'a [f32],
    channels: usize,
    len: usize,
}

impl Decoder {
    /// Decodes a clause's latent frames into samples, a window at a time, the windows shared
    /// out among the sessions, each on a thread of its own.
    fn decode(
        &mut self,
        latent: &Latent,
        window_frames: usize,
        options: &ort::session::RunOptions,
    ) -> Result<Vec<f32>, ort::Error> {
        let windows = graph::windows(
            latent.len,
            window_frames,
            self.sessions.len(),
            DECODER_WINDOW_FRAMES_MIN,
        );
        let workers = self.sessions.len().min(windows.len());
        let (sessions, feed) = self.parts();
        // Session w decodes windows w, w + workers, ...: equal windows, so they finish together.
        let share = |session: &mut ort::session::Session, w: usize| {
            (windows.iter().skip(w).step_by(workers))
                .map(|(keep, run)| feed.run(session, latent, keep.clone(), run.clone(), options))
                .collect::<Result<Vec<_>, ort::Error>>()
        };
        let shares = side_by_side(&mut sessions[..workers], &share);
        let mut shares = (shares.into_iter())
            .map(|share| share.map(Vec::into_iter))
            .collect::<Result<Vec<_>, _>>()?;
        // Window i is the (i / workers)th of share i % workers.
        let mut audio = Vec::new();
        for i in 0..windows.len() {
            if let Some(samples) = shares[i % workers].next() {
                audio.extend_from_slice(&samples);
            }
        }
        Ok(audio)
    }

    /// The sessions, and what feeding any of them takes.
    fn parts(&mut self) -> (&mut [ort::session::Session], Feed<'_>) {
        let feed = Feed {
            latent: &self.latent,
            needs_speaker: self.needs_speaker,
            two_d: self.two_d,
        };
        (&mut self.sessions, feed)
    }
}

/// Runs `work` on each session, each on a thread of its own (the first on the calling
/// thread), and gives the results in the sessions' order; `work` is told the session's index.
fn side_by_side<T: Send>(
    sessions: &mut [ort::session::Session],
    work: &(dyn Fn(&mut ort::session::Session, usize) -> Result<T, ort::Error> + Sync),
) -> Vec<Result<T, ort::Error>> {
    let Some((first, others)) = sessions.split_first_mut() else {
        return Vec::new();
    };
    std::thread::scope(|scope| {
        let spawned: Vec<_> = (others.iter_mut().enumerate())
            .map(|(k, session)| {
                std::thread::Builder::new()
                    .name("sotto-tts-decode".into())
                    .spawn_scoped(scope, move || work(session, k + 1))
            })
            .collect();
        let mut results = vec![work(first, 0)];
        for thread in spawned {
            results.push(match thread {
                Ok(thread) => thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                Err(e) => Err(ort::Error::new(format!(
                    "cannot start a thread to decode on: {e}"
                ))),
            });
        }
        results
    })
}

/// The `sid` input of a voice of several speakers: its first speaker.
fn first_speaker() -> Result<ort::value::Tensor<i64>, ort::Error> {
    ort::value::Tensor::from_array(([1usize], vec![0i64].into_boxed_slice()))
}

/// How a decoder's session is fed.
#[derive(Clone, Copy)]
struct Feed<'a> {
    latent: &'a str,
    needs_speaker: bool,
    two_d: bool,
}

impl Feed<'_> {
    /// Decodes the latent frames `run` and gives the samples of those in `keep`.
    fn run(
        &self,
        session: &mut ort::session::Session,
        latent: &Latent,
        keep: std::ops::Range<usize>,
        run: std::ops::Range<usize>,
        options: &ort::session::RunOptions,
    ) -> Result<Vec<f32>, ort::Error> {
        use ort::value::Tensor;
        let (channels, len) = (latent.channels, latent.len);
        let mut window = Vec::with_capacity(channels * run.len());
        for c in 0..channels {
            window.extend_from_slice(&latent.frames[c * len + run.start..c * len + run.end]);
        }
        let shape = if self.two_d {
            vec![1, channels, 1, run.len()]
        } else {
            vec![1, channels, run.len()]
        };
        let window = Tensor::<f32>::from_array((shape, window.into_boxed_slice()))?;
        let mut inputs = ort::inputs![self.latent => window];
        if self.needs_speaker {
            inputs.push(("sid".into(), first_speaker()?.into()));
        }
        let decoded = session.run_with_options(inputs, options)?;
        let (_, samples) = decoded[0].try_extract_tensor::<f32>()?;
        // Each latent frame is a fixed number of samples (256 for Piper's voices).
        let hop = samples.len() / run.len();
        if hop * run.len() != samples.len() {
            return Err(ort::Error::new(format!(
                "the voice's decoder made {} samples of {} frames",
                samples.len(),
                run.len()
            )));
        }
        let from = (keep.start - run.start) * hop;
        Ok(samples[from..from + keep.len() * hop].to_vec())
    }
}

/// Where the speech of two chunks of one clause meets.
///
/// Each run of the voice speaks its text as a whole utterance, with ~40 ms of silence before
/// the first sound and ~130 ms after the last (joe voice). Between two chunks of one clause
/// (the chunker cuts "The capital of France" off so speech can start before the rest of the
/// reply is written) that adds up to a ~200 ms stop where a speaker runs straight on. Fed the
/// chunks in order, [`Seams::close`] trims the silence on both sides of such a seam to what a
/// word boundary has; the other ends of the chunks, and chunks cut at punctuation, keep theirs.
#[derive(Debug, Default)]
pub struct Seams {
    /// The last chunk stopped inside a clause.
    open: bool,
}

/// Silence, at a seam: 60 dB under the chunk's loudest sample. Piper's pauses sit at -75 to
/// -85 dB; a word's softest edges (a final "s", a plosive's release) stay above -50 dB.
const SEAM_SILENCE_DB: f32 = -60.0;
/// What a seam keeps after the last sound of the chunk before it and before the first sound of
/// the chunk after it: already 60 dB down, it is there so no waveform is cut off mid-swing.
/// With the quiet ends of the sounds themselves, ~50 ms of near-silence is left at the seam
/// (joe voice, "France | is"), about a stop's closure between two words.
const SEAM_KEEP_AFTER_MS: usize = 10;
const SEAM_KEEP_BEFORE_MS: usize = 5;

impl Seams {
    /// Trims `samples`, the speech of the next chunk: its lead if the chunk before stopped
    /// inside a clause, its tail if this one does (`mid_clause`).
    pub fn close(&mut self, samples: &mut Vec<f32>, rate_hz: u32, mid_clause: bool) {
        trim_silence(samples, rate_hz, self.open, mid_clause);
        self.open = mid_clause;
    }
}

/// Cuts the silence before the first sound (`head`) and after the last (`tail`) down to
/// [`SEAM_KEEP_BEFORE_MS`] and [`SEAM_KEEP_AFTER_MS`]. Silent or empty speech is left alone.
fn trim_silence(samples: &mut Vec<f32>, rate_hz: u32, head: bool, tail: bool) {
    let peak = samples.iter().fold(0f32, |m, x| m.max(x.abs()));
    let floor = peak * 10f32.powf(SEAM_SILENCE_DB / 20.0);
    let (Some(first), Some(last)) = (
        samples.iter().position(|x| x.abs() > floor),
        samples.iter().rposition(|x| x.abs() > floor),
    ) else {
        return;
    };
    let samples_in = |ms: usize| rate_hz as usize * ms / 1000;
    if tail {
        samples.truncate((last + 1 + samples_in(SEAM_KEEP_AFTER_MS)).min(samples.len()));
    }
    if head {
        samples.drain(..first.saturating_sub(samples_in(SEAM_KEEP_BEFORE_MS)));
    }
}

/// Phoneme ids as Piper was trained on them: BOS, a pad, then each phoneme followed by a
/// pad, then EOS (piper-tts's layout; piper-rs 0.2 leaves out the pad after BOS). Phonemes the
/// voice does not know are skipped.
pub fn phoneme_ids(map: &std::collections::HashMap<char, Vec<i64>>, phonemes: &str) -> Vec<i64> {
    let id = |c: char| map.get(&c).and_then(|v| v.first()).copied().unwrap_or(0);
    let pad = id('_');
    let mut ids = Vec::with_capacity(phonemes.len() * 2 + 3);
    ids.extend([id('^'), pad]);
    for c in phonemes.chars() {
        if let Some(found) = map.get(&c) {
            ids.extend_from_slice(found);
            ids.push(pad);
        }
    }
    ids.push(id('$'));
    ids
}

/// Splits text into clauses, keeping each clause's closing punctuation.
pub fn clauses(text: &str) -> Vec<(String, Option<char>)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let next = chars.get(i + 1).copied();
        let boundary = matches!(c, ',' | ';' | ':' | '!' | '?' | '.')
            && next.is_none_or(char::is_whitespace)
            // "3.5" and "1,000" are not clause ends (next is a digit, caught above), and
            // neither is the period of an abbreviation-like single letter ("U.S.").
            && !(c == '.' && cur.trim_end().chars().rev().nth(1) == Some('.'));
        if boundary {
            if !cur.trim().is_empty() {
                out.push((cur.trim().to_string(), Some(c)));
            }
            cur.clear();
        } else {
            cur.push(c);
        }
    }
    if !cur.trim().is_empty() {
        out.push((cur.trim().to_string(), None));
    }
    out
}

/// Phonemizes clause by clause and re-joins with punctuation and spaces, which espeak-rs
/// would otherwise drop.
pub fn phonemize(text: &str, voice: &str) -> Result<String, TtsError> {
    let mut out = String::new();
    for (clause, punct) in clauses(text) {
        let ph = espeak_rs::text_to_phonemes(&clause, voice, None).map_err(|source| {
            TtsError::Phonemize {
                text: clause.clone(),
                source,
            }
        })?;
        let ph = ph.join(" ");
        let ph = ph.trim_end_matches(['.', ',', '!', '?', ';', ':']).trim();
        if ph.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(ph);
        out.push(punct.unwrap_or('.'));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_voice_alone_sleeps_while_another_program_keeps_a_core_busy() {
        let cores = std::thread::available_parallelism().unwrap().get();
        if !cfg!(target_os = "linux") || cores < 2 {
            return;
        }
        let mut busy = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        // Every read sees the busy shell; other programs may add to it, never take from it.
        let waits: Vec<Waiting> = (0..10).map(|_| Waiting::for_a_voice_alone()).collect();
        busy.kill().unwrap();
        busy.wait().unwrap();
        assert!(waits.iter().all(|w| *w == Waiting::Sleep), "{waits:?}");
    }

    #[test]
    fn clauses_keep_their_punctuation() {
        let c = clauses("Hello! This is a test, isn't it? It costs 3.50 dollars.");
        let got: Vec<(&str, Option<char>)> = c.iter().map(|(t, p)| (t.as_str(), *p)).collect();
        assert_eq!(
            got,
            vec![
                ("Hello", Some('!')),
                ("This is a test", Some(',')),
                ("isn't it", Some('?')),
                ("It costs 3.50 dollars", Some('.')),
            ]
        );
    }

    #[test]
    fn a_seam_keeps_a_word_gap_of_silence_and_the_other_ends_keep_theirs() {
        let rate = 1000; // one sample per millisecond
        let speech = |lead: usize, tail: usize| {
            let mut v = vec![0.0001f32; lead];
            v.extend((0..100).map(|i| if i % 2 == 0 { 0.5 } else { -0.5 }));
            v.push(0.01); // a soft ending, 34 dB down: speech, not silence
            v.extend(vec![0.0001f32; tail]);
            v
        };
        let mut seams = Seams::default();
        // "The capital of France" (cut inside the clause), "is Paris." and "Next sentence."
        let mut cut = speech(40, 130);
        seams.close(&mut cut, rate, true);
        assert_eq!(cut.len(), 40 + 101 + 10, "lead kept, tail down to 10 ms");
        let mut rest = speech(40, 130);
        seams.close(&mut rest, rate, false);
        assert_eq!(rest.len(), 5 + 101 + 130, "lead down to 5 ms, tail kept");
        let mut next = speech(40, 130);
        seams.close(&mut next, rate, false);
        assert_eq!(
            next.len(),
            40 + 101 + 130,
            "nothing trimmed after a clause's end"
        );
        let mut silent = vec![0.0f32; 50];
        trim_silence(&mut silent, rate, true, true);
        assert_eq!(silent.len(), 50);
    }

    #[test]
    fn phoneme_ids_follow_pipers_layout() {
        let map: std::collections::HashMap<char, Vec<i64>> = [
            ('^', vec![1]),
            ('_', vec![0]),
            ('$', vec![2]),
            ('a', vec![14]),
            ('b', vec![15, 16]),
        ]
        .into_iter()
        .collect();
        assert_eq!(phoneme_ids(&map, "ab?"), vec![1, 0, 14, 0, 15, 16, 0, 2]);
    }

    #[test]
    fn a_missing_runtime_library_is_an_error_not_a_hang() {
        let t0 = Instant::now();
        let e = init_onnx_runtime(Path::new("/nonexistent/libonnxruntime.so")).unwrap_err();
        assert!(e.to_string().contains("no such file"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("libonnxruntime.so");
        std::fs::write(&fake, b"not a library").unwrap();
        let e = init_onnx_runtime(&fake).unwrap_err();
        assert!(e.to_string().contains("cannot be loaded"), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(5));
    }
}
