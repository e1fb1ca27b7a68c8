//! Allocation-free sample conversion between the wire formats and f32, and channel remixing.
//! Used by the client library and by the server's real-time engine, so nothing here may
//! allocate, lock or log.
//!
//! Integer → float divides by 2^(bits-1); float → integer multiplies by the same, rounds to
//! nearest and saturates, so s16 → f32 → s16 is lossless.
//!
//! ## Runtime CPU dispatch
//!
//! [`decode_into`], [`encode_into`] and [`remix`] are the portable kernels (SSE2 on x86_64),
//! and the reference every dispatched path is tested against. [`Isa::best`] detects once
//! (cached) the widest instruction set this CPU has — AVX-512 (F, BW, DQ, VL), AVX2 + FMA, or the
//! SSE2 baseline — and [`ConvertKernels::for_isa`] hands out a table of plain `fn` pointers
//! compiled for it: the same source compiled under `#[target_feature]`, so LLVM vectorises it
//! for the wider registers. The table is picked once when an engine is set up, never per
//! sample or per cycle. Every path computes each sample with the same IEEE operations as the
//! portable one, so their results are bit-exact (tests: `every_isa_is_bit_exact`).

use crate::format::SampleFormat;

const S16_SCALE: f32 = 32_768.0;
const S32_SCALE: f64 = 2_147_483_648.0;

/// Decodes `out.len()` samples of `format` from `bytes` into f32.
///
/// `bytes` must hold at least `out.len() * format.bytes()` bytes; extra bytes are ignored.
pub fn decode_into(format: SampleFormat, bytes: &[u8], out: &mut [f32]) {
    decode_body(format, bytes, out)
}

#[inline(always)]
fn decode_body(format: SampleFormat, bytes: &[u8], out: &mut [f32]) {
    match format {
        SampleFormat::S16Le => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f32::from(i16::from_le_bytes([c[0], c[1]])) / S16_SCALE;
            }
        }
        SampleFormat::S32Le => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = (f64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])) / S32_SCALE) as f32;
            }
        }
        SampleFormat::F32Le => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                let v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                // A NaN or infinity from a client must not poison the mix.
                *o = if v.is_finite() { v } else { 0.0 };
            }
        }
    }
}

/// Encodes `samples` as `format` into `out`, which must hold `samples.len() * format.bytes()`
/// bytes. Integers saturate; floats pass through unchanged.
pub fn encode_into(format: SampleFormat, samples: &[f32], out: &mut [u8]) {
    encode_body(format, samples, out)
}

#[inline(always)]
fn encode_body(format: SampleFormat, samples: &[f32], out: &mut [u8]) {
    match format {
        SampleFormat::S16Le => {
            for (s, c) in samples.iter().zip(out.chunks_exact_mut(2)) {
                let v = round_half_away(s * S16_SCALE).clamp(-32_768.0, 32_767.0) as i16;
                c.copy_from_slice(&v.to_le_bytes());
            }
        }
        SampleFormat::S32Le => {
            for (s, c) in samples.iter().zip(out.chunks_exact_mut(4)) {
                let v = round_half_away_f64(f64::from(*s) * S32_SCALE)
                    .clamp(-S32_SCALE, S32_SCALE - 1.0) as i32;
                c.copy_from_slice(&v.to_le_bytes());
            }
        }
        SampleFormat::F32Le => {
            for (s, c) in samples.iter().zip(out.chunks_exact_mut(4)) {
                c.copy_from_slice(&s.to_le_bytes());
            }
        }
    }
}

/// `x.round()` (half away from zero), as an add and a truncation that vectorise on every
/// level (SSE2 has no rounding instruction, so `round` is a libm call per sample there). Exact
/// for every f32: below 2^23 adding the largest float under 0.5 (with x's sign) and
/// truncating gives the same integer; from 2^23 up x is already an integer and the add
/// rounds back to it; NaN and infinities pass through. `encode_into` truncates after
/// clamping (`as`), so no `trunc` call is needed either.
#[inline(always)]
fn round_half_away(x: f32) -> f32 {
    x + 0.499_999_97f32.copysign(x)
}

