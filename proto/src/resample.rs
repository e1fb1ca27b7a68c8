//! Streaming sample-rate conversion for the client library.
//!
//! The server never resamples: a client whose stream rate differs from the device rate runs
//! its audio through a [`Resampler`] before writing it to the ring (and after reading it, for
//! capture). The resampler takes interleaved f32 frames in chunks of any size, including 0 or
//! 1 frame, and its output does not depend on how the input was cut into chunks: input is
//! gathered into fixed blocks of [`Resampler::block_frames`] frames internally, so one big
//! chunk and many small ones give bit-identical output.
//!
//! # Algorithm and quality parameters
//!
//! Band-limited sinc interpolation with rubato's [`SincFixedIn`]:
//!
//! - `sinc_len` = 256 taps;
//! - `f_cutoff` = 0.95 of the lower Nyquist frequency;
//! - window BlackmanHarris² (the squared 4-term Blackman-Harris);
//! - 256 pre-computed sub-sample filter phases, cubic interpolation between them.
//!
//! Why: BlackmanHarris² has very low side lobes, so the stopband is deep, at the price of a
//! wide transition band; the filter length sets that width. 0.95 is rubato's fitted cutoff
//! for this window at 256 taps (`calculate_cutoff(256, BlackmanHarris2)` ≈ 0.947), and puts
//! the −6 dB point at 0.95 of Nyquist. Measured with these settings (release build):
//!
//! | conversion | tone | level |
//! |---|---|---|
//! | 44100 → 48000 and back | 20 kHz | −0.0 dB (flat) |
//! | 48000 → 16000 | 7 kHz (0.875 Nyquist) | −0.1 dB |
//! | 48000 → 16000 | 8.5 kHz / 9 kHz / 10 kHz (aliases) | −66 / −138 / −140 dB |
//! | 96000 → 44100 | 23 kHz / 24 kHz (aliases) | −84 / −140 dB |
//!
//! 128 taps were measured too: 20 kHz at 44100 ↔ 48000 already lost 0.3 dB, 7 kHz at
//! 48000 → 16000 lost 1.4 dB, and a 9 kHz tone aliased at only −44 dB, so the longer filter
//! was kept. Its cost is small for a client: 10 s of stereo 44100 → 48000 took about 90 ms
//! of one core (about 50 ms with 128 taps). Oversampling by 256 with cubic interpolation
//! makes the sub-sample interpolation error negligible for 256 × 256 stored coefficients.
//!
//! [`SincFixedIn`] was preferred over rubato's FFT resampler because it handles every rate pair
//! the same way (the FFT resampler's block sizes follow the greatest common divisor of the
//! two rates, so pairs such as 11025 → 8000 or 44100 → 48000 get large, odd-sized blocks),
//! and because a fixed input block makes the output independent of chunking.
//!
//! # Alignment and length
//!
//! The first output frame corresponds to the first input frame: rubato's own offset is
//! compensated, by dropping output frames when upsampling and by prepending silence when
//! downsampling, to within half an output frame. [`Resampler::finish`] pushes the input still
//! held back through the filter (with silence) and stops when the stream's output holds exactly
//! `round(total_in * to / from)` frames. After `finish` the resampler is reset and may carry
//! a new stream.
//!
//! Equal rates bypass the filter: the audio passes through unchanged.

use rubato::{
    Resampler as _, SincFixedIn, SincInterpolationParameters, SincInterpolationType, WindowFunction,
};
use std::fmt;

use crate::format::{MAX_RATE, MIN_RATE};

/// Length of the sinc filter in taps (input frames when upsampling).
const SINC_LEN: usize = 256;
/// Cutoff, relative to the lower of the two Nyquist frequencies.
const F_CUTOFF: f32 = 0.95;
/// Pre-computed filter phases per input frame.
const OVERSAMPLING: usize = 256;
/// Smallest block of input frames fed to rubato at once.
const MIN_BLOCK: usize = 256;

