//! Sample conversion for PulseAudio clients, the small piece the `pulseaudio` crate lacks: it
//! names the formats and channel positions but converts nothing. Runs on the connection's
//! task, never on the engine thread, so it may allocate.
//!
//! - [`decode`] / [`encode`]: every PulseAudio sample format to and from interleaved f32.
//! - [`Remix`]: a channel matrix built from the two channel maps, so channels are matched by
//!   position (front-left to front-left), never by index.

use pulseaudio::protocol::{ChannelMap, ChannelPosition, SampleFormat};

/// Largest channel count the transport accepts (the engine's limit).
pub const MAX_CHANNELS: u8 = soundgate_proto::format::MAX_CHANNELS;

/// Whether the transport can convert `f`.
pub fn supported(f: SampleFormat) -> bool {
    !matches!(f, SampleFormat::Invalid)
}

fn alaw_to_linear(a: u8) -> i16 {
    let a = a ^ 0x55;
    let seg = (a & 0x70) >> 4;
    let mut t = i16::from(a & 0x0f) << 4;
    t = match seg {
        0 => t + 8,
        1 => t + 0x108,
        _ => (t + 0x108) << (seg - 1),
    };
    if a & 0x80 != 0 {
        t
    } else {
        -t
    }
}

fn ulaw_to_linear(u: u8) -> i16 {
    let u = !u;
    let mut t = ((i16::from(u & 0x0f)) << 3) + 0x84;
    t <<= (u & 0x70) >> 4;
    if u & 0x80 != 0 {
        0x84 - t
    } else {
        t - 0x84
    }
}

fn linear_to_alaw(pcm: i16) -> u8 {
    let (mask, mut v) = if pcm >= 0 {
        (0xd5u8, i32::from(pcm))
    } else {
        (0x55u8, -i32::from(pcm) - 1)
    };
    v = v.min(0x7fff);
    let seg = match v {
        0..=0xff => 0,
        0x100..=0x1ff => 1,
        0x200..=0x3ff => 2,
        0x400..=0x7ff => 3,
        0x800..=0xfff => 4,
        0x1000..=0x1fff => 5,
        0x2000..=0x3fff => 6,
        _ => 7,
    };
    let aval = if seg < 2 {
        (seg << 4) | ((v >> 4) & 0x0f)
    } else {
        (seg << 4) | ((v >> (seg + 3)) & 0x0f)
    };
    (aval as u8) ^ mask
}

fn linear_to_ulaw(pcm: i16) -> u8 {
    const BIAS: i32 = 0x84;
    let (mask, v) = if pcm < 0 {
        (0x7fu8, (-i32::from(pcm)).min(32_635) + BIAS)
    } else {
        (0xffu8, i32::from(pcm).min(32_635) + BIAS)
    };
    let mut seg = 0;
    while seg < 8 && v > (0xff << seg) {
        seg += 1;
    }
    let seg = seg.min(7);
    let uval = (seg << 4) | ((v >> (seg + 3)) & 0x0f);
    (uval as u8) ^ mask
}

fn finite(v: f32) -> f32 {
    if v.is_finite() {
        v
    } else {
        0.0
    }
}

