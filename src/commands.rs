//! Voice commands: a TOML file of phrases (with slots) mapped to allowlisted actions.
//!
//! Three parts, each testable alone:
//! - [`Commands::load`] parses and validates the file (unknown keys rejected with their line;
//!   a program must be fixed, never a slot; every `{slot}` must be declared).
//! - [`Commands::match_transcript`] is pure, deterministic fuzzy matching: word-level edit
//!   distance against each phrase, where filler words ("please", "can you") cost little and a
//!   changed word ("on" for "off") costs a whole word. A clear match is taken; a near miss is
//!   handed to the LLM, which may only pick one of the near misses or none
//!   ([`crate::llm::Llm::choose`]); anything else is not a command.
//! - [`execute`] runs an action. A transcript never reaches a shell: programs run directly
//!   with fixed arguments, and a slot's value is substituted only after it passed its own
//!   validation (one of the listed values, or plain words that cannot start an option).
//!
//! Every action is appended to the action log (JSON lines) by [`ActionLog`].
//!
//! ```toml
//! [[command]]
//! name = "lamp-on"
//! phrases = ["turn on the lamp", "lamp on", "switch the lamp on"]
//! run = ["/usr/local/bin/lampctl", "on"]
//! reply = "The lamp is on."
//!
//! [[command]]
//! name = "note"
//! phrases = ["take a note {text}", "note {text}"]
//! run = ["notes-add", "{text}"]
//! slots.text = { kind = "text" }
//! confirm = true
//! ```

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum CommandsError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// A clear match needs at least this score (1 = word for word).
pub const MATCH_SCORE: f32 = 0.8;
/// Phrases scoring from here up to [`MATCH_SCORE`] are near misses the LLM may pick from.
pub const NEAR_SCORE: f32 = 0.6;
/// Longest value a free-text slot takes, in characters.
const MAX_SLOT_CHARS: usize = 120;
/// How long a program may run before it is killed.
const RUN_TIMEOUT: Duration = Duration::from_secs(10);

