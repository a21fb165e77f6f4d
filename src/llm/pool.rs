//! A small thread pool for the LLM's matrix products: `run(n, f)` calls `f(0..n)` across the
//! calling thread and the pool's workers and returns when every call has finished.
//!
//! Why not rayon: on a 2-core laptop something else is always running, and a pool whose
//! threads spin at a barrier collapses when one of its cores is taken (measured here: candle's
//! decode fell from 30 tok/s on one thread to 2.5 on two with one core busy). This pool is
//! built so that a descheduled worker costs at most the one chunk it holds:
//! - work is handed out chunk by chunk from one atomic counter, so whoever runs takes the
//!   next chunk; a worker that is not running claims nothing, and the caller does its share;
//! - the counter carries the run's number, so a worker that wakes late can never claim a
//!   chunk of a finished run;
//! - the caller, once no chunk is left, spins only briefly for chunks still in flight and then
//!   parks, which leaves its core idle so the kernel can move the preempted worker onto it;
//! - idle workers spin for a short while (a token's matrix products come every few tens of
//!   microseconds), then yield, then park until the next run.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

/// Spin iterations before a waiting thread starts yielding.
const SPINS: u32 = 2_000;
/// How long an idle worker keeps looking for work before it parks.
const IDLE_BEFORE_PARK: Duration = Duration::from_micros(300);
/// How long the caller waits on in-flight chunks before it parks.
const CALLER_SPIN: Duration = Duration::from_micros(30);

/// `state` packs the run number (high 32 bits), the next chunk to hand out (16 bits) and the
/// number of chunks (low 16 bits), so a claim is one compare-and-swap that also checks the run.
const MAX_CHUNKS: usize = u16::MAX as usize;

fn pack(run: u32, next: usize, n: usize) -> u64 {
    ((run as u64) << 32) | ((next as u64) << 16) | n as u64
}

fn unpack(v: u64) -> (u32, usize, usize) {
    (
        (v >> 32) as u32,
        ((v >> 16) & 0xFFFF) as usize,
        (v & 0xFFFF) as usize,
    )
}

/// The job of the current run, as the caller's stack holds it.
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
}

struct Shared {
    state: AtomicU64,
    /// Points at the caller's `Job` while a run is open. Only read after a successful claim
    /// of a chunk of that run (see `claim`), when the run cannot have finished.
    job: AtomicPtr<Job<'static>>,
    done: AtomicUsize,
    /// The caller is parked waiting for `done`.
    caller_parked: AtomicBool,
    caller: std::sync::Mutex<Option<Thread>>,
    /// Workers parked waiting for a run, one flag each.
    parked: Vec<AtomicBool>,
    quit: AtomicBool,
}

pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<(JoinHandle<()>, Thread)>,
    run: Cell<u32>,
}

impl Pool {
    /// A pool that runs work on `threads` threads in all: the caller plus `threads - 1`
    /// workers.
    pub fn new(threads: usize) -> Self {
        let n_workers = threads.max(1) - 1;
        let shared = Arc::new(Shared {
            state: AtomicU64::new(pack(0, 0, 0)),
            job: AtomicPtr::new(std::ptr::null_mut()),
            done: AtomicUsize::new(0),
            caller_parked: AtomicBool::new(false),
            caller: std::sync::Mutex::new(None),
            parked: (0..n_workers).map(|_| AtomicBool::new(false)).collect(),
            quit: AtomicBool::new(false),
        });
        let workers = (0..n_workers)
            .map(|i| {
                let shared = shared.clone();
                let handle = std::thread::Builder::new()
                    .name(format!("llm-{}", i + 1))
                    .spawn(move || worker(&shared, i))
                    .expect("spawning a thread only fails when the OS is out of resources");
                let thread = handle.thread().clone();
                (handle, thread)
            })
            .collect();
        Self {
            shared,
            workers,
            run: Cell::new(0),
        }
    }

