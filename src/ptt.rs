//! Push-to-talk: a pure state machine, plus the headless control path (a Unix socket only the
//! user can reach, and SIGUSR1) that feeds it.
//!
//! [`step`] is a pure function of (state, event, mode, time): unit-tested for hold, toggle, key
//! bounce, cancel and a release while the previous utterance is still being transcribed. The
//! dictation front end obeys the [`Action`]s it returns (start recording, stop and transcribe,
//! discard). Runs on the "ptt" thread.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Record while the key is held (`ctl start` = press, `ctl stop` = release).
    Hold,
    /// Each press starts or stops recording.
    Toggle,
    /// One key, two gestures: a tap (released within [`TAP`]) starts recording until the
    /// next press; a hold records until the key is released.
    Auto,
}

/// In [`Mode::Auto`], a press released sooner than this is a tap (toggle), a longer one a
/// hold (push-to-talk). Typing speed taps are ~100 ms; a deliberate hold to speak is longer
/// than a word.
pub const TAP: Duration = Duration::from_millis(300);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Press,
    Release,
    /// Flip, whatever the mode (SIGUSR1, `ctl toggle`).
    Toggle,
    Cancel,
    /// The utterance handed to STT has been transcribed.
    Transcribed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Idle,
    Recording,
    /// The last utterance is being transcribed; nothing is recording.
    Processing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    None,
    StartRecording,
    StopAndTranscribe,
    Discard,
}

/// Key edges closer together than this are contact bounce, not intent.
pub const DEBOUNCE: Duration = Duration::from_millis(40);

/// The machine's memory besides its state: when the key last changed.
#[derive(Clone, Copy, Debug)]
pub struct Machine {
    pub state: State,
    last_edge: Option<Instant>,
    /// [`Mode::Auto`]: when the press that started this recording came.
    pressed_at: Option<Instant>,
    /// [`Mode::Auto`]: the recording was started by a tap and runs until the next press.
    latched: bool,
}

impl Default for Machine {
    fn default() -> Self {
        Self {
            state: State::Idle,
            last_edge: None,
            pressed_at: None,
            latched: false,
        }
    }
}

/// One transition. Pure: the same inputs always give the same outputs.
pub fn step(m: Machine, event: Event, mode: Mode, now: Instant) -> (Machine, Action) {
    let bounce = matches!(event, Event::Press | Event::Release)
        && m.last_edge
            .is_some_and(|t| now.saturating_duration_since(t) < DEBOUNCE);
    if bounce {
        return (m, Action::None);
    }
    let last_edge = if matches!(event, Event::Press | Event::Release) {
        Some(now)
    } else {
        m.last_edge
    };
    use {Action as A, Event as E, State as S};
    let mut next = Machine { last_edge, ..m };
    let (state, action) = match (m.state, event, mode) {
        (S::Idle | S::Processing, E::Press, _) | (S::Idle | S::Processing, E::Toggle, _) => {
            next.pressed_at = Some(now);
            next.latched = false;
            (S::Recording, A::StartRecording)
        }
        // Auto: a quick release was a tap, and recording goes on until the next press.
        (S::Recording, E::Release, Mode::Auto)
            if !m.latched
                && m.pressed_at
                    .is_some_and(|t| now.saturating_duration_since(t) < TAP) =>
        {
            next.latched = true;
            (S::Recording, A::None)
        }
        (S::Recording, E::Release, Mode::Auto) if m.latched => (S::Recording, A::None),
        (S::Recording, E::Release, Mode::Hold | Mode::Auto)
        | (S::Recording, E::Press, Mode::Toggle | Mode::Auto)
        | (S::Recording, E::Toggle, _) => (S::Processing, A::StopAndTranscribe),
        (S::Recording, E::Cancel, _) => (S::Idle, A::Discard),
        (S::Processing, E::Cancel, _) => (S::Idle, A::Discard),
        (S::Processing, E::Transcribed, _) => (S::Idle, A::None),
        // A release in toggle mode, or while nothing records, changes nothing.
        (s, _, _) => (s, A::None),
    };
    if state != S::Recording {
        next.pressed_at = None;
        next.latched = false;
    }
    next.state = state;
    (next, action)
}

/// The control socket's directory: `$XDG_RUNTIME_DIR/sotto`, else `sotto/run` in the user's
/// own cache directory (`~/.cache`, `~/Library/Caches`). Never a shared directory such as
/// `/tmp`, where another local user could plant a symlink or a socket of their own first.
pub fn control_dir() -> Result<PathBuf, ControlError> {
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    match runtime {
        Some(dir) => Ok(dir.join("sotto")),
        None => dirs::cache_dir()
            .filter(|p| p.is_absolute())
            .map(|d| d.join("sotto").join("run"))
            .ok_or(ControlError::NoPrivateDir),
    }
}

