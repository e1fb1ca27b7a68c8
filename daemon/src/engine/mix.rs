//! Mix kernels: accumulate one stream into the mix with a linearly ramped gain.
//!
//! The gain for frame `f` (counting from 0) is `start + step * (f + 1)`, so a ramp over a
//! quantum of `q` frames with `step = (target - start) / q` reaches the target on the last
//! frame. Every kernel returns the peak `|sample * gain|` it added, which is the stream's meter.
//!
//! [`mix_ramped`] is the optimised kernel: it works in fixed-size blocks of independent lanes so
//! that LLVM vectorises the multiply-add and the peak (a `max` per lane, folded at the end),
//! and with a ramp it first expands the per-frame gains into a small stack buffer so the inner
//! loop has the same shape. [`mod@reference`] holds the plain scalar kernel it is tested against
//! (and benchmarked beside). Both compute each product and sum with the same operations in the
//! same order, so their results agree exactly; the tests allow 1e-6.
//!
//! [`MixKernels`] is the runtime CPU dispatch: the same source compiled under
//! `#[target_feature]` for AVX2 + FMA and for AVX-512 (see
//! [`soundgate_proto::convert::Isa`]), handed out as plain `fn` pointers that the engine picks
//! once at set-up. No path fuses a multiply-add (Rust never contracts), so every path is
//! bit-exact with [`mix_ramped`]; the tests run each path this CPU supports.
//!
//! Nothing here allocates; all kernels are safe to call on the RT thread.

use soundgate_proto::convert::Isa;

/// Independent accumulator lanes (a multiple of every SIMD width we care about).
const LANES: usize = 16;
/// Samples per gain-expansion block on the ramped path.
const BLOCK: usize = 128;

/// `dst[i] += src[i] * gain(frame of i)` over whole frames of `channels` samples, returning the
/// peak absolute value added. Extra samples beyond the shorter slice's last whole frame are
/// left alone. `channels` of 0 is treated as 1.
pub fn mix_ramped(dst: &mut [f32], src: &[f32], channels: usize, start: f32, step: f32) -> f32 {
    mix_ramped_body::<LANES>(dst, src, channels, start, step)
}

/// The kernel body, with `L` independent accumulator lanes: the dispatched paths take more
/// lanes (4 registers' worth) so the peak's `max` chain does not bound the loop.
#[inline(always)]
fn mix_ramped_body<const L: usize>(
    dst: &mut [f32],
    src: &[f32],
    channels: usize,
    start: f32,
    step: f32,
) -> f32 {
    let ch = channels.max(1);
    let len = dst.len().min(src.len());
    let len = len - len % ch;
    let (dst, src) = (&mut dst[..len], &src[..len]);
    if step == 0.0 {
        return mix_const::<L>(dst, src, start);
    }
    // Frame numbers convert to f32 from i32 (a SIMD instruction) rather than from usize; the
    // same value rounds the same either way, so this matches the reference exactly.
    if len / ch < i32::MAX as usize - BLOCK {
        match ch {
            1 => return mix_ramp_c::<1, L>(dst, src, start, step),
            2 => return mix_ramp_c::<2, L>(dst, src, start, step),
            4 => return mix_ramp_c::<4, L>(dst, src, start, step),
            6 => return mix_ramp_c::<6, L>(dst, src, start, step),
            8 => return mix_ramp_c::<8, L>(dst, src, start, step),
            _ => {}
        }
    }
    let frames_per_block = BLOCK / ch;
    let samples_per_block = frames_per_block * ch;
    let mut gains = [0.0f32; BLOCK];
    let mut peak = 0.0f32;
    let mut frame = 0usize;
    for (d, s) in dst
        .chunks_mut(samples_per_block)
        .zip(src.chunks(samples_per_block))
    {
        let g = &mut gains[..d.len()];
        for (k, gf) in g.chunks_exact_mut(ch).enumerate() {
            gf.fill(start + step * ((frame + k + 1) as f32));
        }
        frame += d.len() / ch;
        peak = max(peak, mix_gains::<L>(d, s, g));
    }
    peak
}

