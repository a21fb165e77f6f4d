//! The agent's coordinator: the only place that decides. It owns the turn's state (Idle,
//! Listening, Transcribing, Thinking, Speaking), the pending confirmation, the wake window and
//! the echo guard; it takes the workers' [`Event`]s and answers with [`Cmd`]s. Pure: no
//! threads, no I/O, no clock of its own (time comes in with each event), so it is tested
//! without audio or models. [`crate::agent`] runs it on its thread and carries the commands out.
//!
//! Every latency of a turn is measured from its end of speech: the moment the listener heard
//! its last voiced frame.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::TurnId;
use super::respond::ReplyStats;
use crate::commands::{self, Commands, Invocation, Match, Outcome};

#[derive(Clone, Debug)]
pub struct Settings {
    /// Speech while sotto speaks interrupts it (and the echo guard is off while speaking).
    pub barge_in: bool,
    /// How long the microphone stays muted after sotto stops speaking.
    pub echo_tail: Duration,
    /// Words a transcript must start with to be taken as a turn.
    pub wake_phrase: Option<String>,
    /// After the wake phrase alone, how long the next utterance counts without it.
    pub wake_window: Duration,
    /// Stop after this many turns (answered, run, cancelled).
    pub max_turns: Option<usize>,
    /// A spoken reply ends after this many sentences (small models ramble).
    pub max_sentences: usize,
    pub commands: Commands,
    pub action_log: Option<PathBuf>,
    /// How long a confirmation question waits for its answer, from when it finished playing.
    pub confirm_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            barge_in: false,
            echo_tail: Duration::from_millis(300),
            wake_phrase: None,
            wake_window: Duration::from_secs(8),
            max_turns: None,
            max_sentences: 1,
            commands: Commands::default(),
            action_log: None,
            confirm_timeout: Duration::from_secs(8),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Idle,
    Listening,
    Transcribing,
    Thinking,
    Speaking,
}

/// What the stages tell the coordinator.
#[derive(Debug)]
pub enum Event {
    SpeechStarted {
        at: Instant,
    },
    /// The listener ended an utterance (`ended_at`); its last voiced frame was heard at
    /// `last_voiced_at`, the moment every latency of the turn is measured from.
    UtteranceEnded {
        turn: TurnId,
        ended_at: Instant,
        last_voiced_at: Instant,
    },
    Transcript {
        turn: TurnId,
        text: String,
        at: Instant,
        stt_ms: u64,
    },
    /// Silence inside the utterance that will be `turn` became a pause.
    Paused {
        turn: TurnId,
        last_voiced_at: Instant,
    },
    /// Speech came back after the pause: what was started on it is void.
    Resumed {
        turn: TurnId,
    },
    /// The utterance in progress, transcribed up to its pause.
    Speculated {
        turn: TurnId,
        text: String,
        stt_ms: u64,
        /// Stream offset of the last voiced frame the text was heard up to.
        last_voiced: Duration,
        /// The recogniser's probability for the last word, when it says.
        last_word_p: Option<f32>,
    },
    /// A voice command's action started (the action log has it on disk).
    ActionStarted {
        turn: TurnId,
        at: Instant,
    },
    Routed {
        turn: TurnId,
        choice: Option<Invocation>,
    },
    FirstToken {
        turn: TurnId,
        at: Instant,
    },
    /// The reply's first clause is ready (the LLM worker).
    FirstClause {
        turn: TurnId,
        at: Instant,
    },
    /// The reply's first clause is synthesized (the TTS worker); the LLM worker, paused until
    /// then, may go on.
    FirstClauseSpoken {
        turn: TurnId,
        synth_ms: u64,
    },
    ReplyDone {
        turn: TurnId,
        text: String,
        stats: ReplyStats,
    },
    FirstAudio {
        turn: TurnId,
        at: Instant,
        synth_ms: u64,
    },
    Drained {
        turn: TurnId,
    },
    Stopped {
        detected: Instant,
        at: Instant,
    },
    ActionDone {
        turn: TurnId,
        outcome: Outcome,
    },
    InputEnded,
    Failed {
        stage: &'static str,
    },
}

/// What the coordinator asks for.
#[derive(Debug, PartialEq)]
pub enum Cmd {
    /// The turn whose messages are current (None: no turn).
    SetLive(Option<TurnId>),
    Mute(bool),
    /// Someone started speaking while sotto was idle: the voice may give its working memory
    /// back now rather than hold it while Whisper takes its own (see [`super::speak::Job::Rest`]).
    RestVoice,
    StopPlayback {
        detected: Instant,
    },
    Respond {
        turn: TurnId,
        text: String,
    },
    /// The reply's first clause is synthesized: the LLM worker may decode on.
    ResumeReply {
        turn: TurnId,
    },
    /// The pause after `last_voiced` is the end of the turn: the listener ends the utterance
    /// now, unless anything was voiced since.
    EndUtterance {
        turn: TurnId,
        last_voiced: Duration,
    },
    /// Speculation: put this request in the model's context while the pause lasts (nothing
    /// is generated, spoken or run).
    Prefill {
        turn: TurnId,
        text: String,
    },
    /// The speculation on this turn is void: the model forgets the prefilled request.
    Discard {
        turn: TurnId,
    },
    Route {
        turn: TurnId,
        text: String,
        options: Vec<Invocation>,
    },
    Say {
        turn: TurnId,
        text: String,
    },
    Act {
        turn: TurnId,
        invocation: Invocation,
        transcript: String,
    },
    /// A stage in an action's life for the action log (the actions thread writes it).
    Log {
        turn: TurnId,
        stage: commands::Stage,
        invocation: Invocation,
        transcript: String,
    },
    Report(Box<TurnRecord>),
    Quit,
}

/// Milliseconds after the end of speech (the last voiced frame heard; the listener ends the
/// utterance one hangover later, `vad_end_ms`) at which each step of a turn happened.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    pub vad_end_ms: u64,
    pub transcript_ms: Option<u64>,
    pub first_token_ms: Option<u64>,
    pub first_clause_ms: Option<u64>,
    pub first_audio_ms: Option<u64>,
    /// A voice command: when its action started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action_ms: Option<u64>,
}

/// Time spent in each stage.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StageTimes {
    pub stt_ms: Option<u64>,
    pub llm_prefill_ms: Option<u64>,
    pub llm_tokens: Option<usize>,
    pub llm_decode_ms: Option<u64>,
    pub tts_first_clause_ms: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TurnOutcome {
    /// The LLM answered aloud.
    Answered,
    /// A voice command ran.
    Command,
    /// A confirmation was asked for.
    Confirm,
    /// The confirmation was refused.
    Declined,
    /// The wake phrase alone: sotto listens for the next utterance.
    Woken,
    /// Cut off by the user speaking (barge-in).
    Interrupted,
    /// A newer utterance arrived before this one was answered.
    Superseded,
    /// Not taken: no speech recognised, or no wake phrase.
    Ignored,
}