pub fn socket_path() -> Result<PathBuf, ControlError> {
    Ok(control_dir()?.join("ctl.sock"))
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "no private directory for the control socket: set XDG_RUNTIME_DIR, or HOME for a cache directory"
    )]
    NoPrivateDir,
    #[error("{path}: {reason}; refusing to use it for the control socket")]
    Unsafe { path: PathBuf, reason: String },
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Peer { path: PathBuf, message: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ControlError + '_ {
    move |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// Makes `dir` a private directory of this user, or proves it already is one: created with
/// mode 0700, then opened without following a symlink (`O_NOFOLLOW`) and checked through the
/// open descriptor (a directory, owned by this user, mode 0700 — tightened through the
/// descriptor if it is looser). A symlink, another user's directory, or a parent others may
/// write to is an error; nothing outside the directory is ever changed.
pub fn private_dir(dir: &Path) -> Result<(), ControlError> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let unsafe_dir = |reason: String| ControlError::Unsafe {
        path: dir.to_path_buf(),
        reason,
    };
    let parent = dir
        .parent()
        .ok_or_else(|| unsafe_dir("no parent directory".into()))?;
    std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    let pmeta = std::fs::metadata(parent).map_err(io_err(parent))?;
    let others_write = pmeta.mode() & 0o022 != 0;
    let sticky = pmeta.mode() & 0o1000 != 0;
    if others_write && !sticky && pmeta.uid() != uid() {
        return Err(ControlError::Unsafe {
            path: parent.to_path_buf(),
            reason: "other users may write to it".into(),
        });
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err(dir)(e)),
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY)
        .open(dir)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::ENOTDIR) => {
                unsafe_dir("it is a symlink or not a directory".into())
            }
            _ => io_err(dir)(e),
        })?;
    let meta = f.metadata().map_err(io_err(dir))?;
    if !meta.is_dir() {
        return Err(unsafe_dir("not a directory".into()));
    }
    if meta.uid() != uid() {
        return Err(unsafe_dir(format!(
            "owned by uid {}, not by you (uid {})",
            meta.uid(),
            uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        // Ours, opened without following links: tightening it through the descriptor
        // cannot reach anything else.
        f.set_permissions(std::fs::Permissions::from_mode(0o700))
            .map_err(io_err(dir))?;
        let again = f.metadata().map_err(io_err(dir))?;
        if again.mode() & 0o077 != 0 {
            return Err(unsafe_dir(format!(
                "mode {:o} could not be made 0700",
                again.mode() & 0o777
            )));
        }
    }
    Ok(())
}

/// The user id of the process at the other end of a Unix socket.
pub fn peer_uid(s: &UnixStream) -> std::io::Result<u32> {
    use std::os::fd::AsRawFd;
    #[cfg(target_os = "linux")]
    {
        let mut cred = libc::ucred {
            pid: 0,
            uid: 0,
            gid: 0,
        };
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: `cred` and `len` are valid for writes of the sizes given; the descriptor is
        // the stream's own.
        let r = unsafe {
            libc::getsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                (&mut cred as *mut libc::ucred).cast(),
                &mut len,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(cred.uid)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let (mut uid, mut gid) = (0, 0);
        // SAFETY: both out-pointers are valid; the descriptor is the stream's own.
        let r = unsafe { libc::getpeereid(s.as_raw_fd(), &mut uid, &mut gid) };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(uid)
    }
}

/// Binds the control socket (mode 0600) in the private control directory, replacing a stale
/// socket of this user's; anything else at that path is an error.
pub fn bind() -> Result<(PathBuf, UnixListener), ControlError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let dir = control_dir()?;
    private_dir(&dir)?;
    let path = dir.join("ctl.sock");
    if let Ok(meta) = std::fs::symlink_metadata(&path) {
        if !meta.file_type().is_socket() || meta.uid() != uid() {
            return Err(ControlError::Unsafe {
                path,
                reason: "something other than this user's socket is there".into(),
            });
        }
        if UnixStream::connect(&path).is_ok() {
            return Err(ControlError::Peer {
                path,
                message: "another sotto is already listening".into(),
            });
        }
        std::fs::remove_file(&path).map_err(io_err(&path))?;
    }
    let listener = UnixListener::bind(&path).map_err(io_err(&path))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(io_err(&path))?;
    Ok((path, listener))
}

/// Parses a control command.
pub fn parse_command(line: &str) -> Option<Event> {
    match line.trim() {
        "start" => Some(Event::Press),
        "stop" => Some(Event::Release),
        "toggle" => Some(Event::Toggle),
        "cancel" => Some(Event::Cancel),
        _ => None,
    }
}

/// Serves one connection: reads command lines, forwards events, answers "ok" or an error.
/// A client running as another user is turned away.
pub fn serve(stream: UnixStream, events: &crossbeam_channel::Sender<Event>) {
    match peer_uid(&stream) {
        Ok(u) if u == uid() => {}
        other => {
            tracing::warn!(stage = "ptt", peer = ?other, "control connection from another user refused");
            return;
        }
    }
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut w = write_half;
    for line in BufReader::new(stream).lines().map_while(Result::ok) {
        let reply = match parse_command(&line) {
            Some(e) => {
                let _ = events.send(e);
                "ok\n".to_string()
            }
            None => format!(
                "error: unknown command {:?} (start, stop, toggle, cancel)\n",
                line.trim()
            ),
        };
        if w.write_all(reply.as_bytes()).is_err() {
            break;
        }
    }
}

/// `sotto ctl COMMAND`: sends one command to a running `sotto dictate --ptt`, after checking
/// that the socket is this user's, in this user's private directory, and that the process
/// listening on it runs as this user (so nothing else can pose as sotto and take the command).
pub fn send(command: &str) -> Result<String, ControlError> {
    use std::os::unix::fs::MetadataExt;
    let dir = control_dir()?;
    private_dir(&dir)?;
    let path = dir.join("ctl.sock");
    let peer = |message: String| ControlError::Peer {
        path: path.clone(),
        message,
    };
    let meta = std::fs::symlink_metadata(&path)
        .map_err(|e| peer(format!("{e}; is `sotto dictate --ptt …` running?")))?;
    if meta.uid() != uid() {
        return Err(peer(format!(
            "the socket is owned by uid {}, not by you (uid {}): not sending",
            meta.uid(),
            uid()
        )));
    }
    let mut s = UnixStream::connect(&path)
        .map_err(|e| peer(format!("{e}; is `sotto dictate --ptt …` running?")))?;
    let owner = peer_uid(&s).map_err(|e| peer(format!("cannot tell who listens: {e}")))?;
    if owner != uid() {
        return Err(peer(format!(
            "the process listening runs as uid {owner}, not as you (uid {}): not sending",
            uid()
        )));
    }
    s.set_read_timeout(Some(Duration::from_secs(2))).ok();
    writeln!(s, "{command}").map_err(|e| peer(e.to_string()))?;
    let mut reply = String::new();
    BufReader::new(s)
        .read_line(&mut reply)
        .map_err(|e| peer(e.to_string()))?;
    let reply = reply.trim().to_string();
    if reply == "ok" {
        Ok(reply)
    } else {
        Err(peer(reply))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(mode: Mode, events: &[(u64, Event)]) -> (State, Vec<Action>) {
        let t0 = Instant::now();
        let mut m = Machine::default();
        let mut actions = Vec::new();
        for &(ms, e) in events {
            let (next, a) = step(m, e, mode, t0 + Duration::from_millis(ms));
            m = next;
            if a != Action::None {
                actions.push(a);
            }
        }
        (m.state, actions)
    }

    use Action::*;
    use Event::*;

    #[test]
    fn hold_records_while_pressed() {
        let (s, a) = run(
            Mode::Hold,
            &[(0, Press), (1500, Release), (2500, Transcribed)],
        );
        assert_eq!(s, State::Idle);
        assert_eq!(a, vec![StartRecording, StopAndTranscribe]);
    }

    #[test]
    fn auto_a_tap_records_until_the_next_press() {
        let (s, a) = run(
            Mode::Auto,
            &[(0, Press), (120, Release), (4000, Press), (4100, Release)],
        );
        assert_eq!(s, State::Processing);
        assert_eq!(a, vec![StartRecording, StopAndTranscribe]);
        // Nothing stops it in between: the tap's release is not the end.
        let (s, a) = run(Mode::Auto, &[(0, Press), (120, Release)]);
        assert_eq!((s, a), (State::Recording, vec![StartRecording]));
    }

    #[test]
    fn auto_a_hold_records_until_the_release() {
        let (s, a) = run(
            Mode::Auto,
            &[(0, Press), (2000, Release), (3000, Transcribed)],
        );
        assert_eq!(s, State::Idle);
        assert_eq!(a, vec![StartRecording, StopAndTranscribe]);
        // A hold just past the tap limit is a hold.
        let at = TAP.as_millis() as u64;
        let (s, _) = run(Mode::Auto, &[(0, Press), (at, Release)]);
        assert_eq!(s, State::Processing);
    }

    #[test]
    fn auto_a_tap_while_the_last_utterance_is_transcribed_starts_the_next() {
        let (s, a) = run(
            Mode::Auto,
            &[
                (0, Press),
                (1500, Release), // a hold: transcribing
                (1600, Press),   // tapped again while it is transcribed
                (1700, Release),
                (1800, Transcribed),
                (5000, Press), // the tap's recording ends at the next press
            ],
        );
        assert_eq!(s, State::Processing);
        assert_eq!(
            a,
            vec![
                StartRecording,
                StopAndTranscribe,
                StartRecording,
                StopAndTranscribe
            ]
        );
    }

    #[test]
    fn auto_bounce_on_a_tap_is_ignored() {
        // The contacts chatter on press and release: still one tap, still recording.
        let (s, a) = run(
            Mode::Auto,
            &[
                (0, Press),
                (5, Release),
                (10, Press),
                (150, Release),
                (160, Press),
                (170, Release),
            ],
        );
        assert_eq!((s, a), (State::Recording, vec![StartRecording]));
    }

    #[test]
    fn toggle_flips_on_presses_and_ignores_releases() {
        let (s, a) = run(
            Mode::Toggle,
            &[(0, Press), (100, Release), (2000, Press), (2100, Release)],
        );
        assert_eq!(s, State::Processing);
        assert_eq!(a, vec![StartRecording, StopAndTranscribe]);
    }

    #[test]
    fn key_bounce_is_ignored() {
        // Press, then contacts chatter for 20 ms: one start, nothing else.
        let (s, a) = run(
            Mode::Hold,
            &[(0, Press), (10, Release), (20, Press), (1000, Release)],
        );
        assert_eq!(a, vec![StartRecording, StopAndTranscribe]);
        assert_eq!(s, State::Processing);
        let (_, a) = run(Mode::Toggle, &[(0, Press), (15, Press), (30, Press)]);
        assert_eq!(a, vec![StartRecording]);
    }

    #[test]
    fn cancel_discards_a_recording_or_a_pending_transcript() {
        let (s, a) = run(Mode::Hold, &[(0, Press), (500, Cancel)]);
        assert_eq!((s, a), (State::Idle, vec![StartRecording, Discard]));
        let (s, a) = run(Mode::Hold, &[(0, Press), (500, Release), (600, Cancel)]);
        assert_eq!(
            (s, a),
            (
                State::Idle,
                vec![StartRecording, StopAndTranscribe, Discard]
            )
        );
    }

    #[test]
    fn release_while_processing_changes_nothing_and_a_new_press_records_again() {
        let (s, a) = run(
            Mode::Hold,
            &[(0, Press), (500, Release), (900, Release), (1200, Press)],
        );
        assert_eq!(s, State::Recording);
        assert_eq!(a, vec![StartRecording, StopAndTranscribe, StartRecording]);
    }

    #[test]
    fn sigusr1_toggle_works_in_hold_mode_too() {
        let (s, a) = run(Mode::Hold, &[(0, Toggle), (10, Toggle)]);
        assert_eq!(
            (s, a),
            (State::Processing, vec![StartRecording, StopAndTranscribe])
        );
    }

    #[test]
    fn control_commands_parse() {
        assert_eq!(parse_command("start\n"), Some(Press));
        assert_eq!(parse_command("toggle"), Some(Toggle));
        assert_eq!(parse_command("launch"), Option::None);
    }
}

#[cfg(test)]
mod control_tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn a_private_dir_is_made_0700_and_a_planted_symlink_is_refused_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        let good = tmp.path().join("a").join("sotto");
        private_dir(&good).unwrap();
        assert_eq!(std::fs::metadata(&good).unwrap().mode() & 0o777, 0o700);
        // Loose but ours: tightened.
        std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&good).unwrap();
        assert_eq!(std::fs::metadata(&good).unwrap().mode() & 0o777, 0o700);
        // A symlink to somewhere else: refused, and the target keeps its mode.
        let target = tmp.path().join("victim");
        std::fs::create_dir(&target).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
        let link = tmp.path().join("b").join("sotto");
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = private_dir(&link).unwrap_err().to_string();
        assert!(err.contains("symlink"), "{err}");
        assert_eq!(std::fs::metadata(&target).unwrap().mode() & 0o777, 0o755);
        // A plain file in its place: refused.
        let file = tmp.path().join("c").join("sotto");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, b"x").unwrap();
        assert!(private_dir(&file).is_err());
    }
}
