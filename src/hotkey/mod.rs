//! The global push-to-talk hotkey: a key combination held anywhere on the desktop.
//!
//! [`Hotkey`] polls the keyboard state of the desktop session (no window, no focus needed)
//! and reports the combination's press and release edges to the push-to-talk state machine,
//! which debounces them. It runs on the "ptt" thread and is polled every few milliseconds.
//!
//! - X11: `XQueryKeymap` through libX11, loaded at run time (so the binary needs no X
//!   libraries where there is no X server).
//! - macOS: `CGEventSourceKeyState` (Core Graphics). The terminal (or sotto) needs the Input
//!   Monitoring permission, else only modifier keys are seen.
//! - Wayland, and the Linux console: the kernel's input devices ([`evdev`]), read-only, which
//!   takes membership of the `input` group; the error says so when it is missing.
//!
//! A combination is written like `F9`, `ctrl+alt+space` or `super+Scroll_Lock`: modifiers
//! (`ctrl`, `shift`, `alt`, `super`/`cmd`) match either side; other names are X keysym names
//! (macOS: letters, digits, F1–F20, space, return, tab, escape).

#[derive(Debug, thiserror::Error)]
pub enum HotkeyError {
    #[error("--ptt-key {0:?}: empty key combination")]
    Empty(String),
    #[error("--ptt-key: unknown key {0:?} (use X keysym names such as F9, space, Pause)")]
    UnknownKey(String),
    #[error(
        "a global hotkey needs an X11 or macOS desktop session{0}; without one, use `sotto ctl start|stop|toggle` or SIGUSR1"
    )]
    NoSession(&'static str),
    #[error("cannot use the X display: {0}")]
    X11(String),
    #[error("cannot watch the keyboard: {0}")]
    Evdev(String),
}

#[cfg(target_os = "linux")]
pub mod evdev;

/// A key combination being watched.
pub struct Hotkey {
    /// Each element is satisfied when any of its key codes is down.
    combo: Vec<Vec<u16>>,
    backend: Backend,
}

impl Hotkey {
    /// Opens the desktop session and resolves `spec` to key codes.
    pub fn open(spec: &str) -> Result<Self, HotkeyError> {
        let names: Vec<&str> = spec
            .split('+')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if names.is_empty() {
            return Err(HotkeyError::Empty(spec.into()));
        }
        let backend = Backend::open()?;
        let combo = names
            .iter()
            .map(|n| backend.codes(n))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { combo, backend })
    }

    /// Whether the whole combination is held right now.
    pub fn is_down(&self) -> bool {
        let down = self.backend.pressed();
        self.combo
            .iter()
            .all(|any| any.iter().any(|c| down.contains(c)))
    }
}

/// Either side of a modifier, in X keysym names.
fn modifier_keysyms(name: &str) -> Option<&'static [&'static str]> {
    Some(match name.to_ascii_lowercase().as_str() {
        "ctrl" | "control" => &["Control_L", "Control_R"],
        "shift" => &["Shift_L", "Shift_R"],
        "alt" | "option" => &["Alt_L", "Alt_R"],
        "super" | "cmd" | "command" | "meta" | "win" => &["Super_L", "Super_R"],
        _ => return None,
    })
}

#[cfg(target_os = "macos")]
mod platform {
    use super::HotkeyError;

    #[link(name = "CoreGraphics", kind = "framework")]
    unsafe extern "C" {
        fn CGEventSourceKeyState(state_id: i32, key: u16) -> bool;
    }
    /// kCGEventSourceStateHIDSystemState: the hardware's state, whoever has focus.
    const HID_SYSTEM_STATE: i32 = 1;