/// The ramped path for a channel count known at compile time: per-frame gains are computed
/// for a block of frames at once (vectorised), spread over the channels, then mixed with
/// [`mix_gains`]. The caller guarantees frame numbers fit in an i32.
#[inline(always)]
fn mix_ramp_c<const C: usize, const L: usize>(
    dst: &mut [f32],
    src: &[f32],
    start: f32,
    step: f32,
) -> f32 {
    const FRAMES: usize = 64;
    let mut frame_gains = [0.0f32; FRAMES];
    let mut gains = [0.0f32; FRAMES * 8];
    let mut peak = 0.0f32;
    let mut first = 1i32;
    for (d, s) in dst.chunks_mut(FRAMES * C).zip(src.chunks(FRAMES * C)) {
        for (k, g) in frame_gains.iter_mut().enumerate() {
            *g = start + step * ((first + k as i32) as f32);
        }
        for (g, &fg) in gains[..FRAMES * C].chunks_exact_mut(C).zip(&frame_gains) {
            for x in g.iter_mut() {
                *x = fg;
            }
        }
        first += FRAMES as i32;
        peak = max(peak, mix_gains::<L>(d, s, &gains[..d.len()]));
    }
    peak
}

#[inline(always)]
fn max(a: f32, b: f32) -> f32 {
    // Written as a select so it lowers to `maxps`; inputs are never NaN (decoding silences
    // non-finite samples).
    if b > a {
        b
    } else {
        a
    }
}

#[inline(always)]
fn fold<const L: usize>(peaks: &[f32; L]) -> f32 {
    peaks.iter().fold(0.0f32, |m, &p| max(m, p))
}

/// Constant gain.
#[inline(always)]
fn mix_const<const L: usize>(dst: &mut [f32], src: &[f32], gain: f32) -> f32 {
    let mut peaks = [0.0f32; L];
    let mut dc = dst.chunks_exact_mut(L);
    let mut sc = src.chunks_exact(L);
    for (d, s) in (&mut dc).zip(&mut sc) {
        for i in 0..L {
            let v = s[i] * gain;
            d[i] += v;
            peaks[i] = max(peaks[i], v.abs());
        }
    }
    let mut peak = fold(&peaks);
    for (d, s) in dc.into_remainder().iter_mut().zip(sc.remainder()) {
        let v = s * gain;
        *d += v;
        peak = max(peak, v.abs());
    }
    peak
}

/// A gain per sample.
#[inline(always)]
fn mix_gains<const L: usize>(dst: &mut [f32], src: &[f32], gains: &[f32]) -> f32 {
    let mut peaks = [0.0f32; L];
    let mut dc = dst.chunks_exact_mut(L);
    let mut sc = src.chunks_exact(L);
    let mut gc = gains.chunks_exact(L);
    for ((d, s), g) in (&mut dc).zip(&mut sc).zip(&mut gc) {
        for i in 0..L {
            let v = s[i] * g[i];
            d[i] += v;
            peaks[i] = max(peaks[i], v.abs());
        }
    }
    let mut peak = fold(&peaks);
    for ((d, s), g) in dc
        .into_remainder()
        .iter_mut()
        .zip(sc.remainder())
        .zip(gc.remainder())
    {
        let v = s * g;
        *d += v;
        peak = max(peak, v.abs());
    }
    peak
}

/// Clamps every sample to [-1, 1] in place and returns the peak absolute value after clamping.
pub fn clamp_peak(buf: &mut [f32]) -> f32 {
    clamp_peak_body::<LANES>(buf)
}

