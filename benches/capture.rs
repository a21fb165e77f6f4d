//! The audio callback body: convert, downmix and push one block into the SPSC ring.
//! A 10 ms block at 48 kHz stereo (480 frames) has a 10 ms period; the figure to compare.
//!
//! Run: `cargo bench --bench capture`.

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use ringbuf::traits::Consumer;
use sotto::capture::{self, CaptureBlock, CaptureStats};

fn bench(c: &mut Criterion) {
    let (producer, mut consumer) = capture::ring(48_000, 2);
    let mut block = CaptureBlock::new(producer, 2, Arc::new(CaptureStats::default()));
    let i16_block: Vec<i16> = (0..960).map(|i| (i * 31) as i16).collect();
    let f32_block: Vec<f32> = (0..960).map(|i| i as f32 / 960.0 - 0.5).collect();
    let mut sink = vec![0.0f32; 4096];
    let mut group = c.benchmark_group("capture_callback");
    group.bench_function("48k_stereo_i16_480_frames", |b| {
        b.iter(|| {
            block.process_block(&i16_block);
            consumer.pop_slice(&mut sink);
        })
    });
    group.bench_function("48k_stereo_f32_480_frames", |b| {
        b.iter(|| {
            block.process_block(&f32_block);
            consumer.pop_slice(&mut sink);
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
