//! Speech to text: whisper.cpp through whisper-rs.
//!
//! [`Stt`] owns the whisper context (the weights, loaded once) and serves many utterances on
//! the thread that owns it. Each call to [`Stt::transcribe`] encodes only as much audio as
//! there is (up to Whisper's 30 s window). Before whisper.cpp sees a model file, its ggml header is read and
//! checked against the file's length: whisper.cpp is not robust against truncated files.
//! On Linux the encoder's matrix products go through OpenBLAS (see build.rs).
//!
//! Input is 16 kHz mono f32 ([`crate::audio::WHISPER_SAMPLE_RATE_HZ`]).

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use whisper_rs::{FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters};

use crate::audit::AuditPass;
use crate::models::{ModelError, whisper_ggml};

#[derive(Debug, thiserror::Error)]
pub enum SttError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{path}: whisper.cpp could not load the model")]
    Load {
        path: PathBuf,
        #[source]
        source: whisper_rs::WhisperError,
    },
    #[error("{0}: not admitted by the openness audit; run the audit before loading a model")]
    NotAudited(PathBuf),
    #[error("transcription failed")]
    Decode(#[source] whisper_rs::WhisperError),
    #[error("{0}")]
    Language(String),
}

/// Decoding settings.
#[derive(Clone, Debug)]
pub struct SttOptions {
    pub threads: usize,
    /// 1 = greedy; more = beam search with that many beams (faster-whisper's default is 5).
    pub beam_size: usize,
    pub language: String,
    /// Text Whisper is told came before: the user's vocabulary ([`Stt::vocabulary_prompt`]),
    /// so names and jargon are spelled as the user spells them.
    pub prompt: Option<String>,
}

impl Default for SttOptions {
    fn default() -> Self {
        Self {
            threads: default_threads(),
            beam_size: 5,
            language: "en".into(),
            prompt: None,
        }
    }
}

/// The most prompt tokens a vocabulary takes. Whisper keeps at most n_text_ctx / 2 - 1 (223)
/// tokens of prompt; the rest of the budget is left to the text it carries between windows.
pub const VOCABULARY_TOKENS: usize = 150;

/// All cores, as whisper.cpp and faster-whisper benefit from every one on small machines.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(4)
}

/// One recognised stretch of speech, times relative to the start of the input.
#[derive(Clone, Debug, PartialEq)]
pub struct Segment {
    pub start: Duration,
    pub end: Duration,
    pub text: String,
    /// Whisper's probability for its last word (the least of its tokens'): low when the
    /// word is a guess, as when Whisper completes a phrase cut off at a pause ("Set a timer
    /// for" heard as "Set a timer for it.", "it" at 0.36). None without words.
    pub last_word_p: Option<f32>,
}

/// Encoder positions for a clip: Whisper's encoder sees 50 per second (1500 for 30 s); the
/// clip plus two seconds, and at least ten seconds. A shorter context makes Whisper repeat
/// itself: on twenty Piper renditions of a 2.4 s sentence, a 6 s floor looped on 8 with beam
/// search (none greedily), an 8 or 10 s floor on none. On twelve espeak questions the fitted
/// context made as many errors as the full 30 s one at a fraction of the time.
///
/// Rounded up to a multiple of 16 positions (at most 0.3 s more): the attention products have
/// the context as their row count, and ggml's fast matrix kernels (llamafile's tinyBLAS) take
/// only row counts that are a multiple of 4 (16 for its widest tiles); any other count falls
/// back to one dot product at a time.
pub fn fitted_audio_ctx(samples_16k: usize) -> i32 {
    const PER_SECOND: usize = 50;
    const MARGIN: usize = 2 * PER_SECOND;
    const FLOOR: usize = 10 * PER_SECOND;
    let needed = (samples_16k * PER_SECOND).div_ceil(16_000) + MARGIN;
    needed.max(FLOOR).next_multiple_of(16).min(1500) as i32
}