/// Words a speaker adds around a command; inserting or dropping one costs 0.15 of a word.
const FILLER: &[&str] = &[
    "please", "can", "could", "would", "will", "you", "hey", "sotto", "now", "the", "a", "an",
    "for", "me", "just", "ok", "okay", "and",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    command: Vec<RawCommand>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommand {
    name: String,
    phrases: Vec<String>,
    #[serde(default)]
    slots: BTreeMap<String, RawSlot>,
    run: Option<Vec<String>>,
    keys: Option<String>,
    open: Option<String>,
    #[serde(rename = "type")]
    type_text: Option<String>,
    say: Option<String>,
    reply: Option<String>,
    #[serde(default)]
    confirm: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlot {
    values: Option<Vec<String>>,
    kind: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Slot {
    /// One of these (matched fuzzily, substituted as written here).
    Values(Vec<String>),
    /// Plain words: letters, digits, spaces and `'.,-` — never a leading `-`.
    Text,
    /// A whole number, in digits or words ("five").
    Number,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Run(Vec<String>),
    Keys(String),
    Open(String),
    Type(String),
    Say(String),
}

#[derive(Clone, Debug)]
pub struct Command {
    pub name: String,
    pub phrases: Vec<String>,
    pub slots: BTreeMap<String, Slot>,
    pub action: Action,
    pub reply: Option<String>,
    pub confirm: bool,
}

/// A command chosen for a transcript, with its slot values.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Invocation {
    pub command: String,
    pub slots: BTreeMap<String, String>,
    pub score: f32,
}

/// What a transcript means to the commands.
#[derive(Clone, Debug, PartialEq)]
pub enum Match {
    Command(Invocation),
    /// Near misses, best first: the LLM may pick one or none.
    Near(Vec<Invocation>),
    None,
}

#[derive(Clone, Debug, Default)]
pub struct Commands {
    pub commands: Vec<Command>,
    pub path: Option<PathBuf>,
}

impl Commands {
    pub fn load(path: &Path) -> Result<Self, CommandsError> {
        let text = std::fs::read_to_string(path).map_err(|source| CommandsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, CommandsError> {
        let invalid = |message: String| CommandsError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let mut commands = Vec::new();
        for c in raw.command {
            let at = format!("command {:?}", c.name);
            if c.phrases.is_empty() {
                return Err(invalid(format!("{at}: no phrases")));
            }
            let mut slots = BTreeMap::new();
            for (name, s) in c.slots {
                let slot = match (s.values, s.kind.as_deref()) {
                    (Some(v), None) if !v.is_empty() => {
                        if let Some(bad) = v.iter().find(|v| validate_text(v).is_none()) {
                            return Err(invalid(format!(
                                "{at}: slot {name}: value {bad:?} is not plain words"
                            )));
                        }
                        Slot::Values(v)
                    }
                    (None, Some("text")) => Slot::Text,
                    (None, Some("number")) => Slot::Number,
                    _ => {
                        return Err(invalid(format!(
                            "{at}: slot {name} needs either `values = [...]` or `kind = \"text\"` / `\"number\"`"
                        )));
                    }
                };
                slots.insert(name, slot);
            }
            let actions: Vec<Action> = [
                c.run.map(Action::Run),
                c.keys.map(Action::Keys),
                c.open.map(Action::Open),
                c.type_text.map(Action::Type),
                c.say.map(Action::Say),
            ]
            .into_iter()
            .flatten()
            .collect();
            let [action] = <[Action; 1]>::try_from(actions).map_err(|a| {
                invalid(format!(
                    "{at}: needs exactly one action of run, keys, open, type, say (has {})",
                    a.len()
                ))
            })?;
            if let Action::Run(argv) = &action {
                match argv.first() {
                    None => return Err(invalid(format!("{at}: `run` is empty"))),
                    Some(p) if p.contains('{') => {
                        return Err(invalid(format!(
                            "{at}: the program ({p:?}) must be fixed, not a slot"
                        )));
                    }
                    _ => {}
                }
            }
            // Every {slot} used must be declared, in phrases and in the action.
            let mut used: Vec<String> = c.phrases.iter().flat_map(|p| placeholders(p)).collect();
            match &action {
                Action::Run(argv) => used.extend(argv.iter().flat_map(|a| placeholders(a))),
                Action::Keys(s) | Action::Open(s) | Action::Type(s) | Action::Say(s) => {
                    used.extend(placeholders(s))
                }
            }
            if let Some(r) = &c.reply {
                used.extend(placeholders(r));
            }
            if let Some(undeclared) = used.iter().find(|u| !slots.contains_key(*u)) {
                return Err(invalid(format!(
                    "{at}: {{{undeclared}}} is used but not declared under slots"
                )));
            }
            for p in &c.phrases {
                if placeholders(p).len() > 1
                    && placeholders(p)
                        .iter()
                        .any(|s| !matches!(slots[s], Slot::Values(_)))
                {
                    return Err(invalid(format!(
                        "{at}: phrase {p:?}: only one free (text or number) slot per phrase"
                    )));
                }
            }
            commands.push(Command {
                name: c.name,
                phrases: c.phrases,
                slots,
                action,
                reply: c.reply,
                confirm: c.confirm,
            });
        }
        Ok(Self {
            commands,
            path: Some(path.to_path_buf()),
        })
    }

    pub fn get(&self, name: &str) -> Option<&Command> {
        self.commands.iter().find(|c| c.name == name)
    }

    /// Deterministic fuzzy matching of a transcript against every phrase.
    pub fn match_transcript(&self, transcript: &str) -> Match {
        let words = normalise(transcript);
        if words.is_empty() {
            return Match::None;
        }
        let mut scored: Vec<Invocation> = Vec::new();
        for c in &self.commands {
            let best = c
                .phrases
                .iter()
                .filter_map(|p| match_phrase(p, &c.slots, &words))
                .max_by(|a, b| a.1.total_cmp(&b.1));
            if let Some((slots, score)) = best {
                scored.push(Invocation {
                    command: c.name.clone(),
                    slots,
                    score,
                });
            }
        }
        scored.sort_by(|a, b| b.score.total_cmp(&a.score));
        match scored.first() {
            Some(best) if best.score >= MATCH_SCORE => {
                // Two commands equally close is not a clear match.
                let tie = scored
                    .get(1)
                    .is_some_and(|s| s.score >= best.score - 0.01 && s.command != best.command);
                if tie {
                    Match::Near(scored.into_iter().take(5).collect())
                } else {
                    Match::Command(best.clone())
                }
            }
            Some(best) if best.score >= NEAR_SCORE => Match::Near(
                scored
                    .into_iter()
                    .filter(|s| s.score >= NEAR_SCORE)
                    .take(5)
                    .collect(),
            ),
            _ => Match::None,
        }
    }

    /// The action with slot values substituted, each value one whole argument or text.
    pub fn resolve(&self, inv: &Invocation) -> Option<Action> {
        let c = self.get(&inv.command)?;
        let fill = |s: &str| substitute(s, &inv.slots);
        Some(match &c.action {
            Action::Run(argv) => Action::Run(argv.iter().map(|a| fill(a)).collect()),
            Action::Keys(k) => Action::Keys(fill(k)),
            Action::Open(t) => Action::Open(fill(t)),
            Action::Type(t) => Action::Type(fill(t)),
            Action::Say(t) => Action::Say(fill(t)),
        })
    }

    /// The spoken reply after the action, if any.
    pub fn reply(&self, inv: &Invocation) -> Option<String> {
        let c = self.get(&inv.command)?;
        match (&c.action, &c.reply) {
            (_, Some(r)) => Some(substitute(r, &inv.slots)),
            (Action::Say(t), None) => Some(substitute(t, &inv.slots)),
            _ => None,
        }
    }

    /// How a near miss is described to the LLM: its first phrase with the slots filled.
    pub fn describe(&self, inv: &Invocation) -> String {
        self.get(&inv.command)
            .map(|c| substitute(&c.phrases[0], &inv.slots))
            .unwrap_or_default()
    }
}

fn placeholders(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find('{') {
        let Some(j) = rest[i..].find('}') else { break };
        out.push(rest[i + 1..i + j].trim().to_string());
        rest = &rest[i + j + 1..];
    }
    out
}

fn substitute(s: &str, slots: &BTreeMap<String, String>) -> String {
    let mut out = s.to_string();
    for (k, v) in slots {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

/// Lower-case words without punctuation ("Turn on the lamp." → turn, on, the, lamp).
pub fn normalise(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || c == '-' || c == '/')
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric() || *c == '\'')
                .flat_map(char::to_lowercase)
                .collect::<String>()
                .trim_matches('\'')
                .to_string()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// Levenshtein distance in characters.
pub fn char_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Cost of hearing `heard` where the phrase says `said`: 0 when equal, 0.5 for a one-letter
/// slip in a long word (Whisper's "lamb" for "lamp"), else a whole word.
fn substitution_cost(said: &str, heard: &str) -> f32 {
    if said == heard {
        0.0
    } else if said.chars().count() >= 4 && char_distance(said, heard) <= 1 {
        0.5
    } else {
        1.0
    }
}

fn indel_cost(word: &str) -> f32 {
    if FILLER.contains(&word) { 0.15 } else { 1.0 }
}

/// Word-level edit cost of turning `phrase` into `heard`.
fn edit_cost(phrase: &[String], heard: &[String]) -> f32 {
    let mut prev: Vec<f32> = std::iter::once(0.0)
        .chain(heard.iter().scan(0.0, |acc, w| {
            *acc += indel_cost(w);
            Some(*acc)
        }))
        .collect();
    for p in phrase {
        let mut cur = vec![prev[0] + indel_cost(p); heard.len() + 1];
        for (j, h) in heard.iter().enumerate() {
            cur[j + 1] = (prev[j] + substitution_cost(p, h))
                .min(prev[j + 1] + indel_cost(p))
                .min(cur[j] + indel_cost(h));
        }
        prev = cur;
    }
    prev[heard.len()]
}

fn score(phrase: &[String], heard: &[String]) -> f32 {
    let len = phrase.len().max(1) as f32;
    (1.0 - edit_cost(phrase, heard) / len).max(0.0)
}

/// Scores one phrase template against the heard words; returns slot values and score.
fn match_phrase(
    template: &str,
    slots: &BTreeMap<String, Slot>,
    heard: &[String],
) -> Option<(BTreeMap<String, String>, f32)> {
    // Listed-value slots are expanded into concrete phrases.
    let names = placeholders(template);
    if let Some(name) = names
        .iter()
        .find(|n| matches!(slots.get(*n), Some(Slot::Values(_))))
    {
        let Some(Slot::Values(values)) = slots.get(name) else {
            return None;
        };
        return values
            .iter()
            .filter_map(|v| {
                let concrete = template.replace(&format!("{{{name}}}"), v);
                let (mut filled, s) = match_phrase(&concrete, slots, heard)?;
                filled.insert(name.clone(), v.clone());
                Some((filled, s))
            })
            .max_by(|a, b| a.1.total_cmp(&b.1));
    }
    let Some(free) = names.first() else {
        return Some((BTreeMap::new(), score(&normalise(template), heard)));
    };
    // One free slot: the phrase's words before and after it are matched against the start
    // and the end of what was heard; the slot takes the words in between.
    let marker = format!("{{{free}}}");
    let (before, after) = template.split_once(&marker)?;
    let (before, after) = (normalise(before), normalise(after));
    let literal = (before.len() + after.len()).max(1) as f32;
    let mut best: Option<(BTreeMap<String, String>, f32)> = None;
    for i in 0..=heard.len() {
        for j in i + 1..=heard.len() {
            let cost = edit_cost(&before, &heard[..i]) + edit_cost(&after, &heard[j..]);
            let s = (1.0 - cost / literal).max(0.0);
            if best.as_ref().is_some_and(|b| b.1 >= s) {
                continue;
            }
            let Some(value) = slot_value(&slots[free.as_str()], &heard[i..j]) else {
                continue;
            };
            best = Some(([(free.clone(), value)].into(), s));
        }
    }
    best
}

fn slot_value(slot: &Slot, words: &[String]) -> Option<String> {
    match slot {
        Slot::Values(_) => None,
        Slot::Text => validate_text(&words.join(" ")),
        Slot::Number => parse_number(words).map(|n| n.to_string()),
    }
}

/// Free text fit to pass as an argument: plain words, no leading `-`, bounded length.
pub fn validate_text(s: &str) -> Option<String> {
    let s = s.trim();
    let ok = !s.is_empty()
        && s.chars().count() <= MAX_SLOT_CHARS
        && !s.starts_with('-')
        && s.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '\'' | '.' | ',' | '-'));
    ok.then(|| s.to_string())
}

const UNITS: &[&str] = &[
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
const TENS: &[&str] = &[
    "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];

/// A word that is part of a spoken number ("twenty", "hundred", "point", "oh").
pub fn is_number_word(w: &str) -> bool {
    UNITS.contains(&w)
        || TENS[2..].contains(&w)
        || ["hundred", "thousand", "million", "point", "oh"].contains(&w)
}

fn parse_number(words: &[String]) -> Option<u64> {
    match words {
        [w] if w.chars().all(|c| c.is_ascii_digit()) && w.len() <= 9 => w.parse().ok(),
        [w] => UNITS
            .iter()
            .position(|u| u == w)
            .or_else(|| {
                TENS.iter()
                    .position(|t| !t.is_empty() && t == w)
                    .map(|t| t * 10)
            })
            .map(|n| n as u64),
        [t, u] => {
            let t = TENS.iter().position(|x| !x.is_empty() && x == t)?;
            let u = UNITS[1..10].iter().position(|x| x == u)? + 1;
            Some((t * 10 + u) as u64)
        }
        _ => None,
    }
}

/// What a reply to "Should I …?" says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Plainly yes: affirmations only (and words of the question itself).
    Yes,
    /// Any negation anywhere, or a yes mixed with anything else (unclear is no).
    No,
    /// Neither yes nor no: a new request, which cancels the question.
    Other,
}

/// Words that make a reply "no" wherever they appear ("Okay, no, stop", "Please don't").
const NEGATIONS: &[&str] = &[
    "no",
    "nope",
    "nah",
    "nay",
    "not",
    "never",
    "don't",
    "dont",
    "do'nt",
    "stop",
    "cancel",
    "cancelled",
    "abort",
    "wait",
    "hold",
    "hang",
    "halt",
    "quit",
    "skip",
    "negative",
    "nevermind",
    "forget",
    "later",
    "wrong",
    "mistake",
    "undo",
    "none",
    "nothing",
];

/// Affirmations; a yes needs at least one of these (or "go ahead", "do it", "of course").
const AFFIRMATIONS: &[&str] = &[
    "yes",
    "yeah",
    "yep",
    "yup",
    "yea",
    "ya",
    "sure",
    "ok",
    "okay",
    "confirm",
    "confirmed",
    "correct",
    "affirmative",
    "absolutely",
    "definitely",
    "certainly",
    "alright",
    "proceed",
];

/// Words that may go with an affirmation without making it unclear.
const FILLERS: &[&str] = &[
    "please", "go", "ahead", "do", "it", "right", "all", "fine", "good", "great", "sounds",
    "that's", "thats", "that", "is", "of", "course", "indeed", "exactly", "thanks", "thank", "you",
    "uh", "um", "so", "well", "oh", "i", "mean", "would", "like", "that", "yes",
];

/// Reads a reply to a confirmation question, deterministically. Any negation wins (a word
/// of [`NEGATIONS`] or any word ending in "n't"); a reply of affirmations, fillers and words
/// of `question` is yes; an affirmation with anything else is unclear, and unclear is no; a
/// reply with no affirmation is [`Reply::Other`] unless it is a word or two (a "hmm" or a
/// "what?" is unclear too).
pub fn read_reply(reply: &str, question: &str) -> Reply {
    let words = normalise(&reply.replace('\u{2019}', "'"));
    let asked = normalise(question);
    let negated = words
        .iter()
        .any(|w| NEGATIONS.contains(&w.as_str()) || w.ends_with("n't"));
    if negated {
        return Reply::No;
    }
    let phrase = |a: &str, b: &str| words.windows(2).any(|w| w[0] == a && w[1] == b);
    let affirmed = words.iter().any(|w| AFFIRMATIONS.contains(&w.as_str()))
        || phrase("go", "ahead")
        || phrase("do", "it")
        || phrase("of", "course");
    if !affirmed {
        return if words.len() <= 2 {
            Reply::No
        } else {
            Reply::Other
        };
    }
    let plain = words.iter().all(|w| {
        AFFIRMATIONS.contains(&w.as_str()) || FILLERS.contains(&w.as_str()) || asked.contains(w)
    });
    if plain { Reply::Yes } else { Reply::No }
}

/// How an action ended.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Outcome {
    Ok {
        #[serde(skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
    },
    Failed {
        message: String,
    },
    TimedOut,
    Declined,
}

/// Runs an action (on the calling thread; `run` waits up to 10 s and kills the program).
pub fn execute(action: &Action) -> Outcome {
    let failed = |message: String| Outcome::Failed { message };
    match action {
        Action::Run(argv) => {
            let Some((program, args)) = argv.split_first() else {
                return failed("empty command".into());
            };
            run_program(program, args)
        }
        Action::Keys(k) => crate::desktop::press_keys(k)
            .map(|_| Outcome::Ok { exit_code: None })
            .unwrap_or_else(|e| failed(e.to_string())),
        Action::Open(t) => crate::desktop::open(t)
            .map(|_| Outcome::Ok { exit_code: None })
            .unwrap_or_else(|e| failed(e.to_string())),
        Action::Type(t) => crate::desktop::type_text(t)
            .map(|_| Outcome::Ok { exit_code: None })
            .unwrap_or_else(|e| failed(e.to_string())),
        Action::Say(_) => Outcome::Ok { exit_code: None },
    }
}

fn run_program(program: &str, args: &[String]) -> Outcome {
    let mut child = match Process::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            return Outcome::Failed {
                message: format!("{program}: {e}"),
            };
        }
    };
    let t0 = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                if status.success() {
                    return Outcome::Ok {
                        exit_code: status.code(),
                    };
                }
                let mut err = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = pipe.by_ref().take(500).read_to_string(&mut err);
                }
                return Outcome::Failed {
                    message: format!("{program}: {status}: {}", err.trim()),
                };
            }
            Ok(None) if t0.elapsed() > RUN_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Outcome::TimedOut;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => {
                return Outcome::Failed {
                    message: format!("{program}: {e}"),
                };
            }
        }
    }
}

