//! Speech to text: whisper.cpp through whisper-rs.
//!
//! [`Stt`] owns the whisper context (the weights, loaded once). Each call to
//! [`Stt::transcribe`] makes a fresh decoding state, so one `Stt` serves many utterances on
//! the thread that owns it. Before whisper.cpp sees a model file, its ggml header is read and
//! checked against the file's length: whisper.cpp is not robust against truncated files.
//!
//! Input is 16 kHz mono f32 ([`crate::audio::WHISPER_SAMPLE_RATE_HZ`]).

use std::path::{Path, PathBuf};
use std::sync::Once;
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
}

/// Decoding settings.
#[derive(Clone, Debug)]
pub struct SttOptions {
    pub threads: usize,
    /// 1 = greedy; more = beam search with that many beams (faster-whisper's default is 5).
    pub beam_size: usize,
    pub language: String,
    /// Shrink the encoder's context to the clip's length (plus a margin) instead of always
    /// encoding 30 s. Much faster on short utterances; off for files, where accuracy on long
    /// audio matters more.
    pub fit_audio_ctx: bool,
}

impl Default for SttOptions {
    fn default() -> Self {
        Self {
            threads: default_threads(),
            beam_size: 5,
            language: "en".into(),
            fit_audio_ctx: false,
        }
    }
}

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
}

/// Encoder positions for a clip: Whisper's encoder sees 50 per second (1500 for 30 s). Two
/// seconds of margin and a six-second floor: on twelve espeak questions, tiny.en made as many
/// errors with this as with the full 30 s context (4 each), at a fifth of the time (about
/// 200 ms instead of 1.2 s on 2 cores); a 4 s floor and 1 s margin made more.
pub fn fitted_audio_ctx(samples_16k: usize) -> i32 {
    const PER_SECOND: usize = 50;
    const MARGIN: usize = 2 * PER_SECOND;
    const FLOOR: usize = 6 * PER_SECOND;
    let needed = (samples_16k * PER_SECOND).div_ceil(16_000) + MARGIN;
    needed.clamp(FLOOR, 1500) as i32
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
}

static LOG_HOOK: Once = Once::new();

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
        })
    }

    /// Transcribes 16 kHz mono audio. `progress` receives whisper.cpp's percent complete.
    pub fn transcribe(
        &self,
        samples_16k: &[f32],
        opts: &SttOptions,
        progress: Option<Box<dyn FnMut(i32)>>,
    ) -> Result<Vec<Segment>, SttError> {
        let mut state = self.ctx.create_state().map_err(SttError::Decode)?;
        let strategy = if opts.beam_size <= 1 {
            SamplingStrategy::Greedy { best_of: 1 }
        } else {
            SamplingStrategy::BeamSearch {
                beam_size: opts.beam_size as i32,
                patience: -1.0,
            }
        };
        let mut params = FullParams::new(strategy);
        params.set_n_threads(opts.threads.max(1) as i32);
        params.set_language(Some(&opts.language));
        params.set_print_progress(false);
        params.set_print_realtime(false);
        params.set_print_special(false);
        params.set_print_timestamps(false);
        if let Some(cb) = progress {
            params.set_progress_callback_safe::<_, Box<dyn FnMut(i32)>>(Some(cb));
        }
        // whisper.cpp pads shorter input to 30 s itself; below 100 ms it refuses, so pad to
        // one second of silence rather than fail on a very short clip.
        let padded;
        let input = if samples_16k.len() < 16_000 {
            padded = {
                let mut v = samples_16k.to_vec();
                v.resize(16_000, 0.0);
                v
            };
            &padded[..]
        } else {
            samples_16k
        };
        if opts.fit_audio_ctx {
            params.set_audio_ctx(fitted_audio_ctx(input.len()));
        }
        state.full(params, input).map_err(SttError::Decode)?;
        let mut segments = Vec::new();
        for seg in state.as_iter() {
            let text = seg.to_str_lossy().map_err(SttError::Decode)?;
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            // whisper.cpp timestamps are in units of 10 ms.
            let start = Duration::from_millis(seg.start_timestamp().max(0) as u64 * 10);
            let end = Duration::from_millis(seg.end_timestamp().max(0) as u64 * 10);
            segments.push(Segment {
                start,
                end: end.max(start),
                text: text.to_string(),
            });
        }
        Ok(segments)
    }
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
    fn the_fitted_context_covers_the_clip_within_whispers_limits() {
        assert_eq!(fitted_audio_ctx(16_000), 300);
        assert_eq!(fitted_audio_ctx(16_000 * 10), 600);
        assert_eq!(fitted_audio_ctx(16_000 * 40), 1500);
    }
}
