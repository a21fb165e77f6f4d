//! Speech to text as a stage: utterances in, text out, for dictation and the agent alike. Runs
//! on the "stt" thread, which owns the recogniser (Whisper, or a fake in wiring tests).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::listen::{Heard, Snapshot, SnapshotKind};
use super::{StageError, TurnId};
use crate::stt::{Stt, SttOptions};

/// Speech to text, as the pipeline uses it.
pub trait Transcriber: Send {
    fn transcribe(&mut self, samples_16k: &[f32]) -> Result<String, StageError>;
    /// The text, and the recogniser's probability for its last word (None when it does not
    /// say): how sure it is of the word a turn would end on.
    fn transcribe_scored(
        &mut self,
        samples_16k: &[f32],
    ) -> Result<(String, Option<f32>), StageError> {
        Ok((self.transcribe(samples_16k)?, None))
    }
    /// The language the last transcription was in, when the recogniser was asked to detect
    /// it (None when the user named it, or the recogniser does not say).
    fn language(&self) -> Option<String> {
        None
    }
}

/// Whisper as a transcriber: plain text without its non-speech markers.
pub struct Whisper {
    pub stt: Stt,
    pub opts: SttOptions,
}

impl Transcriber for Whisper {
    fn transcribe(&mut self, samples_16k: &[f32]) -> Result<String, StageError> {
        Ok(self.transcribe_scored(samples_16k)?.0)
    }

    fn transcribe_scored(
        &mut self,
        samples_16k: &[f32],
    ) -> Result<(String, Option<f32>), StageError> {
        use crate::stt::strip_non_speech;
        let segments = self.stt.transcribe(samples_16k, &self.opts, None)?;
        let text = strip_non_speech(&crate::transcript::plain_text(&segments));
        let last_word_p = segments
            .iter()
            .rev()
            .find(|s| !strip_non_speech(&s.text).is_empty())
            .and_then(|s| s.last_word_p);
        Ok((text, last_word_p))
    }

    fn language(&self) -> Option<String> {
        (self.opts.language == "auto").then(|| self.stt.last_language.clone())
    }
}

/// One utterance's text (empty when nothing was said in it).
#[derive(Debug)]
pub struct Transcribed {
    pub heard: Heard,
    pub text: String,
    /// When the text was ready.
    pub at: Instant,
    pub took: Duration,
    /// The text of the pause snapshot, which held the same audio: no second pass ran.
    pub reused: bool,
    /// The language Whisper detected, when asked to (`--language auto`).
    pub language: Option<String>,
}

/// The text of an utterance still in progress.
#[derive(Debug)]
pub struct Speculated {
    pub turn: TurnId,
    pub kind: SnapshotKind,
    /// Stream offsets of the utterance's start and of its last voiced frame so far.
    pub start: Duration,
    pub last_voiced: Duration,
    pub text: String,
    /// The recogniser's probability for the last word of `text`, when it says.
    pub last_word_p: Option<f32>,
    pub last_voiced_at: Instant,
    pub at: Instant,
    pub took: Duration,
}

/// What the loop reports, in order, for each utterance.
pub enum Progress {
    /// Transcription of this utterance begins.
    Started {
        turn: super::TurnId,
        ended_at: Instant,
        last_voiced_at: Instant,
    },
    Done(Transcribed),
    /// An utterance in progress, transcribed so far (a pause snapshot, or a partial).
    Speculated(Speculated),
}

/// Transcribes each utterance as it arrives, until the listener closes its channel, and,
/// when no finished utterance is waiting, the snapshots of utterances in progress. Utterances
/// a push-to-talk cancel voided (`cancelled_through`) are skipped. A finished utterance whose
/// last voiced frame is the one its pause snapshot ended at holds the same audio: the
/// snapshot's text is its text, with no second pass. Returns how many utterances were
/// transcribed; `report` returning false ends the loop.
pub fn run(
    transcriber: &mut dyn Transcriber,
    utterances: &Receiver<Heard>,
    snapshots: &Receiver<Snapshot>,
    cancelled_through: &AtomicU64,
    mut report: impl FnMut(Progress) -> bool,
) -> Result<usize, StageError> {
    let voided = |turn: TurnId| turn.get() <= cancelled_through.load(Ordering::Acquire);
    let mut count = 0;
    // The last pause snapshot transcribed: (turn, last voiced offset, sample count, text).
    let mut paused: Option<(TurnId, Duration, usize, String)> = None;
    // Utterances before this one are finished: their snapshots are stale.
    let mut next_turn = TurnId::FIRST;
    let mut snapshots = snapshots.clone();
    loop {
        // A finished utterance always goes first.
        let heard = match utterances.try_recv() {
            Ok(h) => h,
            Err(crossbeam_channel::TryRecvError::Disconnected) => break,
            Err(crossbeam_channel::TryRecvError::Empty) => {
                crossbeam_channel::select! {
                    recv(utterances) -> h => match h {
                        Ok(h) => h,
                        Err(_) => break,
                    },
                    recv(snapshots) -> snap => {
                        match snap {
                            Ok(snap) if snap.turn >= next_turn && !voided(snap.turn) && utterances.is_empty() => {
                                let _span = tracing::info_span!("turn", turn = snap.turn.get()).entered();
                                let t0 = Instant::now();
                                let (text, last_word_p) = transcriber.transcribe_scored(&snap.samples)?;
                                let took = t0.elapsed();
                                tracing::debug!(stage = "stt", ?snap.kind, ms = took.as_millis() as u64, text, "utterance in progress transcribed");
                                if snap.kind == SnapshotKind::Pause {
                                    paused = Some((snap.turn, snap.last_voiced, snap.samples.len(), text.clone()));
                                }
                                let s = Speculated {
                                    turn: snap.turn,
                                    kind: snap.kind,
                                    start: snap.start,
                                    last_voiced: snap.last_voiced,
                                    text,
                                    last_word_p,
                                    last_voiced_at: snap.last_voiced_at,
                                    at: Instant::now(),
                                    took,
                                };
                                if !report(Progress::Speculated(s)) {
                                    return Ok(count);
                                }
                            }
                            Ok(_) => {}
                            Err(_) => snapshots = crossbeam_channel::never(),
                        }
                        continue;
                    }
                }
            }
        };
        let turn = heard.turn;
        next_turn = turn.next();
        if voided(turn) {
            continue;
        }
        let span = tracing::info_span!("turn", turn = turn.get());
        let _enter = span.enter();
        let started = Progress::Started {
            turn,
            ended_at: heard.ended_at,
            last_voiced_at: heard.last_voiced_at,
        };
        if !report(started) {
            return Ok(count);
        }
        let t0 = Instant::now();
        let same_audio = paused.take().filter(|(t, voiced, len, _)| {
            *t == turn
                && *voiced == heard.utterance.last_voiced
                && *len == heard.utterance.samples.len()
        });
        let (text, reused) = match same_audio {
            Some((_, _, _, text)) => (text, true),
            None => (transcriber.transcribe(&heard.utterance.samples)?, false),
        };
        let took = t0.elapsed();
        if voided(turn) {
            continue;
        }
        count += 1;
        tracing::info!(
            stage = "stt",
            ms = took.as_millis() as u64,
            reused,
            start = heard.utterance.start.as_secs_f64(),
            end = heard.utterance.end.as_secs_f64(),
            text,
            "transcribed"
        );
        let done = Transcribed {
            heard,
            text,
            at: Instant::now(),
            took,
            reused,
            language: transcriber.language(),
        };
        if !report(Progress::Done(done)) {
            break;
        }
    }
    Ok(count)
}
