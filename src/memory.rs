//! Process-wide memory settings.
//!
//! Whisper allocates its decoding state (tens of megabytes of buffers) for every utterance and
//! frees it after. glibc's malloc raises its mmap threshold each time a large mapped block is
//! freed (up to 32 MiB), after which blocks of that size come from heap arenas that are seldom
//! given back: `sotto dictate` over 11 minutes of speech peaked at 260 MB. With the threshold
//! fixed, every large block is its own mapping, returned to the system when freed: 197 MB, and
//! no slower (measured here). Other C libraries (macOS) are left alone.
//!
//! The threshold is fixed at 512 KiB, not glibc's initial 128 KiB: whisper.cpp's beam search
//! builds a sampling distribution over the whole vocabulary (two arrays of ~415 KB for Whisper's
//! 51,864 tokens) for each beam at every token, and above 128 KiB each was a mapping of its
//! own, faulted in page by page and unmapped again. The heap keeps up to 2 MiB free at its
//! top for the same reason (glibc's 128 KiB gave those pages back after every token). 60 s,
//! beam 5, one thread: 295 k page faults -> 115 k, CPU time -3 %; jfk.wav: 72 k -> 44 k and
//! -14 %; `dictate` of 5 min peaked at 222 MB either way (the agent: 460-466 MiB either way).

/// Fixes glibc's mmap and trim thresholds. Call once at start-up, before any thread exists.
pub fn return_large_blocks_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes malloc's parameters; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 512 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 2 * 1024 * 1024);
    }
}
