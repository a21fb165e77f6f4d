//! How much of the machine is free right now, so the engines do not fight other programs for
//! cores.
//!
//! whisper.cpp's threads meet at a barrier after every step of its graph: when another
//! process keeps one of two cores busy, two threads ran a short clip 1.5-3x slower than
//! quiet, while one thread ran it at its own quiet speed (measured here: jfk.wav, tiny.en,
//! 195 ms on two threads quiet, 300-590 ms on two with a core busy, ~340 ms on one either
//! way). So before each transcription the number of runnable tasks is read from
//! `/proc/loadavg` (an instantaneous count kept by the kernel, not the decaying average) and
//! the cores other tasks are running on are left to them. Elsewhere (macOS) nothing is
//! known and the request stands.
//!
//! sotto's own background work (the audit's re-hash of the weights after they load) runs at
//! the lowest priority and is not counted: it gives way to the engines rather than taking a
//! thread from them (`sotto transcribe` of a 60 s file ran on one thread of two, 4.4 s
//! instead of 3.5 s, because the re-hash was running when the count was read).

use std::sync::atomic::{AtomicUsize, Ordering};

/// Threads of this process inside [`background`]: runnable, but not in the engines' way.
static BACKGROUND: AtomicUsize = AtomicUsize::new(0);

/// Marks the calling thread as background work until the guard drops: its scheduling
/// priority is lowered to the least (nice 19; Linux keeps it per thread; it is not raised
/// again, so take it only on a thread that does nothing else) and
/// [`threads_free_now`] does not count it as a busy core.
pub fn background() -> Background {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority takes no pointers; on Linux, PRIO_PROCESS with id 0 is the calling
    // thread only.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
    }
    BACKGROUND.fetch_add(1, Ordering::Relaxed);
    Background(())
}

/// See [`background`].
pub struct Background(());

impl Drop for Background {
    fn drop(&mut self) {
        BACKGROUND.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `requested` threads, fewer while other runnable tasks occupy cores (at least one).
pub fn threads_free_now(requested: usize) -> usize {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let Some(others) = others_running() else {
        return requested.max(1);
    };
    let threads = threads_beside(requested, cores, others, BACKGROUND.load(Ordering::Relaxed));
    if threads < requested {
        tracing::debug!(
            stage = "cpu",
            requested,
            threads,
            others,
            "cores busy elsewhere"
        );
    }
    threads
}

/// `requested` threads on `cores` beside `others` runnable tasks, `background` of which are
/// sotto's own background work (not counted): at least one.
fn threads_beside(requested: usize, cores: usize, others: usize, background: usize) -> usize {
    let busy = others.saturating_sub(background);
    requested.clamp(1, cores.saturating_sub(busy).max(1))
}

/// Runnable tasks other than the caller, from `/proc/loadavg`'s "running/total" field.
#[cfg(target_os = "linux")]
fn others_running() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    parse_loadavg(&text)
}

#[cfg(not(target_os = "linux"))]
fn others_running() -> Option<usize> {
    None
}

/// The running count (which includes the reading thread itself) minus one.
fn parse_loadavg(text: &str) -> Option<usize> {
    let field = text.split_whitespace().nth(3)?;
    let running: usize = field.split('/').next()?.parse().ok()?;
    Some(running.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_count_is_read_without_the_reader() {
        assert_eq!(parse_loadavg("0.52 0.61 0.70 1/345 12345\n"), Some(0));
        assert_eq!(parse_loadavg("1.98 1.2 0.7 3/345 12345"), Some(2));
        assert_eq!(parse_loadavg("garbage"), None);
    }

    #[test]
    fn a_busy_core_elsewhere_leaves_fewer_threads() {
        let cores = std::thread::available_parallelism().unwrap().get();
        assert!(threads_free_now(cores) >= 1);
        assert!(threads_free_now(0) == 1);
        if cfg!(target_os = "linux") && cores >= 2 {
            // Keep every core but one busy; the next read sees them.
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let spinners: Vec<_> = (0..cores - 1)
                .map(|_| {
                    let stop = stop.clone();
                    std::thread::spawn(move || {
                        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                            std::hint::spin_loop();
                        }
                    })
                })
                .collect();
            std::thread::sleep(std::time::Duration::from_millis(50));
            let got = (0..20).map(|_| threads_free_now(cores)).min().unwrap();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            for s in spinners {
                s.join().unwrap();
            }
            assert!(got < cores, "{got} threads with {} cores busy", cores - 1);
        }
    }

    #[test]
    fn sottos_own_background_work_takes_no_thread() {
        assert_eq!(
            threads_beside(2, 2, 1, 0),
            1,
            "another program on one of two cores"
        );
        assert_eq!(
            threads_beside(2, 2, 1, 1),
            2,
            "the one runnable task is sotto's re-hash"
        );
        assert_eq!(
            threads_beside(2, 2, 2, 1),
            1,
            "the re-hash and another program"
        );
        assert_eq!(threads_beside(4, 2, 0, 0), 2);
        assert_eq!(threads_beside(0, 2, 0, 0), 1);
        assert_eq!(threads_beside(2, 2, 5, 0), 1, "never none");
    }

    #[test]
    fn background_work_runs_at_the_lowest_priority_and_is_counted_while_it_runs() {
        let (priority, counted) = std::thread::spawn(|| {
            let _quiet = background();
            // SAFETY: getpriority takes no pointers; PRIO_PROCESS with id 0 is this thread.
            let priority = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
            (priority, BACKGROUND.load(Ordering::Relaxed))
        })
        .join()
        .unwrap();
        if cfg!(target_os = "linux") {
            assert_eq!(priority, 19);
        }
        assert!(counted >= 1);
    }
}