/// Decodes whole samples of `format` from `bytes`, appending f32 values to `out`. Trailing
/// bytes that do not make a whole sample are ignored.
pub fn decode(format: SampleFormat, bytes: &[u8], out: &mut Vec<f32>) {
    use SampleFormat as F;
    const S16: f32 = 32_768.0;
    const S24: f32 = 8_388_608.0;
    const S32: f64 = 2_147_483_648.0;
    let n = format.bytes_per_sample();
    if n == 0 {
        return;
    }
    out.reserve(bytes.len() / n);
    let chunks = bytes.chunks_exact(n);
    match format {
        F::Invalid => {}
        F::U8 => out.extend(chunks.map(|c| (f32::from(c[0]) - 128.0) / 128.0)),
        F::Alaw => out.extend(chunks.map(|c| f32::from(alaw_to_linear(c[0])) / S16)),
        F::Ulaw => out.extend(chunks.map(|c| f32::from(ulaw_to_linear(c[0])) / S16)),
        F::S16Le => out.extend(chunks.map(|c| f32::from(i16::from_le_bytes([c[0], c[1]])) / S16)),
        F::S16Be => out.extend(chunks.map(|c| f32::from(i16::from_be_bytes([c[0], c[1]])) / S16)),
        F::Float32Le => {
            out.extend(chunks.map(|c| finite(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))))
        }
        F::Float32Be => {
            out.extend(chunks.map(|c| finite(f32::from_be_bytes([c[0], c[1], c[2], c[3]]))))
        }
        F::S32Le => out.extend(
            chunks.map(|c| (f64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])) / S32) as f32),
        ),
        F::S32Be => out.extend(
            chunks.map(|c| (f64::from(i32::from_be_bytes([c[0], c[1], c[2], c[3]])) / S32) as f32),
        ),
        F::S24Le => out
            .extend(chunks.map(|c| (i32::from_le_bytes([0, c[0], c[1], c[2]]) >> 8) as f32 / S24)),
        F::S24Be => out
            .extend(chunks.map(|c| (i32::from_be_bytes([c[0], c[1], c[2], 0]) >> 8) as f32 / S24)),
        F::S24In32Le => out
            .extend(chunks.map(|c| (i32::from_le_bytes([0, c[0], c[1], c[2]]) >> 8) as f32 / S24)),
        F::S24In32Be => out
            .extend(chunks.map(|c| (i32::from_be_bytes([c[1], c[2], c[3], 0]) >> 8) as f32 / S24)),
    }
}

/// Encodes `samples` as `format`, appending the bytes to `out`. Integers saturate.
pub fn encode(format: SampleFormat, samples: &[f32], out: &mut Vec<u8>) {
    use SampleFormat as F;
    out.reserve(samples.len() * format.bytes_per_sample());
    let int = |s: f32, scale: f64, max: f64| -> i64 {
        (f64::from(s) * scale).round().clamp(-scale, max) as i64
    };
    for &s in samples {
        let s = finite(s);
        match format {
            F::Invalid => {}
            F::U8 => out.push((int(s, 128.0, 127.0) + 128) as u8),
            F::Alaw => out.push(linear_to_alaw(int(s, 32_768.0, 32_767.0) as i16)),
            F::Ulaw => out.push(linear_to_ulaw(int(s, 32_768.0, 32_767.0) as i16)),
            F::S16Le => out.extend((int(s, 32_768.0, 32_767.0) as i16).to_le_bytes()),
            F::S16Be => out.extend((int(s, 32_768.0, 32_767.0) as i16).to_be_bytes()),
            F::Float32Le => out.extend(s.to_le_bytes()),
            F::Float32Be => out.extend(s.to_be_bytes()),
            F::S32Le => out.extend((int(s, 2_147_483_648.0, 2_147_483_647.0) as i32).to_le_bytes()),
            F::S32Be => out.extend((int(s, 2_147_483_648.0, 2_147_483_647.0) as i32).to_be_bytes()),
            F::S24Le => {
                let v = int(s, 8_388_608.0, 8_388_607.0) as i32;
                out.extend(&v.to_le_bytes()[..3]);
            }
            F::S24Be => {
                let v = int(s, 8_388_608.0, 8_388_607.0) as i32;
                out.extend(&v.to_be_bytes()[1..]);
            }
            F::S24In32Le => out.extend((int(s, 8_388_608.0, 8_388_607.0) as i32).to_le_bytes()),
            F::S24In32Be => out.extend((int(s, 8_388_608.0, 8_388_607.0) as i32).to_be_bytes()),
        }
    }
}

/// The channel map a device of `channels` channels is taken to have (PulseAudio's defaults
/// for ALSA devices).
pub fn default_map(channels: u8) -> ChannelMap {
    use ChannelPosition as P;
    let positions: &[P] = match channels {
        1 => &[P::Mono],
        2 => &[P::FrontLeft, P::FrontRight],
        3 => &[P::FrontLeft, P::FrontRight, P::Lfe],
        4 => &[P::FrontLeft, P::FrontRight, P::RearLeft, P::RearRight],
        5 => &[
            P::FrontLeft,
            P::FrontRight,
            P::RearLeft,
            P::RearRight,
            P::FrontCenter,
        ],
        6 => &[
            P::FrontLeft,
            P::FrontRight,
            P::RearLeft,
            P::RearRight,
            P::FrontCenter,
            P::Lfe,
        ],
        7 => &[
            P::FrontLeft,
            P::FrontRight,
            P::RearLeft,
            P::RearRight,
            P::FrontCenter,
            P::Lfe,
            P::RearCenter,
        ],
        _ => &[
            P::FrontLeft,
            P::FrontRight,
            P::RearLeft,
            P::RearRight,
            P::FrontCenter,
            P::Lfe,
            P::SideLeft,
            P::SideRight,
        ],
    };
    ChannelMap::new(positions.iter().copied().take(usize::from(channels.max(1))))
}

