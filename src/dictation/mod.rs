//! Dictation: each utterance from the microphone (or a WAV) becomes text, as soon as it ends.
//!
//! ```text
//! listen ─utterances, snapshots─▶ "stt" ─transcripts─▶ the caller (this thread)
//!    ▲                              │
//!    └──── end now (a plainly complete pause) ◀──┘
//! ```
//!
//! When the speaker pauses, what was said so far is transcribed at once; if it is plainly a
//! finished sentence ([`plainly_complete`]), the utterance ends there instead of after the
//! full hangover, and that transcript is the final one (same audio, no second pass). With
//! `partials`, the text of the utterance in progress is also reported as it grows.
//!
//! Shutdown: `stop` (Ctrl-C) ends the source; the listener ends the utterance in progress and
//! the transcriber finishes what it has. Nothing said before Ctrl-C is lost. Every thread is
//! joined and the first error returned.

pub mod history;
pub mod replace;
pub mod spoken;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;

use crossbeam_channel::bounded;
use serde::Serialize;

use crate::pipeline::coordinator::{plainly_complete, sure_of_last_word};
use crate::pipeline::listen::{EndNow, Hooks, ListenError, ListenOptions, Listener, SnapshotKind};
use crate::pipeline::transcribe::{self, Progress, Transcriber};
use crate::pipeline::{StageError, spawn};

/// One recognised utterance (or, with partials, the text so far of one in progress), as
/// dictation prints it.
#[derive(Clone, Debug, Serialize)]
pub struct Transcript {
    pub kind: Kind,
    pub text: String,
    /// Seconds from the start of the stream.
    pub start: f64,
    pub end: f64,
    /// From the speaker's last word (the utterance's last voiced frame) to the final text;
    /// partials, heard while the speaker goes on, have none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Cut at the maximum utterance length; the next transcript continues it.
    pub split: bool,
    /// "Scratch that" said on its own: the transcript before this one is withdrawn.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub scratch_previous: bool,
    /// What Whisper heard, when spoken formatting or replacements changed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heard: Option<String>,
    /// The language Whisper detected (`--language auto` with a multilingual model).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The text of an utterance still going on; a later partial or its final replaces it.
    Partial,
    Final,
}

/// Counters reported at the end.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DictationStats {
    pub utterances: usize,
    pub dropped_samples: u64,
    pub captured_samples: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DictationError {
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error("speech recognition failed")]
    Stt(#[source] StageError),
    #[error("the {0} thread panicked")]
    Panicked(&'static str),
}

/// Runs dictation until the input ends or `stop` is set, calling `on_transcript` on the
/// calling thread for each utterance with words in it, as soon as it is recognised.
pub fn run(
    mut listen: ListenOptions,
    mut transcriber: Box<dyn Transcriber>,
    stop: Arc<AtomicBool>,
    mut on_transcript: impl FnMut(&Transcript),
) -> Result<DictationStats, DictationError> {
    listen.speculate = listen.ptt.is_none();
    // Dictation ends a plainly complete sentence at its pause: cut too early, the text is all
    // still there, in two lines (the agent, which answers, waits for a longer silence).
    listen.segmenter.end_early_frames = listen.segmenter.pause_frames;
    let listener = Listener::start(&listen, stop, Hooks::default())?;
    let end_now = listener.end_now.clone();

    // Transcripts: block when full; the caller prints them as they come.
    let (text_tx, text_rx) = bounded::<Transcript>(16);
    let stt: JoinHandle<Result<usize, StageError>> = {
        let utterances = listener.utterances.clone();
        let snapshots = listener.snapshots.clone();
        let cancelled = listener.cancelled_through.clone();
        spawn("stt", move || {
            transcribe::run(
                &mut *transcriber,
                &utterances,
                &snapshots,
                &cancelled,
                |p| match p {
                    Progress::Started { .. } => true,
                    Progress::Speculated(s) => {
                        if s.kind == SnapshotKind::Pause
                            && plainly_complete(&s.text)
                            && sure_of_last_word(s.last_word_p)
                        {
                            let _ = end_now.try_send(EndNow {
                                turn: s.turn,
                                last_voiced: s.last_voiced,
                            });
                        }
                        if s.kind == SnapshotKind::Partial && !s.text.trim().is_empty() {
                            let partial = Transcript {
                                kind: Kind::Partial,
                                start: s.start.as_secs_f64(),
                                end: s.last_voiced.as_secs_f64(),
                                latency_ms: None,
                                split: false,
                                scratch_previous: false,
                                heard: None,
                                language: None,
                                text: s.text,
                            };
                            return text_tx.send(partial).is_ok();
                        }
                        true
                    }
                    Progress::Done(t) if t.text.trim().is_empty() => true,
                    Progress::Done(t) => {
                        let u = &t.heard.utterance;
                        text_tx
                            .send(Transcript {
                                kind: Kind::Final,
                                start: u.start.as_secs_f64(),
                                end: u.end.as_secs_f64(),
                                latency_ms: Some(
                                    t.at.saturating_duration_since(t.heard.last_voiced_at)
                                        .as_millis() as u64,
                                ),
                                split: u.split,
                                scratch_previous: false,
                                heard: None,
                                language: t.language,
                                text: t.text,
                            })
                            .is_ok()
                    }
                },
            )
        })
    };

    for t in text_rx.iter() {
        on_transcript(&t);
    }
    let finals = stt
        .join()
        .map_err(|_| DictationError::Panicked("stt"))?
        .map_err(DictationError::Stt)?;
    let stats = listener.finish()?;
    Ok(DictationStats {
        utterances: finals,
        dropped_samples: stats.dropped_samples,
        captured_samples: stats.captured_samples,
    })
}
