//! Speech to text as a stage: utterances in, text out, for dictation and the agent alike. Runs
//! on the "stt" thread, which owns the recogniser (Whisper, or a fake in wiring tests).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::StageError;
use super::listen::Heard;
use crate::stt::{Stt, SttOptions};

/// Speech to text, as the pipeline uses it.
pub trait Transcriber: Send {
    fn transcribe(&mut self, samples_16k: &[f32]) -> Result<String, StageError>;
}

/// Whisper as a transcriber: plain text without its non-speech markers.
pub struct Whisper {
    pub stt: Stt,
    pub opts: SttOptions,
}

impl Transcriber for Whisper {
    fn transcribe(&mut self, samples_16k: &[f32]) -> Result<String, StageError> {
        let segments = self.stt.transcribe(samples_16k, &self.opts, None)?;
        Ok(crate::stt::strip_non_speech(
            &crate::transcript::plain_text(&segments),
        ))
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
}

/// Transcribes each utterance as it arrives, until the listener closes its channel. Utterances
/// a push-to-talk cancel voided (`cancelled_through`) are skipped. Returns how many were
/// transcribed; `report` returning false ends the loop.
pub fn run(
    transcriber: &mut dyn Transcriber,
    utterances: &Receiver<Heard>,
    cancelled_through: &AtomicU64,
    mut report: impl FnMut(Progress) -> bool,
) -> Result<usize, StageError> {
    let voided = |heard: &Heard| heard.turn.get() <= cancelled_through.load(Ordering::Acquire);
    let mut count = 0;
    for heard in utterances.iter() {
        if voided(&heard) {
            continue;
        }
        let turn = heard.turn;
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
        let text = transcriber.transcribe(&heard.utterance.samples)?;
        let took = t0.elapsed();
        if voided(&heard) {
            continue;
        }
        count += 1;
        tracing::info!(
            stage = "stt",
            ms = took.as_millis() as u64,
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
        };
        if !report(Progress::Done(done)) {
            break;
        }
    }
    Ok(count)
}