/// Which side of the listener a position is on: -1 left, 0 centre, 1 right; `None` for LFE.
fn side(p: ChannelPosition) -> Option<i8> {
    use ChannelPosition as P;
    match p {
        P::FrontLeft
        | P::RearLeft
        | P::SideLeft
        | P::FrontLeftOfCenter
        | P::TopFrontLeft
        | P::TopRearLeft => Some(-1),
        P::FrontRight
        | P::RearRight
        | P::SideRight
        | P::FrontRightOfCenter
        | P::TopFrontRight
        | P::TopRearRight => Some(1),
        P::Lfe => None,
        _ => Some(0),
    }
}

/// A channel matrix from one channel map to another, matched by position.
#[derive(Debug, Clone)]
pub struct Remix {
    src: usize,
    dst: usize,
    /// `dst × src` gains, row-major; `None` when the maps are equal (copy).
    matrix: Option<Vec<f32>>,
}

impl Remix {
    /// Builds the matrix. A position present on both sides is copied; otherwise a source
    /// channel goes to the destination channels on its side (centre and mono to all), each
    /// destination row normalised so that it never sums above 1. LFE is kept only where the
    /// destination has an LFE channel.
    pub fn new(from: &ChannelMap, to: &ChannelMap) -> Remix {
        let src: Vec<ChannelPosition> = from.into_iter().collect();
        let dst: Vec<ChannelPosition> = to.into_iter().collect();
        let (ns, nd) = (src.len().max(1), dst.len().max(1));
        if src == dst {
            return Remix {
                src: ns,
                dst: nd,
                matrix: None,
            };
        }
        let mut m = vec![0.0f32; nd * ns];
        let dst_mono = nd == 1;
        for (j, &sp) in src.iter().enumerate() {
            if let Some(i) = dst.iter().position(|&d| d == sp) {
                m[i * ns + j] = 1.0;
                continue;
            }
            for (i, &dp) in dst.iter().enumerate() {
                let gain = match (side(sp), side(dp)) {
                    _ if dst_mono => 1.0,
                    (None, _) | (_, None) => 0.0,
                    (Some(0), _) if sp == ChannelPosition::Mono => 1.0,
                    (Some(0), Some(_)) => std::f32::consts::FRAC_1_SQRT_2,
                    (Some(a), Some(b)) if a == b => 1.0,
                    _ => 0.0,
                };
                m[i * ns + j] = gain;
            }
        }
        for row in m.chunks_exact_mut(ns) {
            let sum: f32 = row.iter().sum();
            if sum > 1.0 {
                row.iter_mut().for_each(|g| *g /= sum);
            }
        }
        Remix {
            src: ns,
            dst: nd,
            matrix: Some(m),
        }
    }

    /// Source channel count.
    pub fn src_channels(&self) -> usize {
        self.src
    }

    /// Remixes whole frames of `input`, appending them to `out`.
    pub fn apply(&self, input: &[f32], out: &mut Vec<f32>) {
        let Some(m) = &self.matrix else {
            out.extend_from_slice(input);
            return;
        };
        out.reserve(input.len() / self.src * self.dst);
        for frame in input.chunks_exact(self.src) {
            for row in m.chunks_exact(self.src) {
                out.push(row.iter().zip(frame).map(|(g, s)| g * s).sum());
            }
        }
    }
}

/// A sample format by its PulseAudio name (`s16le`, `float32le`, `s24-32le`, `aLaw`, ...).
pub fn format_by_name(name: &str) -> Option<SampleFormat> {
    use SampleFormat as F;
    Some(match name {
        "u8" => F::U8,
        "aLaw" | "alaw" => F::Alaw,
        "uLaw" | "ulaw" => F::Ulaw,
        "s16le" => F::S16Le,
        "s16be" => F::S16Be,
        "float32le" => F::Float32Le,
        "float32be" => F::Float32Be,
        "s32le" => F::S32Le,
        "s32be" => F::S32Be,
        "s24le" => F::S24Le,
        "s24be" => F::S24Be,
        "s24-32le" => F::S24In32Le,
        "s24-32be" => F::S24In32Be,
        _ => return None,
    })
}

