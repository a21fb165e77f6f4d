//! `sotto serve`: the Wyoming protocol (Home Assistant's speech services) over TCP or a Unix
//! socket, answered by the same audited engines as the agent.
//!
//! Threads: one accepts connections; one per connection reads its events and writes its
//! replies; one per engine (asr, tts, handle) owns the engine and takes jobs from a bounded
//! queue. The policy when a queue is full: the request gets an `error` event (code `busy`) at
//! once rather than waiting behind an unbounded backlog. A job whose client has gone is
//! skipped; a reply that cannot be written within the write timeout closes that connection
//! only. No engine ever waits on a client: replies go through channels that never block the
//! engine's thread.

pub mod info;
pub mod protocol;
mod session;
pub mod zeroconf;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde_json::Value;

use crate::commands::{self, ActionLog, Commands, Invocation, Match, Stage};
use crate::llm::{GenParams, Llm, Message};
use crate::stt::{Segment, Stt, SttOptions};
use crate::tts::{Speech, Tts};
pub use protocol::{Event, Limits};

/// Where to listen: `tcp://HOST:PORT` or `unix:///path`.
#[derive(Clone, Debug, PartialEq)]
pub enum Uri {
    Tcp(String),
    Unix(PathBuf),
}

impl std::str::FromStr for Uri {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(rest) = s.strip_prefix("tcp://") {
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| format!("{s:?}: a tcp:// URI needs a port (tcp://0.0.0.0:10300)"))?;
            port.parse::<u16>()
                .map_err(|_| format!("{s:?}: {port:?} is not a port number"))?;
            if host.is_empty() {
                return Err(format!("{s:?}: no host (tcp://0.0.0.0:10300)"));
            }
            return Ok(Uri::Tcp(rest.to_string()));
        }
        if let Some(path) = s.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(format!("{s:?}: no socket path (unix:///run/sotto.sock)"));
            }
            return Ok(Uri::Unix(PathBuf::from(path)));
        }
        Err(format!(
            "{s:?}: only tcp://HOST:PORT and unix:///PATH are supported"
        ))
    }
}

/// Limits, all configurable, with defaults safe for a house full of satellites.
#[derive(Clone, Debug)]
pub struct Options {
    pub limits: Limits,
    /// Connections at once; one more is told `busy` and closed.
    pub max_clients: usize,
    /// Requests waiting per engine; one more is told `busy`.
    pub queue: usize,
    /// The longest utterance transcribed; longer audio is an error.
    pub max_utterance: Duration,
    /// A connection silent this long is closed.
    pub idle_timeout: Duration,
    /// A client that takes longer than this to accept a reply is dropped.
    pub write_timeout: Duration,
    /// Conversations the handler remembers (least recently used ones go first).
    pub max_conversations: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            max_clients: 16,
            queue: 8,
            max_utterance: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(120),
            write_timeout: Duration::from_secs(10),
            max_conversations: 64,
        }
    }
}

pub struct AsrEngine {
    pub stt: Stt,
    pub opts: SttOptions,
}

pub struct TtsEngine {
    pub tts: Tts,
    pub speed: f32,
}

pub struct HandleEngine {
    pub llm: Llm,
    pub params: GenParams,
    pub commands: Commands,
    pub log: Option<ActionLog>,
}

/// The engines to serve; a role left out is not offered (and its events are errors).
#[derive(Default)]
pub struct Engines {
    pub asr: Option<AsrEngine>,
    pub tts: Option<TtsEngine>,
    pub handle: Option<HandleEngine>,
}

/// A transcription request: 16 kHz mono audio.
struct AsrJob {
    samples: Vec<f32>,
    language: Option<String>,
    /// Names and terms the client wants spelled right (Wyoming's `transcript_names`/`terms`).
    vocabulary: Vec<String>,
    gone: Arc<AtomicBool>,
    reply: Sender<Result<(Vec<Segment>, String), String>>,
}

/// One sentence to speak.
struct TtsJob {
    text: String,
    gone: Arc<AtomicBool>,
    reply: Sender<Result<Speech, String>>,
}

