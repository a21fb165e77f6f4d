//! The voice pipeline: the stages between the engines, each a worker on its own thread, joined
//! by bounded channels. The engines ([`crate::stt`], [`crate::llm`], [`crate::tts`],
//! [`crate::vad`], [`crate::capture`], [`crate::playback`]) are plain libraries; everything
//! about threads, channels and turns is here.
//!
//! ```text
//! listen ─utterances─▶ transcribe ─┐                                   (dictation stops here)
//!   │ speech onset                 │ events
//!   ▼                              ▼
//!   └────────────────▶ coordinator (the only decider: a pure state machine)
//!        commands: ┌──────────────┬──────────────┬─────────────┬───────────┘
//!                  ▼              ▼              ▼             ▼
//!               respond ─clauses─▶ speak ─audio─▶ play        act
//!               (LLM, reply        (TTS)          (output,    (voice commands,
//!                shaping)                          barge-in)   action log)
//! ```
//!
//! - [`listen`]: the source (a device, or a WAV file read as it is played) → SPSC ring → 16 kHz → voice
//!   activity detection or the push-to-talk gate → utterances, each with the time of its last
//!   voiced frame.
//! - [`transcribe`]: the one speech-to-text loop, for dictation and for the agent.
//! - [`coordinator`]: events in, commands out; it owns the turn's state and every decision.
//! - [`respond`]: the language model's worker and the shaping of its reply into clauses.
//! - [`speak`]: the voice's worker. [`play`]: the output's worker, with the barge-in stop.
//! - [`act`]: runs voice commands and writes the action log.
//!
//! Every message carries its [`TurnId`]; [`LiveTurn`] says which turn's work is current, so a
//! worker drops stale work without asking. Workers report to the coordinator through one event
//! channel and act only on its commands: no worker signals another around it.

pub mod act;
pub mod coordinator;
pub mod listen;
pub mod play;
pub mod respond;
pub mod speak;
pub mod transcribe;

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use serde::Serialize;

/// Errors a stage's engine reports (the real engines' own error types, boxed).
pub type StageError = Box<dyn std::error::Error + Send + Sync>;

/// One turn: an utterance and everything done about it. Numbered from 1 by the listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct TurnId(NonZeroU64);

impl TurnId {
    pub const FIRST: TurnId = TurnId(NonZeroU64::MIN);

    pub fn new(n: u64) -> Option<TurnId> {
        NonZeroU64::new(n).map(TurnId)
    }

    pub fn get(self) -> u64 {
        self.0.get()
    }

    pub fn next(self) -> TurnId {
        TurnId(self.0.saturating_add(1))
    }
}

impl std::fmt::Display for TurnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The turn whose work is current, shared by the workers; set only by the coordinator.
#[derive(Debug, Default)]
pub struct LiveTurn(AtomicU64);

impl LiveTurn {
    pub fn set(&self, turn: Option<TurnId>) {
        self.0.store(turn.map_or(0, TurnId::get), Ordering::SeqCst);
    }

    pub fn get(&self) -> Option<TurnId> {
        TurnId::new(self.0.load(Ordering::SeqCst))
    }

    pub fn is(&self, turn: TurnId) -> bool {
        self.get() == Some(turn)
    }
}

/// Spawns a named worker thread.
pub(crate) fn spawn<T: Send + 'static>(
    name: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .expect("spawning a thread only fails when the OS is out of resources")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_live_turn_is_none_or_one_turn() {
        let live = LiveTurn::default();
        assert_eq!(live.get(), None);
        let t = TurnId::FIRST.next();
        live.set(Some(t));
        assert!(live.is(t) && !live.is(TurnId::FIRST));
        live.set(None);
        assert_eq!(live.get(), None);
        assert_eq!(TurnId::new(0), None);
    }
}
