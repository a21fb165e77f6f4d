//! The voice as a stage: the "tts" thread owns the voice, synthesizes each clause of the live
//! turn as it arrives and hands the audio to playback. Clauses of a turn that is no longer live
//! are skipped. Where the chunker cut a clause in two, the silence between the two pieces'
//! speech is trimmed ([`crate::tts::Seams`]). When nothing has been said for
//! [`crate::tts::KEEP_WARM`], or someone starts speaking, it lets the voice give working
//! memory back.

use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

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
    /// Someone is speaking and nothing is being said: a voice holding its working memory
    /// ([`crate::tts::KEEP_WARM`]) gives it back now. Whisper is about to take ~40-45 MiB for
    /// the utterance, and the two together made the agent's peak (12 questions 20 s apart:
    /// 466-497 MiB, 429-434 with this); the reply's first clause then pays the voice's regrowth
    /// (~20 ms, not seen in the agent's first audio).
    Rest,
}

/// The worker: runs until the job channel closes or playback is gone. The voice is told it is
/// idle once nothing has been said for `keep_warm` ([`crate::tts::KEEP_WARM`]).
pub fn run(
    voice: &mut dyn Voice,
    jobs: &Receiver<Job>,
    live: &LiveTurn,
    events: &Sender<Event>,
    audio: &Sender<play::Job>,
    keep_warm: std::time::Duration,
) -> Result<(), StageError> {
    // The seams of the turn being spoken.
    let mut seams: Option<(TurnId, crate::tts::Seams)> = None;
    // When the voice gives its working memory back, if nothing is said before.
    let mut release_at: Option<Instant> = None;
    loop {
        let next = match release_at {
            Some(at) => jobs.recv_timeout(at.saturating_duration_since(Instant::now())),
            None => jobs.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        let job = match next {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => {
                voice.idle();
                release_at = None;
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        // The voice is idle and holding its working memory.
        let resting_warm = release_at.take().is_some();
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
                    release_at = Some(Instant::now() + keep_warm);
                }
            }
            Job::Rest if resting_warm => voice.idle(),
            Job::Rest => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// A voice that says nothing and counts the times it was told it is idle.
    struct Quiet(Arc<AtomicUsize>);

    impl Voice for Quiet {
        fn synthesize(&mut self, _: &str) -> Result<(Vec<f32>, u32), StageError> {
            Ok((vec![0.0; 160], 16_000))
        }
        fn idle(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The worker on a [`Quiet`] voice.
    struct Worker {
        jobs_tx: Sender<Job>,
        idles: Arc<AtomicUsize>,
        live: Arc<LiveTurn>,
        worker: std::thread::JoinHandle<Result<(), StageError>>,
    }

    impl Worker {
        fn start(keep_warm: Duration) -> Self {
            let idles = Arc::new(AtomicUsize::new(0));
            let (jobs_tx, jobs) = crossbeam_channel::unbounded();
            let (events, _events_rx) = crossbeam_channel::unbounded();
            let (audio, _audio_rx) = crossbeam_channel::unbounded();
            let live = Arc::new(LiveTurn::default());
            let worker = {
                let (idles, live) = (idles.clone(), live.clone());
                std::thread::spawn(move || {
                    let (_events_rx, _audio_rx) = (_events_rx, _audio_rx);
                    run(&mut Quiet(idles), &jobs, &live, &events, &audio, keep_warm)
                })
            };
            Self {
                jobs_tx,
                idles,
                live,
                worker,
            }
        }
    }

    #[test]
    fn the_voice_gives_its_memory_back_only_after_a_while_with_nothing_to_say() {
        let Worker {
            jobs_tx,
            idles,
            live,
            worker,
        } = Worker::start(Duration::from_millis(1000));
        let say = |n: u64| {
            let turn = TurnId::new(n).unwrap();
            live.set(Some(turn));
            let text = "Hello.".to_string();
            jobs_tx
                .send(Job::Speak {
                    turn,
                    text,
                    first: true,
                    mid_clause: false,
                })
                .unwrap();
            jobs_tx.send(Job::End { turn }).unwrap();
        };
        say(1);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            idles.load(Ordering::SeqCst),
            0,
            "not at the end of the reply"
        );
        // The next reply within the time keeps the memory, and starts the wait again.
        say(2);
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            idles.load(Ordering::SeqCst),
            0,
            "the wait starts again after each reply"
        );
        std::thread::sleep(Duration::from_millis(1000));
        assert_eq!(idles.load(Ordering::SeqCst), 1, "once after the quiet");
        std::thread::sleep(Duration::from_millis(1200));
        assert_eq!(
            idles.load(Ordering::SeqCst),
            1,
            "and not again until something is said"
        );
        drop(jobs_tx);
        worker.join().unwrap().unwrap();
    }

    #[test]
    fn someone_speaking_while_the_voice_rests_warm_has_it_give_its_memory_back_at_once() {
        let Worker {
            jobs_tx,
            idles,
            live,
            worker,
        } = Worker::start(Duration::from_millis(800));
        let count = || idles.load(Ordering::SeqCst);
        jobs_tx.send(Job::Rest).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(count(), 0, "nothing held before anything was said");
        let turn = TurnId::new(1).unwrap();
        live.set(Some(turn));
        jobs_tx
            .send(Job::Speak {
                turn,
                text: "Hello.".to_string(),
                first: true,
                mid_clause: false,
            })
            .unwrap();
        jobs_tx.send(Job::Rest).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(count(), 0, "not while a reply is being said");
        jobs_tx.send(Job::End { turn }).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        jobs_tx.send(Job::Rest).unwrap();
        jobs_tx.send(Job::Rest).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(count(), 1, "at once after the reply, and once");
        std::thread::sleep(Duration::from_millis(1000));
        assert_eq!(count(), 1, "the wait for the quiet ended with it");
        drop(jobs_tx);
        worker.join().unwrap().unwrap();
    }
}
