//! The hotkey on Linux without X11 (Wayland, the console): the kernel's input devices.
//!
//! Every keyboard under `/dev/input/event*` is opened read-only and its key state read with
//! the `EVIOCGKEY` ioctl each poll: the state of the keys, whoever has focus, with no event
//! queue to drain. Reading input devices takes membership of the `input` group (or a udev
//! rule); without it the error names the group and the command that grants it. sotto only
//! reads the state of the keys of the combination; it never grabs or logs keys.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::HotkeyError;

/// `_IOC(_IOC_READ, 'E', nr, len)`, as linux/input.h builds its ioctl numbers.
pub const fn ioc_read(nr: u64, len: u64) -> u64 {
    (2 << 30) | (len << 16) | ((b'E' as u64) << 8) | nr
}
/// EVIOCGKEY(len): the global key state.
pub const fn eviocgkey(len: u64) -> u64 {
    ioc_read(0x18, len)
}
/// EVIOCGBIT(EV_KEY, len): which keys a device has.
pub const fn eviocgbit_key(len: u64) -> u64 {
    ioc_read(0x20 + EV_KEY, len)
}
const EV_KEY: u64 = 0x01;
/// Key codes go up to KEY_MAX (0x2ff): 96 bytes of bits.
const KEY_BYTES: usize = 0x300 / 8;

/// Linux key codes (linux/input-event-codes.h) by name: X keysym spellings and the usual
/// short ones. Modifiers are handled by [`codes`] (either side).
const KEYS: &[(&str, u16)] = &[
    ("escape", 1),
    ("1", 2),
    ("2", 3),
    ("3", 4),
    ("4", 5),
    ("5", 6),
    ("6", 7),
    ("7", 8),
    ("8", 9),
    ("9", 10),
    ("0", 11),
    ("backspace", 14),
    ("tab", 15),
    ("q", 16),
    ("w", 17),
    ("e", 18),
    ("r", 19),
    ("t", 20),
    ("y", 21),
    ("u", 22),
    ("i", 23),
    ("o", 24),
    ("p", 25),
    ("return", 28),
    ("enter", 28),
    ("a", 30),
    ("s", 31),
    ("d", 32),
    ("f", 33),
    ("g", 34),
    ("h", 35),
    ("j", 36),
    ("k", 37),
    ("l", 38),
    ("z", 44),
    ("x", 45),
    ("c", 46),
    ("v", 47),
    ("b", 48),
    ("n", 49),
    ("m", 50),
    ("space", 57),
    ("caps_lock", 58),
    ("f1", 59),
    ("f2", 60),
    ("f3", 61),
    ("f4", 62),
    ("f5", 63),
    ("f6", 64),
    ("f7", 65),
    ("f8", 66),
    ("f9", 67),
    ("f10", 68),
    ("scroll_lock", 70),
    ("f11", 87),
    ("f12", 88),
    ("home", 102),
    ("up", 103),
    ("page_up", 104),
    ("prior", 104),
    ("left", 105),
    ("right", 106),
    ("end", 107),
    ("down", 108),
    ("page_down", 109),
    ("next", 109),
    ("insert", 110),
    ("delete", 111),
    ("pause", 119),
    ("menu", 127),
    ("f13", 183),
    ("f14", 184),
    ("f15", 185),
    ("f16", 186),
    ("f17", 187),
    ("f18", 188),
    ("f19", 189),
    ("f20", 190),
];

/// The key codes a name stands for (both sides of a modifier).
pub fn codes(name: &str) -> Result<Vec<u16>, HotkeyError> {
    let n = name.to_ascii_lowercase();
    Ok(match n.as_str() {
        "ctrl" | "control" => vec![29, 97],
        "shift" => vec![42, 54],
        "alt" | "option" => vec![56, 100],
        "super" | "cmd" | "command" | "meta" | "win" => vec![125, 126],
        _ => vec![
            KEYS.iter()
                .find(|(k, _)| *k == n)
                .map(|&(_, c)| c)
                .ok_or_else(|| HotkeyError::UnknownKey(name.into()))?,
        ],
    })
}

/// Whether bit `code` is set in a kernel key bitmap.
pub fn bit(map: &[u8], code: u16) -> bool {
    map.get(code as usize / 8)
        .is_some_and(|b| b & (1 << (code % 8)) != 0)
}