/// One turn, as logged and written with `--metrics`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TurnRecord {
    pub turn: TurnId,
    pub outcome: TurnOutcome,
    /// Seconds from the start of the session to the end of speech.
    pub end_of_speech_s: f64,
    pub transcript: String,
    pub reply: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Invocation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<Outcome>,
    pub latency: Latency,
    pub stages: StageTimes,
    /// Barge-in: seconds from the start of the session to the speech that interrupted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interrupted_at_s: Option<f64>,
    /// Barge-in: from speech detected to playback stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub barge_in_stop_ms: Option<u64>,
    /// The turn ended at a pause, its transcript plainly complete, before the full hangover.
    pub ended_at_pause: bool,
}

impl TurnRecord {
    fn counts(&self) -> bool {
        self.outcome != TurnOutcome::Ignored
    }
}

/// A command whose confirmation question was asked.
struct Pending {
    invocation: Invocation,
    transcript: String,
    question: String,
    /// The turn that asked the question.
    asked_in: TurnId,
    /// Set once the question has been spoken: no answer by then and it expires.
    expires_at: Option<Instant>,
}

struct Turn {
    id: TurnId,
    end_of_speech: Instant,
    /// The transcript without the wake phrase.
    request: String,
    record: TurnRecord,
}

/// The agent's state machine. Pure: no threads, no I/O, no clock of its own.
pub struct Coordinator {
    settings: Settings,
    started: Instant,
    pub state: State,
    turn: Option<Turn>,
    /// An utterance that ended while a turn was live, being transcribed: it supersedes the
    /// live turn if it holds words, and is ignored if not (a cough or a click after a request
    /// must not silence the answer).
    incoming: Option<Turn>,
    /// A command waiting for "yes".
    pending_confirm: Option<Pending>,
    /// A cancelled turn waiting for playback to confirm the stop.
    interrupted: Option<TurnRecord>,
    awake_until: Option<Instant>,
    muted: bool,
    unmute_at: Option<Instant>,
    finished: usize,
    input_ended: bool,
    quitting: bool,
    /// Work started on a pause of the utterance in progress.
    speculation: Option<Speculation>,
    pub speculation_stats: SpeculationStats,
}

/// What was started on a pause.
struct Speculation {
    turn: TurnId,
    /// The transcript of the utterance up to its pause.
    transcript: String,
    /// The request prefilled into the model, if one was.
    prefilled: Option<String>,
    /// The transcript was plainly complete: the turn ended at the pause.
    ended_turn: bool,
}

/// How speculation went over a session.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SpeculationStats {
    /// Pauses transcribed.
    pub pauses: usize,
    /// Turns ended at their pause (plainly complete).
    pub ended_early: usize,
    /// Requests prefilled into the model on a pause.
    pub prefilled: usize,
    /// Speculations voided (speech went on, or the final transcript differed).
    pub discarded: usize,
    /// Final transcripts equal to their pause's (the speculation was right).
    pub confirmed: usize,
    /// Transcription time spent on pauses.
    pub stt_ms: u64,
}

/// A yes or no is complete as soon as it is said ("Yes." / "No, don't.").
fn plainly_complete_reply(text: &str) -> bool {
    let t = text.trim();
    !t.is_empty() && !t.ends_with("..") && !t.ends_with('…')
}

/// Whether a transcript is plainly a finished turn: a question, or a sentence that ends with
/// a full stop or an exclamation, and in either case not on a word that leaves it hanging
/// ("and", "the", "so", "plus"…); a statement also not on a number (someone dictating digits
/// pauses between them). Anything else keeps the full hangover.
///
/// Whisper punctuates what it hears as if it were finished: a pause after "What is the capital
/// of France and" comes back as "What is the capital of France and?", so the question mark
/// alone does not make a question complete.
pub fn plainly_complete(text: &str) -> bool {
    let t = text.trim();
    let question = t.ends_with('?');
    if !(question || t.ends_with('.') || t.ends_with('!')) || t.ends_with("..") || t.ends_with('…')
    {
        return false;
    }
    let words = commands::normalise(t);
    let Some(last) = words.last() else {
        return false;
    };
    let numeric = last.chars().all(|c| c.is_ascii_digit()) || commands::is_number_word(last);
    !(crate::chunker::DANGLING.contains(&last.as_str()) || (numeric && !question))
}

/// Least probability the recogniser must give the last word of a pause's transcript for the
/// turn to end there. Whisper finishes a phrase cut off at a pause with words nobody said
/// ("Set a timer for" as "Set a timer for it.", the "it" at 0.36); on 40 Piper renditions of
/// five requests, tiny.en gave the right last word at 0.48 or more, and its mistakes ("Tell me,
/// Joe." for "Tell me a joke.", "lap" for "lamp") at 0.43 or less.
pub const SURE_LAST_WORD: f32 = 0.45;

/// Whether a last word is sure enough to end a turn on (unknown counts as sure: a recogniser
/// that does not say).
pub fn sure_of_last_word(p: Option<f32>) -> bool {
    p.is_none_or(|p| p >= SURE_LAST_WORD)
}

fn ms(from: Instant, to: Instant) -> u64 {
    to.saturating_duration_since(from).as_millis() as u64
}

impl Coordinator {
    pub fn new(settings: Settings, started: Instant) -> Self {
        Self {
            settings,
            started,
            state: State::Idle,
            turn: None,
            incoming: None,
            pending_confirm: None,
            interrupted: None,
            awake_until: None,
            muted: false,
            unmute_at: None,
            finished: 0,
            input_ended: false,
            quitting: false,
            speculation: None,
            speculation_stats: SpeculationStats::default(),
        }
    }

    fn live(&self, turn: TurnId) -> bool {
        self.turn.as_ref().is_some_and(|t| t.id == turn)
    }

    fn set_outcome(&mut self, outcome: TurnOutcome) {
        if let Some(t) = self.turn.as_mut() {
            t.record.outcome = outcome;
        }
    }

    /// Ends the live turn with the outcome decided for it, reporting it.
    fn end_turn(&mut self, out: &mut Vec<Cmd>) {
        if let Some(t) = self.turn.take() {
            out.push(Cmd::SetLive(None));
            self.report(t.record, out);
        }
        self.state = State::Idle;
    }

    fn report(&mut self, record: TurnRecord, out: &mut Vec<Cmd>) {
        if record.counts() {
            self.finished += 1;
        }
        out.push(Cmd::Report(Box::new(record)));
    }

    /// Cancels the live turn (barge-in or a newer utterance).
    fn cancel(&mut self, outcome: TurnOutcome, detected: Instant, out: &mut Vec<Cmd>) {
        let Some(t) = self.turn.take() else { return };
        let mut record = t.record;
        record.outcome = outcome;
        record.interrupted_at_s = Some(
            detected
                .saturating_duration_since(self.started)
                .as_secs_f64(),
        );
        // Nothing of this turn may be queued once playback has stopped: the live turn
        // changes first.
        out.push(Cmd::SetLive(None));
        out.push(Cmd::StopPlayback { detected });
        self.interrupted = Some(record);
        self.start_echo_tail(detected);
    }