#[inline(always)]
fn clamp_peak_body<const L: usize>(buf: &mut [f32]) -> f32 {
    let mut peaks = [0.0f32; L];
    let mut chunks = buf.chunks_exact_mut(L);
    for c in &mut chunks {
        for i in 0..L {
            let v = c[i].clamp(-1.0, 1.0);
            c[i] = v;
            peaks[i] = max(peaks[i], v.abs());
        }
    }
    let mut peak = fold(&peaks);
    for v in chunks.into_remainder() {
        *v = v.clamp(-1.0, 1.0);
        peak = max(peak, v.abs());
    }
    peak
}

/// Scales whole frames of `buf` in place by a ramped gain (frame `f` gets
/// `start + step * (f + 1)`, as in [`mix_ramped`]); `step == 0` is a constant gain.
pub fn scale_ramped(buf: &mut [f32], channels: usize, start: f32, step: f32) {
    let ch = channels.max(1);
    if step == 0.0 {
        for v in buf.iter_mut() {
            *v *= start;
        }
        return;
    }
    for (f, frame) in buf.chunks_exact_mut(ch).enumerate() {
        let g = start + step * ((f + 1) as f32);
        for v in frame {
            *v *= g;
        }
    }
}

/// Sum of the squares of `buf` (for RMS meters).
pub fn sum_squares(buf: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = buf.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            acc[i] += c[i] * c[i];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for v in chunks.remainder() {
        sum += v * v;
    }
    sum
}

/// Sum of the squares of `src` times the ramped gain of [`mix_ramped`]: the energy one stream
/// added to the mix.
pub fn sum_squares_ramped(src: &[f32], channels: usize, start: f32, step: f32) -> f32 {
    if step == 0.0 {
        return start * start * sum_squares(src);
    }
    let ch = channels.max(1);
    let mut sum = 0.0f32;
    for (f, frame) in src.chunks_exact(ch).enumerate() {
        let g = start + step * ((f + 1) as f32);
        let e: f32 = frame.iter().map(|v| v * v).sum();
        sum += e * g * g;
    }
    sum
}

/// Root mean square from a sum of squares over `samples` samples (0 for none).
pub fn rms(sum_squares: f32, samples: usize) -> f32 {
    if samples == 0 {
        0.0
    } else {
        (sum_squares.max(0.0) / samples as f32).sqrt()
    }
}

/// Mix kernel: see [`mix_ramped`].
pub type MixFn = fn(&mut [f32], &[f32], usize, f32, f32) -> f32;
/// Clamp kernel: see [`clamp_peak`].
pub type ClampFn = fn(&mut [f32]) -> f32;

/// The mix kernels compiled for one [`Isa`]; plain `fn` pointers, chosen once at engine set-up.
#[derive(Debug, Clone, Copy)]
pub struct MixKernels {
    /// The level these kernels were compiled for.
    pub isa: Isa,
    /// Same contract as [`mix_ramped`].
    pub mix_ramped: MixFn,
    /// Same contract as [`clamp_peak`].
    pub clamp_peak: ClampFn,
}

impl MixKernels {
    /// The kernels for `isa`, or `None` when this CPU does not support it.
    pub fn for_isa(isa: Isa) -> Option<MixKernels> {
        if !isa.supported() {
            return None;
        }
        match isa {
            Isa::Baseline => Some(MixKernels::portable()),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => Some(MixKernels {
                isa,
                mix_ramped: x86::mix_avx2,
                clamp_peak: x86::clamp_avx2,
            }),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => Some(MixKernels {
                isa,
                mix_ramped: x86::mix_avx512,
                clamp_peak: x86::clamp_avx512,
            }),
            #[cfg(not(target_arch = "x86_64"))]
            _ => None,
        }
    }

    /// The build's baseline kernels.
    pub fn portable() -> MixKernels {
        MixKernels {
            isa: Isa::Baseline,
            mix_ramped,
            clamp_peak,
        }
    }

