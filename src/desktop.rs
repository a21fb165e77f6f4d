//! The desktop session: clipboard, typing into the focused window, key presses, opening a URL
//! or an app. Used by `sotto dictate --clipboard/--type` and by voice-command actions.
//!
//! Each operation runs the platform's own tool with fixed arguments: the text is always one
//! argument (or stdin), never part of a shell command or a script. macOS: `pbcopy`,
//! `osascript` (System Events; the text is passed as a run argument, not spliced into the
//! script), `open`. Wayland: `wl-copy`, `wtype`, `xdg-open`. X11: `xclip` or `xsel`,
//! `xdotool`, `xdg-open`. Runs on the calling thread; each call waits for its tool.

use std::io::Write;
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum DesktopError {
    #[error(
        "no desktop session: {what} needs a macOS session, Wayland (WAYLAND_DISPLAY) or X11 (DISPLAY)"
    )]
    NoSession { what: &'static str },
    #[error("{what} needs `{tool}`, which is not installed ({hint})")]
    MissingTool {
        what: &'static str,
        tool: &'static str,
        hint: &'static str,
    },
    #[error("`{tool}` failed: {message}")]
    Failed { tool: &'static str, message: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Session {
    MacOs,
    Wayland,
    X11,
}

/// The session this process can reach, if any.
pub fn session() -> Option<Session> {
    if cfg!(target_os = "macos") {
        return Some(Session::MacOs);
    }
    let set = |v: &str| std::env::var_os(v).is_some_and(|s| !s.is_empty());
    if set("WAYLAND_DISPLAY") {
        Some(Session::Wayland)
    } else if set("DISPLAY") {
        Some(Session::X11)
    } else {
        None
    }
}

fn require(what: &'static str) -> Result<Session, DesktopError> {
    session().ok_or(DesktopError::NoSession { what })
}

/// Runs `tool args…`, optionally writing `stdin`, and waits for it.
fn run(
    what: &'static str,
    tool: &'static str,
    hint: &'static str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<(), DesktopError> {
    // Clipboard tools on X11 and Wayland leave a child behind that serves the selection; it
    // inherits stderr, so a pipe there would never close.
    let serves_selection = matches!(tool, "xclip" | "xsel" | "wl-copy");
    let mut cmd = Command::new(tool);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(if serves_selection {
            Stdio::null()
        } else {
            Stdio::piped()
        });
    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => DesktopError::MissingTool { what, tool, hint },
        _ => DesktopError::Failed {
            tool,
            message: e.to_string(),
        },
    })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| DesktopError::Failed {
                tool,
                message: e.to_string(),
            })?;
    }
    let out = child.wait_with_output().map_err(|e| DesktopError::Failed {
        tool,
        message: e.to_string(),
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(DesktopError::Failed {
            tool,
            message: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

/// Puts `text` on the clipboard.
pub fn copy_to_clipboard(text: &str) -> Result<(), DesktopError> {
    const WHAT: &str = "--clipboard";
    match require(WHAT)? {
        Session::MacOs => run(WHAT, "pbcopy", "part of macOS", &[], Some(text)),
        Session::Wayland => run(WHAT, "wl-copy", "apt install wl-clipboard", &[], Some(text)),
        Session::X11 => match run(
            WHAT,
            "xclip",
            "apt install xclip",
            &["-selection", "clipboard"],
            Some(text),
        ) {
            Err(DesktopError::MissingTool { .. }) => run(
                WHAT,
                "xsel",
                "apt install xclip (or xsel)",
                &["--clipboard", "--input"],
                Some(text),
            ),
            r => r,
        },
    }
}

/// Types `text` into the focused window, as if from the keyboard.
pub fn type_text(text: &str) -> Result<(), DesktopError> {
    const WHAT: &str = "typing";
    match require(WHAT)? {
        Session::MacOs => run(
            WHAT,
            "osascript",
            "part of macOS",
            &[
                "-e",
                "on run argv",
                "-e",
                "tell application \"System Events\" to keystroke (item 1 of argv)",
                "-e",
                "end run",
                text,
            ],
            None,
        ),
        Session::Wayland => run(WHAT, "wtype", "apt install wtype", &["--", text], None),
        Session::X11 => run(
            WHAT,
            "xdotool",
            "apt install xdotool",
            &["type", "--clearmodifiers", "--", text],
            None,
        ),
    }
}

/// Presses a key combination written like `ctrl+shift+t` (xdotool's names).
pub fn press_keys(spec: &str) -> Result<(), DesktopError> {
    const WHAT: &str = "pressing keys";
    match require(WHAT)? {
        Session::MacOs => {
            let mut parts: Vec<&str> = spec.split('+').collect();
            let key = parts.pop().unwrap_or_default();
            let modifiers: Vec<String> = parts
                .iter()
                .map(|m| match m.to_ascii_lowercase().as_str() {
                    "ctrl" | "control" => "control down".to_string(),
                    "alt" | "option" => "option down".to_string(),
                    "shift" => "shift down".to_string(),
                    _ => "command down".to_string(),
                })
                .collect();
            let script = format!(
                "on run argv\ntell application \"System Events\" to keystroke (item 1 of argv){}\nend run",
                if modifiers.is_empty() {
                    String::new()
                } else {
                    format!(" using {{{}}}", modifiers.join(", "))
                }
            );
            run(
                WHAT,
                "osascript",
                "part of macOS",
                &["-e", &script, key],
                None,
            )
        }
        Session::Wayland => {
            // wtype: -M mod (press) … -k key … -m mod (release).
            let parts: Vec<&str> = spec.split('+').collect();
            let (key, mods) = parts.split_last().unwrap_or((&"", &[]));
            let mut args: Vec<&str> = Vec::new();
            for m in mods {
                args.extend(["-M", m]);
            }
            args.extend(["-k", key]);
            for m in mods.iter().rev() {
                args.extend(["-m", m]);
            }
            run(WHAT, "wtype", "apt install wtype", &args, None)
        }
        Session::X11 => run(
            WHAT,
            "xdotool",
            "apt install xdotool",
            &["key", "--clearmodifiers", "--", spec],
            None,
        ),
    }
}

/// Opens a URL, a file or (macOS) an application by name.
pub fn open(target: &str) -> Result<(), DesktopError> {
    const WHAT: &str = "opening";
    match require(WHAT)? {
        Session::MacOs if !target.contains(':') && !target.starts_with('/') => {
            run(WHAT, "open", "part of macOS", &["-a", target], None)
        }
        Session::MacOs => run(WHAT, "open", "part of macOS", &["--", target], None),
        _ => run(WHAT, "xdg-open", "apt install xdg-utils", &[target], None),
    }
}