    /// Threads that take part in a run, the caller included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Calls `f(i)` for every `i` in `0..n`, on whichever threads are running, and returns
    /// when all calls have returned. `n` is at most 65 535.
    pub fn run(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        assert!(n <= MAX_CHUNKS, "{n} chunks; at most {MAX_CHUNKS}");
        if n == 0 {
            return;
        }
        if self.workers.is_empty() || n == 1 {
            (0..n).for_each(f);
            return;
        }
        let s = &*self.shared;
        // The pool may have moved to another thread since its last run (the model is
        // loaded and warmed on one thread, then handed to the LLM thread).
        *s.caller.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::thread::current());
        let run = self.run.get().wrapping_add(1);
        self.run.set(run);
        let job = Job { f };
        s.done.store(0, Ordering::SeqCst);
        // SAFETY (lifetime): the pointer is only dereferenced by a thread that claimed a
        // chunk of this run, and this function does not return before every claimed chunk
        // has finished (`done == n`), so `job` outlives every use.
        s.job
            .store(&job as *const Job as *mut Job<'static>, Ordering::SeqCst);
        s.state.store(pack(run, 0, n), Ordering::SeqCst);
        for (i, (_, t)) in self.workers.iter().enumerate() {
            if s.parked[i].load(Ordering::SeqCst) {
                t.unpark();
            }
        }
        while let Some(i) = claim(s, Some(run)) {
            f(i);
            s.done.fetch_add(1, Ordering::SeqCst);
        }
        // Chunks other threads hold: spin briefly, then park (leaving the core to them).
        let t0 = Instant::now();
        let mut spins = 0u32;
        while s.done.load(Ordering::SeqCst) < n {
            if spins < SPINS || t0.elapsed() < CALLER_SPIN {
                spins += 1;
                std::hint::spin_loop();
                continue;
            }
            s.caller_parked.store(true, Ordering::SeqCst);
            if s.done.load(Ordering::SeqCst) < n {
                std::thread::park_timeout(Duration::from_millis(2));
            }
            s.caller_parked.store(false, Ordering::SeqCst);
        }
        s.job.store(std::ptr::null_mut(), Ordering::SeqCst);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.quit.store(true, Ordering::SeqCst);
        for (handle, thread) in self.workers.drain(..) {
            thread.unpark();
            let _ = handle.join();
        }
    }
}

/// Claims the next chunk of the open run (of run `only`, if given). None: nothing left.
fn claim(s: &Shared, only: Option<u32>) -> Option<usize> {
    let mut v = s.state.load(Ordering::SeqCst);
    loop {
        let (run, next, n) = unpack(v);
        if next >= n || only.is_some_and(|r| r != run) {
            return None;
        }
        match s.state.compare_exchange_weak(
            v,
            pack(run, next + 1, n),
            Ordering::SeqCst,
            Ordering::SeqCst,
        ) {
            Ok(_) => return Some(next),
            Err(now) => v = now,
        }
    }
}

fn worker(s: &Shared, index: usize) {
    let mut idle_since = Instant::now();
    let mut spins = 0u32;
    while !s.quit.load(Ordering::SeqCst) {
        if let Some(i) = claim(s, None) {
            // SAFETY: a chunk of the open run is claimed and not yet counted as done, so the
            // caller is still inside `run` and `job` points at its live `Job`.
            let job = unsafe { &*s.job.load(Ordering::SeqCst) };
            (job.f)(i);
            let n = unpack(s.state.load(Ordering::SeqCst)).2;
            if s.done.fetch_add(1, Ordering::SeqCst) + 1 == n
                && s.caller_parked.load(Ordering::SeqCst)
                && let Some(t) = s.caller.lock().unwrap_or_else(|e| e.into_inner()).as_ref()
            {
                t.unpark();
            }
            idle_since = Instant::now();
            spins = 0;
            continue;
        }
        if spins < SPINS {
            spins += 1;
            std::hint::spin_loop();
        } else if idle_since.elapsed() < IDLE_BEFORE_PARK {
            std::thread::yield_now();
        } else {
            s.parked[index].store(true, Ordering::SeqCst);
            let (_, next, n) = unpack(s.state.load(Ordering::SeqCst));
            if next >= n && !s.quit.load(Ordering::SeqCst) {
                std::thread::park_timeout(Duration::from_millis(100));
            }
            s.parked[index].store(false, Ordering::SeqCst);
            idle_since = Instant::now();
            spins = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_chunk_runs_exactly_once_run_after_run() {
        for threads in [1, 2, 3] {
            let pool = Pool::new(threads);
            for n in [0usize, 1, 2, 7, 64, 1000] {
                let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                for _ in 0..20 {
                    pool.run(n, &|i| {
                        hits[i].fetch_add(1, Ordering::SeqCst);
                    });
                }
                assert!(hits.iter().all(|h| h.load(Ordering::SeqCst) == 20));
            }
        }
    }

    #[test]
    fn a_pool_left_idle_wakes_for_the_next_run() {
        let pool = Pool::new(2);
        let sum = AtomicUsize::new(0);
        pool.run(100, &|i| {
            sum.fetch_add(i, Ordering::SeqCst);
        });
        std::thread::sleep(Duration::from_millis(50));
        pool.run(100, &|i| {
            sum.fetch_add(i, Ordering::SeqCst);
        });
        assert_eq!(sum.load(Ordering::SeqCst), 2 * 4950);
    }
}
