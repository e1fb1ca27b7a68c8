//! Allocation-free sample conversion between the wire formats and f32, and channel remixing.
//! Used by the client library and by the server's real-time engine, so nothing here may
//! allocate, lock or log.
//!
//! Integer → float divides by 2^(bits-1); float → integer multiplies by the same, rounds to
//! nearest and saturates, so s16 → f32 → s16 is lossless.

use crate::format::SampleFormat;

const S16_SCALE: f32 = 32_768.0;
const S32_SCALE: f64 = 2_147_483_648.0;

/// Decodes `out.len()` samples of `format` from `bytes` into f32.
///
/// `bytes` must hold at least `out.len() * format.bytes()` bytes; extra bytes are ignored.
pub fn decode_into(format: SampleFormat, bytes: &[u8], out: &mut [f32]) {
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

/// Remixes `frames` interleaved frames from `src_ch` to `dst_ch` channels.
///
/// Equal counts copy. Mono → N copies the channel to all. N → mono averages. Otherwise channels
/// map by index: extra source channels are dropped, missing ones are silent (stereo → 5.1 puts
/// the pair on front left/right). `src` and `dst` must hold `frames * ch` samples.
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
