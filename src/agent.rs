//! The voice agent: every stage of [`crate::pipeline`] under one coordinator.
//!
//! ```text
//! listen ─utterances─▶ "stt" ─┐
//!   └── speech onset ─────────┤ events
//!                             ▼
//!            coordinator (this thread: the state machine)
//!    ┌──── jobs ──────────────┘ │ stop          │ actions
//!    ▼                          ▼               ▼
//! "llm" ─clauses─▶ "tts" ─audio─▶ "playback"   "actions"
//! ```
//!
//! One owner per resource: the "stt" thread owns the recogniser, "llm" the model and its KV
//! cache, "tts" the voice, "playback" the output, "actions" the action log. Each channel's
//! policy is written where it is made; every thread is joined and the first error returned.
//!
//! Echo guard: while sotto speaks (and for a tail after), the input is heard as silence, so
//! sotto does not answer itself through its speakers. With barge-in (opt-in: use headphones)
//! the input stays open and speech during a reply stops it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select};

use crate::commands::ActionLog;
use crate::pipeline::listen::{
    EndNow, Hooks, ListenError, ListenEvent, ListenOptions, Listener, SnapshotKind,
};
use crate::pipeline::transcribe::{self, Progress};
use crate::pipeline::{LiveTurn, act, play, respond, spawn, speak};
use crate::playback::PlaybackError;