/// A transcript to handle in a conversation.
struct HandleJob {
    text: String,
    conversation: String,
    gone: Arc<AtomicBool>,
    reply: Sender<HandleOut>,
}

enum HandleOut {
    /// A piece of the reply as the model writes it.
    Chunk(String),
    Done {
        handled: bool,
        text: String,
    },
    Failed(String),
}

/// The queues the connections submit to, and what `describe` answers.
pub(crate) struct Shared {
    info: Value,
    asr: Option<Sender<AsrJob>>,
    tts: Option<Sender<TtsJob>>,
    handle: Option<Sender<HandleJob>>,
    tts_rate_hz: u32,
    options: Options,
    next_conversation: AtomicUsize,
}

/// Why a request was not taken.
enum Refused {
    /// The role is not served.
    NotServed(&'static str),
    Busy(&'static str),
}

impl Refused {
    fn event(&self) -> Event {
        match self {
            Refused::NotServed(role) => error_event(
                "not-served",
                &format!("this server does not offer {role} (sotto serve --{role})"),
            ),
            Refused::Busy(role) => error_event(
                "busy",
                &format!("the {role} engine has a full queue; try again shortly"),
            ),
        }
    }
}

fn submit<T>(queue: &Option<Sender<T>>, role: &'static str, job: T) -> Result<(), Refused> {
    let Some(q) = queue else {
        return Err(Refused::NotServed(role));
    };
    match q.try_send(job) {
        Ok(()) => Ok(()),
        Err(TrySendError::Full(_)) => Err(Refused::Busy(role)),
        Err(TrySendError::Disconnected(_)) => Err(Refused::NotServed(role)),
    }
}

pub fn error_event(code: &str, text: &str) -> Event {
    Event::new("error", serde_json::json!({"text": text, "code": code}))
}

/// A listening socket.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// Binds `uri`. A Unix socket path that exists is replaced only if it is a socket no one
    /// listens on (a stale one from a crash); any other file there is an error.
    pub fn bind(uri: &Uri) -> anyhow::Result<Self> {
        use anyhow::Context;
        match uri {
            Uri::Tcp(addr) => Ok(Listener::Tcp(
                TcpListener::bind(addr)
                    .with_context(|| format!("cannot listen on tcp://{addr}"))?,
            )),
            Uri::Unix(path) => {
                if let Ok(meta) = std::fs::symlink_metadata(path) {
                    use std::os::unix::fs::FileTypeExt;
                    if !meta.file_type().is_socket() {
                        anyhow::bail!(
                            "{} exists and is not a socket; not replacing it",
                            path.display()
                        );
                    }
                    if std::os::unix::net::UnixStream::connect(path).is_ok() {
                        anyhow::bail!("{} is in use by another server", path.display());
                    }
                    std::fs::remove_file(path).with_context(|| {
                        format!("cannot remove stale socket {}", path.display())
                    })?;
                }
                Ok(Listener::Unix(
                    UnixListener::bind(path)
                        .with_context(|| format!("cannot listen on unix://{}", path.display()))?,
                    path.clone(),
                ))
            }
        }
    }

    /// The TCP port (for `--uri tcp://127.0.0.1:0` and the zeroconf announcement).
    pub fn port(&self) -> Option<u16> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok().map(|a| a.port()),
            Listener::Unix(..) => None,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map(|a| format!("tcp://{a}"))
                .unwrap_or_else(|_| "tcp://?".into()),
            Listener::Unix(_, p) => format!("unix://{}", p.display()),
        }
    }

    fn set_nonblocking(&self) -> std::io::Result<()> {
        match self {
            Listener::Tcp(l) => l.set_nonblocking(true),
            Listener::Unix(l, _) => l.set_nonblocking(true),
        }
    }

    fn accept(&self) -> std::io::Result<Stream> {
        match self {
            Listener::Tcp(l) => {
                let (s, _) = l.accept()?;
                s.set_nonblocking(false)?;
                let _ = s.set_nodelay(true);
                Ok(Stream::Tcp(s))
            }
            Listener::Unix(l, _) => {
                let (s, _) = l.accept()?;
                s.set_nonblocking(false)?;
                Ok(Stream::Unix(s))
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// One client connection.
pub(crate) enum Stream {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

impl Stream {
    fn try_clone(&self) -> std::io::Result<Self> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }

    fn set_timeouts(&self, read: Duration, write: Duration) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => {
                s.set_read_timeout(Some(read))?;
                s.set_write_timeout(Some(write))
            }
            Stream::Unix(s) => {
                s.set_read_timeout(Some(read))?;
                s.set_write_timeout(Some(write))
            }
        }
    }

    fn shutdown(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

/// Serves until `stop` is set: starts one thread per engine, accepts connections, and on
/// stop lets the connections in progress finish their current request.
pub fn serve(
    listener: Listener,
    engines: Engines,
    info: Value,
    options: Options,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    listener.set_nonblocking()?;
    let tts_rate_hz = engines
        .tts
        .as_ref()
        .map(|t| t.tts.sample_rate_hz)
        .unwrap_or(22_050);
    let queue = options.queue.max(1);
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let asr = engines.asr.map(|engine| {
            let (tx, rx) = crossbeam_channel::bounded(queue);
            spawn_named(scope, "serve-asr", move || asr_worker(engine, rx));
            tx
        });
        let tts = engines.tts.map(|engine| {
            let (tx, rx) = crossbeam_channel::bounded(queue);
            spawn_named(scope, "serve-tts", move || tts_worker(engine, rx));
            tx
        });
        let max_conversations = options.max_conversations;
        let handle = engines.handle.map(|engine| {
            let (tx, rx) = crossbeam_channel::bounded(queue);
            spawn_named(scope, "serve-handle", move || {
                handle_worker(engine, rx, max_conversations)
            });
            tx
        });
        let shared = Arc::new(Shared {
            info,
            asr,
            tts,
            handle,
            tts_rate_hz,
            options,
            next_conversation: AtomicUsize::new(1),
        });
        let active = Arc::new(AtomicUsize::new(0));
        // Every open connection, so that stopping can close them: a client that keeps its
        // connection open and silent would otherwise hold the shutdown for the idle timeout.
        let open: Arc<std::sync::Mutex<std::collections::HashMap<u64, Stream>>> =
            Default::default();
        let mut next_id = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let stream = match listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                Err(e) => {
                    tracing::warn!(stage = "serve", error = %e, "accept failed");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            let max = shared.options.max_clients;
            if active.load(Ordering::SeqCst) >= max {
                let mut s = stream;
                let _ = s.set_timeouts(Duration::from_secs(1), Duration::from_secs(1));
                let _ = protocol::write_event(
                    &mut s,
                    &error_event(
                        "busy",
                        &format!("{max} clients are connected, the most this server takes"),
                    ),
                );
                continue;
            }
            active.fetch_add(1, Ordering::SeqCst);
            next_id += 1;
            let id = next_id;
            if let Ok(handle) = stream.try_clone() {
                lock(&open).insert(id, handle);
            }
            let shared = shared.clone();
            let active = active.clone();
            let stop = stop.clone();
            let open = open.clone();
            spawn_named(scope, "serve-client", move || {
                session::run(stream, &shared, &stop);
                lock(&open).remove(&id);
                active.fetch_sub(1, Ordering::SeqCst);
            });
        }
        for stream in lock(&open).values() {
            stream.shutdown();
        }
        // Closing the queues (dropping `shared` when the last connection ends) ends the
        // engine threads; the scope waits for them.
        drop(shared);
        Ok(())
    })
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn spawn_named<'scope, 'env, F>(scope: &'scope std::thread::Scope<'scope, 'env>, name: &str, f: F)
where
    F: FnOnce() + Send + 'scope,
{
    std::thread::Builder::new()
        .name(name.into())
        .spawn_scoped(scope, f)
        .expect("cannot start a thread");
}

fn asr_worker(mut engine: AsrEngine, jobs: Receiver<AsrJob>) {
    for job in jobs.iter() {
        if job.gone.load(Ordering::SeqCst) {
            continue;
        }
        let mut opts = engine.opts.clone();
        let result = (|| {
            if let Some(lang) = &job.language {
                opts.language = engine
                    .stt
                    .check_language(&whisper_language(lang))
                    .map_err(|e| e.to_string())?;
            }
            if !job.vocabulary.is_empty() {
                let (prompt, _) = engine.stt.vocabulary_prompt(&job.vocabulary);
                opts.prompt = Some(prompt);
            }
            let segments = engine
                .stt
                .transcribe(&job.samples, &opts, None)
                .map_err(|e| e.to_string())?;
            Ok((segments, engine.stt.last_language.clone()))
        })();
        let _ = job.reply.send(result);
    }
}

/// Whisper's code for a client's language tag: Home Assistant and satellites may send
/// "en-US" or "en_GB" where Whisper knows "en".
fn whisper_language(tag: &str) -> String {
    tag.split(['-', '_'])
        .next()
        .unwrap_or(tag)
        .trim()
        .to_ascii_lowercase()
}

fn tts_worker(mut engine: TtsEngine, jobs: Receiver<TtsJob>) {
    loop {
        let job = match jobs.recv_timeout(crate::tts::KEEP_WARM) {
            Ok(job) => job,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                // Nothing to say for a while: give ONNX Runtime's buffers back.
                let _ = engine.tts.release_memory();
                match jobs.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                }
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
        };
        if job.gone.load(Ordering::SeqCst) {
            continue;
        }
        let result = engine
            .tts
            .synthesize(&job.text, engine.speed)
            .map_err(|e| e.to_string());
        let _ = job.reply.send(result);
    }
}

/// One conversation the handler keeps: its history and a question awaiting yes or no.
#[derive(Default)]
struct Conversation {
    history: Vec<Message>,
    pending: Option<(Invocation, String)>,
    used: u64,
}

fn handle_worker(mut engine: HandleEngine, jobs: Receiver<HandleJob>, max_conversations: usize) {
    let mut conversations: std::collections::HashMap<String, Conversation> = Default::default();
    let mut clock = 0u64;
    for job in jobs.iter() {
        if job.gone.load(Ordering::SeqCst) {
            continue;
        }
        clock += 1;
        if !conversations.contains_key(&job.conversation)
            && conversations.len() >= max_conversations.max(1)
            && let Some(oldest) = conversations
                .iter()
                .min_by_key(|(_, c)| c.used)
                .map(|(k, _)| k.clone())
        {
            conversations.remove(&oldest);
        }
        let conv = conversations.entry(job.conversation.clone()).or_default();
        conv.used = clock;
        let out = handle_one(&mut engine, conv, &job);
        let _ = job.reply.send(out);
    }
}

/// The voice commands first (with the agent's confirmation rules), the model otherwise.
fn handle_one(engine: &mut HandleEngine, conv: &mut Conversation, job: &HandleJob) -> HandleOut {
    let text = job.text.trim();
    if let Some((inv, question)) = conv.pending.take() {
        match commands::read_reply(text, &question) {
            commands::Reply::Yes => {
                log(engine, Stage::Confirmed, &inv, text);
                return run_command(engine, &inv, text);
            }
            commands::Reply::No => {
                log(engine, Stage::Declined, &inv, text);
                return HandleOut::Done {
                    handled: true,
                    text: "Okay, I won't.".into(),
                };
            }
            commands::Reply::Other => log(engine, Stage::Cancelled, &inv, text),
        }
    }
    let ask = |engine: &HandleEngine, conv: &mut Conversation, inv: Invocation| {
        let question = format!(
            "Should I {}? Say yes or no.",
            engine.commands.describe(&inv)
        );
        conv.pending = Some((inv, question.clone()));
        HandleOut::Done {
            handled: true,
            text: question,
        }
    };
    match engine.commands.match_transcript(text) {
        Match::Command(inv) => {
            log(engine, Stage::Requested, &inv, text);
            let confirm = engine.commands.get(&inv.command).is_some_and(|c| c.confirm);
            if confirm {
                return ask(engine, conv, inv);
            }
            run_command(engine, &inv, text)
        }
        Match::Near(options) => {
            let descriptions: Vec<String> = options
                .iter()
                .map(|o| engine.commands.describe(o))
                .collect();
            match engine.llm.choose(text, &descriptions) {
                Ok(Some(i)) if i < options.len() => {
                    let inv = options[i].clone();
                    log(engine, Stage::Requested, &inv, text);
                    // A command the model picked from near misses is always confirmed.
                    ask(engine, conv, inv)
                }
                Ok(_) => respond(engine, conv, job),
                Err(e) => HandleOut::Failed(e.to_string()),
            }
        }
        Match::None => respond(engine, conv, job),
    }
}

fn respond(engine: &mut HandleEngine, conv: &mut Conversation, job: &HandleJob) -> HandleOut {
    engine.llm.set_history(std::mem::take(&mut conv.history));
    let result = engine
        .llm
        .respond(job.text.trim(), &engine.params, &job.gone, |piece| {
            let _ = job.reply.send(HandleOut::Chunk(piece.to_string()));
        });
    conv.history = engine.llm.history().to_vec();
    match result {
        Ok(reply) => HandleOut::Done {
            handled: true,
            text: reply.text.trim().to_string(),
        },
        Err(e) => HandleOut::Failed(e.to_string()),
    }
}

fn run_command(engine: &HandleEngine, inv: &Invocation, transcript: &str) -> HandleOut {
    let Some(action) = engine.commands.resolve(inv) else {
        return HandleOut::Failed(format!("no command named {}", inv.command));
    };
    let arguments = commands::arguments(&action);
    log_with(
        engine,
        Stage::Started,
        inv,
        transcript,
        arguments.clone(),
        None,
    );
    let outcome = commands::execute(&action);
    log_with(
        engine,
        Stage::Finished,
        inv,
        transcript,
        arguments,
        Some(&outcome),
    );
    match outcome {
        commands::Outcome::Ok { .. } => HandleOut::Done {
            handled: true,
            text: engine.commands.reply(inv).unwrap_or_else(|| "Done.".into()),
        },
        commands::Outcome::Failed { message } => HandleOut::Done {
            handled: false,
            text: format!("That did not work: {message}"),
        },
        commands::Outcome::TimedOut => HandleOut::Done {
            handled: false,
            text: "That took too long and was stopped.".into(),
        },
        commands::Outcome::Declined => HandleOut::Done {
            handled: false,
            text: "Okay, I won't.".into(),
        },
    }
}

fn log(engine: &HandleEngine, stage: Stage, inv: &Invocation, transcript: &str) {
    log_with(engine, stage, inv, transcript, Vec::new(), None);
}

fn log_with(
    engine: &HandleEngine,
    stage: Stage,
    inv: &Invocation,
    transcript: &str,
    arguments: Vec<String>,
    result: Option<&commands::Outcome>,
) {
    if let Some(log) = &engine.log {
        log.record(0, stage, inv, transcript, arguments, result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_tags_become_whisper_codes() {
        assert_eq!(whisper_language("en-US"), "en");
        assert_eq!(whisper_language("pt_BR"), "pt");
        assert_eq!(whisper_language("auto"), "auto");
        assert_eq!(whisper_language("DE"), "de");
    }

    #[test]
    fn uris_parse_or_say_what_is_wrong() {
        assert_eq!(
            "tcp://0.0.0.0:10300".parse::<Uri>(),
            Ok(Uri::Tcp("0.0.0.0:10300".into()))
        );
        assert_eq!(
            "unix:///run/s.sock".parse::<Uri>(),
            Ok(Uri::Unix("/run/s.sock".into()))
        );
        assert!(
            "tcp://host"
                .parse::<Uri>()
                .unwrap_err()
                .contains("needs a port"),
            "no port"
        );
        assert!(
            "tcp://h:99999"
                .parse::<Uri>()
                .unwrap_err()
                .contains("not a port")
        );
        assert!(
            "http://x:1"
                .parse::<Uri>()
                .unwrap_err()
                .contains("only tcp://")
        );
        assert!("unix://".parse::<Uri>().is_err());
    }
}
