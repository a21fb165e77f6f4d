//! Process-wide memory settings.
//!
//! Whisper allocates its decoding state (tens of megabytes of buffers) for every utterance and
//! frees it after. glibc's malloc raises its mmap threshold each time a large mapped block is
//! freed (up to 32 MiB), after which blocks of that size come from heap arenas that are seldom
//! given back: `sotto dictate` over 11 minutes of speech peaked at 260 MB. With the threshold
//! fixed at 128 KiB, every large block is its own mapping, returned to the system when freed:
//! 197 MB, and no slower (measured here). Other C libraries (macOS) are left alone.

/// Fixes glibc's mmap threshold. Call once at start-up, before any thread exists.
pub fn return_large_blocks_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes malloc's parameters; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}