/// Why a [`Resampler`] could not be built or could not process audio.
#[derive(Debug, thiserror::Error)]
pub enum ResampleError {
    /// A sample rate outside what soundgate supports.
    #[error("sample rates {from} Hz -> {to} Hz: each must be within {MIN_RATE}..={MAX_RATE} Hz")]
    Rate {
        /// Input rate.
        from: u32,
        /// Output rate.
        to: u32,
    },
    /// Zero channels.
    #[error("a resampler needs at least one channel")]
    NoChannels,
    /// The input slice does not hold a whole number of frames.
    #[error("{samples} samples are not a whole number of {channels}-channel frames")]
    PartialFrame {
        /// Samples given.
        samples: usize,
        /// Channels per frame.
        channels: usize,
    },
    /// rubato refused the parameters.
    #[error("cannot build the resampler: {0}")]
    Construction(#[from] rubato::ResamplerConstructionError),
    /// rubato failed while processing.
    #[error("resampling failed: {0}")]
    Process(#[from] rubato::ResampleError),
}

/// The filter state of a converting (rates differ) resampler.
struct Sinc {
    inner: SincFixedIn<f32>,
    /// Input frames per block fed to `inner`.
    block: usize,
    /// Interleaved input frames not yet fed to `inner` (fewer than `block`).
    pending: Vec<f32>,
    /// De-interleaved block for `inner`.
    in_buf: Vec<Vec<f32>>,
    /// De-interleaved output of one block.
    out_buf: Vec<Vec<f32>>,
    /// Silent frames prepended at the start of each stream (alignment when downsampling).
    lead_in: usize,
    /// Output frames dropped at the start of each stream (alignment when upsampling).
    drop_out: usize,
    /// Output frames still to drop in the current stream.
    to_drop: usize,
    /// Whether the current stream has started (lead-in queued).
    started: bool,
    /// Output frames emitted in the current stream.
    emitted: u64,
}

/// Streaming converter of interleaved f32 audio from one sample rate to another.
pub struct Resampler {
    from: u32,
    to: u32,
    channels: usize,
    /// Input frames consumed in the current stream.
    total_in: u64,
    /// `None` when the rates are equal (pass-through).
    sinc: Option<Sinc>,
}

impl fmt::Debug for Resampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resampler")
            .field("from", &self.from)
            .field("to", &self.to)
            .field("channels", &self.channels)
            .field("total_in", &self.total_in)
            .field("bypass", &self.sinc.is_none())
            .finish_non_exhaustive()
    }
}

impl Resampler {
    /// Streams interleaved f32 audio from `from` Hz to `to` Hz with `channels` channels.
    ///
    /// Both rates must lie in [`MIN_RATE`]..=[`MAX_RATE`]; equal rates give a pass-through.
    pub fn new(from: u32, to: u32, channels: usize) -> Result<Resampler, ResampleError> {
        let rates = MIN_RATE..=MAX_RATE;
        if !rates.contains(&from) || !rates.contains(&to) {
            return Err(ResampleError::Rate { from, to });
        }
        if channels == 0 {
            return Err(ResampleError::NoChannels);
        }
        let sinc = if from == to {
            None
        } else {
            Some(Sinc::new(from, to, channels)?)
        };
        Ok(Resampler {
            from,
            to,
            channels,
            total_in: 0,
            sinc,
        })
    }

    /// Consumes any number of interleaved frames (any chunk size, including 0 or 1) and
    /// appends every output frame that is ready to `out`.
    ///
    /// `input.len()` must be a multiple of the channel count; otherwise nothing is consumed
    /// and [`ResampleError::PartialFrame`] is returned.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) -> Result<(), ResampleError> {
        // (`chunks_exact` rather than `is_multiple_of`, which needs Rust 1.87; the MSRV is 1.80.)
        if !input.chunks_exact(self.channels).remainder().is_empty() {
            return Err(ResampleError::PartialFrame {
                samples: input.len(),
                channels: self.channels,
            });
        }
        self.total_in += (input.len() / self.channels) as u64;
        match &mut self.sinc {
            None => {
                out.extend_from_slice(input);
                Ok(())
            }
            Some(sinc) => sinc.push(input, self.channels, out),
        }
    }

    /// End of stream: flushes the remaining input and the filter tail, so that in total the
    /// output holds `round(total_in * to / from)` frames, aligned with the input (the filter
    /// delay is compensated: the first output frame corresponds to the first input frame).
    ///
    /// The resampler is then reset and ready for a new stream.
    pub fn finish(&mut self, out: &mut Vec<f32>) -> Result<(), ResampleError> {
        let target = expected_frames(self.total_in, self.from, self.to);
        self.total_in = 0;
        match &mut self.sinc {
            None => Ok(()),
            Some(sinc) => {
                let result = sinc.flush(target, self.channels, out);
                sinc.reset();
                result
            }
        }
    }

    /// Output frames per input frame (`to / from`).
    pub fn ratio(&self) -> f64 {
        f64::from(self.to) / f64::from(self.from)
    }

    /// Input frames gathered before the filter runs (0 for a pass-through). Until `finish`,
    /// the resampler holds back at most this many input frames plus the filter's look-ahead
    /// (about 260 input frames), i.e. roughly 15–20 ms of audio at common rates.
    pub fn block_frames(&self) -> usize {
        self.sinc.as_ref().map_or(0, |s| s.block)
    }
}

