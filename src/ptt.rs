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
}

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
}

impl Default for Machine {
    fn default() -> Self {
        Self {
            state: State::Idle,
            last_edge: None,
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
    let edge = |state| Machine {
        state,
        last_edge: if matches!(event, Event::Press | Event::Release) {
            Some(now)
        } else {
            m.last_edge
        },
    };
    use {Action as A, Event as E, State as S};
    let (state, action) = match (m.state, event, mode) {
        (S::Idle | S::Processing, E::Press, _) | (S::Idle | S::Processing, E::Toggle, _) => {
            (S::Recording, A::StartRecording)
        }
        (S::Recording, E::Release, Mode::Hold)
        | (S::Recording, E::Press, Mode::Toggle)
        | (S::Recording, E::Toggle, _) => (S::Processing, A::StopAndTranscribe),
        (S::Recording, E::Cancel, _) => (S::Idle, A::Discard),
        (S::Processing, E::Cancel, _) => (S::Idle, A::Discard),
        (S::Processing, E::Transcribed, _) => (S::Idle, A::None),
        // A release in toggle mode, or while nothing records, changes nothing.
        (s, _, _) => (s, A::None),
    };
    (edge(state), action)
}

/// The control socket: `$XDG_RUNTIME_DIR/sotto/ctl.sock`, else `/tmp/sotto-$UID/ctl.sock`,
/// in a directory only the user can enter.
pub fn socket_path() -> PathBuf {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // SAFETY: getuid has no preconditions and cannot fail.
            let uid = unsafe { libc_getuid() };
            PathBuf::from(format!("/tmp/sotto-{uid}"))
        });
    base.join("sotto").join("ctl.sock")
}

unsafe extern "C" {
    #[link_name = "getuid"]
    fn libc_getuid() -> u32;
}

/// Binds the control socket (directory 0700, socket 0600), replacing a stale one.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    if UnixStream::connect(path).is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("{}: another sotto is already listening", path.display()),
        ));
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
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
pub fn serve(stream: UnixStream, events: &crossbeam_channel::Sender<Event>) {
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

/// `sotto ctl COMMAND`: sends one command to a running `sotto dictate --ptt`.
pub fn send(path: &Path, command: &str) -> Result<String, String> {
    let mut s = UnixStream::connect(path).map_err(|e| {
        format!(
            "{}: {e}; is `sotto dictate --ptt …` running?",
            path.display()
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok();
    writeln!(s, "{command}").map_err(|e| e.to_string())?;
    let mut reply = String::new();
    BufReader::new(s)
        .read_line(&mut reply)
        .map_err(|e| e.to_string())?;
    let reply = reply.trim().to_string();
    if reply == "ok" { Ok(reply) } else { Err(reply) }
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