/// A stage in the life of one action, as the action log records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// A command was matched (or picked) for a transcript.
    Requested,
    /// "Yes" to its confirmation question.
    Confirmed,
    /// "No" (or an unclear reply) to its confirmation question.
    Declined,
    /// Its confirmation question went unanswered.
    Expired,
    /// Another request came instead of an answer.
    Cancelled,
    /// About to run (written and synced before the action starts).
    Started,
    /// Ran, with its result.
    Finished,
}

/// One line of the action log.
#[derive(Clone, Debug, Serialize)]
pub struct LogEntry<'a> {
    pub time: String,
    pub turn: u64,
    pub stage: Stage,
    pub transcript: &'a str,
    pub command: &'a str,
    pub slots: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub arguments: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<&'a Outcome>,
}

/// The action log: JSON lines appended to a file (created with its directory).
pub struct ActionLog {
    pub path: PathBuf,
}

impl ActionLog {
    /// The default: `actions.jsonl` in the platform's data directory.
    pub fn default_path() -> PathBuf {
        dirs::data_local_dir()
            .map(|d| d.join("sotto"))
            .unwrap_or_else(|| PathBuf::from(".sotto"))
            .join("actions.jsonl")
    }

    /// Appends one line with a single write (the file is opened `O_APPEND`, so lines from
    /// several writers never interleave). A `Started` line is synced to disk before this
    /// returns: an action that never finishes (power cut, crash) still left its record.
    pub fn append(&self, entry: &LogEntry) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let mut line = serde_json::to_string(entry).map_err(std::io::Error::other)?;
        line.push('\n');
        f.write_all(line.as_bytes())?;
        if entry.stage == Stage::Started {
            f.sync_data()?;
        }
        Ok(())
    }
}