    /// sotto stopped speaking at `at`: the microphone opens one echo tail later.
    fn start_echo_tail(&mut self, at: Instant) {
        if self.muted {
            self.unmute_at = Some(at + self.settings.echo_tail);
        }
    }

    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Cmd> {
        let mut out = Vec::new();
        match event {
            Event::SpeechStarted { at } => match self.state {
                State::Speaking | State::Thinking if self.settings.barge_in => {
                    self.cancel(TurnOutcome::Interrupted, at, &mut out);
                    self.state = State::Listening;
                }
                State::Idle => {
                    self.state = State::Listening;
                    out.push(Cmd::RestVoice);
                }
                _ => {}
            },
            Event::UtteranceEnded {
                turn,
                ended_at,
                last_voiced_at,
            } => {
                let end_of_speech = last_voiced_at.min(ended_at);
                let next = Turn {
                    id: turn,
                    end_of_speech,
                    request: String::new(),
                    record: TurnRecord {
                        turn,
                        outcome: TurnOutcome::Ignored,
                        end_of_speech_s: end_of_speech
                            .saturating_duration_since(self.started)
                            .as_secs_f64(),
                        transcript: String::new(),
                        reply: String::new(),
                        command: None,
                        action: None,
                        latency: Latency {
                            vad_end_ms: ms(end_of_speech, ended_at),
                            ..Latency::default()
                        },
                        stages: StageTimes::default(),
                        interrupted_at_s: None,
                        barge_in_stop_ms: None,
                        ended_at_pause: self
                            .speculation
                            .as_ref()
                            .is_some_and(|s| s.turn == turn && s.ended_turn),
                    },
                };
                if self.turn.is_some() {
                    if let Some(older) = self.incoming.replace(next) {
                        self.report(older.record, &mut out);
                    }
                } else {
                    self.turn = Some(next);
                    out.push(Cmd::SetLive(Some(turn)));
                    self.state = State::Transcribing;
                }
            }
            Event::Transcript {
                turn,
                text,
                at,
                stt_ms,
            } => {
                if let Some(next) = self.incoming.take_if(|t| t.id == turn) {
                    if text.trim().is_empty() {
                        let mut record = next.record;
                        record.stages.stt_ms = Some(stt_ms);
                        self.report(record, &mut out);
                        return out;
                    }
                    self.cancel(TurnOutcome::Superseded, at, &mut out);
                    self.turn = Some(next);
                    out.push(Cmd::SetLive(Some(turn)));
                    self.state = State::Transcribing;
                }
                if !self.live(turn) {
                    return out;
                }
                let t = self.turn.as_mut().expect("live() checked the turn");
                t.record.latency.transcript_ms = Some(ms(t.end_of_speech, at));
                t.record.stages.stt_ms = Some(stt_ms);
                t.record.transcript = text.trim().to_string();
                let speculation = self.speculation.take().filter(|s| s.turn == turn);
                let first = out.len();
                self.take_turn(turn, now, &mut out);
                if let Some(spec) = speculation {
                    let same = spec.transcript.trim() == text.trim();
                    if same {
                        self.speculation_stats.confirmed += 1;
                    }
                    // A prefill the turn does not answer with is forgotten.
                    let answered_with = |c: &Cmd| matches!(c, Cmd::Respond { turn: t, text } if *t == turn && Some(text) == spec.prefilled.as_ref());
                    if spec.prefilled.is_some() && !out[first..].iter().any(answered_with) {
                        self.speculation_stats.discarded += 1;
                        out.insert(first, Cmd::Discard { turn });
                    }
                }
            }
            Event::Paused { .. } => {}
            Event::Resumed { turn } => {
                if let Some(spec) = self.speculation.take_if(|s| s.turn == turn) {
                    self.speculation_stats.discarded += 1;
                    if spec.prefilled.is_some() {
                        out.push(Cmd::Discard { turn });
                    }
                }
            }
            Event::Speculated {
                turn,
                text,
                stt_ms,
                last_voiced,
                last_word_p,
            } => {
                self.speculation_stats.pauses += 1;
                self.speculation_stats.stt_ms += stt_ms;
                let sure = sure_of_last_word(last_word_p);
                self.speculate(turn, text, last_voiced, sure, now, &mut out)
            }
            Event::ActionStarted { turn, at } => {
                if let Some(t) = self.turn.as_mut().filter(|t| t.id == turn) {
                    t.record.latency.action_ms = Some(ms(t.end_of_speech, at));
                }
            }
            Event::Routed { turn, choice } => {
                if !self.live(turn) {
                    return out;
                }
                let transcript = self.turn.as_ref().map(|t| t.request.clone());
                let transcript = transcript.unwrap_or_default();
                match choice {
                    // A near miss the LLM picked is never run unasked.
                    Some(inv) => self.command(turn, inv, transcript, true, &mut out),
                    None => {
                        self.set_outcome(TurnOutcome::Answered);
                        out.push(Cmd::Respond {
                            turn,
                            text: transcript,
                        });
                    }
                }
            }
            Event::FirstToken { turn, at } => {
                if let Some(t) = self.turn.as_mut().filter(|t| t.id == turn) {
                    t.record.latency.first_token_ms = Some(ms(t.end_of_speech, at));
                }
            }
            Event::FirstClause { turn, at } => {
                if let Some(t) = self.turn.as_mut().filter(|t| t.id == turn) {
                    t.record.latency.first_clause_ms = Some(ms(t.end_of_speech, at));
                }
            }
            Event::FirstClauseSpoken { turn, synth_ms } => {
                if let Some(t) = self.turn.as_mut().filter(|t| t.id == turn) {
                    t.record.stages.tts_first_clause_ms = Some(synth_ms);
                    out.push(Cmd::ResumeReply { turn });
                }
            }
            Event::ReplyDone { turn, text, stats } => {
                if let Some(t) = self.turn.as_mut().filter(|t| t.id == turn) {
                    t.record.reply = text.trim().to_string();
                    t.record.stages.llm_prefill_ms = Some(stats.prefill_ms);
                    t.record.stages.llm_tokens = Some(stats.tokens);
                    t.record.stages.llm_decode_ms = Some(stats.decode_ms);
                }
            }
            Event::FirstAudio { turn, at, synth_ms } => {
                if let Some(t) = self.turn.as_mut().filter(|t| t.id == turn) {
                    t.record.latency.first_audio_ms = Some(ms(t.end_of_speech, at));
                    t.record.stages.tts_first_clause_ms.get_or_insert(synth_ms);
                    self.state = State::Speaking;
                    if !self.settings.barge_in {
                        self.muted = true;
                        self.unmute_at = None;
                        out.push(Cmd::Mute(true));
                    }
                }
            }
            Event::Drained { turn } => {
                if self.live(turn) {
                    if let Some(p) = self.pending_confirm.as_mut().filter(|p| p.asked_in == turn) {
                        p.expires_at = Some(now + self.settings.confirm_timeout);
                    }
                    self.end_turn(&mut out);
                    self.start_echo_tail(now);
                }
            }
            Event::Stopped { detected, at } => {
                if let Some(mut record) = self.interrupted.take() {
                    record.barge_in_stop_ms = Some(ms(detected, at));
                    self.report(record, &mut out);
                }
            }
            Event::ActionDone { turn, outcome } => {
                if let Some(t) = self.turn.as_mut().filter(|t| t.id == turn) {
                    let reply = t
                        .record
                        .command
                        .as_ref()
                        .and_then(|inv| self.settings.commands.reply(inv));
                    let ok = matches!(outcome, Outcome::Ok { .. });
                    t.record.action = Some(outcome);
                    match reply {
                        Some(text) if ok => {
                            t.record.reply = text.clone();
                            out.push(Cmd::Say { turn, text });
                        }
                        _ if !ok => {
                            let text = "Sorry, that did not work.".to_string();
                            t.record.reply = text.clone();
                            out.push(Cmd::Say { turn, text });
                        }
                        _ => self.end_turn(&mut out),
                    }
                }
            }
            Event::InputEnded => self.input_ended = true,
            Event::Failed { .. } => self.quitting = true,
        }
        out.extend(self.tick(now));
        out
    }

