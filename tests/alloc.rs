//! The audio callback body allocates nothing: a warmed-up `CaptureBlock::process_block` runs
//! thousands of blocks under a counting global allocator (nih-plug's assert_no_alloc idea).
//! Its own test binary, because the allocator is global.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ringbuf::traits::Consumer;
use sotto::capture::{self, CaptureBlock, CaptureStats};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(|c| c.get()) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.with(|c| c.get()) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(|c| c.get()) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn run_blocks<T: cpal::Sample + Copy>(
    block: &mut CaptureBlock,
    input: &[T],
    n: usize,
    drain: &mut impl FnMut(),
) where
    f32: cpal::FromSample<T>,
{
    for _ in 0..n {
        block.process_block(input);
        drain();
    }
}

#[test]
fn the_capture_callback_never_allocates() {
    let (producer, mut consumer) = capture::ring(48_000, 2);
    let stats = Arc::new(CaptureStats::default());
    let mut block = CaptureBlock::new(producer, 2, stats.clone());
    let stereo_i16: Vec<i16> = (0..960).map(|i| (i * 31) as i16).collect();
    let stereo_f32: Vec<f32> = (0..960).map(|i| (i as f32 / 960.0) - 0.5).collect();
    let mut sink = vec![0.0f32; 4096];
    let mut drain = || {
        consumer.pop_slice(&mut sink);
    };
    // The counter itself works: an allocation while counting is seen.
    COUNTING.with(|c| c.set(true));
    drop(std::hint::black_box(vec![1u8; 64]));
    COUNTING.with(|c| c.set(false));
    assert!(
        ALLOCATIONS.swap(0, Ordering::Relaxed) > 0,
        "the counting allocator counts"
    );
    // Warm up (first touches of the ring's memory), then count.
    run_blocks(&mut block, &stereo_i16, 10, &mut drain);
    COUNTING.with(|c| c.set(true));
    run_blocks(&mut block, &stereo_i16, 5_000, &mut drain);
    run_blocks(&mut block, &stereo_f32, 5_000, &mut drain);
    // And with a stalled consumer: the ring fills, samples are dropped and counted.
    let mut stalled = || {};
    run_blocks(&mut block, &stereo_f32, 1_000, &mut stalled);
    COUNTING.with(|c| c.set(false));
    assert_eq!(
        ALLOCATIONS.load(Ordering::Relaxed),
        0,
        "the callback body allocated"
    );
    assert!(
        stats.overruns.load(Ordering::Relaxed) > 0,
        "overflow is counted"
    );
}
