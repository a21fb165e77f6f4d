//! Output as a stage: the "playback" thread owns the output (the rodio device, or the recorder
//! that writes what would have been heard), plays each turn's audio in order, reports when a
//! turn's first audio starts and when it has all played, and stops at once on a barge-in.
//! The stop has its own channel, so it never waits behind queued audio.

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};

use super::coordinator::Event;
use super::{LiveTurn, TurnId};
use crate::playback::{Output, PlaybackError};

/// Opens the output on the playback thread (rodio's device is not `Send` everywhere).
pub type OutputFactory = Box<dyn FnOnce(Instant) -> Result<Box<dyn Output>, PlaybackError> + Send>;

pub enum Job {
    Audio {
        turn: TurnId,
        samples: Vec<f32>,
        rate_hz: u32,
        synth_ms: u64,
    },
    /// The turn's last audio is queued: report when it has played.
    End { turn: TurnId },
}

/// The worker: runs until the audio channel closes, then finishes the output.
pub fn run(
    open: OutputFactory,
    started: Instant,
    audio: &Receiver<Job>,
    stop: &Receiver<Instant>,
    live: &LiveTurn,
    events: &Sender<Event>,
) -> Result<(), PlaybackError> {
    let mut out = match open(started) {
        Ok(o) => o,
        Err(e) => {
            let _ = events.send(Event::Failed { stage: "playback" });
            return Err(e);
        }
    };
    let mut started_turn = None;
    let mut ending: Option<TurnId> = None;
    let mut audio_open = true;
    let mut stop = stop.clone();
    loop {
        select! {
            recv(stop) -> detected => match detected {
                Ok(detected) => {
                    out.stop();
                    ending = None;
                    let at = Instant::now();
                    tracing::info!(stage = "playback", ms = at.saturating_duration_since(detected).as_millis() as u64, "stopped (barge-in)");
                    let _ = events.send(Event::Stopped { detected, at });
                }
                Err(_) => stop = crossbeam_channel::never(),
            },
            recv(audio) -> msg => match msg {
                Ok(Job::Audio { turn, samples, rate_hz, synth_ms }) => {
                    if !live.is(turn) {
                        continue;
                    }
                    let at = out.queue(&samples, rate_hz)?;
                    if started_turn != Some(turn) {
                        started_turn = Some(turn);
                        let _ = events.send(Event::FirstAudio { turn, at, synth_ms });
                    }
                }
                Ok(Job::End { turn }) => {
                    if live.is(turn) {
                        ending = Some(turn);
                    }
                }
                Err(_) => audio_open = false,
            },
            default(Duration::from_millis(5)) => {}
        }
        if let Some(turn) = ending
            && out.idle()
        {
            ending = None;
            let _ = events.send(Event::Drained { turn });
        }
        if !audio_open {
            break;
        }
    }
    out.finish()
}
