//! The language model as a stage: the "llm" thread owns the model and its KV cache, turns a
//! request into a streamed reply, and shapes that reply into the clauses the voice speaks.
//!
//! Reply shaping ([`Shaper`], pure): the chunker cuts the token stream into clauses (the first
//! after three words and a comma); a reply ends after `max_sentences` sentences (a small model
//! rambles). After handing the first clause to the voice, the worker pauses decoding until the
//! coordinator says that clause is synthesized ([`Job`] `Resume`, at most
//! [`FIRST_CLAUSE_WAIT`]): on two cores, decoding alongside doubled the time to synthesize the
//! clause the user is waiting for, and the rest of the reply has the first clause's playing
//! time to catch up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use serde::Serialize;

use super::coordinator::Event;
use super::speak;
use super::{LiveTurn, StageError, TurnId};
use crate::chunker::{Chunk, Chunker};
use crate::commands::Invocation;

/// Longest the worker pauses for its first clause to be synthesized.
pub const FIRST_CLAUSE_WAIT: Duration = Duration::from_secs(2);

/// Timings of one generated reply.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ReplyStats {
    pub prompt_tokens: usize,
    pub prefilled_tokens: usize,
    pub tokens: usize,
    pub prefill_ms: u64,
    pub decode_ms: u64,
}

/// The language model, as the pipeline uses it.
pub trait Responder: Send {
    /// Streams the reply to `on_text`; stops early when `cancel` is set.
    fn respond(
        &mut self,
        text: &str,
        cancel: &AtomicBool,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<ReplyStats, StageError>;
    /// Picks one of `options` for `request`, or none (voice-command fallback).
    fn choose(&mut self, request: &str, options: &[String]) -> Result<Option<usize>, StageError>;
    /// Speculation: take `request` into the context ahead of its reply (a `respond` to the
    /// same text then starts generating at once). Nothing is generated.
    fn prefill(&mut self, _request: &str) -> Result<(), StageError> {
        Ok(())
    }
    /// Forgets a prefilled request.
    fn discard(&mut self) {}
}

/// The on-device LLM as a responder; the conversation carries over between turns.
pub struct Model {
    pub llm: crate::llm::Llm,
    pub params: crate::llm::GenParams,
}

impl Responder for Model {
    fn respond(
        &mut self,
        text: &str,
        cancel: &AtomicBool,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<ReplyStats, StageError> {
        let r = self.llm.respond(text, &self.params, cancel, on_text)?;
        Ok(ReplyStats {
            prompt_tokens: r.prompt_tokens,
            prefilled_tokens: r.prefilled_tokens,
            tokens: r.tokens,
            prefill_ms: r.prefill.as_millis() as u64,
            decode_ms: r.decode.as_millis() as u64,
        })
    }

    fn choose(&mut self, request: &str, options: &[String]) -> Result<Option<usize>, StageError> {
        Ok(self.llm.choose(request, options)?)
    }

    fn prefill(&mut self, request: &str) -> Result<(), StageError> {
        let took = self.llm.prefill(request, self.params.max_tokens)?;
        tracing::debug!(
            stage = "llm",
            ms = took.as_millis() as u64,
            "request prefilled on a pause"
        );
        Ok(())
    }

    fn discard(&mut self) {
        self.llm.discard_prefill();
    }
}

/// What the coordinator asks of the worker.
pub enum Job {
    Respond {
        turn: TurnId,
        text: String,
    },
    Route {
        turn: TurnId,
        text: String,
        options: Vec<Invocation>,
        descriptions: Vec<String>,
    },
    /// Speculation on a pause: prefill the request.
    Prefill {
        turn: TurnId,
        text: String,
    },
    /// The speculation on `turn` is void.
    Discard {
        turn: TurnId,
    },
}

/// Cuts a streamed reply into clauses and ends it after `max_sentences` sentences.
pub struct Shaper {
    chunker: Chunker,
    max_sentences: usize,
    sentences: usize,
    /// What is spoken, clause by clause.
    pub spoken: String,
}

impl Shaper {
    pub fn new(max_sentences: usize) -> Self {
        Self {
            chunker: Chunker::new(),
            max_sentences: max_sentences.max(1),
            sentences: 0,
            spoken: String::new(),
        }
    }

    /// The reply has said all it may.
    pub fn full(&self) -> bool {
        self.sentences >= self.max_sentences
    }

    /// Takes a piece of the stream; returns the clauses it completes (none once full).
    pub fn push(&mut self, piece: &str) -> Vec<Chunk> {
        let mut out = Vec::new();
        for clause in self.chunker.push_chunks(piece) {
            if self.full() {
                break;
            }
            if clause.text.ends_with(['.', '!', '?']) {
                self.sentences += 1;
            }
            self.spoken.push_str(&clause.text);
            self.spoken.push(' ');
            out.push(clause);
        }
        out
    }