    /// Timers and the end of the session; call regularly.
    pub fn tick(&mut self, now: Instant) -> Vec<Cmd> {
        let mut out = Vec::new();
        if self
            .pending_confirm
            .as_ref()
            .and_then(|p| p.expires_at)
            .is_some_and(|at| at <= now)
            && let Some(p) = self.pending_confirm.take()
        {
            tracing::info!(
                stage = "agent",
                command = p.invocation.command,
                "confirmation expired"
            );
            out.push(Cmd::Log {
                turn: p.asked_in,
                stage: commands::Stage::Expired,
                invocation: p.invocation,
                transcript: p.transcript,
            });
        }
        if self.unmute_at.is_some_and(|at| at <= now) {
            self.unmute_at = None;
            self.muted = false;
            out.push(Cmd::Mute(false));
        }
        let idle = self.turn.is_none() && self.incoming.is_none() && self.interrupted.is_none();
        let done = self.quitting
            || (idle && self.input_ended)
            || (idle && self.settings.max_turns.is_some_and(|n| self.finished >= n));
        if done {
            self.quitting = true;
            out.push(Cmd::Quit);
        }
        out
    }

    /// The utterance that will be `turn` paused, and this is what it said so far. Starts what
    /// can be started without a word spoken or an action run: the model takes the request
    /// into its context; and when the request is plainly complete, the turn ends now instead
    /// of after the full hangover.
    fn speculate(
        &mut self,
        turn: TurnId,
        text: String,
        last_voiced: Duration,
        sure: bool,
        now: Instant,
        out: &mut Vec<Cmd>,
    ) {
        // Only between turns: a reply still in progress keeps the floor.
        if self.turn.is_some() || self.speculation.as_ref().is_some_and(|s| s.turn > turn) {
            return;
        }
        if let Some(old) = self.speculation.take()
            && old.prefilled.is_some()
        {
            self.speculation_stats.discarded += 1;
            out.push(Cmd::Discard { turn: old.turn });
        }
        let transcript = text.trim().to_string();
        if transcript.is_empty() {
            return;
        }
        let mut request = transcript.clone();
        if let Some(wake) = &self.settings.wake_phrase {
            let awake = self.awake_until.is_some_and(|until| now <= until);
            match strip_wake_phrase(&transcript, wake) {
                Some(rest) => request = rest,
                None if awake => {}
                None => return,
            }
        }
        let mut command = false;
        let (complete, prefill) = if let Some(p) = &self.pending_confirm {
            // An answer to "Should I…?": a clear yes or no ends the turn; nothing to prefill.
            let answered = commands::read_reply(&request, &p.question) != commands::Reply::Other;
            (answered && plainly_complete_reply(&request), false)
        } else if request.is_empty() {
            // The wake phrase alone.
            (true, false)
        } else {
            match self.settings.commands.match_transcript(&request) {
                Match::Command(_) => {
                    command = true;
                    (true, false)
                }
                Match::Near(_) => (plainly_complete(&request), false),
                Match::None => (plainly_complete(&request), true),
            }
        };
        let prefilled = prefill.then(|| request.clone());
        if let Some(text) = &prefilled {
            self.speculation_stats.prefilled += 1;
            out.push(Cmd::Prefill {
                turn,
                text: text.clone(),
            });
        }
        // A word the recogniser guessed may be one it made up to finish the phrase; a phrase
        // that matches an allowlisted command whole is evidence enough on its own.
        let complete = complete && (sure || command);
        if complete {
            self.speculation_stats.ended_early += 1;
            out.push(Cmd::EndUtterance { turn, last_voiced });
        }
        self.speculation = Some(Speculation {
            turn,
            transcript,
            prefilled,
            ended_turn: complete,
        });
    }

    /// A transcript arrived for the live turn: decide what it is.
    fn take_turn(&mut self, turn: TurnId, now: Instant, out: &mut Vec<Cmd>) {
        let Some(mut text) = self.turn.as_ref().map(|t| t.record.transcript.clone()) else {
            return;
        };
        if text.is_empty() {
            self.end_turn(out);
            return;
        }
        if let Some(wake) = &self.settings.wake_phrase {
            let awake = self.awake_until.is_some_and(|until| now <= until);
            match strip_wake_phrase(&text, wake) {
                Some(rest) if rest.is_empty() => {
                    self.awake_until = Some(now + self.settings.wake_window);
                    self.say(turn, TurnOutcome::Woken, "Yes?", out);
                    return;
                }
                Some(rest) => text = rest,
                None if awake => {}
                None => {
                    self.end_turn(out);
                    return;
                }
            }
            self.awake_until = None;
        }
        if let Some(t) = self.turn.as_mut() {
            t.request = text.clone();
        }
        self.state = State::Thinking;
        if let Some(p) = self.pending_confirm.take() {
            let reply = commands::read_reply(&text, &p.question);
            let stage = match reply {
                commands::Reply::Yes => commands::Stage::Confirmed,
                commands::Reply::No => commands::Stage::Declined,
                commands::Reply::Other => commands::Stage::Cancelled,
            };
            out.push(Cmd::Log {
                turn,
                stage,
                invocation: p.invocation.clone(),
                transcript: text.clone(),
            });
            match reply {
                commands::Reply::Yes => {
                    self.run_command(turn, p.invocation, p.transcript, out);
                    return;
                }
                commands::Reply::No => {
                    self.say(turn, TurnOutcome::Declined, "Okay, I won't.", out);
                    return;
                }
                // Not an answer: the question is dropped and this is a request of its own.
                commands::Reply::Other => {}
            }
        }
        match self.settings.commands.match_transcript(&text) {
            Match::Command(inv) => self.command(turn, inv, text, false, out),
            Match::Near(options) => out.push(Cmd::Route {
                turn,
                text,
                options,
            }),
            Match::None => {
                self.set_outcome(TurnOutcome::Answered);
                out.push(Cmd::Respond { turn, text });
            }
        }
    }