/// A key bitmap read from a device with `request` (EVIOCGBIT or EVIOCGKEY of
/// [`KEY_BYTES`]); None when the ioctl fails.
fn key_bits(device: &std::fs::File, request: u64) -> Option<[u8; KEY_BYTES]> {
    let mut bits = [0u8; KEY_BYTES];
    // SAFETY: both requests write at most their `len` (= the buffer's size) bytes into it.
    let n = unsafe { libc::ioctl(device.as_raw_fd(), request as _, bits.as_mut_ptr()) };
    (n > 0).then_some(bits)
}

pub struct Backend {
    keyboards: Vec<std::fs::File>,
}

impl Backend {
    /// Opens every readable keyboard under `dir` (`/dev/input`).
    pub fn open_in(dir: &Path) -> Result<Self, HotkeyError> {
        let mut devices: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("event"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        devices.sort();
        if devices.is_empty() {
            return Err(HotkeyError::Evdev(format!(
                "no input devices in {} (a container or VM without a keyboard?); use \
                 `sotto ctl start|stop|toggle` or SIGUSR1",
                dir.display()
            )));
        }
        let (mut keyboards, mut denied) = (Vec::new(), 0);
        for path in &devices {
            use std::os::unix::fs::OpenOptionsExt;
            let file = match std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(path)
            {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    denied += 1;
                    continue;
                }
                Err(_) => continue,
            };
            // A keyboard has letters (KEY_A) or at least function keys (KEY_F1).
            if key_bits(&file, eviocgbit_key(KEY_BYTES as u64))
                .is_some_and(|keys| bit(&keys, 30) || bit(&keys, 59))
            {
                keyboards.push(file);
            }
        }
        if keyboards.is_empty() {
            let group = if denied > 0 {
                format!(
                    "{denied} of the {} input devices in {} are not readable by you: reading \
                     the keyboard needs the `input` group (sudo usermod -aG input $USER, then \
                     log out and in)",
                    devices.len(),
                    dir.display()
                )
            } else {
                format!("no keyboard among the input devices in {}", dir.display())
            };
            return Err(HotkeyError::Evdev(group));
        }
        Ok(Self { keyboards })
    }

    pub fn open() -> Result<Self, HotkeyError> {
        Self::open_in(Path::new("/dev/input"))
    }

    pub fn codes(&self, name: &str) -> Result<Vec<u16>, HotkeyError> {
        codes(name)
    }

    /// The keys held on any keyboard now.
    pub fn pressed(&self) -> Vec<u16> {
        let mut down = Vec::new();
        for kb in &self.keyboards {
            if let Some(state) = key_bits(kb, eviocgkey(KEY_BYTES as u64)) {
                down.extend((0..(KEY_BYTES * 8) as u16).filter(|&c| bit(&state, c)));
            }
        }
        down
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_are_the_kernels() {
        // From linux/input.h on x86-64: EVIOCGKEY(96) and EVIOCGBIT(EV_KEY, 96).
        assert_eq!(eviocgkey(96), 0x8060_4518);
        assert_eq!(eviocgbit_key(96), 0x8060_4521);
    }

    #[test]
    fn names_resolve_to_linux_key_codes() {
        assert_eq!(codes("F9").unwrap(), [67]);
        assert_eq!(codes("space").unwrap(), [57]);
        assert_eq!(codes("ctrl").unwrap(), [29, 97]);
        assert_eq!(codes("Scroll_Lock").unwrap(), [70]);
        assert!(matches!(codes("F99"), Err(HotkeyError::UnknownKey(_))));
        let map = [0u8, 0b1000_0000, 0, 0, 0, 0, 0, 0, 0b0000_1000];
        assert!(bit(&map, 15) && bit(&map, 67) && !bit(&map, 66));
    }

    #[test]
    fn no_devices_or_no_permission_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = Backend::open_in(dir.path()).err().unwrap().to_string();
        assert!(e.contains("no input devices"), "{e}");
        // Files named like devices that are not devices: not keyboards.
        std::fs::write(dir.path().join("event0"), b"").unwrap();
        let e = Backend::open_in(dir.path()).err().unwrap().to_string();
        assert!(e.contains("no keyboard"), "{e}");
    }
}