/// [`round_half_away`] in f64 (exact below 2^52, which every f32 × 2^31 is, or an integer).
#[inline(always)]
fn round_half_away_f64(x: f64) -> f64 {
    x + 0.499_999_999_999_999_94f64.copysign(x)
}

/// Remixes `frames` interleaved frames from `src_ch` to `dst_ch` channels.
///
/// Equal counts copy. Mono → N copies the channel to all. N → mono averages. Otherwise channels
/// map by index: extra source channels are dropped, missing ones are silent (stereo → 5.1 puts
/// the pair on front left/right). `src` and `dst` must hold `frames * ch` samples.
pub fn remix(src: &[f32], src_ch: usize, dst: &mut [f32], dst_ch: usize, frames: usize) {
    remix_body(src, src_ch, dst, dst_ch, frames)
}

#[inline(always)]
fn remix_body(src: &[f32], src_ch: usize, dst: &mut [f32], dst_ch: usize, frames: usize) {
    let src = &src[..frames * src_ch];
    let dst = &mut dst[..frames * dst_ch];
    if src_ch == dst_ch {
        dst.copy_from_slice(src);
    } else if src_ch == 1 {
        for (d, &s) in dst.chunks_exact_mut(dst_ch).zip(src) {
            d.fill(s);
        }
    } else if dst_ch == 1 {
        let inv = 1.0 / src_ch as f32;
        for (d, s) in dst.iter_mut().zip(src.chunks_exact(src_ch)) {
            *d = s.iter().sum::<f32>() * inv;
        }
    } else {
        for (d, s) in dst.chunks_exact_mut(dst_ch).zip(src.chunks_exact(src_ch)) {
            for (i, o) in d.iter_mut().enumerate() {
                *o = s.get(i).copied().unwrap_or(0.0);
            }
        }
    }
}

/// An instruction-set level the kernels are compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// The build's baseline (SSE2 on x86_64): the portable kernels.
    Baseline,
    /// AVX2 and FMA (x86_64 only).
    Avx2,
    /// AVX-512 F, BW, DQ and VL (x86_64 only).
    Avx512,
}

impl Isa {
    /// Every level, narrowest first.
    pub const ALL: [Isa; 3] = [Isa::Baseline, Isa::Avx2, Isa::Avx512];

    /// A short name for logs, stats and benchmarks.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Baseline if cfg!(target_arch = "x86_64") => "sse2",
            Isa::Baseline => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// Whether this CPU can run the level (runtime detection; cheap after the first call).
    pub fn supported(self) -> bool {
        match self {
            Isa::Baseline => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                Isa::Avx2.supported()
                    && std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                    && std::arch::is_x86_feature_detected!("avx512vl")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Every level this CPU supports, narrowest first (what the tests and benchmarks run).
    pub fn all_supported() -> impl Iterator<Item = Isa> {
        Isa::ALL.into_iter().filter(|i| i.supported())
    }

    /// The widest supported level, detected once and cached. `SOUNDGATE_ISA=sse2|avx2|avx512`
    /// caps it (for benchmarks and for ruling the kernels out when chasing a bug).
    pub fn best() -> Isa {
        static BEST: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| {
            let cap = std::env::var("SOUNDGATE_ISA").ok();
            let cap = cap
                .as_deref()
                .and_then(|c| Isa::ALL.into_iter().find(|i| i.name() == c));
            Isa::all_supported()
                .filter(|i| cap.is_none_or(|c| *i as u8 <= c as u8))
                .last()
                .unwrap_or(Isa::Baseline)
        })
    }
}

/// Decode kernel: see [`decode_into`].
pub type DecodeFn = fn(SampleFormat, &[u8], &mut [f32]);
/// Encode kernel: see [`encode_into`].
pub type EncodeFn = fn(SampleFormat, &[f32], &mut [u8]);
/// Remix kernel: see [`remix`].
pub type RemixFn = fn(&[f32], usize, &mut [f32], usize, usize);

/// The conversion kernels compiled for one [`Isa`]; plain `fn` pointers, chosen once.
#[derive(Debug, Clone, Copy)]
pub struct ConvertKernels {
    /// The level these kernels were compiled for.
    pub isa: Isa,
    /// Same contract as [`decode_into`].
    pub decode: DecodeFn,
    /// Same contract as [`encode_into`].
    pub encode: EncodeFn,
    /// Same contract as [`remix`].
    pub remix: RemixFn,
}

impl ConvertKernels {
    /// The kernels for `isa`, or `None` when this CPU does not support it.
    pub fn for_isa(isa: Isa) -> Option<ConvertKernels> {
        if !isa.supported() {
            return None;
        }
        let portable = ConvertKernels {
            isa: Isa::Baseline,
            decode: decode_into,
            encode: encode_into,
            remix,
        };
        match isa {
            Isa::Baseline => Some(portable),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => Some(ConvertKernels {
                isa,
                decode: x86::decode_avx2,
                encode: x86::encode_avx2,
                remix: x86::remix_avx2,
            }),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => Some(ConvertKernels {
                isa,
                decode: x86::decode_avx512,
                encode: x86::encode_avx512,
                remix: x86::remix_avx512,
            }),
            #[cfg(not(target_arch = "x86_64"))]
            _ => None,
        }
    }