    /// Answers the turn with a fixed sentence.
    fn say(&mut self, turn: TurnId, outcome: TurnOutcome, text: &str, out: &mut Vec<Cmd>) {
        if let Some(t) = self.turn.as_mut() {
            t.record.outcome = outcome;
            t.record.reply = text.to_string();
        }
        self.state = State::Thinking;
        out.push(Cmd::Say {
            turn,
            text: text.to_string(),
        });
    }

    fn command(
        &mut self,
        turn: TurnId,
        inv: Invocation,
        transcript: String,
        always_confirm: bool,
        out: &mut Vec<Cmd>,
    ) {
        let confirm = always_confirm
            || self
                .settings
                .commands
                .get(&inv.command)
                .is_some_and(|c| c.confirm);
        out.push(Cmd::Log {
            turn,
            stage: commands::Stage::Requested,
            invocation: inv.clone(),
            transcript: transcript.clone(),
        });
        if confirm {
            let question = format!(
                "Should I {}? Say yes or no.",
                self.settings.commands.describe(&inv)
            );
            self.pending_confirm = Some(Pending {
                invocation: inv,
                transcript,
                question: question.clone(),
                asked_in: turn,
                expires_at: None,
            });
            self.say(turn, TurnOutcome::Confirm, &question, out);
        } else {
            self.run_command(turn, inv, transcript, out);
        }
    }

    fn run_command(
        &mut self,
        turn: TurnId,
        inv: Invocation,
        transcript: String,
        out: &mut Vec<Cmd>,
    ) {
        if let Some(t) = self.turn.as_mut() {
            t.record.command = Some(inv.clone());
            t.record.outcome = TurnOutcome::Command;
        }
        out.push(Cmd::Act {
            turn,
            invocation: inv,
            transcript,
        });
    }
}

