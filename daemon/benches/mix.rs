//! Mix kernel throughput, per dispatched instruction-set path, and a whole engine cycle.
//!
//! - `mix_const` / `mix_ramp`: the mix-with-ramp kernel for stereo f32 streams, constant gain
//!   (the common case) and a gain ramp (a volume change), for every path this CPU supports
//!   (`sse2`, `avx2`, `avx512`; see `soundgate_proto::convert::Isa`) and the scalar reference.
//!   The headline figure is `q256/s64`: 64 streams × 256 frames.
//! - `convert`: s16/s32/f32 decode and encode and the mono → stereo remix, per path.
//! - `cycle`: what the engine does per cycle for N streams: copy each stream's quantum out of
//!   its shared-memory ring, decode s16, remix mono streams to stereo (every other stream),
//!   mix with the stream's gain, then clamp the mix and encode it as s16 for the device.
//!
//! Throughput is in samples per second (streams × quantum × channels per iteration), so
//! criterion's `Gelem/s` is G samples/s.
//!
//! `cargo bench -p soundgated --bench mix -- --quick`

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use soundgate_proto::convert::{ConvertKernels, Isa};
use soundgate_proto::format::SampleFormat;
use soundgate_proto::ring::{ring_bytes, Ring};
use soundgate_proto::shm::{create_sealed, Mapping};
use soundgated::engine::mix::{self, MixKernels};
use std::os::fd::AsFd;

const CHANNELS: usize = 2;

type Kernel = fn(&mut [f32], &[f32], usize, f32, f32) -> f32;

fn noise(seed: &mut u64) -> f32 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    (*seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
}

fn inputs(streams: usize, quantum: usize) -> Vec<Vec<f32>> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..streams)
        .map(|_| (0..quantum * CHANNELS).map(|_| noise(&mut x)).collect())
        .collect()
}

fn kernels() -> Vec<(&'static str, Kernel)> {
    let mut k: Vec<(&'static str, Kernel)> = Isa::all_supported()
        .filter_map(MixKernels::for_isa)
        .map(|k| (k.isa.name(), k.mix_ramped))
        .collect();
    k.push(("reference", mix::reference::mix_ramped));
    k
}

fn bench_mix(c: &mut Criterion) {
    for (ramp, step) in [("const", 0.0f32), ("ramp", -0.5 / 1024.0)] {
        let mut group = c.benchmark_group(format!("mix_{ramp}"));
        for quantum in [256usize, 1024] {
            for streams in [1usize, 8, 64, 256] {
                let srcs = inputs(streams, quantum);
                let mut dst = vec![0.0f32; quantum * CHANNELS];
                group.throughput(Throughput::Elements((streams * quantum * CHANNELS) as u64));
                for (name, kernel) in kernels() {
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

fn bench_convert(c: &mut Criterion) {
    let n = 64 * 256 * CHANNELS;
    let mut seed = 7u64;
    let samples: Vec<f32> = (0..n).map(|_| noise(&mut seed)).collect();
    let mut bytes = vec![0u8; n * 4];
    let mut out = vec![0.0f32; n * 2];
    let mut group = c.benchmark_group("convert");
    group.throughput(Throughput::Elements(n as u64));
    for k in Isa::all_supported().filter_map(ConvertKernels::for_isa) {
        for fmt in [
            SampleFormat::S16Le,
            SampleFormat::S32Le,
            SampleFormat::F32Le,
        ] {
            let b = &mut bytes[..n * fmt.bytes()];
            (k.encode)(fmt, &samples, b);
            group.bench_function(
                BenchmarkId::new(format!("decode_{fmt:?}"), k.isa.name()),
                |bn| bn.iter(|| (k.decode)(fmt, black_box(&*b), &mut out[..n])),
            );
            group.bench_function(
                BenchmarkId::new(format!("encode_{fmt:?}"), k.isa.name()),
                |bn| bn.iter(|| (k.encode)(fmt, black_box(&samples), &mut *b)),
            );
        }
        group.bench_function(BenchmarkId::new("remix_1to2", k.isa.name()), |bn| {
            bn.iter(|| (k.remix)(black_box(&samples), 1, &mut out, 2, n))
        });
    }
    group.finish();
}

/// One stream's ring, filled with s16 noise.
fn ring(channels: usize, quantum: usize, seed: &mut u64) -> Ring {
    let frame_bytes = 2 * channels;
    let capacity = (quantum * 4) as u64;
    let len = ring_bytes(capacity, frame_bytes).expect("ring size");
    let fd = create_sealed("bench", len).expect("memfd");
    let map = Mapping::new(fd.as_fd(), len, true).expect("map");
    let ring = Ring::init(map, capacity, frame_bytes).expect("ring");
    let pcm: Vec<u8> = (0..capacity as usize * channels)
        .flat_map(|_| ((noise(seed) * 60_000.0) as i16).to_le_bytes())
        .collect();
    ring.copy_in(0, &pcm).expect("fill");
    ring
}

fn bench_cycle(c: &mut Criterion) {
    let quantum = 256usize;
    let mut group = c.benchmark_group("cycle");
    for streams in [1usize, 8, 64, 256] {
        let mut seed = 11u64;
        let rings: Vec<(Ring, usize)> = (0..streams)
            .map(|i| {
                let ch = if i % 2 == 0 { 2 } else { 1 };
                (ring(ch, quantum, &mut seed), ch)
            })
            .collect();
        group.throughput(Throughput::Elements((streams * quantum * CHANNELS) as u64));
        for isa in Isa::all_supported() {
            let (Some(mk), Some(ck)) = (MixKernels::for_isa(isa), ConvertKernels::for_isa(isa))
            else {
                continue;
            };
            let mut raw = vec![0u8; quantum * 4];
            let mut decoded = vec![0.0f32; quantum * CHANNELS];
            let mut remixed = vec![0.0f32; quantum * CHANNELS];
            let mut mixbuf = vec![0.0f32; quantum * CHANNELS];
            let mut out = vec![0u8; quantum * CHANNELS * 2];
            let mut index = 0u64;
            group.bench_function(
                BenchmarkId::new(isa.name(), format!("q{quantum}/s{streams}")),
                |b| {
                    b.iter(|| {
                        mixbuf.fill(0.0);
                        for (r, ch) in &rings {
                            let raw = &mut raw[..quantum * r.frame_bytes()];
                            r.copy_out(index, raw).expect("copy");
                            let dec = &mut decoded[..quantum * ch];
                            (ck.decode)(SampleFormat::S16Le, raw, dec);
                            let src: &[f32] = if *ch == CHANNELS {
                                dec
                            } else {
                                (ck.remix)(dec, *ch, &mut remixed, CHANNELS, quantum);
                                &remixed
                            };
                            black_box((mk.mix_ramped)(&mut mixbuf, src, CHANNELS, 0.8, 0.0));
                        }
                        black_box((mk.clamp_peak)(&mut mixbuf));
                        (ck.encode)(SampleFormat::S16Le, &mixbuf, &mut out);
                        black_box(&mut out);
                        // Walk the ring like the engine does (it wraps at 4 quanta).
                        index = (index + quantum as u64) % (quantum as u64 * 3);
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench_mix, bench_convert, bench_cycle);
criterion_main!(benches);