pub use crate::pipeline::StageError;
pub use crate::pipeline::coordinator::{
    Cmd, Coordinator, Event, Latency, Settings, SpeculationStats, StageTimes, State, TurnOutcome,
    TurnRecord,
};
pub use crate::pipeline::play::OutputFactory;
pub use crate::pipeline::respond::{ReplyStats, Responder};
pub use crate::pipeline::speak::Voice;
pub use crate::pipeline::transcribe::Transcriber;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error(transparent)]
    Playback(#[from] PlaybackError),
    #[error("{stage} failed")]
    Stage {
        stage: &'static str,
        #[source]
        source: StageError,
    },
    #[error("the {0} thread panicked")]
    Panicked(&'static str),
}

/// The engines the agent runs, each moved to the thread that owns it.
pub struct Stages {
    pub transcriber: Box<dyn Transcriber>,
    pub responder: Box<dyn Responder>,
    pub voice: Box<dyn Voice>,
    pub output: OutputFactory,
}

/// What a finished session reports.
#[derive(Debug, Default)]
pub struct Summary {
    pub turns: Vec<TurnRecord>,
    pub dropped_samples: u64,
    /// Stretches of speech heard while sotto spoke, muted by the echo guard (see
    /// [`crate::pipeline::listen::ListenStats::muted_speech`]).
    pub muted_speech: u64,
    pub speculation: SpeculationStats,
}

fn failed(stage: &'static str) -> impl FnOnce(StageError) -> AgentError {
    move |source| AgentError::Stage { stage, source }
}

/// Runs the agent until the input ends, `stop` is set, or `settings.max_turns` turns are done.
/// `on_turn` is called on this thread for every finished turn.
pub fn run(
    mut listen: ListenOptions,
    stages: Stages,
    settings: Settings,
    stop: Arc<AtomicBool>,
    mut on_turn: impl FnMut(&TurnRecord),
) -> Result<Summary, AgentError> {
    let started = Instant::now();
    let live = Arc::new(LiveTurn::default());
    let mute = Arc::new(AtomicBool::new(false));
    // The agent works ahead on pauses.
    listen.speculate = true;
    // Speech onsets, pauses, resumptions: drop when full (the listener never waits).
    let (listen_tx, listen_rx) = bounded::<ListenEvent>(16);
    let listener = Listener::start(
        &listen,
        stop.clone(),
        Hooks {
            mute: Some(mute.clone()),
            events: Some(listen_tx),
        },
    )?;
    let end_now = listener.end_now.clone();
    // Events: block when full; the coordinator always drains them. After it quits the
    // receiver is gone and every send fails, which the workers take as "stop".
    let (ev_tx, ev_rx) = bounded::<Event>(256);
    // Jobs: the coordinator waits rather than drop a turn.
    let (llm_tx, llm_rx) = bounded::<respond::Job>(4);
    // The coordinator's go-ahead after the first clause: drop when full (a stale one is moot).
    let (resume_tx, resume_rx) = bounded(4);
    // Clauses and audio: block when full (a few sentences ahead is plenty).
    let (tts_tx, tts_rx) = bounded::<speak::Job>(32);
    let (play_tx, play_rx) = bounded::<play::Job>(32);
    // Stop: never behind audio, its own channel; drop when full (one stop is enough).
    let (stop_tx, stop_rx) = bounded::<Instant>(8);
    let (act_tx, act_rx) = bounded::<act::Job>(8);

    let Stages {
        mut transcriber,
        mut responder,
        mut voice,
        output,
    } = stages;

    let stt: JoinHandle<Result<(), AgentError>> = {
        let utterances = listener.utterances.clone();
        let snapshots = listener.snapshots.clone();
        let cancelled = listener.cancelled_through.clone();
        let ev = ev_tx.clone();
        spawn("stt", move || {
            let r = transcribe::run(
                &mut *transcriber,
                &utterances,
                &snapshots,
                &cancelled,
                |p| match p {
                    Progress::Speculated(s) if s.kind == SnapshotKind::Pause => ev
                        .send(Event::Speculated {
                            turn: s.turn,
                            text: s.text,
                            stt_ms: s.took.as_millis() as u64,
                            last_voiced: s.last_voiced,
                            last_word_p: s.last_word_p,
                        })
                        .is_ok(),
                    Progress::Speculated(_) => true,
                    Progress::Started {
                        turn,
                        ended_at,
                        last_voiced_at,
                    } => ev
                        .send(Event::UtteranceEnded {
                            turn,
                            ended_at,
                            last_voiced_at,
                        })
                        .is_ok(),
                    Progress::Done(t) => ev
                        .send(Event::Transcript {
                            turn: t.heard.turn,
                            text: t.text,
                            at: t.at,
                            stt_ms: t.took.as_millis() as u64,
                        })
                        .is_ok(),
                },
            );
            match r {
                Ok(_) => {
                    let _ = ev.send(Event::InputEnded);
                    Ok(())
                }
                Err(e) => {
                    let _ = ev.send(Event::Failed { stage: "stt" });
                    Err(failed("speech recognition")(e))
                }
            }
        })
    };

    let llm: JoinHandle<Result<(), AgentError>> = {
        let (ev, tts, live) = (ev_tx.clone(), tts_tx.clone(), live.clone());
        let max_sentences = settings.max_sentences;
        spawn("llm", move || {
            respond::run(
                &mut *responder,
                &llm_rx,
                &resume_rx,
                &live,
                &ev,
                &tts,
                max_sentences,
            )
            .map_err(|e| {
                let _ = ev.send(Event::Failed { stage: "llm" });
                failed("the language model")(e)
            })
        })
    };

    let tts: JoinHandle<Result<(), AgentError>> = {
        let (ev, live) = (ev_tx.clone(), live.clone());
        spawn("tts", move || {
            speak::run(
                &mut *voice,
                &tts_rx,
                &live,
                &ev,
                &play_tx,
                crate::tts::KEEP_WARM,
            )
            .map_err(|e| {
                let _ = ev.send(Event::Failed { stage: "tts" });
                failed("speech synthesis")(e)
            })
        })
    };

    let playback: JoinHandle<Result<(), AgentError>> = {
        let (ev, live) = (ev_tx.clone(), live.clone());
        spawn("playback", move || {
            play::run(output, started, &play_rx, &stop_rx, &live, &ev).map_err(Into::into)
        })
    };

    let actions: JoinHandle<Result<(), AgentError>> = {
        let ev = ev_tx.clone();
        let log = settings.action_log.clone().map(|path| ActionLog { path });
        let commands = settings.commands.clone();
        spawn("actions", move || {
            act::run(&commands, log.as_ref(), &act_rx, &ev);
            Ok(())
        })
    };
    drop(ev_tx);

    let mut coordinator = Coordinator::new(settings.clone(), started);
    let mut summary = Summary::default();
    let mut quit = false;
    let mut listen_rx = listen_rx;
    while !quit {
        let event = select! {
            recv(listen_rx) -> heard => match heard {
                Ok(ListenEvent::SpeechStarted { at }) => Some(Event::SpeechStarted { at }),
                Ok(ListenEvent::Paused { turn, last_voiced_at }) => Some(Event::Paused { turn, last_voiced_at }),
                Ok(ListenEvent::Resumed { turn, .. }) => Some(Event::Resumed { turn }),
                // The listener has finished; the events channel tells the rest.
                Err(_) => {
                    listen_rx = crossbeam_channel::never();
                    None
                }
            },
            recv(ev_rx) -> ev => match ev {
                Ok(ev) => Some(ev),
                // Every stage has ended.
                Err(_) => break,
            },
            default(Duration::from_millis(10)) => None,
        };
        let now = Instant::now();
        let commands = match event {
            Some(ev) => {
                tracing::debug!(stage = "agent", state = ?coordinator.state, event = ?ev, "event");
                coordinator.handle(ev, now)
            }
            None => coordinator.tick(now),
        };
        for cmd in commands {
            match cmd {
                Cmd::SetLive(turn) => live.set(turn),
                Cmd::Mute(on) => mute.store(on, Ordering::SeqCst),
                Cmd::RestVoice => {
                    let _ = tts_tx.try_send(speak::Job::Rest);
                }
                Cmd::StopPlayback { detected } => {
                    let _ = stop_tx.try_send(detected);
                }
                Cmd::Respond { turn, text } => {
                    let _ = llm_tx.send(respond::Job::Respond { turn, text });
                }
                Cmd::Route {
                    turn,
                    text,
                    options,
                } => {
                    let descriptions = options
                        .iter()
                        .map(|o| settings.commands.describe(o))
                        .collect();
                    let _ = llm_tx.send(respond::Job::Route {
                        turn,
                        text,
                        options,
                        descriptions,
                    });
                }
                Cmd::ResumeReply { turn } => {
                    let _ = resume_tx.try_send(turn);
                }
                Cmd::EndUtterance { turn, last_voiced } => {
                    let _ = end_now.try_send(EndNow { turn, last_voiced });
                }
                Cmd::Prefill { turn, text } => {
                    let _ = llm_tx.send(respond::Job::Prefill { turn, text });
                }
                Cmd::Discard { turn } => {
                    let _ = llm_tx.send(respond::Job::Discard { turn });
                }
                Cmd::Say { turn, text } => {
                    let _ = tts_tx.send(speak::Job::Speak {
                        turn,
                        text,
                        first: true,
                        mid_clause: false,
                    });
                    let _ = tts_tx.send(speak::Job::End { turn });
                }
                Cmd::Act {
                    turn,
                    invocation,
                    transcript,
                } => {
                    let _ = act_tx.send(act::Job::Run {
                        turn,
                        invocation,
                        transcript,
                    });
                }
                Cmd::Log {
                    turn,
                    stage,
                    invocation,
                    transcript,
                } => {
                    let _ = act_tx.send(act::Job::Log {
                        turn,
                        stage,
                        invocation,
                        transcript,
                    });
                }
                Cmd::Report(record) => {
                    tracing::info!(stage = "agent", turn = record.turn.get(), outcome = ?record.outcome, latency = ?record.latency, "turn finished");
                    on_turn(&record);
                    summary.turns.push(*record);
                }
                Cmd::Quit => quit = true,
            }
        }
    }

    // Shut down: no turn is live, the listener stops, every channel into a stage closes.
    live.set(None);
    stop.store(true, Ordering::SeqCst);
    drop((llm_tx, tts_tx, stop_tx, act_tx, resume_tx));
    drop(ev_rx);
    drop(listen_rx);
    drop(end_now);
    let join = |name: &'static str, h: JoinHandle<Result<(), AgentError>>| {
        h.join().map_err(|_| AgentError::Panicked(name))?
    };
    let results = [
        join("stt", stt),
        join("llm", llm),
        join("tts", tts),
        join("playback", playback),
        join("actions", actions),
    ];
    let heard = listener.finish()?;
    summary.dropped_samples = heard.dropped_samples;
    summary.muted_speech = heard.muted_speech;
    summary.speculation = coordinator.speculation_stats.clone();
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    Ok(summary)
}
