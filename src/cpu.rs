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

/// `requested` threads, fewer while other runnable tasks occupy cores (at least one).
pub fn threads_free_now(requested: usize) -> usize {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    match others_running() {
        Some(others) => {
            let free = cores.saturating_sub(others).max(1);
            let threads = requested.clamp(1, free);
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
        None => requested.max(1),
    }
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
}
