//! One allocation for all of a model's weights, in huge pages where the system offers them.
//!
//! Decoding a token streams every weight from memory (SmolLM2-135M: 96 MB, three times the
//! L3 cache here). Through 4 KiB pages that is ~24 000 TLB misses a token, and in a virtual
//! machine each miss is a two-level page walk: measured on these machines, one thread then
//! streams the Q8_0 output matrix at ~6 GB/s, while llama.cpp, whose mmap of the GGUF the
//! kernel backs with huge file pages, streams at ~13 GB/s. On Linux the arena is an anonymous
//! mapping aligned to 2 MiB and advised `MADV_HUGEPAGE` (transparent huge pages in "madvise"
//! mode, the common default, honour it); elsewhere it is an ordinary allocation.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

const HUGE_PAGE: usize = 2 << 20;

/// A zero-filled, fixed-size byte buffer.
pub struct Arena {
    ptr: *mut u8,
    len: usize,
    /// The mapping to unmap on drop (start, length), when the arena is one.
    mapping: Option<(usize, usize)>,
    /// The allocation otherwise (kept alive, never read through).
    _fallback: Option<Vec<u8>>,
}

// SAFETY: the arena is plain memory owned by this value; shared access is read-only (`Deref`)
// and mutable access needs `&mut`.
unsafe impl Send for Arena {}
unsafe impl Sync for Arena {}

impl Arena {
    pub fn new(len: usize) -> Self {
        #[cfg(target_os = "linux")]
        if let Some(a) = Self::huge(len) {
            return a;
        }
        let mut v = vec![0u8; len.max(1)];
        Self {
            ptr: v.as_mut_ptr(),
            len,
            mapping: None,
            _fallback: Some(v),
        }
    }

    #[cfg(target_os = "linux")]
    fn huge(len: usize) -> Option<Self> {
        if len < HUGE_PAGE {
            return None;
        }
        let mapped = len.next_multiple_of(HUGE_PAGE) + HUGE_PAGE;
        // SAFETY: an anonymous private mapping with no address hint; checked for failure.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return None;
        }
        // Align the start to a huge page inside the mapping (one extra huge page was mapped
        // for this); the slack stays mapped and is unmapped with the rest.
        let offset = (base as usize).next_multiple_of(HUGE_PAGE) - base as usize;
        // SAFETY: offset < HUGE_PAGE, inside the mapping.
        let ptr = unsafe { (base as *mut u8).add(offset) };
        // SAFETY: advice on memory this mapping owns; failure only means no huge pages.
        unsafe {
            libc::madvise(
                ptr.cast(),
                len.next_multiple_of(HUGE_PAGE),
                libc::MADV_HUGEPAGE,
            )
        };
        Some(Self {
            ptr,
            len,
            mapping: Some((base as usize, mapped)),
            _fallback: None,
        })
    }
}

impl Deref for Arena {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` points at `len` initialised (zero-filled at allocation) bytes owned by
        // this arena.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl DerefMut for Arena {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if let Some((base, len)) = self.mapping {
            // SAFETY: the mapping made in `huge`, unmapped once.
            unsafe { libc::munmap(base as *mut libc::c_void, len) };
        }
    }
}

/// A byte range of a shared arena: one tensor's data.
#[derive(Clone)]
pub struct Slice {
    arena: Arc<Arena>,
    start: usize,
    len: usize,
}

impl Slice {
    pub fn new(arena: Arc<Arena>, start: usize, len: usize) -> Self {
        assert!(start + len <= arena.len(), "slice beyond its arena");
        Self { arena, start, len }
    }

    /// A standalone slice holding `bytes` (tests, converted tensors).
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        let len = bytes.len();
        let mut arena = Arena::new(len);
        arena[..len].copy_from_slice(&bytes);
        Self::new(Arc::new(arena), 0, len)
    }
}

impl Deref for Slice {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.arena[self.start..self.start + self.len]
    }
}

impl std::fmt::Debug for Slice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Slice({} bytes)", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arenas_of_any_size_hold_their_bytes() {
        for len in [0, 1, 4096, HUGE_PAGE + 3, 3 * HUGE_PAGE] {
            let mut a = Arena::new(len);
            assert_eq!(a.len(), len);
            assert!(a.iter().all(|&b| b == 0));
            for (i, b) in a.iter_mut().enumerate() {
                *b = i as u8;
            }
            assert!(a.iter().enumerate().all(|(i, &b)| b == i as u8));
            if len >= HUGE_PAGE && cfg!(target_os = "linux") {
                assert_eq!(a.ptr as usize % HUGE_PAGE, 0, "huge-page aligned");
            }
        }
        let s = Slice::from_vec(vec![1, 2, 3]);
        assert_eq!(&*s, &[1, 2, 3]);
    }
}