    /// The kernels for [`Isa::best`] (detected once, cached).
    pub fn best() -> MixKernels {
        MixKernels::for_isa(Isa::best()).unwrap_or_else(MixKernels::portable)
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{clamp_peak_body, mix_ramped_body};

    // Four registers of accumulator lanes per level.
    #[inline(always)]
    fn mix32(d: &mut [f32], s: &[f32], c: usize, a: f32, b: f32) -> f32 {
        mix_ramped_body::<32>(d, s, c, a, b)
    }
    #[inline(always)]
    fn mix64(d: &mut [f32], s: &[f32], c: usize, a: f32, b: f32) -> f32 {
        mix_ramped_body::<64>(d, s, c, a, b)
    }
    #[inline(always)]
    fn clamp32(b: &mut [f32]) -> f32 {
        clamp_peak_body::<32>(b)
    }
    #[inline(always)]
    fn clamp64(b: &mut [f32]) -> f32 {
        clamp_peak_body::<64>(b)
    }

    soundgate_proto::__sg_target_feature_kernel!("avx2,fma", mix_avx2, mix_avx2_tf,
        mix32, (d: &mut [f32], s: &[f32], c: usize, a: f32, b: f32) -> f32);
    soundgate_proto::__sg_target_feature_kernel!("avx2,fma", clamp_avx2, clamp_avx2_tf,
        clamp32, (b: &mut [f32]) -> f32);
    soundgate_proto::__sg_target_feature_kernel!("avx2,fma,avx512f,avx512bw,avx512dq,avx512vl",
        mix_avx512, mix_avx512_tf, mix64,
        (d: &mut [f32], s: &[f32], c: usize, a: f32, b: f32) -> f32);
    soundgate_proto::__sg_target_feature_kernel!("avx2,fma,avx512f,avx512bw,avx512dq,avx512vl",
        clamp_avx512, clamp_avx512_tf, clamp64, (b: &mut [f32]) -> f32);
}

/// The plain scalar kernels the optimised ones are checked against.
pub mod reference {
    /// Same contract as [`super::mix_ramped`], one frame and one sample at a time.
    pub fn mix_ramped(dst: &mut [f32], src: &[f32], channels: usize, start: f32, step: f32) -> f32 {
        let ch = channels.max(1);
        let mut peak = 0.0f32;
        for (f, (d, s)) in dst
            .chunks_exact_mut(ch)
            .zip(src.chunks_exact(ch))
            .enumerate()
        {
            let gain = start + step * ((f + 1) as f32);
            for (d, s) in d.iter_mut().zip(s) {
                let v = s * gain;
                *d += v;
                peak = peak.max(v.abs());
            }
        }
        peak
    }

    /// Same contract as [`super::clamp_peak`].
    pub fn clamp_peak(buf: &mut [f32]) -> f32 {
        let mut peak = 0.0f32;
        for v in buf {
            *v = v.clamp(-1.0, 1.0);
            peak = peak.max(v.abs());
        }
        peak
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: deterministic, no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn f32(&mut self, range: f32) -> f32 {
            ((self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * range
        }
    }

    fn check(dst: &[f32], src: &[f32], ch: usize, start: f32, step: f32) {
        for isa in Isa::all_supported() {
            let k = MixKernels::for_isa(isa).expect("supported");
            assert_eq!(k.isa, isa);
            check_one(k.mix_ramped, dst, src, ch, start, step);
            // The dispatched paths compile the portable kernel's source: bit-exact with it.
            let (mut a, mut b) = (dst.to_vec(), dst.to_vec());
            let pa = (k.mix_ramped)(&mut a, src, ch, start, step);
            let pb = mix_ramped(&mut b, src, ch, start, step);
            assert_eq!(pa.to_bits(), pb.to_bits(), "peak on {}", isa.name());
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&a),
                bits(&b),
                "{} ch {ch} len {}",
                isa.name(),
                src.len()
            );
        }
    }

