//! Startup audit cost for the quick-start set: cold (every weight file hashed, ~240 MB, and
//! licence texts identified) and warm (hashes and analyses from the cache).
//!
//! Run: `cargo bench --bench audit` (after scripts/setup).

use criterion::{Criterion, criterion_group, criterion_main};
use sotto::audit::{AuditContext, identity::HashCache};
use sotto::models::ModelsDir;

const QUICK_START: [&str; 3] = [
    "whisper-tiny.en",
    "smollm2-135m-instruct",
    "piper-en_US-joe-medium",
];

fn bench(c: &mut Criterion) {
    let models = ModelsDir::resolve(None);
    let cache_path =
        std::env::temp_dir().join(format!("sotto-bench-audit-{}.json", std::process::id()));
    let mut group = c.benchmark_group("audit");
    group.sample_size(10);
    group.bench_function("cold_quick_start", |b| {
        b.iter(|| {
            let mut ctx = AuditContext {
                models_dir: models.root.clone(),
                cache: HashCache::in_memory(),
            };
            for id in QUICK_START {
                ctx.audit_id(id).expect("run scripts/setup first");
            }
        })
    });
    {
        let mut ctx = AuditContext {
            models_dir: models.root.clone(),
            cache: HashCache::load(Some(cache_path.clone())),
        };
        for id in QUICK_START {
            ctx.audit_id(id).expect("run scripts/setup first");
        }
        ctx.cache.save();
    }
    group.bench_function("warm_quick_start", |b| {
        b.iter(|| {
            let mut ctx = AuditContext {
                models_dir: models.root.clone(),
                cache: HashCache::load(Some(cache_path.clone())),
            };
            for id in QUICK_START {
                ctx.audit_id(id).unwrap();
            }
        })
    });
    group.finish();
    let _ = std::fs::remove_file(cache_path);
}

criterion_group!(benches, bench);
criterion_main!(benches);