/// The transcript without its leading wake phrase, if it starts with one (fuzzily: "Hey,
/// Soto." matches "hey sotto").
pub fn strip_wake_phrase(transcript: &str, wake: &str) -> Option<String> {
    let wake = commands::normalise(wake);
    let heard: Vec<&str> = transcript.split_whitespace().collect();
    if heard.len() < wake.len() || wake.is_empty() {
        return None;
    }
    let lead = commands::normalise(&heard[..wake.len()].join(" "));
    let close = lead.len() == wake.len()
        && lead
            .iter()
            .zip(&wake)
            .all(|(h, w)| h == w || (w.chars().count() >= 4 && commands::char_distance(h, w) <= 1));
    close.then(|| {
        heard[wake.len()..]
            .join(" ")
            .trim_start_matches([',', '.', '!', '?', ' '])
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: u64) -> TurnId {
        TurnId::new(n).unwrap()
    }

    fn settings() -> Settings {
        Settings {
            commands: Commands::parse(
                std::path::Path::new("c.toml"),
                r#"
[[command]]
name = "lamp-on"
phrases = ["turn on the lamp"]
run = ["/bin/true"]
reply = "Done."

[[command]]
name = "delete"
phrases = ["delete everything"]
run = ["/bin/true"]
confirm = true
"#,
            )
            .unwrap(),
            ..Settings::default()
        }
    }

    fn reports(cmds: &[Cmd]) -> Vec<&TurnRecord> {
        cmds.iter()
            .filter_map(|c| match c {
                Cmd::Report(r) => Some(r.as_ref()),
                _ => None,
            })
            .collect()
    }

    /// Drives one turn up to its transcript; returns what the coordinator asks for, without
    /// the action-log lines (see `logged`).
    fn heard(c: &mut Coordinator, turn: u64, text: &str, t: Instant) -> Vec<Cmd> {
        heard_all(c, turn, text, t)
            .into_iter()
            .filter(|c| !matches!(c, Cmd::Log { .. }))
            .collect()
    }

    /// Drives one turn until its first audio plays; returns what the coordinator asks for then.
    fn speaking(c: &mut Coordinator, turn: u64, text: &str, t: Instant) -> Vec<Cmd> {
        heard(c, turn, text, t);
        let first_audio = Event::FirstAudio {
            turn: TurnId::new(turn).unwrap(),
            at: t,
            synth_ms: 1,
        };
        c.handle(first_audio, t)
    }

    fn heard_all(c: &mut Coordinator, turn: u64, text: &str, t: Instant) -> Vec<Cmd> {
        c.handle(Event::SpeechStarted { at: t }, t);
        c.handle(
            Event::UtteranceEnded {
                turn: TurnId::new(turn).unwrap(),
                ended_at: t,
                last_voiced_at: t,
            },
            t,
        );
        c.handle(
            Event::Transcript {
                turn: TurnId::new(turn).unwrap(),
                text: text.into(),
                at: t,
                stt_ms: 100,
            },
            t,
        )
    }

    fn logged(cmds: &[Cmd]) -> Vec<commands::Stage> {
        cmds.iter()
            .filter_map(|c| match c {
                Cmd::Log { stage, .. } => Some(*stage),
                _ => None,
            })
            .collect()
    }

    fn acts(cmds: &[Cmd]) -> usize {
        cmds.iter().filter(|c| matches!(c, Cmd::Act { .. })).count()
    }

    #[test]
    fn a_pending_confirmation_expires_and_then_never_runs() {
        use commands::Stage::*;
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut c = Coordinator::new(settings(), t0);
        let cmds = heard_all(&mut c, 1, "Delete everything", at(0));
        assert_eq!(logged(&cmds), vec![Requested]);
        // The question finishes playing at 2 s; 8 s later it has expired.
        c.handle(Event::Drained { turn: t(1) }, at(2));
        assert!(logged(&c.tick(at(9))).is_empty(), "not yet");
        assert_eq!(logged(&c.tick(at(10))), vec![Expired]);
        let cmds = heard_all(&mut c, 2, "Yes.", at(11));
        assert_eq!(
            acts(&cmds),
            0,
            "an expired confirmation does not run: {cmds:?}"
        );
    }

    #[test]
    fn another_request_cancels_a_pending_confirmation_and_is_answered() {
        use commands::Stage::*;
        let t0 = Instant::now();
        let mut c = Coordinator::new(settings(), t0);
        heard_all(&mut c, 1, "Delete everything", t0);
        c.handle(Event::Drained { turn: t(1) }, t0);
        let cmds = heard_all(&mut c, 2, "What is the capital of France?", t0);
        assert_eq!(logged(&cmds), vec![Cancelled]);
        assert!(
            cmds.iter().any(|c| matches!(c, Cmd::Respond { .. })),
            "{cmds:?}"
        );
        c.handle(Event::Drained { turn: t(2) }, t0);
        // The cancelled command is gone: a later "yes" runs nothing.
        let cmds = heard_all(&mut c, 3, "Yes.", t0);
        assert_eq!(acts(&cmds), 0);
    }

    #[test]
    fn negative_and_unclear_answers_through_the_coordinator_run_nothing() {
        let t0 = Instant::now();
        for reply in [
            "Please don't.",
            "No, don't do it.",
            "Okay, no, stop.",
            "Maybe.",
        ] {
            let mut c = Coordinator::new(settings(), t0);
            heard(&mut c, 1, "Delete everything", t0);
            c.handle(Event::Drained { turn: t(1) }, t0);
            let cmds = heard_all(&mut c, 2, reply, t0);
            assert_eq!(acts(&cmds), 0, "{reply:?}: {cmds:?}");
            assert_eq!(logged(&cmds), vec![commands::Stage::Declined], "{reply:?}");
        }
    }

    #[test]
    fn a_question_goes_through_every_state_and_is_reported_with_latencies() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut c = Coordinator::new(Settings::default(), t0);
        assert_eq!(c.state, State::Idle);
        c.handle(Event::SpeechStarted { at: at(0) }, at(0));
        assert_eq!(c.state, State::Listening);
        let cmds = c.handle(
            Event::UtteranceEnded {
                turn: t(1),
                ended_at: at(2600),
                last_voiced_at: at(2000),
            },
            at(2600),
        );
        assert_eq!(cmds, vec![Cmd::SetLive(Some(t(1)))]);
        assert_eq!(c.state, State::Transcribing);
        let cmds = c.handle(
            Event::Transcript {
                turn: t(1),
                text: " What is the capital of France?".into(),
                at: at(2900),
                stt_ms: 300,
            },
            at(2900),
        );
        assert_eq!(
            cmds,
            vec![Cmd::Respond {
                turn: t(1),
                text: "What is the capital of France?".into()
            }]
        );
        assert_eq!(c.state, State::Thinking);
        c.handle(
            Event::FirstToken {
                turn: t(1),
                at: at(3100),
            },
            at(3100),
        );
        c.handle(
            Event::FirstClause {
                turn: t(1),
                at: at(3300),
            },
            at(3300),
        );
        let cmds = c.handle(
            Event::FirstAudio {
                turn: t(1),
                at: at(3500),
                synth_ms: 150,
            },
            at(3500),
        );
        assert_eq!(cmds, vec![Cmd::Mute(true)], "the echo guard closes");
        assert_eq!(c.state, State::Speaking);
        c.handle(
            Event::ReplyDone {
                turn: t(1),
                text: "Paris.".into(),
                stats: ReplyStats::default(),
            },
            at(3600),
        );
        let cmds = c.handle(Event::Drained { turn: t(1) }, at(5000));
        let r = reports(&cmds);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].outcome, TurnOutcome::Answered);
        assert_eq!(r[0].reply, "Paris.");
        assert_eq!(
            r[0].latency,
            Latency {
                vad_end_ms: 600,
                transcript_ms: Some(900),
                first_token_ms: Some(1100),
                first_clause_ms: Some(1300),
                first_audio_ms: Some(1500),
                action_ms: None,
            }
        );
        assert_eq!(c.state, State::Idle);
        // The microphone opens again after the tail, not before.
        assert!(c.tick(at(5100)).is_empty());
        assert_eq!(c.tick(at(5300)), vec![Cmd::Mute(false)]);
    }

    #[test]
    fn barge_in_cancels_the_turn_before_stopping_playback() {
        let t0 = Instant::now();
        let mut c = Coordinator::new(
            Settings {
                barge_in: true,
                ..Settings::default()
            },
            t0,
        );
        let cmds = speaking(&mut c, 1, "Tell me a story.", t0);
        assert!(cmds.is_empty(), "no echo guard with barge-in");
        let speech = t0 + Duration::from_secs(2);
        let cmds = c.handle(Event::SpeechStarted { at: speech }, speech);
        assert_eq!(
            cmds,
            vec![Cmd::SetLive(None), Cmd::StopPlayback { detected: speech }]
        );
        assert_eq!(c.state, State::Listening);
        // Late messages of the cancelled turn change nothing.
        assert!(c.handle(Event::Drained { turn: t(1) }, speech).is_empty());
        let cmds = c.handle(
            Event::Stopped {
                detected: speech,
                at: speech + Duration::from_millis(7),
            },
            speech,
        );
        let r = reports(&cmds);
        assert_eq!(r[0].outcome, TurnOutcome::Interrupted);
        assert_eq!(r[0].barge_in_stop_ms, Some(7));
    }

    #[test]
    fn speech_starting_while_idle_lets_the_voice_rest_and_barge_in_does_not() {
        let t0 = Instant::now();
        let mut c = Coordinator::new(
            Settings {
                barge_in: true,
                ..Settings::default()
            },
            t0,
        );
        let started = c.handle(Event::SpeechStarted { at: t0 }, t0);
        assert_eq!(started, vec![Cmd::RestVoice]);
        speaking(&mut c, 1, "Hello.", t0);
        let barge_in = c.handle(Event::SpeechStarted { at: t0 }, t0);
        assert_eq!(
            barge_in,
            vec![Cmd::SetLive(None), Cmd::StopPlayback { detected: t0 }]
        );
    }

    #[test]
    fn without_barge_in_speech_while_speaking_is_ignored() {
        let t0 = Instant::now();
        let mut c = Coordinator::new(Settings::default(), t0);
        speaking(&mut c, 1, "Hello.", t0);
        assert!(c.handle(Event::SpeechStarted { at: t0 }, t0).is_empty());
        assert_eq!(c.state, State::Speaking);
    }

    #[test]
    fn a_newer_utterance_with_words_supersedes_a_turn_still_thinking() {
        let t0 = Instant::now();
        let mut c = Coordinator::new(Settings::default(), t0);
        heard(&mut c, 1, "What time is it?", t0);
        let ended = Event::UtteranceEnded {
            turn: t(2),
            ended_at: t0,
            last_voiced_at: t0,
        };
        assert!(
            c.handle(ended, t0).is_empty(),
            "nothing changes before its words are known"
        );
        let cmds = c.handle(
            Event::Transcript {
                turn: t(2),
                text: "No, what day is it?".into(),
                at: t0,
                stt_ms: 1,
            },
            t0,
        );
        assert_eq!(cmds[0], Cmd::SetLive(None));
        assert!(cmds.contains(&Cmd::SetLive(Some(t(2)))), "{cmds:?}");
        assert!(
            cmds.iter()
                .any(|c| matches!(c, Cmd::Respond { turn, text } if *turn == t(2) && text == "No, what day is it?")),
            "{cmds:?}"
        );
        // The old turn's reply is stale now.
        let stale = c.handle(Event::FirstToken { turn: t(1), at: t0 }, t0);
        assert!(stale.is_empty());
    }

    #[test]
    fn an_utterance_without_words_leaves_the_live_turn_alone() {
        let t0 = Instant::now();
        let mut c = Coordinator::new(Settings::default(), t0);
        heard(&mut c, 1, "Tell me a joke.", t0);
        c.handle(
            Event::UtteranceEnded {
                turn: t(2),
                ended_at: t0,
                last_voiced_at: t0,
            },
            t0,
        );
        let cmds = c.handle(
            Event::Transcript {
                turn: t(2),
                text: " ".into(),
                at: t0,
                stt_ms: 1,
            },
            t0,
        );
        assert!(
            matches!(&cmds[..], [Cmd::Report(r)] if r.outcome == TurnOutcome::Ignored && r.turn == t(2)),
            "{cmds:?}"
        );
        assert_eq!(c.state, State::Thinking);
        assert!(c.live(t(1)));
    }

    #[test]
    fn commands_run_and_confirmations_are_asked() {
        let t0 = Instant::now();
        let mut c = Coordinator::new(settings(), t0);
        let cmds = heard(&mut c, 1, "Turn on the lamp.", t0);
        assert!(
            matches!(&cmds[0], Cmd::Act { turn, invocation, .. } if *turn == t(1) && invocation.command == "lamp-on")
        );
        let cmds = c.handle(
            Event::ActionDone {
                turn: t(1),
                outcome: Outcome::Ok { exit_code: Some(0) },
            },
            t0,
        );
        assert_eq!(
            cmds,
            vec![Cmd::Say {
                turn: t(1),
                text: "Done.".into()
            }]
        );
        let r = c.handle(Event::Drained { turn: t(1) }, t0);
        assert_eq!(reports(&r)[0].outcome, TurnOutcome::Command);

        let cmds = heard(&mut c, 2, "Delete everything", t0);
        assert!(
            matches!(&cmds[0], Cmd::Say { text, .. } if text.starts_with("Should I delete everything?"))
        );
        c.handle(Event::Drained { turn: t(2) }, t0);
        let cmds = heard(&mut c, 3, "No.", t0);
        assert!(matches!(&cmds[0], Cmd::Say { text, .. } if text == "Okay, I won't."));
        c.handle(Event::Drained { turn: t(3) }, t0);
        heard(&mut c, 4, "Delete everything", t0);
        c.handle(Event::Drained { turn: t(4) }, t0);
        let cmds = heard_all(&mut c, 5, "Yes, do it.", t0);
        assert_eq!(logged(&cmds), vec![commands::Stage::Confirmed]);
        assert!(
            cmds.iter().any(
                |c| matches!(c, Cmd::Act { invocation, .. } if invocation.command == "delete")
            )
        );
    }

    #[test]
    fn a_near_miss_goes_to_the_llm_and_its_pick_is_confirmed_before_running() {
        let t0 = Instant::now();
        let mut c = Coordinator::new(settings(), t0);
        let cmds = heard(&mut c, 1, "Turn off the lamp.", t0);
        let Some(Cmd::Route { options, .. }) = cmds.first() else {
            panic!("{cmds:?}")
        };
        assert_eq!(options[0].command, "lamp-on");
        let cmds: Vec<Cmd> = c
            .handle(
                Event::Routed {
                    turn: t(1),
                    choice: Some(options[0].clone()),
                },
                t0,
            )
            .into_iter()
            .filter(|c| !matches!(c, Cmd::Log { .. }))
            .collect();
        assert!(
            matches!(&cmds[0], Cmd::Say { text, .. } if text.starts_with("Should I turn on the lamp?")),
            "{cmds:?}"
        );
        c.handle(Event::Drained { turn: t(1) }, t0);
        let cmds = heard(&mut c, 2, "No.", t0);
        assert!(matches!(&cmds[0], Cmd::Say { text, .. } if text == "Okay, I won't."));
        c.handle(Event::Drained { turn: t(2) }, t0);
        // The LLM picking none makes it a question for the LLM.
        let cmds = heard(&mut c, 3, "Turn off the lamp.", t0);
        assert!(matches!(&cmds[0], Cmd::Route { .. }));
        let cmds = c.handle(
            Event::Routed {
                turn: t(3),
                choice: None,
            },
            t0,
        );
        assert!(matches!(&cmds[0], Cmd::Respond { .. }), "{cmds:?}");
    }

    #[test]
    fn the_wake_phrase_gates_turns() {
        let t0 = Instant::now();
        let mut c = Coordinator::new(
            Settings {
                wake_phrase: Some("hey sotto".into()),
                ..Settings::default()
            },
            t0,
        );
        let cmds = heard(&mut c, 1, "What is the time?", t0);
        assert_eq!(reports(&cmds)[0].outcome, TurnOutcome::Ignored);
        let cmds = heard(&mut c, 2, "Hey, Soto. What is the time?", t0);
        assert_eq!(
            cmds,
            vec![Cmd::Respond {
                turn: t(2),
                text: "What is the time?".into()
            }]
        );
        c.handle(Event::Drained { turn: t(2) }, t0);
        let cmds = heard(&mut c, 3, "Hey Sotto.", t0);
        assert!(matches!(&cmds[0], Cmd::Say { text, .. } if text == "Yes?"));
        c.handle(Event::Drained { turn: t(3) }, t0);
        let cmds = heard(&mut c, 4, "Tell me a joke.", t0);
        assert!(matches!(&cmds[0], Cmd::Respond { .. }));
    }

    #[test]
    fn the_session_ends_after_max_turns_or_the_input() {
        let t0 = Instant::now();
        let mut c = Coordinator::new(
            Settings {
                max_turns: Some(1),
                ..Settings::default()
            },
            t0,
        );
        heard(&mut c, 1, "Hi.", t0);
        assert!(!c.tick(t0).contains(&Cmd::Quit), "not while a turn is live");
        let cmds = c.handle(Event::Drained { turn: t(1) }, t0);
        assert!(cmds.contains(&Cmd::Quit));

        let mut c = Coordinator::new(Settings::default(), t0);
        heard(&mut c, 1, "Hi.", t0);
        assert!(!c.handle(Event::InputEnded, t0).contains(&Cmd::Quit));
        assert!(
            c.handle(Event::Drained { turn: t(1) }, t0)
                .contains(&Cmd::Quit)
        );
    }
}

