//! Mix kernel throughput: the optimised kernel against the scalar reference, for stereo f32
//! streams, with constant gain (the common case) and with a gain ramp (a volume change).
//! Throughput is in samples mixed per second (streams * quantum * channels per iteration).
//!
//! `cargo bench -p soundgated --bench mix -- --quick`

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use soundgated::engine::mix;

const CHANNELS: usize = 2;

type Kernel = fn(&mut [f32], &[f32], usize, f32, f32) -> f32;

fn inputs(streams: usize, quantum: usize) -> Vec<Vec<f32>> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..streams)
        .map(|_| {
            (0..quantum * CHANNELS)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                })
                .collect()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let kernels: [(&str, Kernel); 2] = [
        ("optimised", mix::mix_ramped),
        ("reference", mix::reference::mix_ramped),
    ];
    for (ramp, step) in [("const", 0.0f32), ("ramp", -0.5 / 1024.0)] {
        let mut group = c.benchmark_group(format!("mix_{ramp}"));
        for quantum in [256usize, 1024] {
            for streams in [1usize, 8, 64, 256] {
                let srcs = inputs(streams, quantum);
                let mut dst = vec![0.0f32; quantum * CHANNELS];
                group.throughput(Throughput::Elements((streams * quantum * CHANNELS) as u64));
                for (name, kernel) in kernels {
                    let id = BenchmarkId::new(name, format!("q{quantum}/s{streams}"));
                    group.bench_function(id, |b| {
                        b.iter(|| {
                            dst.fill(0.0);
                            let mut peak = 0.0f32;
                            for s in &srcs {
                                peak = peak.max(kernel(&mut dst, s, CHANNELS, 0.8, step));
                            }
                            black_box(peak);
                            black_box(&mut dst);
                        })
                    });
                }
            }
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
