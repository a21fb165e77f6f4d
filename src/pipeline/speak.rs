//! The voice as a stage: the "tts" thread owns the voice, synthesizes each clause of the live
//! turn as it arrives and hands the audio to playback. Clauses of a turn that is no longer live
//! are skipped. Where the chunker cut a clause in two, the silence between the two pieces'
//! speech is trimmed ([`crate::tts::Seams`]). When nothing more is waiting it lets the voice
//! give working memory back.

use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use super::coordinator::Event;
use super::play;
use super::{LiveTurn, StageError, TurnId};

/// Text to speech, as the pipeline uses it: (samples, rate).
pub trait Voice: Send {
    fn synthesize(&mut self, text: &str) -> Result<(Vec<f32>, u32), StageError>;
    /// Nothing more to say for now: a chance to give working memory back.
    fn idle(&mut self) {}
}

/// A Piper voice.
pub struct Piper {
    pub tts: crate::tts::Tts,
    pub speed: f32,
}

impl Voice for Piper {
    fn synthesize(&mut self, text: &str) -> Result<(Vec<f32>, u32), StageError> {
        let s = self.tts.synthesize(text, self.speed)?;
        Ok((s.samples, s.sample_rate_hz))
    }

    fn idle(&mut self) {
        if let Err(e) = self.tts.release_memory() {
            tracing::warn!(stage = "tts", error = %e, "could not release the voice's memory");
        }
    }
}

pub enum Job {
    /// `first`: the turn's first clause (its synthesis time is reported). `mid_clause`: the
    /// text stops inside a clause, which the next job of the turn continues.
    Speak {
        turn: TurnId,
        text: String,
        first: bool,
        mid_clause: bool,
    },
    /// The turn has nothing more to say.
    End { turn: TurnId },
}

/// The worker: runs until the job channel closes or playback is gone.
pub fn run(
    voice: &mut dyn Voice,
    jobs: &Receiver<Job>,
    live: &LiveTurn,
    events: &Sender<Event>,
    audio: &Sender<play::Job>,
) -> Result<(), StageError> {
    // The seams of the turn being spoken.
    let mut seams: Option<(TurnId, crate::tts::Seams)> = None;
    for job in jobs.iter() {
        match job {
            Job::Speak {
                turn,
                text,
                first,
                mid_clause,
            } => {
                if !live.is(turn) {
                    continue;
                }
                let _span = tracing::info_span!("turn", turn = turn.get()).entered();
                let t0 = Instant::now();
                let (mut samples, rate_hz) = voice.synthesize(&text)?;
                if seams.as_ref().is_none_or(|(t, _)| *t != turn) {
                    seams = Some((turn, crate::tts::Seams::default()));
                }
                if let Some((_, seams)) = seams.as_mut() {
                    seams.close(&mut samples, rate_hz, mid_clause);
                }
                let synth_ms = t0.elapsed().as_millis() as u64;
                tracing::debug!(stage = "tts", ms = synth_ms, text, "clause synthesized");
                if first {
                    let _ = events.send(Event::FirstClauseSpoken { turn, synth_ms });
                }
                if !live.is(turn) {
                    continue;
                }
                let job = play::Job::Audio {
                    turn,
                    samples,
                    rate_hz,
                    synth_ms,
                };
                if audio.send(job).is_err() {
                    return Ok(());
                }
            }
            Job::End { turn } => {
                if audio.send(play::Job::End { turn }).is_err() {
                    return Ok(());
                }
                if jobs.is_empty() {
                    voice.idle();
                }
            }
        }
    }
    Ok(())
}