    /// The kernels for [`Isa::best`].
    pub fn best() -> ConvertKernels {
        ConvertKernels::for_isa(Isa::best()).unwrap_or(ConvertKernels {
            isa: Isa::Baseline,
            decode: decode_into,
            encode: encode_into,
            remix,
        })
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{decode_body, encode_body, remix_body, SampleFormat};

    crate::__sg_target_feature_kernel!("avx2,fma", decode_avx2, decode_avx2_tf, decode_body,
        (f: SampleFormat, b: &[u8], o: &mut [f32]));
    crate::__sg_target_feature_kernel!("avx2,fma", encode_avx2, encode_avx2_tf, encode_body,
        (f: SampleFormat, s: &[f32], o: &mut [u8]));
    crate::__sg_target_feature_kernel!("avx2,fma", remix_avx2, remix_avx2_tf, remix_body,
        (s: &[f32], sc: usize, d: &mut [f32], dc: usize, n: usize));
    crate::__sg_target_feature_kernel!("avx2,fma,avx512f,avx512bw,avx512dq,avx512vl",
        decode_avx512, decode_avx512_tf, decode_body,
        (f: SampleFormat, b: &[u8], o: &mut [f32]));
    crate::__sg_target_feature_kernel!("avx2,fma,avx512f,avx512bw,avx512dq,avx512vl",
        encode_avx512, encode_avx512_tf, encode_body,
        (f: SampleFormat, s: &[f32], o: &mut [u8]));
    crate::__sg_target_feature_kernel!("avx2,fma,avx512f,avx512bw,avx512dq,avx512vl",
        remix_avx512, remix_avx512_tf, remix_body,
        (s: &[f32], sc: usize, d: &mut [f32], dc: usize, n: usize));
}

/// The plain per-sample kernels every path (the portable one included) is tested against:
/// the original loops, kept as written.
pub mod reference {
    use super::{SampleFormat, S16_SCALE, S32_SCALE};