/// A channel position by its PulseAudio name (`front-left`, `lfe`, ...).
pub fn position_by_name(name: &str) -> Option<ChannelPosition> {
    use ChannelPosition as P;
    Some(match name {
        "mono" => P::Mono,
        "front-left" | "left" => P::FrontLeft,
        "front-right" | "right" => P::FrontRight,
        "front-center" | "center" => P::FrontCenter,
        "rear-center" => P::RearCenter,
        "rear-left" => P::RearLeft,
        "rear-right" => P::RearRight,
        "lfe" | "subwoofer" => P::Lfe,
        "front-left-of-center" => P::FrontLeftOfCenter,
        "front-right-of-center" => P::FrontRightOfCenter,
        "side-left" => P::SideLeft,
        "side-right" => P::SideRight,
        "top-center" => P::TopCenter,
        "top-front-left" => P::TopFrontLeft,
        "top-front-right" => P::TopFrontRight,
        "top-front-center" => P::TopFrontCenter,
        "top-rear-left" => P::TopRearLeft,
        "top-rear-right" => P::TopRearRight,
        "top-rear-center" => P::TopRearCenter,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use SampleFormat as F;

    #[test]
    fn every_format_round_trips() {
        let x = [0.0f32, 0.5, -0.5, 0.25, -1.0, 0.999];
        for f in [
            F::U8,
            F::Alaw,
            F::Ulaw,
            F::S16Le,
            F::S16Be,
            F::Float32Le,
            F::Float32Be,
            F::S32Le,
            F::S32Be,
            F::S24Le,
            F::S24Be,
            F::S24In32Le,
            F::S24In32Be,
        ] {
            let mut bytes = Vec::new();
            encode(f, &x, &mut bytes);
            assert_eq!(bytes.len(), x.len() * f.bytes_per_sample(), "{f:?}");
            let mut back = Vec::new();
            decode(f, &bytes, &mut back);
            let tol = match f {
                F::U8 => 0.01,
                F::Alaw | F::Ulaw => 0.04,
                _ => 1e-4,
            };
            for (a, b) in x.iter().zip(&back) {
                assert!((a - b).abs() <= tol, "{f:?}: {a} -> {b}");
            }
        }
    }

    #[test]
    fn known_encodings() {
        let mut out = Vec::new();
        decode(F::S16Be, &[0x40, 0x00], &mut out);
        assert_eq!(out, [0.5]);
        out.clear();
        decode(F::S24Le, &[0x00, 0x00, 0xc0], &mut out);
        assert_eq!(out, [-0.5]);
        out.clear();
        decode(F::U8, &[128, 0], &mut out);
        assert_eq!(out, [0.0, -1.0]);
        out.clear();
        decode(F::Float32Le, &f32::NAN.to_le_bytes(), &mut out);
        assert_eq!(out, [0.0]);
    }

    #[test]
    fn remix_by_position_not_index() {
        use ChannelPosition as P;
        // A client that sends right, left: the right sample must land on the right.
        let from = ChannelMap::new([P::FrontRight, P::FrontLeft]);
        let to = ChannelMap::stereo();
        let r = Remix::new(&from, &to);
        let mut out = Vec::new();
        r.apply(&[0.75, 0.25], &mut out);
        assert_eq!(out, [0.25, 0.75]);
        // Mono to stereo: both sides.
        let mut out = Vec::new();
        Remix::new(&ChannelMap::mono(), &to).apply(&[0.5], &mut out);
        assert_eq!(out, [0.5, 0.5]);
        // 5.1 down to stereo: the rear-left goes left only, never right.
        let mut out = Vec::new();
        Remix::new(&default_map(6), &to).apply(&[0.0, 0.0, 1.0, 0.0, 0.0, 0.0], &mut out);
        assert!(out[0] > 0.0 && out[1] == 0.0, "{out:?}");
        // Stereo to mono: averaged.
        let mut out = Vec::new();
        Remix::new(&to, &ChannelMap::mono()).apply(&[1.0, 0.0], &mut out);
        assert_eq!(out, [0.5]);
    }
}