#[cfg(test)]
mod speculation_tests {
    use super::*;

    fn t(n: u64) -> TurnId {
        TurnId::new(n).unwrap()
    }

    fn settings() -> Settings {
        Settings {
            commands: Commands::parse(
                std::path::Path::new("c.toml"),
                r#"
[[command]]
name = "lamp-on"
phrases = ["turn on the lamp"]
run = ["/bin/true"]

[[command]]
name = "timer"
phrases = ["set a timer for {minutes} minutes"]
run = ["/bin/true", "{minutes}"]
slots.minutes = { kind = "number" }
"#,
            )
            .unwrap(),
            ..Settings::default()
        }
    }

    fn speculated(c: &mut Coordinator, turn: u64, text: &str, now: Instant) -> Vec<Cmd> {
        c.handle(
            Event::Paused {
                turn: t(turn),
                last_voiced_at: now,
            },
            now,
        );
        c.handle(
            Event::Speculated {
                turn: t(turn),
                text: text.into(),
                stt_ms: 150,
                last_voiced: Duration::from_secs(2),
                last_word_p: Some(0.9),
            },
            now,
        )
    }

    fn ended(c: &mut Coordinator, turn: u64, text: &str, now: Instant) -> Vec<Cmd> {
        c.handle(
            Event::UtteranceEnded {
                turn: t(turn),
                ended_at: now,
                last_voiced_at: now,
            },
            now,
        );
        c.handle(
            Event::Transcript {
                turn: t(turn),
                text: text.into(),
                at: now,
                stt_ms: 0,
            },
            now,
        )
    }

