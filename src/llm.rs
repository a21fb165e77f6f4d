//! On-device language model: SmolLM2-135M-Instruct (GGUF) through candle's quantized llama.
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

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use candle_transformers::models::quantized_llama::ModelWeights;
use serde::Serialize;
use tokenizers::Tokenizer;

use crate::audit::AuditPass;
use crate::models::gguf;

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("{0}: not admitted by the openness audit; run the audit before loading a model")]
    NotAudited(PathBuf),
    #[error(transparent)]
    Model(#[from] crate::models::ModelError),
    #[error("{path}: cannot load the model")]
    Load {
        path: PathBuf,
        #[source]
        source: candle_core::Error,
    },
    #[error("{path}: cannot load the tokenizer ({reason}); run `sotto models import`")]
    Tokenizer { path: PathBuf, reason: String },
    #[error("{path}: the GGUF has no usable chat template ({reason})")]
    Template { path: PathBuf, reason: String },
    #[error("generation failed")]
    Generate(#[source] candle_core::Error),
    #[error("tokenizing failed: {0}")]
    Tokenize(String),
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

#[derive(Clone, Debug, Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

pub struct Llm {
    model: ModelWeights,
    tokenizer: Tokenizer,
    device: Device,
    template: String,
    stop_ids: Vec<u32>,
    /// The token that ends a turn (ChatML's `<|im_end|>`): fed after a reply cut short, so
    /// the KV cache holds the turn as the template will render it.
    eos_id: Option<u32>,
    context_tokens: usize,
    system_prompt: Option<String>,
    history: Vec<Message>,
    /// Tokens whose keys and values are in the model's cache, in order.
    cached: Vec<u32>,
    /// The text those tokens spell, as the chat template renders it. A new turn's prompt
    /// that starts with this text only needs its remainder encoded and prefilled (re-encoding
    /// the whole conversation could tokenize the reply differently from how it was generated).
    cached_text: String,
    pub model_path: PathBuf,
}

impl Llm {
    /// Loads the GGUF and its tokenizer.json. Logs load time.
    pub fn load(
        audited: &AuditPass,
        gguf_path: &Path,
        tokenizer_path: &Path,
        system_prompt: Option<String>,
    ) -> Result<Self, LlmError> {
        if !audited.covers(gguf_path) {
            return Err(LlmError::NotAudited(gguf_path.to_path_buf()));
        }
        let t0 = Instant::now();
        let header = gguf::Header::read(gguf_path)?;
        let template = header
            .get_str("tokenizer.chat_template")
            .ok_or_else(|| LlmError::Template {
                path: gguf_path.to_path_buf(),
                reason: "no tokenizer.chat_template".into(),
            })?
            .to_string();
        let context_tokens = header
            .metadata
            .iter()
            .find(|(k, _)| k.ends_with(".context_length"))
            .and_then(|(_, v)| v.as_u64())
            .unwrap_or(2048) as usize;
        let tokenizer = Tokenizer::from_file(tokenizer_path).map_err(|e| LlmError::Tokenizer {
            path: tokenizer_path.to_path_buf(),
            reason: e.to_string(),
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
        stop_ids.sort_unstable();
        stop_ids.dedup();
        let device = Device::Cpu;
        let load = |source| LlmError::Load {
            path: gguf_path.to_path_buf(),
            source,
        };
        let mut file = std::fs::File::open(gguf_path)
            .map_err(|e| crate::models::ModelError::io(gguf_path, e))?;
        let content = gguf_file::Content::read(&mut file).map_err(load)?;
        let model = ModelWeights::from_gguf(content, &mut file, &device).map_err(load)?;
        tracing::info!(
            stage = "llm",
            model = %gguf_path.display(),
            ms = t0.elapsed().as_millis() as u64,
            context_tokens,
            "llm loaded"
        );
        Ok(Self {
            model,
            tokenizer,
            device,
            template,
            stop_ids,
            eos_id,
            context_tokens,
            system_prompt,
            history: Vec::new(),
            cached: Vec::new(),
            cached_text: String::new(),
            model_path: gguf_path.to_path_buf(),
        })
    }

    /// Runs one short generation so the first real turn does not pay for lazy setup, then
    /// forgets it.
    pub fn warm_up(&mut self) -> Result<Duration, LlmError> {
        let t0 = Instant::now();
        let params = GenParams {
            max_tokens: 2,
            temperature: 0.0,
            ..GenParams::default()
        };
        self.respond("Hi", &params, &AtomicBool::new(false), |_| {})?;
        self.reset();
        let took = t0.elapsed();
        tracing::info!(stage = "llm", ms = took.as_millis() as u64, "llm warmed up");
        Ok(took)
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
        self.cached.clear();
        self.cached_text.clear();
        self.model.clear_kv_cache();
    }

    pub fn history(&self) -> &[Message] {
        &self.history
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The prompt for the conversation so far, ending with the assistant's turn opener.
    pub fn render(&self, messages: &[Message]) -> Result<String, LlmError> {
        self.render_with(self.system_prompt.as_deref(), messages)
    }

    fn render_with(&self, system: Option<&str>, messages: &[Message]) -> Result<String, LlmError> {
        let mut env = minijinja::Environment::new();
        let bad = |e: minijinja::Error| LlmError::Template {
            path: self.model_path.clone(),
            reason: e.to_string(),
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
                add_generation_prompt => true,
                bos_token => "",
                eos_token => "",
            })
            .map_err(bad)
    }

    /// Constrained choice for voice commands: which of `options` does the spoken `request`
    /// ask for, or none? Each option is put to the model as a yes/no question, and only the
    /// logits of the "Yes" and "No" tokens are read, so the answer is always one of the options
    /// or none. The option with the largest margin of "Yes" over "No" wins if that margin is
    /// positive. Leaves the conversation as it was (its KV cache is rebuilt on the next turn).
    pub fn choose(&mut self, request: &str, options: &[String]) -> Result<Option<usize>, LlmError> {
        let (Some(yes), Some(no)) = (
            self.tokenizer.token_to_id("Yes"),
            self.tokenizer.token_to_id("No"),
        ) else {
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
            let ids = self.encode(&prompt)?;
            if ids.len() + 1 >= self.context_tokens {
                return Err(LlmError::PromptTooLong {
                    tokens: ids.len(),
                    context: self.context_tokens,
                });
            }
            self.forget_cache();
            let logits = Tensor::new(ids.as_slice(), &self.device)
                .and_then(|t| t.unsqueeze(0))
                .and_then(|t| self.model.forward(&t, 0))
                .and_then(|l| l.squeeze(0))
                .and_then(|l| l.to_dtype(candle_core::DType::F32))
                .and_then(|l| l.to_vec1::<f32>())
                .map_err(LlmError::Generate)?;
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

    fn encode(&self, text: &str) -> Result<Vec<u32>, LlmError> {
        self.tokenizer
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| LlmError::Tokenize(e.to_string()))
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
        self.history.push(Message {
            role: "user".into(),
            content: user.to_string(),
        });
        // Keep the prompt plus the reply inside the context: drop the oldest turns.
        let budget = self.context_tokens.saturating_sub(params.max_tokens.max(1));
        let mut prompt = self.encode(&self.render(&self.history)?)?;
        while prompt.len() > budget && self.history.len() > 1 {
            self.history.drain(..self.history.len().min(2) - 1);
            prompt = self.encode(&self.render(&self.history)?)?;
        }
        if prompt.len() > budget {
            self.history.pop();
            return Err(LlmError::PromptTooLong {
                tokens: prompt.len(),
                context: budget,
            });
        }
        let t0 = Instant::now();
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
        let gen_err = LlmError::Generate;
        let input = Tensor::new(&prompt[reuse..], &self.device)
            .and_then(|t| t.unsqueeze(0))
            .map_err(gen_err)?;
        let mut logits = self
            .model
            .forward(&input, reuse)
            .and_then(|l| l.squeeze(0))
            .map_err(gen_err)?;
        self.cached = prompt.clone();
        let prefill = t0.elapsed();

        let sampling = if params.temperature <= 0.0 {
            Sampling::ArgMax
        } else {
            match params.top_p {
                Some(p) => Sampling::TopP {
                    p,
                    temperature: params.temperature,
                },
                None => Sampling::All {
                    temperature: params.temperature,
                },
            }
        };
        let mut sampler = LogitsProcessor::from_sampling(params.seed, sampling);
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
            let penalised = if params.repeat_penalty == 1.0 {
                logits.clone()
            } else {
                let start = self.cached.len().saturating_sub(params.repeat_last_n);
                candle_transformers::utils::apply_repeat_penalty(
                    &logits,
                    params.repeat_penalty,
                    &self.cached[start..],
                )
                .map_err(gen_err)?
            };
            let next = sampler.sample(&penalised).map_err(gen_err)?;
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
    fn feed(&mut self, token: u32, logits: &mut Tensor) -> Result<(), LlmError> {
        let input = Tensor::new(&[token], &self.device)
            .and_then(|t| t.unsqueeze(0))
            .map_err(LlmError::Generate)?;
        *logits = self
            .model
            .forward(&input, self.cached.len())
            .and_then(|l| l.squeeze(0))
            .map_err(LlmError::Generate)?;
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