    /// macOS virtual key codes (Carbon's kVK_ constants).
    const KEYS: &[(&str, u16)] = &[
        ("a", 0x00),
        ("s", 0x01),
        ("d", 0x02),
        ("f", 0x03),
        ("h", 0x04),
        ("g", 0x05),
        ("z", 0x06),
        ("x", 0x07),
        ("c", 0x08),
        ("v", 0x09),
        ("b", 0x0B),
        ("q", 0x0C),
        ("w", 0x0D),
        ("e", 0x0E),
        ("r", 0x0F),
        ("y", 0x10),
        ("t", 0x11),
        ("1", 0x12),
        ("2", 0x13),
        ("3", 0x14),
        ("4", 0x15),
        ("6", 0x16),
        ("5", 0x17),
        ("9", 0x19),
        ("7", 0x1A),
        ("8", 0x1C),
        ("0", 0x1D),
        ("o", 0x1F),
        ("u", 0x20),
        ("i", 0x22),
        ("p", 0x23),
        ("l", 0x25),
        ("j", 0x26),
        ("k", 0x28),
        ("n", 0x2D),
        ("m", 0x2E),
        ("return", 0x24),
        ("tab", 0x30),
        ("space", 0x31),
        ("escape", 0x35),
        ("super_l", 0x37),
        ("shift_l", 0x38),
        ("alt_l", 0x3A),
        ("control_l", 0x3B),
        ("super_r", 0x36),
        ("shift_r", 0x3C),
        ("alt_r", 0x3D),
        ("control_r", 0x3E),
        ("f1", 0x7A),
        ("f2", 0x78),
        ("f3", 0x63),
        ("f4", 0x76),
        ("f5", 0x60),
        ("f6", 0x61),
        ("f7", 0x62),
        ("f8", 0x64),
        ("f9", 0x65),
        ("f10", 0x6D),
        ("f11", 0x67),
        ("f12", 0x6F),
        ("f13", 0x69),
        ("f14", 0x6B),
        ("f15", 0x71),
        ("f16", 0x6A),
        ("f17", 0x40),
        ("f18", 0x4F),
        ("f19", 0x50),
        ("f20", 0x5A),
    ];

    pub struct Backend;

    impl Backend {
        pub fn open() -> Result<Self, HotkeyError> {
            Ok(Self)
        }

        fn code(name: &str) -> Result<u16, HotkeyError> {
            let lower = name.to_ascii_lowercase();
            KEYS.iter()
                .find(|(n, _)| *n == lower)
                .map(|(_, c)| *c)
                .ok_or_else(|| HotkeyError::UnknownKey(name.into()))
        }

        pub fn codes(&self, name: &str) -> Result<Vec<u16>, HotkeyError> {
            match super::modifier_keysyms(name) {
                Some(sides) => sides.iter().map(|s| Self::code(s)).collect(),
                None => Ok(vec![Self::code(name)?]),
            }
        }

        pub fn pressed(&self) -> Vec<u16> {
            KEYS.iter()
                // SAFETY: a pure query of the HID state; no pointers are involved.
                .filter(|(_, c)| unsafe { CGEventSourceKeyState(HID_SYSTEM_STATE, *c) })
                .map(|(_, c)| *c)
                .collect()
        }
    }
}

#[cfg(not(target_os = "macos"))]
mod platform {
    use std::ffi::{CString, c_char, c_int, c_ulong, c_void};

    use super::HotkeyError;

    type XOpenDisplay = unsafe extern "C" fn(*const c_char) -> *mut c_void;
    type XCloseDisplay = unsafe extern "C" fn(*mut c_void) -> c_int;
    type XStringToKeysym = unsafe extern "C" fn(*const c_char) -> c_ulong;
    type XKeysymToKeycode = unsafe extern "C" fn(*mut c_void, c_ulong) -> u8;
    type XQueryKeymap = unsafe extern "C" fn(*mut c_void, *mut c_char) -> c_int;

    /// An Xlib connection and the few functions used, from libX11 loaded at run time.
    pub struct Backend {
        display: *mut c_void,
        close: XCloseDisplay,
        string_to_keysym: XStringToKeysym,
        keysym_to_keycode: XKeysymToKeycode,
        query_keymap: XQueryKeymap,
        _lib: libloading::Library,
    }

    // SAFETY: the display connection is used by one thread at a time: the hotkey is created
    // on one thread and then moved to, and only used by, the push-to-talk thread.
    unsafe impl Send for Backend {}