    #[test]
    fn plainly_complete_turns_end_early_and_hanging_ones_wait() {
        for done in [
            "What is the capital of France?",
            "Tell me a joke.",
            "Set a timer for ten minutes.",
            "Stop!",
            "What is 2 plus 2?",
        ] {
            assert!(plainly_complete(done), "{done:?}");
        }
        for hanging in [
            "Set a timer for",
            "Set a timer for.",
            "What is the capital of France and",
            "What is the capital of France and?",
            "What is 2 plus?",
            "So...",
            "My number is 555 12.",
            "Call me at five.",
            "The answer is the",
            "",
        ] {
            assert!(!plainly_complete(hanging), "{hanging:?}");
        }
    }

    #[test]
    fn a_complete_question_is_prefilled_and_ended_at_its_pause_and_answered_from_it() {
        let t0 = Instant::now();
        let mut c = Coordinator::new(settings(), t0);
        let cmds = speculated(&mut c, 1, "What is the capital of France?", t0);
        assert_eq!(
            cmds,
            vec![
                Cmd::Prefill {
                    turn: t(1),
                    text: "What is the capital of France?".into()
                },
                Cmd::EndUtterance {
                    turn: t(1),
                    last_voiced: Duration::from_secs(2)
                },
            ]
        );
        let cmds = ended(&mut c, 1, "What is the capital of France?", t0);
        assert_eq!(
            cmds,
            vec![Cmd::Respond {
                turn: t(1),
                text: "What is the capital of France?".into()
            }],
            "no discard: the prefill is the answer's prompt"
        );
        assert_eq!(c.speculation_stats.confirmed, 1);
        assert_eq!(c.speculation_stats.discarded, 0);
    }

    #[test]
    fn a_whole_command_ends_the_turn_even_when_its_last_word_is_unsure() {
        let now = Instant::now();
        let mut c = Coordinator::new(settings(), now);
        let cmds = c.handle(
            Event::Speculated {
                turn: t(1),
                text: "Turn on the lamp.".into(),
                stt_ms: 100,
                last_voiced: Duration::from_secs(2),
                last_word_p: Some(0.2),
            },
            now,
        );
        assert!(
            cmds.iter().any(|c| matches!(c, Cmd::EndUtterance { .. })),
            "{cmds:?}"
        );
    }

    #[test]
    fn a_last_word_the_recogniser_guessed_keeps_the_full_hangover() {
        let now = Instant::now();
        let mut c = Coordinator::new(settings(), now);
        c.handle(
            Event::Paused {
                turn: t(1),
                last_voiced_at: now,
            },
            now,
        );
        let cmds = c.handle(
            Event::Speculated {
                turn: t(1),
                text: "Set a timer for it.".into(),
                stt_ms: 100,
                last_voiced: Duration::from_secs(2),
                last_word_p: Some(0.36),
            },
            now,
        );
        assert!(
            !cmds.iter().any(|c| matches!(c, Cmd::EndUtterance { .. })),
            "{cmds:?}"
        );
        assert!(
            cmds.iter().any(|c| matches!(c, Cmd::Prefill { .. })),
            "the request is still prefilled in case the pause is the end: {cmds:?}"
        );
        assert!(sure_of_last_word(Some(SURE_LAST_WORD)));
        assert!(sure_of_last_word(None), "a recogniser that does not say");
    }

    #[test]
    fn speech_after_the_pause_discards_the_speculation_and_nothing_is_said_or_run() {
        let t0 = Instant::now();
        let mut c = Coordinator::new(settings(), t0);
        // "Set a timer for …" — hanging: prefilled, not ended.
        let cmds = speculated(&mut c, 1, "Set a timer for", t0);
        assert_eq!(
            cmds,
            vec![Cmd::Prefill {
                turn: t(1),
                text: "Set a timer for".into()
            }]
        );
        let cmds = c.handle(Event::Resumed { turn: t(1) }, t0);
        assert_eq!(cmds, vec![Cmd::Discard { turn: t(1) }]);
        // "… ten minutes." — one turn, one action.
        let cmds = ended(&mut c, 1, "Set a timer for 10 minutes.", t0);
        let acts: Vec<&Cmd> = cmds
            .iter()
            .filter(|c| matches!(c, Cmd::Act { .. }))
            .collect();
        assert_eq!(acts.len(), 1, "{cmds:?}");
        assert!(
            !cmds
                .iter()
                .any(|c| matches!(c, Cmd::Say { .. } | Cmd::Respond { .. }))
        );
        assert_eq!(c.speculation_stats.discarded, 1);
    }

    #[test]
    fn a_matched_command_ends_at_its_pause_and_runs_once_after_the_final_pass() {
        let t0 = Instant::now();
        let mut c = Coordinator::new(settings(), t0);
        let cmds = speculated(&mut c, 1, "Turn on the lamp.", t0);
        assert_eq!(
            cmds,
            vec![Cmd::EndUtterance {
                turn: t(1),
                last_voiced: Duration::from_secs(2)
            }],
            "no action on a speculation"
        );
        let cmds = ended(&mut c, 1, "Turn on the lamp.", t0);
        assert_eq!(
            cmds.iter().filter(|c| matches!(c, Cmd::Act { .. })).count(),
            1
        );
    }

    #[test]
    fn a_final_transcript_that_differs_discards_the_prefill_before_answering() {
        let t0 = Instant::now();
        let mut c = Coordinator::new(settings(), t0);
        speculated(&mut c, 1, "Tell me a joke.", t0);
        let cmds = ended(&mut c, 1, "Tell me a joke about cats.", t0);
        assert_eq!(
            cmds,
            vec![
                Cmd::Discard { turn: t(1) },
                Cmd::Respond {
                    turn: t(1),
                    text: "Tell me a joke about cats.".into()
                }
            ]
        );
    }

    #[test]
    fn no_speculation_while_a_reply_is_in_progress() {
        let t0 = Instant::now();
        let mut c = Coordinator::new(settings(), t0);
        ended(&mut c, 1, "What is the capital of France?", t0);
        assert!(speculated(&mut c, 2, "And Germany?", t0).is_empty());
    }
}