    /// The end of the stream: what is left, if the reply may still speak.
    pub fn finish(&mut self) -> Option<Chunk> {
        let rest = self.chunker.finish_chunk().filter(|_| !self.full())?;
        self.spoken.push_str(&rest.text);
        Some(rest)
    }
}

/// The worker: runs until the job channel closes. Clauses go to the voice, reports to the
/// coordinator; `resume` carries the coordinator's go-ahead after the first clause.
pub fn run(
    responder: &mut dyn Responder,
    jobs: &Receiver<Job>,
    resume: &Receiver<TurnId>,
    live: &LiveTurn,
    events: &Sender<Event>,
    clauses: &Sender<speak::Job>,
    max_sentences: usize,
) -> Result<(), StageError> {
    for job in jobs.iter() {
        match job {
            Job::Prefill { turn, text } => {
                let _span = tracing::info_span!("turn", turn = turn.get()).entered();
                responder.prefill(&text)?;
            }
            Job::Discard { turn } => {
                let _span = tracing::info_span!("turn", turn = turn.get()).entered();
                responder.discard();
            }
            Job::Route {
                turn,
                text,
                options,
                descriptions,
            } => {
                let _span = tracing::info_span!("turn", turn = turn.get()).entered();
                let choice = responder
                    .choose(&text, &descriptions)?
                    .and_then(|i| options.get(i).cloned());
                if events.send(Event::Routed { turn, choice }).is_err() {
                    return Ok(());
                }
            }
            Job::Respond { turn, text } => {
                if !live.is(turn) {
                    continue;
                }
                let _span = tracing::info_span!("turn", turn = turn.get()).entered();
                let cancel = AtomicBool::new(false);
                let mut shaper = Shaper::new(max_sentences);
                let mut first = true;
                let mut first_token = true;
                let speak = |clause: Chunk, first: &mut bool| {
                    if *first {
                        let _ = events.send(Event::FirstClause {
                            turn,
                            at: Instant::now(),
                        });
                    }
                    let _ = clauses.send(speak::Job::Speak {
                        turn,
                        text: clause.text,
                        first: *first,
                        mid_clause: clause.mid_clause,
                    });
                    *first = false;
                };
                let stats = responder.respond(&text, &cancel, &mut |piece| {
                    if !live.is(turn) || shaper.full() {
                        cancel.store(true, Ordering::SeqCst);
                        return;
                    }
                    if first_token {
                        first_token = false;
                        let _ = events.send(Event::FirstToken {
                            turn,
                            at: Instant::now(),
                        });
                    }
                    for clause in shaper.push(piece) {
                        let was_first = first;
                        speak(clause, &mut first);
                        if was_first {
                            let deadline = Instant::now() + FIRST_CLAUSE_WAIT;
                            while let Ok(t) = resume.recv_deadline(deadline) {
                                if t == turn {
                                    break;
                                }
                            }
                        }
                    }
                })?;
                if live.is(turn) {
                    if let Some(rest) = shaper.finish() {
                        speak(rest, &mut first);
                    }
                    let _ = clauses.send(speak::Job::End { turn });
                }
                let done = Event::ReplyDone {
                    turn,
                    text: shaper.spoken,
                    stats,
                };
                if events.send(done).is_err() {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(max: usize, pieces: &[&str]) -> (Vec<String>, String) {
        let mut s = Shaper::new(max);
        let mut clauses = Vec::new();
        for p in pieces {
            clauses.extend(s.push(p).into_iter().map(|c| c.text));
        }
        clauses.extend(s.finish().map(|c| c.text));
        (clauses, s.spoken)
    }

    #[test]
    fn the_first_clause_comes_early_and_the_reply_stops_at_its_sentence_cap() {
        let pieces = [
            "The ", "capital ", "of ", "France, ", "as ", "you ", "know, ", "is ", "Paris. ",
            "It ", "is ", "lovely. ", "More ", "text",
        ];
        let (clauses, spoken) = shape(1, &pieces);
        assert_eq!(
            clauses,
            vec!["The capital of France,", "as you know, is Paris."]
        );
        assert!(!spoken.contains("lovely"), "{spoken}");
        let (clauses, spoken) = shape(2, &pieces);
        assert!(spoken.contains("It is lovely."), "{clauses:?}");
        assert!(!spoken.contains("More"), "{spoken}");
    }

    #[test]
    fn a_reply_without_punctuation_is_spoken_at_its_end() {
        let (clauses, spoken) = shape(1, &["Yes ", "of ", "course"]);
        assert_eq!(clauses, vec!["Yes of course"]);
        assert_eq!(spoken, "Yes of course");
    }
}