    impl Backend {
        pub fn open() -> Result<Self, HotkeyError> {
            if std::env::var_os("DISPLAY").is_none_or(|d| d.is_empty()) {
                let why = if std::env::var_os("WAYLAND_DISPLAY").is_some() {
                    " (Wayland does not let clients watch global keys: bind a compositor \
                     shortcut to `sotto ctl toggle`)"
                } else {
                    " (DISPLAY is not set)"
                };
                return Err(HotkeyError::NoSession(why));
            }
            let x11 = |e: String| HotkeyError::X11(e);
            // SAFETY: libX11 is the system's X client library; loading it runs only its
            // initialisers.
            let lib = unsafe { libloading::Library::new("libX11.so.6") }
                .map_err(|e| x11(format!("cannot load libX11.so.6 ({e}); install libx11-6")))?;
            // SAFETY: the symbols are looked up with the signatures Xlib declares for them.
            let (open, close, string_to_keysym, keysym_to_keycode, query_keymap) = unsafe {
                let f = |e: libloading::Error| x11(e.to_string());
                (
                    *lib.get::<XOpenDisplay>(b"XOpenDisplay\0").map_err(f)?,
                    *lib.get::<XCloseDisplay>(b"XCloseDisplay\0").map_err(f)?,
                    *lib.get::<XStringToKeysym>(b"XStringToKeysym\0")
                        .map_err(f)?,
                    *lib.get::<XKeysymToKeycode>(b"XKeysymToKeycode\0")
                        .map_err(f)?,
                    *lib.get::<XQueryKeymap>(b"XQueryKeymap\0").map_err(f)?,
                )
            };
            // SAFETY: a null name means $DISPLAY; the result is checked for null.
            let display = unsafe { open(std::ptr::null()) };
            if display.is_null() {
                return Err(x11(format!(
                    "cannot open display {:?}",
                    std::env::var("DISPLAY").unwrap_or_default()
                )));
            }
            Ok(Self {
                display,
                close,
                string_to_keysym,
                keysym_to_keycode,
                query_keymap,
                _lib: lib,
            })
        }

        fn code(&self, keysym_name: &str) -> Result<u16, HotkeyError> {
            let unknown = || HotkeyError::UnknownKey(keysym_name.into());
            let c = CString::new(keysym_name).map_err(|_| unknown())?;
            // SAFETY: `c` is a NUL-terminated string that outlives the call.
            let sym = unsafe { (self.string_to_keysym)(c.as_ptr()) };
            if sym == 0 {
                return Err(unknown());
            }
            // SAFETY: the display is open (checked in `open`) until `drop`.
            let code = unsafe { (self.keysym_to_keycode)(self.display, sym) };
            if code == 0 {
                return Err(unknown());
            }
            Ok(code.into())
        }

        pub fn codes(&self, name: &str) -> Result<Vec<u16>, HotkeyError> {
            match super::modifier_keysyms(name) {
                Some(sides) => sides.iter().map(|s| self.code(s)).collect(),
                // Keysym names are case-sensitive ("F9", "space"); accept "f9" too.
                None => self
                    .code(name)
                    .or_else(|_| self.code(&name.to_ascii_uppercase()))
                    .or_else(|_| self.code(&name.to_ascii_lowercase()))
                    .map(|c| vec![c]),
            }
        }

        pub fn pressed(&self) -> Vec<u16> {
            let mut keys = [0 as c_char; 32];
            // SAFETY: XQueryKeymap writes exactly 32 bytes; the display is open.
            unsafe { (self.query_keymap)(self.display, keys.as_mut_ptr()) };
            (0..256u16)
                .filter(|&code| keys[(code / 8) as usize] as u8 & (1 << (code % 8)) != 0)
                .collect()
        }
    }

    impl Drop for Backend {
        fn drop(&mut self) {
            // SAFETY: the display was opened in `open` and is closed once, here.
            unsafe { (self.close)(self.display) };
        }
    }
}

#[cfg(target_os = "macos")]
use platform::Backend;

/// X11 where there is an X session (and it is not Wayland's), else the input devices.
#[cfg(not(target_os = "macos"))]
enum Backend {
    X11(platform::Backend),
    #[cfg(target_os = "linux")]
    Evdev(evdev::Backend),
}

#[cfg(not(target_os = "macos"))]
impl Backend {
    fn open() -> Result<Self, HotkeyError> {
        let set = |v: &str| std::env::var_os(v).is_some_and(|d| !d.is_empty());
        #[cfg(target_os = "linux")]
        if set("WAYLAND_DISPLAY") || !set("DISPLAY") {
            return evdev::Backend::open().map(Backend::Evdev);
        }
        platform::Backend::open().map(Backend::X11)
    }

    fn codes(&self, name: &str) -> Result<Vec<u16>, HotkeyError> {
        match self {
            Backend::X11(b) => b.codes(name),
            #[cfg(target_os = "linux")]
            Backend::Evdev(b) => b.codes(name),
        }
    }

    fn pressed(&self) -> Vec<u16> {
        match self {
            Backend::X11(b) => b.pressed(),
            #[cfg(target_os = "linux")]
            Backend::Evdev(b) => b.pressed(),
        }
    }
}
