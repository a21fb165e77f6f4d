//! On-device language model: SmolLM2-135M-Instruct (or another llama-architecture GGUF) on
//! sotto's own quantized forward pass ([`model`], kernels in [`quant`], threads in [`pool`]).
//!
//! [`Llm`] owns the weights, the KV cache, the tokenizer and the conversation. It is built once
//! (after the openness audit: it takes an [`AuditPass`]), warmed up once, and then answers turn
//! after turn on the thread that owns it. Tokens are streamed to a callback as they decode,
//! with incremental detokenisation that never splits a UTF-8 character. A cancellation flag is
//! checked before every token. The prompt is rendered with the chat template the GGUF carries;
//! when a new turn's tokens extend what is already in the KV cache, only the new suffix is
//! prefilled. The conversation is trimmed (oldest turns first) to fit the context window.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokenizers::Tokenizer;

use crate::audit::AuditPass;
use crate::models::gguf;

pub mod arena;
pub mod model;
pub mod pool;
pub mod quant;
mod sample;

use model::{Logits, Model};
pub use sample::Sampler;

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("{0}: not admitted by the openness audit; run the audit before loading a model")]
    NotAudited(PathBuf),
    #[error(transparent)]
    Model(#[from] crate::models::ModelError),
    #[error(transparent)]
    Load(#[from] model::ModelError),
    #[error("{path}: cannot load the tokenizer; run `sotto models import`")]
    Tokenizer {
        path: PathBuf,
        #[source]
        source: tokenizers::Error,
    },
    #[error("{path}: the GGUF has no chat template (tokenizer.chat_template)")]
    NoTemplate { path: PathBuf },
    #[error("{path}: the GGUF's chat template does not render")]
    Template {
        path: PathBuf,
        #[source]
        source: minijinja::Error,
    },
    #[error("tokenizing failed")]
    Tokenize(#[source] tokenizers::Error),
    #[error(
        "{path}: the model produced non-finite logits (NaN or infinity): the weights are corrupt"
    )]
    CorruptOutput { path: PathBuf },
    #[error("the prompt alone ({tokens} tokens) does not fit the context window ({context})")]
    PromptTooLong { tokens: usize, context: usize },
}

/// sotto's system prompt. SmolLM2-135M is a very small model: with its own default prompt
/// it often drifts (asked for the capital of France, greedy decoding rambles in French); asked
/// for one short sentence it answers plainly, which is also what a voice reply should be.
pub const DEFAULT_SYSTEM_PROMPT: &str =
    "You are a helpful assistant. Answer in one short sentence.";

/// GGUF `tokenizer.ggml.token_type` of control tokens.
const TOKEN_TYPE_CONTROL: u64 = 3;

/// How to sample.
#[derive(Clone, Debug)]
pub struct GenParams {
    /// 0 = greedy.
    pub temperature: f64,
    pub top_p: Option<f64>,
    pub seed: u64,
    /// 1.0 = none.
    pub repeat_penalty: f32,
    /// How many recent tokens the penalty looks at.
    pub repeat_last_n: usize,
    pub max_tokens: usize,
}

impl Default for GenParams {
    fn default() -> Self {
        Self {
            temperature: 0.2,
            top_p: Some(0.9),
            seed: 299_792_458,
            repeat_penalty: 1.1,
            repeat_last_n: 64,
            max_tokens: 256,
        }
    }
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    EndOfTurn,
    MaxTokens,
    Cancelled,
    ContextFull,
}

/// One finished reply.
#[derive(Clone, Debug, Serialize)]
pub struct Reply {
    pub text: String,
    pub tokens: usize,
    pub prompt_tokens: usize,
    /// Prompt tokens actually run (the rest came from the KV cache).
    pub prefilled_tokens: usize,
    pub stop: StopReason,
    pub prefill: Duration,
    pub decode: Duration,
    pub first_token: Duration,
}