/// The words of a transcript without Whisper's non-speech markers ("[BLANK_AUDIO]",
/// "(music)", "*laughs*"), which are not something the user said.
pub fn strip_non_speech(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut closing: Option<char> = None;
    for c in text.chars() {
        match (closing, c) {
            (None, '[') => closing = Some(']'),
            (None, '(') => closing = Some(')'),
            (None, '*') => closing = Some('*'),
            (None, c) => out.push(c),
            (Some(end), c) if c == end => closing = None,
            (Some(_), _) => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub struct Stt {
    ctx: WhisperContext,
    pub model_path: PathBuf,
    pub header: whisper_ggml::Header,
    /// Threads the last transcription ran on (a long recording's pieces decoded side by side
    /// count each): fewer than asked for when other programs kept cores busy
    /// ([`crate::cpu::threads_free_now`]). Benches report it beside their times.
    pub last_threads: usize,
    /// The language the last transcription was decoded in: the one asked for, or the one
    /// Whisper detected when asked for "auto".
    pub last_language: String,
}

static LOG_HOOK: Once = Once::new();

/// Audio up to this long is encoded in a context fitted to it (see [`fitted_audio_ctx`]);
/// longer audio goes through whisper.cpp's 30 s windows.
const FIT_UP_TO_SAMPLES: usize = 28 * 16_000;

impl Stt {
    /// Validates and loads a whisper.cpp model. Logs the load time. Takes the audit's pass:
    /// no weights are read into an engine before the openness audit admitted them.
    pub fn load(audited: &AuditPass, model_path: &Path) -> Result<Self, SttError> {
        if !audited.covers(model_path) {
            return Err(SttError::NotAudited(model_path.to_path_buf()));
        }
        let header = whisper_ggml::Header::read(model_path)?;
        // Route whisper.cpp's own logging into tracing instead of stderr.
        LOG_HOOK.call_once(whisper_rs::install_logging_hooks);
        let t0 = Instant::now();
        let ctx = WhisperContext::new_with_params(model_path, WhisperContextParameters::default())
            .map_err(|source| SttError::Load {
                path: model_path.to_path_buf(),
                source,
            })?;
        tracing::info!(
            stage = "stt",
            model = %model_path.display(),
            ms = t0.elapsed().as_millis() as u64,
            "whisper model loaded"
        );
        Ok(Self {
            ctx,
            model_path: model_path.to_path_buf(),
            header,
            last_threads: 0,
            last_language: String::new(),
        })
    }

    /// The language to decode with, checked against this model: "auto" or a Whisper language
    /// code. An English-only model (`.en`) takes "en" (and "auto", which is "en" for it).
    pub fn check_language(&self, language: &str) -> Result<String, SttError> {
        let multilingual = self.ctx.is_multilingual();
        if language != "auto" && whisper_rs::get_lang_id(language).is_none() {
            return Err(SttError::Language(format!(
                "--language {language:?} is not a language Whisper knows (use a code such as \
                 en, fr, de, es, or auto)"
            )));
        }
        if !multilingual && language == "auto" {
            return Ok("en".into());
        }
        if !multilingual && language != "en" {
            return Err(SttError::Language(format!(
                "{} is an English-only Whisper model: --language {language} needs a \
                 multilingual one (sotto models add it; see README)",
                self.model_path.display()
            )));
        }
        Ok(language.to_string())
    }

    /// The language codes this model transcribes: "en" for an English-only model, every
    /// language Whisper knows for a multilingual one.
    pub fn languages(&self) -> Vec<String> {
        if !self.ctx.is_multilingual() {
            return vec!["en".into()];
        }
        (0..=whisper_rs::get_lang_max_id())
            .filter_map(|id| whisper_rs::get_lang_str(id).map(str::to_string))
            .collect()
    }

    /// Whisper's prompt for a vocabulary: the words and phrases in order, comma-separated,
    /// within [`VOCABULARY_TOKENS`] tokens. Returns the prompt and the entries cut because
    /// they did not fit.
    pub fn vocabulary_prompt(&self, entries: &[String]) -> (String, Vec<String>) {
        let mut prompt = String::new();
        let mut cut = Vec::new();
        for e in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let candidate = if prompt.is_empty() {
                e.to_string()
            } else {
                format!("{prompt}, {e}")
            };
            let tokens = self
                .ctx
                .tokenize(&candidate, VOCABULARY_TOKENS + 64)
                .map(|t| t.len())
                .unwrap_or(usize::MAX);
            if cut.is_empty() && tokens <= VOCABULARY_TOKENS {
                prompt = candidate;
            } else {
                cut.push(e.to_string());
            }
        }
        if !prompt.is_empty() {
            prompt.push('.');
        }
        (prompt, cut)
    }

    /// Transcribes 16 kHz mono audio. `progress` receives whisper.cpp's percent complete.
    ///
    /// Audio of up to 28 s is encoded in a context fitted to its length
    /// ([`fitted_audio_ctx`]) instead of Whisper's fixed 30 s: 2-5x faster on short clips.
    /// Longer audio is cut at pauses into pieces of up to 28 s ([`pause_chunks`]), each decoded
    /// on its own in a fitted context; a stretch of 28 s with no pause runs on to the next
    /// pause and goes through whisper.cpp's own 30 s windows. (Cutting at fixed points was
    /// tried before and lost words at the cuts.) The pieces are decoded side by side, one
    /// thread each while there are threads for more than one.
    /// Threads: `opts.threads`, fewer while other processes keep cores busy
    /// ([`crate::cpu::threads_free_now`]).
    ///
    /// With `opts.language` "auto", a multilingual model detects the language on the first
    /// piece and the rest are decoded in it ([`Stt::last_language`] says which): one language
    /// per recording, not one guess per piece.
    ///
    /// Each call makes its own decoding state (~9 ms for tiny.en) and drops it after:
    /// whisper.cpp seeds the random generator of its fallback sampling only when a state is
    /// made, so a state kept across calls made a transcript depend on what was transcribed
    /// before it (seen with beam 5 on jfk.wav).
    pub fn transcribe(
        &mut self,
        samples_16k: &[f32],
        opts: &SttOptions,
        progress: Option<Box<dyn FnMut(i32)>>,
    ) -> Result<Vec<Segment>, SttError> {
        let threads = crate::cpu::threads_free_now(opts.threads);
        self.transcribe_on(samples_16k, opts, threads, opts.threads, progress)
    }

    /// [`Stt::transcribe`] with `threads` threads for one decode and up to `side_by_side`
    /// pieces of a long recording decoded at once, whatever else is running (for tests and
    /// measurements that must not depend on the machine's load). `transcribe` gives one decode
    /// only the cores free now (whisper.cpp's threads spin-wait for each other and collapse
    /// when one of them loses its core), but decodes as many pieces side by side as the user
    /// asked for threads: one thread each, they never wait for each other.
    pub fn transcribe_on(
        &mut self,
        samples_16k: &[f32],
        opts: &SttOptions,
        threads: usize,
        side_by_side: usize,
        mut progress: Option<Box<dyn FnMut(i32)>>,
    ) -> Result<Vec<Segment>, SttError> {
        // whisper.cpp pads shorter input to 30 s itself; below 100 ms it refuses, so pad to
        // one second of silence rather than fail on a very short clip.
        let mut input = std::borrow::Cow::Borrowed(samples_16k);
        if input.len() < 16_000 {
            input.to_mut().resize(16_000, 0.0);
        }
        let threads = threads.max(1);
        self.last_threads = threads;
        self.last_language = opts.language.clone();
        if input.len() <= FIT_UP_TO_SAMPLES {
            let (segments, language) = decode_piece(&self.ctx, &input, opts, threads, progress)?;
            self.last_language = language;
            return Ok(segments);
        }
        let mut opts = std::borrow::Cow::Borrowed(opts);
        let chunks = pause_chunks(&input);
        tracing::debug!(
            stage = "stt",
            chunks = ?chunks
                .iter()
                .map(|c| format!("{:.2}-{:.2}", c.start as f64 / 16e3, c.end as f64 / 16e3))
                .collect::<Vec<_>>(),
            "long audio cut at pauses"
        );
        let mut decoded: Vec<Option<Vec<Segment>>> = vec![None; chunks.len()];
        let mut done_samples = 0;
        let mut report = |done: usize| {
            if let Some(p) = progress.as_mut() {
                p((done * 100 / input.len()) as i32);
            }
        };
        let mut first = 0;
        if opts.language == "auto" {
            // The language is found on the first piece, alone, and the rest are decoded in it.
            let (segments, language) =
                decode_piece(&self.ctx, &input[chunks[0].clone()], &opts, threads, None)?;
            self.last_language = language;
            opts.to_mut().language = self.last_language.clone();
            decoded[0] = Some(segments);
            done_samples += chunks[0].len();
            report(done_samples);
            first = 1;
        }
        // The pieces are independent, so they are decoded side by side, one thread each where
        // there are threads enough: whisper.cpp's beam search gains little from a second
        // thread inside one decode (60 s, beam 5: 2.46 s on one thread, 2.24 s on two), two
        // decodes on one thread each keep both cores busy.
        let workers = side_by_side.min(chunks.len() - first).max(1);
        let per_worker = (threads / workers).max(1);
        self.last_threads = self.last_threads.max(workers * per_worker);
        decode_side_by_side(
            &self.ctx,
            &input,
            &chunks,
            &mut decoded,
            first,
            &opts,
            workers,
            per_worker,
            |i| {
                done_samples += chunks[i].len();
                report(done_samples);
            },
        )?;
        // In order, each piece's times moved to where it starts in the recording.
        Ok(chunks
            .iter()
            .zip(decoded)
            .flat_map(|(chunk, segments)| {
                let offset = Duration::from_secs_f64(chunk.start as f64 / 16_000.0);
                segments
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |s| Segment {
                        start: s.start + offset,
                        end: s.end + offset,
                        ..s
                    })
            })
            .collect())
    }
}

/// Decodes `chunks[first..]` of `input` into `decoded[first..]` on `workers` threads of their
/// own, each piece on `threads` threads, as each becomes free; `done(i)` is called (on this
/// thread) as piece `i` is done. The first error stops the workers taking more pieces and is
/// returned.
#[allow(clippy::too_many_arguments)]
fn decode_side_by_side(
    ctx: &WhisperContext,
    input: &[f32],
    chunks: &[std::ops::Range<usize>],
    decoded: &mut [Option<Vec<Segment>>],
    first: usize,
    opts: &SttOptions,
    workers: usize,
    threads: usize,
    mut done: impl FnMut(usize),
) -> Result<(), SttError> {
    let next = AtomicUsize::new(first);
    let failed = AtomicBool::new(false);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let tx = tx.clone();
            let (next, failed) = (&next, &failed);
            scope.spawn(move || {
                while !failed.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(chunk) = chunks.get(i) else { break };
                    let result = decode_piece(ctx, &input[chunk.clone()], opts, threads, None);
                    failed.fetch_or(result.is_err(), Ordering::Relaxed);
                    if tx.send((i, result)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        for (i, result) in rx {
            decoded[i] = Some(result?.0);
            done(i);
        }
        Ok(())
    })
}

/// A clip, or one piece of a long recording, decoded on its own as dictation decodes each
/// utterance, with the user's vocabulary as its prompt (giving a piece the end of the
/// transcript before it as well, as whisper.cpp's windows have the tokens before them, made
/// Whisper write most of it as one segment: the last 8, 20 or 100 words all gave jfk twice,
/// 22 s, as one line). A state of its own: the same piece gives the same words whatever came
/// before it (a state kept from the piece before wrote one 23 s segment where a fresh one
/// writes three). Returns its segments and the language it was decoded in.
fn decode_piece(
    ctx: &WhisperContext,
    piece: &[f32],
    opts: &SttOptions,
    threads: usize,
    progress: Option<Box<dyn FnMut(i32)>>,
) -> Result<(Vec<Segment>, String), SttError> {
    let mut state = ctx.create_state().map_err(SttError::Decode)?;
    let segments = if piece.len() <= FIT_UP_TO_SAMPLES {
        fitted_decode(&mut state, piece, opts, threads, progress)?
    } else {
        // Speech with no pause to cut at: whisper.cpp's own 30 s windows.
        decode(&mut state, piece, opts, threads, None, progress)?
    };
    Ok((segments, decoded_language(&state, opts)))
}

/// The language `state` was last decoded in: what Whisper detected when `opts` asked for
/// "auto", else what it asked for.
fn decoded_language(state: &whisper_rs::WhisperState, opts: &SttOptions) -> String {
    if opts.language != "auto" {
        return opts.language.clone();
    }
    whisper_rs::get_lang_str(state.full_lang_id_from_state())
        .unwrap_or("auto")
        .to_string()
}

/// Audio of up to [`FIT_UP_TO_SAMPLES`] in a context fitted to its length, falling back to the
/// full window when that transcript is implausible.
fn fitted_decode(
    state: &mut whisper_rs::WhisperState,
    audio: &[f32],
    opts: &SttOptions,
    threads: usize,
    progress: Option<Box<dyn FnMut(i32)>>,
) -> Result<Vec<Segment>, SttError> {
    let fitted = fitted_audio_ctx(audio.len());
    let segments = decode(state, audio, opts, threads, Some(fitted), progress)?;
    if !implausible(&segments, audio.len()) {
        return Ok(segments);
    }
    // Whisper was trained on 30 s windows: when the shortened one yields nothing from several
    // seconds of audio, or more words than anyone says in the time (a loop), the full window
    // decides.
    tracing::debug!(
        stage = "stt",
        "implausible transcript in the fitted context: decoding the full window"
    );
    decode(state, audio, opts, threads, None, None)
}

/// A pause long enough to cut at: no word spans it.
const CUT_PAUSE_FRAMES: usize = 10; // 300 ms

/// Chunks shorter than this are not cut off (a sentence or two).
const MIN_CHUNK_SAMPLES: usize = 5 * 16_000;

/// Long audio cut at pauses into pieces of at most [`FIT_UP_TO_SAMPLES`] where the pauses allow,
/// each as long as they allow, so each is decoded whole in a context fitted to it: whisper.cpp's
/// own 30 s windows overlap (each starts at the last timestamp of the one before) and the last
/// one pays a full 30 s encode for what is often a few seconds. Where speech runs on for
/// [`FIT_UP_TO_SAMPLES`] without a pause (see [`pauses`]), the piece runs on to the next pause
/// (or the end) and goes through whisper.cpp's windows: a cut there could fall inside a word.
fn pause_chunks(samples: &[f32]) -> Vec<std::ops::Range<usize>> {
    chunks_at(&pauses(samples), samples.len())
}

/// The middle of every pause of [`CUT_PAUSE_FRAMES`] or more, as a sample index, by WebRTC's
/// detector as dictation uses it.
fn pauses(samples: &[f32]) -> Vec<usize> {
    use crate::vad::{Detector, DetectorKind, FRAME_SAMPLES};
    let mut detector = Detector::new(DetectorKind::Webrtc, 2);
    let mut cuts = Vec::new();
    let mut quiet = 0usize;
    let frames = samples.len() / FRAME_SAMPLES;
    for f in 0..=frames {
        let speech =
            f == frames || detector.is_speech(&samples[f * FRAME_SAMPLES..(f + 1) * FRAME_SAMPLES]);
        if speech {
            if quiet >= CUT_PAUSE_FRAMES {
                cuts.push((f - quiet / 2) * FRAME_SAMPLES);
            }
            quiet = 0;
        } else {
            quiet += 1;
        }
    }
    cuts
}

/// `len` samples cut at the latest of `cuts` (ascending) that keeps a piece within
/// [`FIT_UP_TO_SAMPLES`] and over [`MIN_CHUNK_SAMPLES`]; where there is none, at the first cut
/// after that which leaves more than [`FIT_UP_TO_SAMPLES`] to go, or not at all.
fn chunks_at(cuts: &[usize], len: usize) -> Vec<std::ops::Range<usize>> {
    let mut chunks = Vec::new();
    let mut start = 0;
    while len - start > FIT_UP_TO_SAMPLES {
        let fitted = cuts
            .iter()
            .copied()
            .rev()
            .find(|&c| c >= start + MIN_CHUNK_SAMPLES && c <= start + FIT_UP_TO_SAMPLES);
        // No pause within reach: on to the next one, unless what follows it would fit in the
        // same windows anyway.
        let later = || {
            cuts.iter()
                .copied()
                .find(|&c| c > start + FIT_UP_TO_SAMPLES && len - c > FIT_UP_TO_SAMPLES)
        };
        match fitted.or_else(later) {
            Some(cut) if cut < len => {
                chunks.push(start..cut);
                start = cut;
            }
            _ => break,
        }
    }
    chunks.push(start..len);
    chunks
}

/// Nothing from 5 s or more of audio, more than five words a second (at least eight words),
/// or a segment that repeats the one before it word for word: what a shortened context
/// produces when it goes wrong (a Piper reply after 3.6 s of silence came back three times
/// over). Short clips with no words are common in dictation, a cough or a click: they are
/// not decoded twice.
fn implausible(segments: &[Segment], samples_16k: usize) -> bool {
    let words: usize = segments
        .iter()
        .map(|s| s.text.split_whitespace().count())
        .sum();
    let seconds = samples_16k as f64 / 16_000.0;
    let normal = |t: &str| -> Vec<String> {
        t.split_whitespace()
            .map(|w| {
                w.chars()
                    .filter(|c| c.is_alphanumeric())
                    .flat_map(char::to_lowercase)
                    .collect()
            })
            .filter(|w: &String| !w.is_empty())
            .collect()
    };
    let repeated = segments.windows(2).any(|w| {
        let (a, b) = (normal(&w[0].text), normal(&w[1].text));
        a.len() >= 3 && a == b
    });
    (words == 0 && seconds >= 5.0)
        || (words >= 8 && words as f64 > 5.0 * seconds.max(1.0))
        || repeated
}

/// One whisper.cpp pass over `audio` (`audio_ctx`: encoder positions, None for Whisper's
/// full 30 s window), segments relative to its start.
fn decode(
    state: &mut whisper_rs::WhisperState,
    audio: &[f32],
    opts: &SttOptions,
    threads: usize,
    audio_ctx: Option<i32>,
    progress: Option<Box<dyn FnMut(i32)>>,
) -> Result<Vec<Segment>, SttError> {
    let strategy = if opts.beam_size <= 1 {
        SamplingStrategy::Greedy { best_of: 1 }
    } else {
        SamplingStrategy::BeamSearch {
            beam_size: opts.beam_size as i32,
            patience: -1.0,
        }
    };
    let mut params = FullParams::new(strategy);
    params.set_n_threads(threads.max(1) as i32);
    params.set_language(Some(&opts.language));
    params.set_print_progress(false);
    params.set_print_realtime(false);
    params.set_print_special(false);
    params.set_print_timestamps(false);
    if let Some(ctx) = audio_ctx {
        params.set_audio_ctx(ctx);
    }
    if let Some(prompt) = opts.prompt.as_deref().filter(|p| !p.is_empty()) {
        params.set_initial_prompt(prompt);
    }
    if let Some(p) = progress {
        params.set_progress_callback_safe::<_, Box<dyn FnMut(i32)>>(Some(p));
    }
    state.full(params, audio).map_err(SttError::Decode)?;
    let mut segments = Vec::new();
    for seg in state.as_iter() {
        let text = seg.to_str_lossy().map_err(SttError::Decode)?;
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        // whisper.cpp timestamps are in units of 10 ms. A segment its window cut short (no
        // closing timestamp) ends where the window ends, 30 s after it started even when the
        // audio stops sooner: no segment ends after the audio.
        let length = Duration::from_secs_f64(audio.len() as f64 / 16_000.0);
        let start = Duration::from_millis(seg.start_timestamp().max(0) as u64 * 10).min(length);
        let end = Duration::from_millis(seg.end_timestamp().max(0) as u64 * 10).min(length);
        segments.push(Segment {
            start,
            end: end.max(start),
            text: text.to_string(),
            last_word_p: last_word_p(&seg),
        });
    }
    Ok(segments)
}

/// The least probability among the tokens of a segment's last word (a word starts at a
/// token beginning with a space); special and punctuation-only tokens are not words.
fn last_word_p(seg: &whisper_rs::WhisperSegment) -> Option<f32> {
    let mut word: Option<f32> = None;
    for i in 0..seg.n_tokens() {
        let Some(token) = seg.get_token(i) else {
            continue;
        };
        let Ok(text) = token.to_str_lossy() else {
            continue;
        };
        let special = text.starts_with("[_") || text.starts_with("<|");
        if special || !text.chars().any(char::is_alphanumeric) {
            continue;
        }
        let p = token.token_probability();
        word = match word {
            Some(q) if !text.starts_with(' ') => Some(q.min(p)),
            _ => Some(p),
        };
    }
    word
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_speech_markers_are_not_words() {
        assert_eq!(strip_non_speech(" [BLANK_AUDIO]"), "");
        assert_eq!(
            strip_non_speech("(music) Hello there. *laughs*"),
            "Hello there."
        );
        assert_eq!(strip_non_speech("What is 2 + 2?"), "What is 2 + 2?");
    }

    #[test]
    fn long_audio_is_cut_at_the_latest_pause_that_keeps_each_piece_fitted() {
        let s = |secs: f64| (secs * 16_000.0) as usize;
        // Up to 28 s: one piece, whatever the pauses.
        let one = |c: Vec<std::ops::Range<usize>>| (c.len(), c[0].clone());
        assert_eq!(one(chunks_at(&[], s(28.0))), (1, 0..s(28.0)));
        // 60 s with pauses every 6 s: pieces end at the last pause within 28 s of their start.
        let every6: Vec<usize> = (1..10).map(|k| s(6.0 * k as f64)).collect();
        assert_eq!(
            chunks_at(&every6, s(60.0)),
            [0..s(24.0), s(24.0)..s(48.0), s(48.0)..s(60.0)]
        );
        // A pause only within the first 5 s of a piece is no cut (no tiny pieces), and 28 s
        // without a pause runs on to the next pause or the end (whisper.cpp's windows).
        assert_eq!(one(chunks_at(&[s(3.0)], s(40.0))), (1, 0..s(40.0)));
        assert_eq!(
            chunks_at(&[s(10.0)], s(45.0)),
            [0..s(10.0), s(10.0)..s(45.0)]
        );
        assert_eq!(one(chunks_at(&[s(3.0), s(35.0)], s(50.0))), (1, 0..s(50.0)));
        assert_eq!(
            chunks_at(&[s(3.0), s(35.0)], s(70.0)),
            [0..s(35.0), s(35.0)..s(70.0)]
        );
        assert_eq!(
            chunks_at(&[s(10.0), s(30.0)], s(45.0)),
            [0..s(10.0), s(10.0)..s(30.0), s(30.0)..s(45.0)]
        );
    }

    #[test]
    fn the_pauses_between_sentences_are_found_and_none_inside_them() {
        let jfk = crate::audio::read_for_whisper(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/jfk.wav"),
        )
        .unwrap()
        .samples;
        let gap = vec![0.0f32; 8_000];
        let audio: Vec<f32> = [&jfk[..], &gap, &jfk[..]].concat();
        let cuts = pauses(&audio);
        let (gap_start, gap_end) = (jfk.len(), jfk.len() + gap.len());
        assert!(
            cuts.iter().any(|&c| c > gap_start && c < gap_end),
            "no cut in the 0.5 s gap at {:.2} s: {cuts:?}",
            gap_start as f64 / 16e3
        );
        // Three copies (34 s): cut in the second gap, the latest pause within 28 s.
        let chunks = pause_chunks(&[&audio[..], &gap, &jfk[..]].concat());
        assert_eq!(chunks.len(), 2, "{chunks:?}");
        let second_gap = audio.len()..audio.len() + gap.len();
        assert!(second_gap.contains(&chunks[0].end), "{chunks:?}");
    }

    #[test]
    fn the_fitted_context_covers_the_clip_within_whispers_limits() {
        assert_eq!(fitted_audio_ctx(16_000), 512);
        assert_eq!(fitted_audio_ctx(16_000 * 10), 608);
        // jfk.wav, 11.0 s: 551 + 100 positions, rounded up for the fast kernels.
        assert_eq!(fitted_audio_ctx(176_000), 656);
        assert_eq!(fitted_audio_ctx(16_000 * 28), 1500);
        assert_eq!(fitted_audio_ctx(16_000 * 40), 1500);
        for n in (0..16_000 * 28).step_by(777) {
            let ctx = fitted_audio_ctx(n);
            assert!(ctx == 1500 || ctx % 16 == 0, "{n} samples: {ctx}");
            assert!(ctx as usize * 16_000 >= n * 50, "{n} samples: {ctx}");
        }
    }

    #[test]
    fn a_loop_or_silence_from_speech_is_implausible() {
        let seg = |t: &str| Segment {
            start: Duration::ZERO,
            end: Duration::ZERO,
            text: t.into(),
            last_word_p: None,
        };
        let loop3 = [seg(
            "She has three brothers and two sisters, she has three brothers and two sisters.",
        )];
        assert!(implausible(&loop3, 38_400), "14 words in 2.4 s");
        assert!(!implausible(
            &[seg("She has three brothers and two sisters.")],
            38_400
        ));
        assert!(implausible(&[], 6 * 16_000), "nothing from 6 s");
        assert!(!implausible(&[], 16_000), "a 1 s click may hold no words");
        assert!(!implausible(&[seg("no no no no")], 16_000), "few words");
        let again = [
            seg("The capital of France, is Paris, not France itself."),
            seg("The capital of France is Paris, not France itself."),
        ];
        assert!(implausible(&again, 6 * 16_000), "a segment repeated");
        assert!(
            !implausible(&[seg("Go on."), seg("Go on.")], 6 * 16_000),
            "two words said twice can be real"
        );
    }
}