    fn check_one(kernel: MixFn, dst: &[f32], src: &[f32], ch: usize, start: f32, step: f32) {
        let mut a = dst.to_vec();
        let mut b = dst.to_vec();
        let pa = kernel(&mut a, src, ch, start, step);
        let pb = reference::mix_ramped(&mut b, src, ch, start, step);
        assert!(
            (pa - pb).abs() <= 1e-6,
            "peak {pa} vs {pb} (ch {ch}, len {})",
            src.len()
        );
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            let tol = 1e-6 * y.abs().max(1.0);
            assert!(
                (x - y).abs() <= tol,
                "sample {i}: {x} vs {y} (ch {ch}, len {})",
                src.len()
            );
        }
    }

    #[test]
    fn matches_reference_on_random_inputs_and_odd_lengths() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for ch in 1..=8usize {
            for frames in [
                0usize, 1, 2, 3, 7, 15, 16, 17, 31, 33, 64, 127, 255, 256, 1000, 1024,
            ] {
                let src: Vec<f32> = (0..frames * ch).map(|_| rng.f32(1.0)).collect();
                let dst: Vec<f32> = (0..frames * ch).map(|_| rng.f32(0.5)).collect();
                let start = rng.f32(2.0).abs();
                let target = rng.f32(2.0).abs();
                let q = frames.max(1) as f32;
                check(&dst, &src, ch, start, 0.0);
                check(&dst, &src, ch, start, (target - start) / q);
                check(&dst, &src, ch, 1.0, (0.0 - 1.0) / q);
                check(&dst, &src, ch, 0.0, 1.0 / q);
            }
        }
    }

    #[test]
    fn matches_reference_on_extremes() {
        let extremes = [
            1.0f32,
            -1.0,
            0.0,
            -0.0,
            f32::MIN_POSITIVE,
            1e30,
            -1e30,
            0.999_999_9,
        ];
        for ch in [1usize, 2, 6] {
            let src: Vec<f32> = extremes.iter().cycle().take(40 * ch).copied().collect();
            let dst: Vec<f32> = extremes
                .iter()
                .rev()
                .cycle()
                .take(40 * ch)
                .copied()
                .collect();
            check(&dst, &src, ch, 1.0, 0.0);
            check(&dst, &src, ch, 4.0, -0.1);
            check(&dst, &src, ch, 0.0, 0.0);
        }
    }

    #[test]
    fn ramp_ends_on_target_and_unequal_lengths_stop_at_whole_frames() {
        let q = 256usize;
        let src = vec![1.0f32; q];
        let mut dst = vec![0.0f32; q];
        let peak = mix_ramped(&mut dst, &src, 1, 1.0, (0.5 - 1.0) / q as f32);
        assert!((dst[q - 1] - 0.5).abs() < 1e-6);
        assert!((dst[0] - (1.0 - 0.5 / q as f32)).abs() < 1e-6);
        assert!(dst.windows(2).all(|w| w[1] <= w[0]), "monotone ramp");
        assert!((peak - dst[0]).abs() < 1e-6);
        // 5 samples of stereo: only 2 whole frames are mixed.
        let mut dst = [0.0f32; 5];
        mix_ramped(&mut dst, &[1.0; 7], 2, 2.0, 0.0);
        assert_eq!(dst, [2.0, 2.0, 2.0, 2.0, 0.0]);
    }

    #[test]
    fn clamp_matches_reference() {
        let mut rng = Rng(99);
        for len in [0usize, 1, 15, 16, 17, 100] {
            let v: Vec<f32> = (0..len).map(|_| rng.f32(3.0)).collect();
            for isa in Isa::all_supported() {
                let k = MixKernels::for_isa(isa).expect("supported");
                let (mut a, mut b) = (v.clone(), v.clone());
                assert_eq!((k.clamp_peak)(&mut a), reference::clamp_peak(&mut b));
                assert_eq!(a, b, "{}", isa.name());
                assert!(a.iter().all(|x| (-1.0..=1.0).contains(x)));
            }
        }
    }
}