/// `round(frames * to / from)`, halves rounded up.
fn expected_frames(frames: u64, from: u32, to: u32) -> u64 {
    let num = u128::from(frames) * u128::from(to);
    let den = u128::from(from);
    ((num + den / 2) / den) as u64
}

impl Sinc {
    fn new(from: u32, to: u32, channels: usize) -> Result<Sinc, ResampleError> {
        let ratio = f64::from(to) / f64::from(from);
        // Input frames per output frame.
        let step = f64::from(from) / f64::from(to);
        // rubato needs a block comfortably longer than the filter plus one output step.
        let block = MIN_BLOCK.max(2 * (SINC_LEN + 2 * step.ceil() as usize + 2));
        let params = SincInterpolationParameters {
            sinc_len: SINC_LEN,
            f_cutoff: F_CUTOFF,
            oversampling_factor: OVERSAMPLING,
            interpolation: SincInterpolationType::Cubic,
            window: WindowFunction::BlackmanHarris2,
        };
        let inner = SincFixedIn::<f32>::new(ratio, 1.0, params, block, channels)?;
        // rubato starts its position at -sinc_len/2 and advances by one step before each
        // output frame, so output frame j shows input time j * step + (step - 1). Cancel the
        // offset: when it is ahead (downsampling), delay the input with silence; when it is
        // behind (upsampling), drop the first output frames.
        let offset = step - 1.0;
        let (lead_in, drop_out) = if offset >= 0.0 {
            (offset.round() as usize, 0)
        } else {
            (0, (-offset / step).round() as usize)
        };
        let in_buf = inner.input_buffer_allocate(true);
        let out_buf = inner.output_buffer_allocate(true);
        Ok(Sinc {
            inner,
            block,
            pending: Vec::with_capacity(block * channels),
            in_buf,
            out_buf,
            lead_in,
            drop_out,
            to_drop: drop_out,
            started: false,
            emitted: 0,
        })
    }

    /// Queues the lead-in silence at the start of a stream.
    fn start(&mut self, channels: usize) {
        if !self.started {
            self.started = true;
            self.pending.resize(self.lead_in * channels, 0.0);
        }
    }

    /// Feeds `input` (whole frames), running every complete block through the filter.
    fn push(
        &mut self,
        mut input: &[f32],
        channels: usize,
        out: &mut Vec<f32>,
    ) -> Result<(), ResampleError> {
        self.start(channels);
        let block_samples = self.block * channels;
        while !input.is_empty() {
            if self.pending.is_empty() && input.len() >= block_samples {
                // Whole block straight from the caller's slice.
                let (head, rest) = input.split_at(block_samples);
                input = rest;
                self.run_block(Some(head), channels, out, u64::MAX)?;
            } else {
                let take = (block_samples - self.pending.len()).min(input.len());
                let (head, rest) = input.split_at(take);
                input = rest;
                self.pending.extend_from_slice(head);
                if self.pending.len() == block_samples {
                    self.run_block(None, channels, out, u64::MAX)?;
                    self.pending.clear();
                }
            }
        }
        Ok(())
    }

    /// Pads the stream with silence until `target` frames have been emitted in total.
    fn flush(
        &mut self,
        target: u64,
        channels: usize,
        out: &mut Vec<f32>,
    ) -> Result<(), ResampleError> {
        self.start(channels);
        let block_samples = self.block * channels;
        // Each block of silence yields about block * ratio frames; the filter holds back
        // less than two blocks, so a few blocks always suffice.
        let mut rounds = 0;
        while self.emitted < target {
            if rounds > 8 {
                // Unreachable with the block sizes chosen in `new`; never loop forever.
                break;
            }
            rounds += 1;
            self.pending.resize(block_samples, 0.0);
            self.run_block(None, channels, out, target)?;
            self.pending.clear();
        }
        Ok(())
    }