/// A message put in the context ahead of its reply, with what it takes to take it back.
struct Prepared {
    user: String,
    history_before: Vec<Message>,
    cached_before: Vec<u32>,
    cached_text_before: String,
    /// Prompt tokens that were in the cache already.
    reuse: usize,
    prompt: Vec<u32>,
    rendered: String,
    /// The model's logits after the prompt's last token.
    logits: Vec<f32>,
    prefill: Duration,
}

/// The result of [`Llm::perplexity`].
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Perplexity {
    pub value: f64,
    /// Tokens scored.
    pub tokens: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

pub struct Llm {
    model: Model,
    tokenizer: Tokenizer,
    template: String,
    stop_ids: Vec<u32>,
    /// The token that ends a turn (ChatML's `<|im_end|>`): fed after a reply cut short, so
    /// the KV cache holds the turn as the template will render it.
    eos_id: Option<u32>,
    /// The token a prompt starts with when the GGUF asks for one (`add_bos_token`, on by
    /// default for SentencePiece vocabularies: Llama 2, TinyLlama), and its text.
    bos: Option<(u32, String)>,
    /// Token texts the chat template may use as `bos_token` / `eos_token`.
    bos_text: String,
    eos_text: String,
    context_tokens: usize,
    system_prompt: Option<String>,
    history: Vec<Message>,
    /// Tokens whose keys and values are in the model's cache, in order.
    cached: Vec<u32>,
    /// The text those tokens spell, as the chat template renders it. A new turn's prompt
    /// that starts with this text only needs its remainder encoded and prefilled (re-encoding
    /// the whole conversation could tokenize the reply differently from how it was generated).
    cached_text: String,
    /// A message prefilled ahead of its reply ([`Llm::prefill`]).
    prepared: Option<Prepared>,
    pub model_path: PathBuf,
}

impl Llm {
    /// Loads the GGUF and its tokenizer.json; matrix products run on `threads` threads.
    /// Logs load time.
    pub fn load(
        audited: &AuditPass,
        gguf_path: &Path,
        tokenizer_path: &Path,
        system_prompt: Option<String>,
        threads: usize,
    ) -> Result<Self, LlmError> {
        if !audited.covers(gguf_path) {
            return Err(LlmError::NotAudited(gguf_path.to_path_buf()));
        }
        let t0 = Instant::now();
        let header = gguf::Header::read(gguf_path)?;
        let template = header
            .get_str("tokenizer.chat_template")
            .ok_or_else(|| LlmError::NoTemplate {
                path: gguf_path.to_path_buf(),
            })?
            .to_string();
        let tokenizer =
            Tokenizer::from_file(tokenizer_path).map_err(|source| LlmError::Tokenizer {
                path: tokenizer_path.to_path_buf(),
                source,
            })?;
        // A chat model that emits any control token (end of turn, end of text, the start of
        // a new turn…) has finished its turn; decoding on would only produce invisible tokens.
        let mut stop_ids: Vec<u32> = header
            .get("tokenizer.ggml.token_type")
            .and_then(|v| v.as_array())
            .map(|types| {
                types
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| t.as_u64() == Some(TOKEN_TYPE_CONTROL))
                    .map(|(i, _)| i as u32)
                    .collect()
            })
            .unwrap_or_default();
        let eos_id = header
            .get("tokenizer.ggml.eos_token_id")
            .and_then(|v| v.as_u64())
            .map(|id| id as u32);
        stop_ids.extend(eos_id);
        let token_text = |key: &str| -> Option<String> {
            let id = header.get(key)?.as_u64()?;
            tokenizer.id_to_token(id as u32)
        };
        let bos_text = token_text("tokenizer.ggml.bos_token_id").unwrap_or_default();
        let eos_text = token_text("tokenizer.ggml.eos_token_id").unwrap_or_default();
        let add_bos = header
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.as_bool())
            .unwrap_or(header.get_str("tokenizer.ggml.model") == Some("llama"));
        let bos = header
            .get("tokenizer.ggml.bos_token_id")
            .and_then(|v| v.as_u64())
            .filter(|_| add_bos && !bos_text.is_empty())
            .map(|id| (id as u32, bos_text.clone()));
        stop_ids.sort_unstable();
        stop_ids.dedup();
        let model = Model::load(gguf_path, &header, threads)?;
        let context_tokens = model.config.context;
        tracing::info!(
            stage = "llm",
            model = %gguf_path.display(),
            ms = t0.elapsed().as_millis() as u64,
            context_tokens,
            threads = model.threads(),
            weight_mb = model.weight_bytes() >> 20,
            "llm loaded"
        );
        Ok(Self {
            model,
            tokenizer,
            template,
            stop_ids,
            eos_id,
            bos,
            bos_text,
            eos_text,
            context_tokens,
            system_prompt,
            history: Vec::new(),
            cached: Vec::new(),
            cached_text: String::new(),
            prepared: None,
            model_path: gguf_path.to_path_buf(),
        })
    }

    /// Gets the model ready for the first turn: prefills the system prompt (kept in the KV
    /// cache, so no turn prefills it again) and runs one decoding step (then forgets it), so
    /// the first turn costs what the tenth does.
    pub fn warm_up(&mut self) -> Result<Duration, LlmError> {
        let t0 = Instant::now();
        self.forget_cache();
        self.prefill_system()?;
        let keep = self.model.cached();
        self.model
            .forward(&[self.eos_id.unwrap_or(0)], Logits::Last);
        self.model.truncate(keep);
        let took = t0.elapsed();
        tracing::info!(
            stage = "llm",
            ms = took.as_millis() as u64,
            system_tokens = keep,
            "llm warmed up"
        );
        Ok(took)
    }

    /// Puts the rendered system prompt in the KV cache when the chat template renders it as a
    /// prefix of every conversation (ChatML does); otherwise leaves the cache empty.
    fn prefill_system(&mut self) -> Result<(), LlmError> {
        let Some(system) = self.system_prompt.clone() else {
            return Ok(());
        };
        let probe = [Message {
            role: "user".into(),
            content: "x".into(),
        }];
        let prefix = self.render_with_prompt(Some(&system), &[], false)?;
        let full = self.render(&probe)?;
        if prefix.is_empty() || !full.starts_with(&prefix) {
            return Ok(());
        }
        let ids = self.encode_prompt(&prefix)?;
        if ids.is_empty() || ids.len() >= self.context_tokens {
            return Ok(());
        }
        self.model.truncate(0);
        self.model.forward(&ids, Logits::Last);
        self.cached = ids;
        self.cached_text = prefix;
        Ok(())
    }

    /// Perplexity of the model on `text`, evaluated in windows of `window` tokens (each from
    /// an empty cache): exp of the mean negative log-likelihood of every token after the
    /// first of its window. Leaves the conversation as it was and the KV cache empty.
    pub fn perplexity(&mut self, text: &str, window: usize) -> Result<Perplexity, LlmError> {
        let ids = self.encode(text)?;
        let window = window.clamp(2, self.context_tokens);
        let mut nll = 0f64;
        let mut scored = 0usize;
        let vocab = self.model.config.vocab;
        for chunk in ids.chunks(window).filter(|c| c.len() >= 2) {
            self.forget_cache();
            let logits = self.model.forward(chunk, Logits::All);
            for (t, next) in chunk.iter().enumerate().skip(1) {
                let row = &logits[(t - 1) * vocab..t * vocab];
                let max = row.iter().fold(f32::NEG_INFINITY, |m, &l| m.max(l));
                let log_sum = row
                    .iter()
                    .map(|&l| ((l - max) as f64).exp())
                    .sum::<f64>()
                    .ln()
                    + max as f64;
                nll += log_sum - row[*next as usize] as f64;
                scored += 1;
            }
        }
        self.forget_cache();
        Ok(Perplexity {
            value: (nll / scored.max(1) as f64).exp(),
            tokens: scored,
        })
    }

    /// Forgets the conversation and the KV cache.
    pub fn reset(&mut self) {
        self.history.clear();
        self.forget_cache();
    }

    /// Drops the KV cache but keeps the conversation: the next turn prefills it all.
    pub fn forget_kv_cache(&mut self) {
        self.forget_cache();
    }

    fn forget_cache(&mut self) {
        self.prepared = None;
        self.cached.clear();
        self.cached_text.clear();
        self.model.truncate(0);
    }

    pub fn history(&self) -> &[Message] {
        &self.history
    }

    /// Replaces the conversation (one model serving several, as `sotto serve` does). The KV
    /// cache is kept: the next turn reuses whatever prefix the new conversation shares with it.
    pub fn set_history(&mut self, history: Vec<Message>) {
        self.discard_prefill();
        self.history = history;
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The prompt for the conversation so far, ending with the assistant's turn opener.
    pub fn render(&self, messages: &[Message]) -> Result<String, LlmError> {
        self.render_with(self.system_prompt.as_deref(), messages)
    }

    fn render_with(&self, system: Option<&str>, messages: &[Message]) -> Result<String, LlmError> {
        self.render_with_prompt(system, messages, true)
    }

    fn render_with_prompt(
        &self,
        system: Option<&str>,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, LlmError> {
        let mut env = minijinja::Environment::new();
        let bad = |source: minijinja::Error| LlmError::Template {
            path: self.model_path.clone(),
            source,
        };
        env.add_template("chat", &self.template).map_err(bad)?;
        let mut all = Vec::new();
        if let Some(sys) = system {
            all.push(Message {
                role: "system".into(),
                content: sys.to_string(),
            });
        }
        all.extend_from_slice(messages);
        env.get_template("chat")
            .map_err(bad)?
            .render(minijinja::context! {
                messages => minijinja::Value::from(minijinja::value::Serde(&all)),
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos_text,
                eos_token => &self.eos_text,
            })
            .map_err(bad)
    }

    /// Constrained choice for voice commands: which of `options` does the spoken `request`
    /// ask for, or none? Each option is put to the model as a yes/no question, and only the
    /// logits of the "Yes" and "No" tokens are read, so the answer is always one of the options
    /// or none. The option with the largest margin of "Yes" over "No" wins if that margin is
    /// positive. Leaves the conversation as it was (its KV cache is rebuilt on the next turn).
    pub fn choose(&mut self, request: &str, options: &[String]) -> Result<Option<usize>, LlmError> {
        // SentencePiece vocabularies spell a word at the start of a reply with its space mark.
        let token = |word: &str| {
            self.tokenizer
                .token_to_id(word)
                .or_else(|| self.tokenizer.token_to_id(&format!("\u{2581}{word}")))
        };
        let (Some(yes), Some(no)) = (token("Yes"), token("No")) else {
            return Ok(None);
        };
        let system = "You decide whether a spoken request asks for a given action. \
                      Answer Yes or No.";
        let mut margins = Vec::new();
        for option in options {
            let user = format!(
                "Request: \"{request}\"\nAction: {option}\nDoes the request ask for this action?"
            );
            let prompt = self.render_with(
                Some(system),
                &[Message {
                    role: "user".into(),
                    content: user,
                }],
            )?;
            let ids = self.encode_prompt(&prompt)?;
            if ids.len() + 1 >= self.context_tokens {
                return Err(LlmError::PromptTooLong {
                    tokens: ids.len(),
                    context: self.context_tokens,
                });
            }
            self.forget_cache();
            let logits = self.model.forward(&ids, Logits::Last);
            let logit = |id: u32| logits.get(id as usize).copied().unwrap_or(f32::MIN);
            margins.push(logit(yes) - logit(no));
        }
        // The routing prompts are in the KV cache now; the next turn prefills afresh.
        self.forget_cache();
        let best = margins
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .filter(|(_, m)| **m > 0.0)
            .map(|(i, _)| i);
        tracing::info!(stage = "llm", request, ?margins, choice = ?best, "command routed");
        Ok(best)
    }

    /// Encodes a whole rendered prompt: the BOS token first when the model wants one and the
    /// chat template did not write it.
    fn encode_prompt(&self, text: &str) -> Result<Vec<u32>, LlmError> {
        let mut ids = self.encode(text)?;
        if let Some((bos, bos_text)) = &self.bos
            && !text.starts_with(bos_text.as_str())
        {
            ids.insert(0, *bos);
        }
        Ok(ids)
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>, LlmError> {
        self.tokenizer
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(LlmError::Tokenize)
    }

    /// Puts the user's message in the model's context ahead of time (speculation: the
    /// speaker paused and may be done). A [`Llm::respond`] to the same message then starts
    /// generating at once; any other call takes the message back out first.
    pub fn prefill(&mut self, user: &str, max_tokens: usize) -> Result<Duration, LlmError> {
        self.discard_prefill();
        let p = self.prepare(user, max_tokens)?;
        let took = p.prefill;
        self.prepared = Some(p);
        Ok(took)
    }

    /// Takes a prefilled message back out, as if it had never been prefilled.
    pub fn discard_prefill(&mut self) {
        if let Some(p) = self.prepared.take() {
            self.history = p.history_before;
            if p.reuse > 0 {
                self.model.truncate(p.reuse);
                self.cached = p.cached_before;
                self.cached_text = p.cached_text_before;
            } else {
                self.forget_cache();
            }
        }
    }

    /// Adds the user's message to the conversation and runs the prompt's new tokens through
    /// the model, keeping the prompt plus `max_tokens` inside the context (oldest turns go).
    fn prepare(&mut self, user: &str, max_tokens: usize) -> Result<Prepared, LlmError> {
        let t0 = Instant::now();
        let history_before = self.history.clone();
        let cached_before = self.cached.clone();
        let cached_text_before = self.cached_text.clone();
        self.history.push(Message {
            role: "user".into(),
            content: user.to_string(),
        });
        // Keep the prompt plus the reply inside the context: drop the oldest turns.
        let budget = self.context_tokens.saturating_sub(max_tokens.max(1));
        let mut prompt = self.encode_prompt(&self.render(&self.history)?)?;
        while prompt.len() > budget && self.history.len() > 1 {
            self.history.drain(..self.history.len().min(2) - 1);
            prompt = self.encode_prompt(&self.render(&self.history)?)?;
        }
        if prompt.len() > budget {
            self.history = history_before;
            return Err(LlmError::PromptTooLong {
                tokens: prompt.len(),
                context: budget,
            });
        }
        let rendered = self.render(&self.history)?;
        // Reuse the KV cache when the conversation only grew since it was filled.
        let reuse = match rendered.strip_prefix(self.cached_text.as_str()) {
            Some(rest) if !self.cached.is_empty() => {
                prompt = self.cached.clone();
                prompt.extend(self.encode(rest)?);
                self.cached.len()
            }
            _ => {
                self.forget_cache();
                0
            }
        };
        self.model.truncate(reuse);
        let logits = self.model.forward(&prompt[reuse..], Logits::Last).to_vec();
        self.cached = prompt.clone();
        self.cached_text = rendered.clone();
        Ok(Prepared {
            user: user.to_string(),
            history_before,
            cached_before,
            cached_text_before,
            reuse,
            prompt,
            rendered,
            logits,
            prefill: t0.elapsed(),
        })
    }

    /// Adds the user's message, generates the reply (streamed to `on_text`), and keeps both
    /// in the conversation. A cancelled reply is kept as far as it got.
    pub fn respond(
        &mut self,
        user: &str,
        params: &GenParams,
        cancel: &AtomicBool,
        mut on_text: impl FnMut(&str),
    ) -> Result<Reply, LlmError> {
        let t0 = Instant::now();
        let (p, prefill) = match self.prepared.take() {
            // The speculation was right: the prompt is in the cache already.
            Some(p) if p.user == user => (p, Duration::ZERO),
            other => {
                if let Some(p) = other {
                    self.prepared = Some(p);
                    self.discard_prefill();
                }
                let p = self.prepare(user, params.max_tokens)?;
                let took = p.prefill;
                (p, took)
            }
        };
        let Prepared {
            reuse,
            prompt,
            rendered,
            mut logits,
            ..
        } = p;
        let mut sampler = Sampler::new(params);
        let mut out_ids: Vec<u32> = Vec::new();
        let mut detok = Detokenizer::default();
        let mut text = String::new();
        let mut first_token = Duration::ZERO;
        let mut stop_token = None;
        let t1 = Instant::now();
        let stop = loop {
            if cancel.load(Ordering::Relaxed) {
                break StopReason::Cancelled;
            }
            if out_ids.len() >= params.max_tokens {
                break StopReason::MaxTokens;
            }
            if self.cached.len() >= self.context_tokens {
                break StopReason::ContextFull;
            }
            let recent = self.cached.len().saturating_sub(params.repeat_last_n);
            let next = sampler.sample(&mut logits, &self.cached[recent..]);
            if !next.is_finite_logits {
                return Err(LlmError::CorruptOutput {
                    path: self.model_path.clone(),
                });
            }
            let next = next.token;
            if out_ids.is_empty() {
                first_token = t0.elapsed();
            }
            if self.stop_ids.contains(&next) {
                // The end-of-turn token belongs in the cache, as the template writes it.
                self.feed(next, &mut logits)?;
                stop_token = self.tokenizer.id_to_token(next);
                break StopReason::EndOfTurn;
            }
            out_ids.push(next);
            if let Some(piece) = detok.push(&self.tokenizer, next) {
                text.push_str(&piece);
                on_text(&piece);
            }
            self.feed(next, &mut logits)?;
        };
        if let Some(rest) = detok.flush(&self.tokenizer) {
            text.push_str(&rest);
            on_text(&rest);
        }
        // A reply cut short (cancelled, or at the token limit) is closed with the end-of-turn
        // token, so the next turn still extends what is cached and prefills only its own
        // message. Without one, the next turn prefills the whole conversation.
        if stop_token.is_none()
            && let Some(eos) = self.eos_id
            && self.cached.len() < self.context_tokens
        {
            self.feed(eos, &mut logits)?;
            stop_token = self.tokenizer.id_to_token(eos);
        }
        match stop_token {
            Some(end) => self.cached_text = format!("{rendered}{text}{end}"),
            None => self.forget_cache(),
        }
        self.history.push(Message {
            role: "assistant".into(),
            content: text.clone(),
        });
        let reply = Reply {
            text,
            tokens: out_ids.len(),
            prompt_tokens: prompt.len(),
            prefilled_tokens: prompt.len() - reuse,
            stop,
            prefill,
            decode: t1.elapsed(),
            first_token,
        };
        tracing::info!(
            stage = "llm",
            prompt_tokens = reply.prompt_tokens,
            prefilled = reply.prefilled_tokens,
            tokens = reply.tokens,
            prefill_ms = prefill.as_millis() as u64,
            decode_ms = reply.decode.as_millis() as u64,
            stop = ?reply.stop,
            "reply generated"
        );
        Ok(reply)
    }

    /// Runs one token through the model, updating the logits and the cache record.
    fn feed(&mut self, token: u32, logits: &mut Vec<f32>) -> Result<(), LlmError> {
        let out = self.model.forward(&[token], Logits::Last);
        logits.clear();
        logits.extend_from_slice(out);
        self.cached.push(token);
        Ok(())
    }
}

/// Incremental detokenisation: decodes the tokens of a reply as they come and hands out only
/// text that is complete (no half UTF-8 character, no byte-level fragment).
#[derive(Default)]
pub struct Detokenizer {
    ids: Vec<u32>,
    /// Text already handed out.
    emitted: usize,
}

impl Detokenizer {
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Option<String> {
        self.ids.push(id);
        let text = tok.decode(&self.ids, true).ok()?;
        // A trailing U+FFFD means a multi-byte character is still incomplete.
        if text.ends_with('\u{FFFD}') || text.len() <= self.emitted {
            return None;
        }
        let piece = text.get(self.emitted..)?.to_string();
        self.emitted = text.len();
        Some(piece)
    }

    pub fn flush(&mut self, tok: &Tokenizer) -> Option<String> {
        let text = tok.decode(&self.ids, true).ok()?;
        let piece = text.get(self.emitted..)?.to_string();
        self.emitted = text.len();
        (!piece.is_empty()).then_some(piece)
    }
}