impl ActionLog {
    /// Appends the record of one stage of an action; a failure to write is logged, not fatal
    /// (the action itself is not held back by its log).
    pub fn record(
        &self,
        turn: u64,
        stage: Stage,
        invocation: &Invocation,
        transcript: &str,
        arguments: Vec<String>,
        result: Option<&Outcome>,
    ) {
        let entry = LogEntry {
            time: crate::audit::identity::now_rfc3339(),
            turn,
            stage,
            transcript,
            command: &invocation.command,
            slots: &invocation.slots,
            arguments,
            result,
        };
        if let Err(e) = self.append(&entry) {
            tracing::warn!(stage = "actions", path = %self.path.display(), error = %e, "cannot write the action log");
        }
    }
}

/// The action's argument list as logged.
pub fn arguments(action: &Action) -> Vec<String> {
    match action {
        Action::Run(argv) => argv.clone(),
        Action::Keys(s) | Action::Open(s) | Action::Type(s) | Action::Say(s) => vec![s.clone()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[[command]]
name = "lamp-on"
phrases = ["turn on the lamp", "lamp on"]
run = ["/bin/true", "on"]
reply = "The lamp is on."

[[command]]
name = "lamp-off"
phrases = ["turn off the lamp", "lamp off"]
run = ["/bin/true", "off"]

[[command]]
name = "note"
phrases = ["take a note {text}"]
run = ["/bin/echo", "{text}"]
slots.text = { kind = "text" }
confirm = true

[[command]]
name = "volume"
phrases = ["set the volume to {level}"]
run = ["/bin/true", "{level}"]
slots.level = { kind = "number" }

[[command]]
name = "open"
phrases = ["open {app}"]
open = "{app}"
slots.app = { values = ["firefox", "the terminal"] }
"#;

    fn commands() -> Commands {
        Commands::parse(Path::new("commands.toml"), FILE).unwrap()
    }

    fn matched(text: &str) -> Option<Invocation> {
        match commands().match_transcript(text) {
            Match::Command(inv) => Some(inv),
            _ => None,
        }
    }

    #[test]
    fn exact_and_noisy_transcripts_match_their_command() {
        for t in [
            "Turn on the lamp.",
            "Please turn on the lamp",
            "Hey sotto, could you turn on the lamp?",
            "Turn on the lamb.",
            "lamp on",
        ] {
            assert_eq!(matched(t).map(|i| i.command), Some("lamp-on".into()), "{t}");
        }
        assert_eq!(
            matched("Turn off the lamp.").map(|i| i.command),
            Some("lamp-off".into())
        );
    }

    #[test]
    fn a_changed_word_is_not_a_clear_match() {
        let c = Commands::parse(
            Path::new("c.toml"),
            "[[command]]\nname = \"on\"\nphrases = [\"turn on the lamp\"]\nrun = [\"/bin/true\"]\n",
        )
        .unwrap();
        assert!(!matches!(
            c.match_transcript("turn off the lamp"),
            Match::Command(_)
        ));
        assert_eq!(
            c.match_transcript("what is the capital of France"),
            Match::None
        );
    }

    #[test]
    fn slots_take_values_text_and_numbers() {
        let inv = matched("Take a note buy more milk.").unwrap();
        assert_eq!(inv.slots["text"], "buy more milk");
        let inv = matched("Set the volume to twenty five").unwrap();
        assert_eq!(inv.slots["level"], "25");
        let inv = matched("Open the terminal").unwrap();
        assert_eq!(inv.slots["app"], "the terminal");
        assert_eq!(
            commands().resolve(&inv),
            Some(Action::Open("the terminal".into()))
        );
    }

    #[test]
    fn shell_metacharacters_never_become_a_slot_value() {
        for t in [
            "take a note $(touch /tmp/pwned)",
            "take a note hello; rm -rf ~",
            "take a note `id` | sh",
            "take a note --output=/etc/passwd",
        ] {
            let Match::Command(inv) = commands().match_transcript(t) else {
                panic!("{t} is a note");
            };
            let v = &inv.slots["text"];
            assert!(
                validate_text(v).is_some() && !v.starts_with('-'),
                "{t} gave {v:?}"
            );
            // Punctuation is dropped by normalisation; what remains is plain words.
            assert!(!v.contains(['$', ';', '`', '|', '(', ')', '~']), "{v}");
        }
        assert!(validate_text("hello; rm").is_none());
        assert!(validate_text("-rf").is_none());
        assert!(validate_text("$(id)").is_none());
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let err = |text: &str| {
            Commands::parse(Path::new("c.toml"), text)
                .unwrap_err()
                .to_string()
        };
        assert!(err("[[command]]\nname=\"x\"\nphrases=[\"x\"]\n").contains("exactly one action"));
        assert!(
            err("[[command]]\nname=\"x\"\nphrases=[\"x {a}\"]\nrun=[\"{a}\"]\nslots.a={kind=\"text\"}\n")
                .contains("must be fixed")
        );
        assert!(
            err("[[command]]\nname=\"x\"\nphrases=[\"x {a}\"]\nrun=[\"/bin/true\"]\n")
                .contains("not declared")
        );
        assert!(
            err("[[command]]\nname=\"x\"\nphrase=[\"x\"]\nrun=[\"/bin/true\"]\n")
                .contains("line 3")
        );
    }

    const QUESTION: &str = "Should I turn on the lamp? Say yes or no.";

    #[test]
    fn plain_yeses_confirm() {
        for yes in [
            "Yes.",
            "Yeah, do it",
            "Yes please.",
            "Sure, go ahead.",
            "Okay.",
            "Yes, turn on the lamp.",
            "Absolutely, yes.",
            "Yep!",
        ] {
            assert_eq!(read_reply(yes, QUESTION), Reply::Yes, "{yes:?}");
        }
    }

    #[test]
    fn sixteen_negative_replies_never_confirm() {
        let negatives = [
            "No.",
            "Nope.",
            "Please don't.",
            "No, don't do it.",
            "Okay, no, stop.",
            "Don\u{2019}t.",
            "Do not do that.",
            "Cancel.",
            "Never mind.",
            "Stop!",
            "No thanks.",
            "Not now.",
            "Wait, no.",
            "Hold on.",
            "Yes, I mean no.",
            "Absolutely not.",
        ];
        assert_eq!(negatives.len(), 16);
        for no in negatives {
            assert_eq!(read_reply(no, QUESTION), Reply::No, "{no:?}");
        }
    }

    #[test]
    fn eight_unclear_replies_never_confirm() {
        let unclear = [
            "Maybe.",
            "Hmm.",
            "What?",
            "I guess.",
            "Yes, but turn it off first.",
            "Sure, why would you ask.",
            "Okay whatever you think is best",
            "Yes and the kitchen too.",
        ];
        assert_eq!(unclear.len(), 8);
        for u in unclear {
            assert_ne!(read_reply(u, QUESTION), Reply::Yes, "{u:?}");
        }
    }

    #[test]
    fn a_different_request_is_neither_yes_nor_no() {
        assert_eq!(
            read_reply("What is the weather like in Paris?", QUESTION),
            Reply::Other
        );
    }

    #[test]
    fn execute_runs_programs_with_separate_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let script = format!("printf '%s\\n' \"$@\" > {}", out.display());
        let outcome = execute(&Action::Run(vec![
            "/bin/sh".into(),
            "-c".into(),
            script,
            "sh".into(),
            "a; touch x".into(),
        ]));
        assert_eq!(outcome, Outcome::Ok { exit_code: Some(0) });
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "a; touch x\n");
        assert!(matches!(
            execute(&Action::Run(vec!["/nonexistent/program".into()])),
            Outcome::Failed { .. }
        ));
    }
}