    /// Runs one block (from `block`, or else from `pending`) through the filter and appends
    /// its output, after the frames still to drop, up to `limit` frames in the stream.
    fn run_block(
        &mut self,
        block: Option<&[f32]>,
        channels: usize,
        out: &mut Vec<f32>,
        limit: u64,
    ) -> Result<(), ResampleError> {
        let src = block.unwrap_or(&self.pending);
        for (ch, buf) in self.in_buf.iter_mut().enumerate() {
            buf.clear();
            buf.extend(src.iter().skip(ch).step_by(channels));
        }
        let (_, produced) =
            self.inner
                .process_into_buffer(&self.in_buf, &mut self.out_buf, None)?;
        let skip = self.to_drop.min(produced);
        self.to_drop -= skip;
        let room = limit.saturating_sub(self.emitted);
        let keep = ((produced - skip) as u64).min(room) as usize;
        out.reserve(keep * channels);
        for i in skip..skip + keep {
            out.extend(self.out_buf.iter().map(|chan| chan[i]));
        }
        self.emitted += keep as u64;
        Ok(())
    }

    /// Forgets the stream: filter history, pending input and counters.
    fn reset(&mut self) {
        self.inner.reset();
        self.pending.clear();
        self.to_drop = self.drop_out;
        self.started = false;
        self.emitted = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATES: [u32; 10] = [
        8000, 11025, 16000, 22050, 32000, 44100, 48000, 88200, 96000, 192000,
    ];

    fn sine(freq: f64, rate: u32, frames: usize, amp: f64) -> Vec<f32> {
        (0..frames)
            .map(|i| {
                (amp * (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin())
                    as f32
            })
            .collect()
    }

    fn run(from: u32, to: u32, channels: usize, input: &[f32]) -> Vec<f32> {
        let mut r = Resampler::new(from, to, channels).unwrap();
        let mut out = Vec::new();
        r.process(input, &mut out).unwrap();
        r.finish(&mut out).unwrap();
        out
    }

    fn channel(interleaved: &[f32], channels: usize, ch: usize) -> Vec<f32> {
        interleaved
            .iter()
            .skip(ch)
            .step_by(channels)
            .copied()
            .collect()
    }

    /// Frequency by counting interpolated zero crossings.
    fn zero_crossing_freq(x: &[f32], rate: u32) -> f64 {
        let mut first = None;
        let mut last = 0.0;
        let mut count = 0u64;
        for i in 1..x.len() {
            let (a, b) = (f64::from(x[i - 1]), f64::from(x[i]));
            if (a < 0.0 && b >= 0.0) || (a >= 0.0 && b < 0.0) {
                let t = (i - 1) as f64 + a / (a - b);
                if first.is_none() {
                    first = Some(t);
                }
                last = t;
                count += 1;
            }
        }
        let first = first.unwrap();
        (count - 1) as f64 / 2.0 / ((last - first) / f64::from(rate))
    }

    fn rms(x: &[f32]) -> f64 {
        (x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
    }

    fn middle(x: &[f32]) -> &[f32] {
        &x[x.len() / 4..x.len() * 3 / 4]
    }

    #[test]
    fn resample_sine_44100_to_48000() {
        let n = 44100 * 3;
        let input = sine(1000.0, 44100, n, 0.5);
        let out = run(44100, 48000, 1, &input);
        assert_eq!(out.len() as u64, expected_frames(n as u64, 44100, 48000));
        let mid = middle(&out);
        let f = zero_crossing_freq(mid, 48000);
        assert!((f - 1000.0).abs() < 0.5, "measured {f} Hz");
        let amp = rms(mid) * 2f64.sqrt();
        assert!((amp / 0.5 - 1.0).abs() < 0.01, "amplitude {amp}");
    }

    /// Output frame where the largest magnitude is.
    fn peak(x: &[f32]) -> usize {
        let mut best = 0;
        for (i, v) in x.iter().enumerate() {
            if v.abs() > x[best].abs() {
                best = i;
            }
        }
        best
    }

    #[test]
    fn resample_click_alignment_all_rates() {
        // Clicks far enough apart (more than the filter length) to be told apart.
        let clicks = [0usize, 437, 1500, 4321];
        let n = 5000;
        let mut input = vec![0.0f32; n];
        for &k in &clicks {
            input[k] = 1.0;
        }
        for &from in &RATES {
            for &to in &RATES {
                let out = run(from, to, 1, &input);
                assert_eq!(out.len() as u64, expected_frames(n as u64, from, to));
                for &k in &clicks {
                    let want = expected_frames(k as u64, from, to) as usize;
                    let reach = expected_frames(150, from, to) as usize;
                    let lo = want.saturating_sub(reach);
                    let got = lo + peak(&out[lo..(want + reach).min(out.len())]);
                    assert!(
                        (got as i64 - want as i64).abs() <= 2,
                        "{from}->{to}: click at {k} expected at {want}, found at {got}"
                    );
                }
            }
        }
    }

    #[test]
    fn resample_onset_alignment_44100_to_48000() {
        // A step onset: silence, then a sine; the first loud output frame sits where expected.
        let k = 10_000;
        let mut input = vec![0.0f32; 30_000];
        for (i, v) in input.iter_mut().enumerate().skip(k) {
            *v = 0.8 * ((i - k) as f32 * 0.05).cos();
        }
        let out = run(44100, 48000, 1, &input);
        let onset = out.iter().position(|v| v.abs() > 0.4).unwrap() as i64;
        let want = expected_frames(k as u64, 44100, 48000) as i64;
        assert!(
            (onset - want).abs() <= 2,
            "onset at {onset}, expected {want}"
        );
    }

    #[test]
    fn resample_lengths() {
        for &(from, to) in &[
            (44100, 48000),
            (48000, 44100),
            (8000, 192000),
            (192000, 8000),
            (48000, 16000),
            (11025, 8000),
        ] {
            for n in [0usize, 1, 2, 5, 255, 256, 257, 1000, 44_101] {
                let input = sine(440.0, from, n, 0.3);
                let out = run(from, to, 1, &input);
                let want = expected_frames(n as u64, from, to);
                assert_eq!(out.len() as u64, want, "{from}->{to}, {n} frames");
            }
        }
    }

    #[test]
    fn resample_chunk_size_independence() {
        let channels = 2;
        let n = 20_000;
        let input: Vec<f32> = (0..n * channels)
            .map(|i| (i as f32 * 0.013).sin() * 0.7 + (i as f32 * 0.0007).cos() * 0.2)
            .collect();
        for &(from, to) in &[(44100, 48000), (48000, 16000), (8000, 96000)] {
            let whole = run(from, to, channels, &input);
            let mut r = Resampler::new(from, to, channels).unwrap();
            let mut out = Vec::new();
            let sizes = [1usize, 7, 0, 480, 4096, 3, 1023, 1, 256, 2000];
            let mut seed = 0x2545_f491u32;
            let mut pos = 0;
            let mut i = 0;
            while pos < n {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let size = sizes[(i + (seed >> 28) as usize) % sizes.len()].min(n - pos);
                r.process(&input[pos * channels..(pos + size) * channels], &mut out)
                    .unwrap();
                pos += size;
                i += 1;
            }
            r.finish(&mut out).unwrap();
            assert_eq!(out.len(), whole.len());
            let max_diff = out
                .iter()
                .zip(&whole)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(max_diff <= 1e-5, "{from}->{to}: max difference {max_diff}");
        }
    }

    #[test]
    fn resample_stereo_channels_stay_separate() {
        let n = 44100 * 2;
        let left = sine(1000.0, 44100, n, 0.5);
        let right = sine(3000.0, 44100, n, 0.25);
        let input: Vec<f32> = left
            .iter()
            .zip(&right)
            .flat_map(|(&l, &r)| [l, r])
            .collect();
        let out = run(44100, 48000, 2, &input);
        let (l, r) = (channel(&out, 2, 0), channel(&out, 2, 1));
        let fl = zero_crossing_freq(middle(&l), 48000);
        let fr = zero_crossing_freq(middle(&r), 48000);
        assert!((fl - 1000.0).abs() < 0.5, "left {fl}");
        assert!((fr - 3000.0).abs() < 0.5, "right {fr}");
        assert!((rms(middle(&l)) * 2f64.sqrt() / 0.5 - 1.0).abs() < 0.01);
        assert!((rms(middle(&r)) * 2f64.sqrt() / 0.25 - 1.0).abs() < 0.01);

        // A silent channel stays exactly silent next to a loud one.
        let input: Vec<f32> = left.iter().flat_map(|&l| [0.0, l, 0.0]).collect();
        let out = run(44100, 48000, 3, &input);
        assert!(channel(&out, 3, 0).iter().all(|&v| v == 0.0));
        assert!(channel(&out, 3, 2).iter().all(|&v| v == 0.0));
        assert!(rms(middle(&channel(&out, 3, 1))) > 0.3);
    }

    #[test]
    fn resample_downsampling_removes_out_of_band_tone() {
        let n = 48000 * 2;
        let amp = 0.5;
        let hi = run(48000, 16000, 1, &sine(10_000.0, 48000, n, amp));
        let lo = run(48000, 16000, 1, &sine(1000.0, 48000, n, amp));
        let in_rms = amp / 2f64.sqrt();
        let hi_db = 20.0 * (rms(middle(&hi)) / in_rms).log10();
        assert!(hi_db < -40.0, "10 kHz attenuated only {hi_db:.1} dB");
        let lo_gain = rms(middle(&lo)) / in_rms;
        assert!((lo_gain - 1.0).abs() < 0.01, "1 kHz gain {lo_gain}");
        let f = zero_crossing_freq(middle(&lo), 16000);
        assert!((f - 1000.0).abs() < 0.5, "measured {f} Hz");
    }

    /// Level of a tone of `freq` Hz after conversion, in dB.
    fn tone_gain_db(from: u32, to: u32, freq: f64) -> f64 {
        let amp = 0.5;
        let out = run(from, to, 1, &sine(freq, from, from as usize, amp));
        20.0 * (rms(middle(&out)) / (amp / 2f64.sqrt())).log10()
    }

    #[test]
    fn resample_band_edges() {
        // Pass band: flat up to 20 kHz between the CD and DAT rates, and up to 7/8 of Nyquist.
        for (from, to, freq) in [
            (44100, 48000, 20_000.0),
            (48000, 44100, 20_000.0),
            (48000, 16000, 7000.0),
        ] {
            let db = tone_gain_db(from, to, freq);
            assert!(db.abs() < 0.2, "{from}->{to}: {freq} Hz at {db:.2} dB");
        }
        // Stop band: tones that would alias are gone.
        for (from, to, freq) in [(48000, 16000, 9000.0), (96000, 44100, 24_000.0)] {
            let db = tone_gain_db(from, to, freq);
            assert!(db < -90.0, "{from}->{to}: {freq} Hz at {db:.1} dB");
        }
    }

    #[test]
    fn resample_equal_rates_pass_through() {
        let mut r = Resampler::new(48000, 48000, 2).unwrap();
        assert_eq!(r.ratio(), 1.0);
        let input: Vec<f32> = (0..2000).map(|i| (i as f32 * 0.1).sin()).collect();
        let mut out = Vec::new();
        r.process(&input[..2], &mut out).unwrap();
        r.process(&input[2..], &mut out).unwrap();
        r.finish(&mut out).unwrap();
        assert_eq!(out, input);
    }

    #[test]
    fn resample_rejects_bad_arguments() {
        assert!(matches!(
            Resampler::new(0, 48000, 2),
            Err(ResampleError::Rate { .. })
        ));
        assert!(matches!(
            Resampler::new(48000, 1_000_000, 2),
            Err(ResampleError::Rate { .. })
        ));
        assert!(matches!(
            Resampler::new(44100, 48000, 0),
            Err(ResampleError::NoChannels)
        ));
        let mut r = Resampler::new(44100, 48000, 2).unwrap();
        assert!((r.ratio() - 48000.0 / 44100.0).abs() < 1e-12);
        let mut out = Vec::new();
        assert!(matches!(
            r.process(&[0.0; 3], &mut out),
            Err(ResampleError::PartialFrame {
                samples: 3,
                channels: 2
            })
        ));
    }

    #[test]
    fn resample_reuse_after_finish() {
        let input = sine(1000.0, 44100, 10_000, 0.5);
        let mut r = Resampler::new(44100, 48000, 1).unwrap();
        let mut first = Vec::new();
        r.process(&input, &mut first).unwrap();
        r.finish(&mut first).unwrap();
        let mut second = Vec::new();
        r.process(&input, &mut second).unwrap();
        r.finish(&mut second).unwrap();
        assert_eq!(first, second);
    }
}