    /// Same contract as [`super::decode_into`].
    pub fn decode_into(format: SampleFormat, bytes: &[u8], out: &mut [f32]) {
        match format {
            SampleFormat::S16Le => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = f32::from(i16::from_le_bytes([c[0], c[1]])) / S16_SCALE;
                }
            }
            SampleFormat::S32Le => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = (f64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])) / S32_SCALE)
                        as f32;
                }
            }
            SampleFormat::F32Le => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    let v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                    // A NaN or infinity from a client must not poison the mix.
                    *o = if v.is_finite() { v } else { 0.0 };
                }
            }
        }
    }

    /// Same contract as [`super::encode_into`].
    pub fn encode_into(format: SampleFormat, samples: &[f32], out: &mut [u8]) {
        match format {
            SampleFormat::S16Le => {
                for (s, c) in samples.iter().zip(out.chunks_exact_mut(2)) {
                    let v = (s * S16_SCALE).round().clamp(-32_768.0, 32_767.0) as i16;
                    c.copy_from_slice(&v.to_le_bytes());
                }
            }
            SampleFormat::S32Le => {
                for (s, c) in samples.iter().zip(out.chunks_exact_mut(4)) {
                    let v = (f64::from(*s) * S32_SCALE)
                        .round()
                        .clamp(-S32_SCALE, S32_SCALE - 1.0) as i32;
                    c.copy_from_slice(&v.to_le_bytes());
                }
            }
            SampleFormat::F32Le => {
                for (s, c) in samples.iter().zip(out.chunks_exact_mut(4)) {
                    c.copy_from_slice(&s.to_le_bytes());
                }
            }
        }
    }

    /// Same contract as [`super::remix`].
    pub fn remix(src: &[f32], src_ch: usize, dst: &mut [f32], dst_ch: usize, frames: usize) {
        let src = &src[..frames * src_ch];
        let dst = &mut dst[..frames * dst_ch];
        if src_ch == dst_ch {
            dst.copy_from_slice(src);
        } else if src_ch == 1 {
            for (d, &s) in dst.chunks_exact_mut(dst_ch).zip(src) {
                d.fill(s);
            }
        } else if dst_ch == 1 {
            let inv = 1.0 / src_ch as f32;
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(src_ch)) {
                *d = s.iter().sum::<f32>() * inv;
            }
        } else {
            for (d, s) in dst.chunks_exact_mut(dst_ch).zip(src.chunks_exact(src_ch)) {
                for (i, o) in d.iter_mut().enumerate() {
                    *o = s.get(i).copied().unwrap_or(0.0);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s16_round_trips_exactly() {
        let ints: Vec<i16> = vec![i16::MIN, -12345, -1, 0, 1, 12345, i16::MAX];
        let bytes: Vec<u8> = ints.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut f = vec![0.0; ints.len()];
        decode_into(SampleFormat::S16Le, &bytes, &mut f);
        assert_eq!(f[0], -1.0);
        let mut back = vec![0u8; bytes.len()];
        encode_into(SampleFormat::S16Le, &f, &mut back);
        assert_eq!(back, bytes);
    }

    #[test]
    fn s32_round_trips_and_saturates() {
        let ints: Vec<i32> = vec![i32::MIN, -7, 0, 7, i32::MAX / 3];
        let bytes: Vec<u8> = ints.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut f = vec![0.0; ints.len()];
        decode_into(SampleFormat::S32Le, &bytes, &mut f);
        let mut back = vec![0u8; bytes.len()];
        encode_into(SampleFormat::S32Le, &f, &mut back);
        let got: Vec<i32> = back
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        for (g, w) in got.iter().zip(&ints) {
            // f32 keeps 24 bits of mantissa.
            assert!((i64::from(*g) - i64::from(*w)).abs() <= 256, "{g} vs {w}");
        }
        let mut out = [0u8; 8];
        encode_into(SampleFormat::S32Le, &[2.0, -2.0], &mut out);
        assert_eq!(
            i32::from_le_bytes([out[0], out[1], out[2], out[3]]),
            i32::MAX
        );
        assert_eq!(
            i32::from_le_bytes([out[4], out[5], out[6], out[7]]),
            i32::MIN
        );
        encode_into(SampleFormat::S16Le, &[1.5, -1.5], &mut out[..4]);
        assert_eq!(i16::from_le_bytes([out[0], out[1]]), i16::MAX);
        assert_eq!(i16::from_le_bytes([out[2], out[3]]), i16::MIN);
    }

    #[test]
    fn f32_is_bit_exact_and_non_finite_is_silenced() {
        let vals = [0.1f32, -0.75, f32::NAN, f32::INFINITY];
        let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut f = [9.0f32; 4];
        decode_into(SampleFormat::F32Le, &bytes, &mut f);
        assert_eq!(f, [0.1, -0.75, 0.0, 0.0]);
    }

    /// xorshift64*: deterministic inputs without a dependency.
    fn rng(seed: &mut u64) -> u64 {
        *seed ^= *seed >> 12;
        *seed ^= *seed << 25;
        *seed ^= *seed >> 27;
        seed.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    #[test]
    fn every_isa_is_bit_exact() {
        let isas: Vec<Isa> = Isa::all_supported().collect();
        assert_eq!(isas[0], Isa::Baseline);
        assert!(Isa::all_supported().any(|i| i == Isa::best()));
        let mut seed = 0x1234_5678_9abc_def1u64;
        for isa in isas {
            let k = ConvertKernels::for_isa(isa).expect("supported");
            assert_eq!(k.isa == Isa::Baseline, isa == Isa::Baseline);
            for len in [0usize, 1, 7, 15, 16, 17, 63, 64, 65, 255, 256, 257, 1031] {
                // Raw bytes of every kind, including NaN/inf patterns and integer extremes.
                let mut bytes: Vec<u8> = (0..len * 4).map(|_| rng(&mut seed) as u8).collect();
                if len > 3 {
                    bytes[..4].copy_from_slice(&i32::MIN.to_le_bytes());
                    bytes[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
                    bytes[8..12].copy_from_slice(&f32::NEG_INFINITY.to_le_bytes());
                }
                for fmt in [
                    SampleFormat::S16Le,
                    SampleFormat::S32Le,
                    SampleFormat::F32Le,
                ] {
                    let (mut a, mut b) = (vec![7.0f32; len], vec![7.0f32; len]);
                    reference::decode_into(fmt, &bytes, &mut a);
                    (k.decode)(fmt, &bytes, &mut b);
                    let (a, b): (Vec<u32>, Vec<u32>) = (
                        a.iter().map(|v| v.to_bits()).collect(),
                        b.iter().map(|v| v.to_bits()).collect(),
                    );
                    assert_eq!(a, b, "decode {fmt:?} len {len} on {}", isa.name());
                }
                // Samples over and beyond full scale, halfway cases, and tiny values.
                let mut samples: Vec<f32> = (0..len)
                    .map(|_| ((rng(&mut seed) >> 40) as f32 / (1u64 << 23) as f32) - 1.0)
                    .collect();
                // Every other sample a halfway case of s16 or s32 (k + 0.5 steps).
                for (i, v) in samples.iter_mut().enumerate().skip(7).step_by(2) {
                    let k = (i as f32 * 37.0) % 65_536.0 - 32_768.0;
                    *v = if i % 4 == 1 {
                        (k + 0.5) / 32_768.0
                    } else {
                        (k * 65_536.0 + 0.5) / 2_147_483_648.0
                    };
                }
                for (i, v) in [1.0f32, -1.0, 1.5, -3.0, 0.5 / 32768.0, -1.5 / 32768.0, 0.0]
                    .iter()
                    .enumerate()
                {
                    if i < len {
                        samples[i] = *v;
                    }
                }
                for fmt in [
                    SampleFormat::S16Le,
                    SampleFormat::S32Le,
                    SampleFormat::F32Le,
                ] {
                    let (mut a, mut b) = (vec![0u8; len * 4], vec![0u8; len * 4]);
                    let n = len * fmt.bytes();
                    reference::encode_into(fmt, &samples, &mut a[..n]);
                    (k.encode)(fmt, &samples, &mut b[..n]);
                    assert_eq!(a, b, "encode {fmt:?} len {len} on {}", isa.name());
                }
                for (sc, dc) in [
                    (1usize, 2usize),
                    (2, 1),
                    (2, 2),
                    (2, 6),
                    (6, 2),
                    (1, 1),
                    (8, 1),
                ] {
                    let frames = len / sc;
                    let (mut a, mut b) = (vec![0f32; frames * dc], vec![0f32; frames * dc]);
                    reference::remix(&samples, sc, &mut a, dc, frames);
                    (k.remix)(&samples, sc, &mut b, dc, frames);
                    assert_eq!(a, b, "remix {sc}->{dc} len {len} on {}", isa.name());
                }
            }
        }
    }

    #[test]
    fn remix_layouts() {
        let mut out = [0.0f32; 4];
        remix(&[0.5, -0.5], 1, &mut out, 2, 2);
        assert_eq!(out, [0.5, 0.5, -0.5, -0.5]);
        let mut mono = [0.0f32; 2];
        remix(&[1.0, 0.0, 0.2, 0.4], 2, &mut mono, 1, 2);
        assert_eq!(mono, [0.5, 0.3_f32.mul_add(1.0, 0.0)]);
        let mut six = [9.0f32; 6];
        remix(&[0.1, 0.2], 2, &mut six, 6, 1);
        assert_eq!(six, [0.1, 0.2, 0.0, 0.0, 0.0, 0.0]);
    }
}
