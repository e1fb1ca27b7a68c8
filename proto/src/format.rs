//! Sample formats and stream specifications shared by client and server.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Largest channel count a stream or device may have.
pub const MAX_CHANNELS: u8 = 8;
/// Lowest and highest sample rate a stream or device may have.
pub const MIN_RATE: u32 = 8_000;
/// Highest sample rate a stream or device may have.
pub const MAX_RATE: u32 = 384_000;

/// Interleaved little-endian PCM sample formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SampleFormat {
    /// Signed 16-bit integer.
    S16Le,
    /// Signed 32-bit integer.
    S32Le,
    /// 32-bit IEEE float, nominal range -1.0..=1.0.
    F32Le,
}

impl SampleFormat {
    /// Bytes one sample of this format takes.
    pub const fn bytes(self) -> usize {
        match self {
            SampleFormat::S16Le => 2,
            SampleFormat::S32Le | SampleFormat::F32Le => 4,
        }
    }

    /// The lower-case name used in configs and on the command line (`s16le`).
    pub const fn name(self) -> &'static str {
        match self {
            SampleFormat::S16Le => "s16le",
            SampleFormat::S32Le => "s32le",
            SampleFormat::F32Le => "f32le",
        }
    }
}

impl fmt::Display for SampleFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error for a sample format name that is not known.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown sample format {0:?} (expected s16le, s32le or f32le)")]
pub struct UnknownFormat(pub String);

impl FromStr for SampleFormat {
    type Err = UnknownFormat;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "s16le" | "s16" => Ok(SampleFormat::S16Le),
            "s32le" | "s32" => Ok(SampleFormat::S32Le),
            "f32le" | "f32" | "float32le" => Ok(SampleFormat::F32Le),
            _ => Err(UnknownFormat(s.to_string())),
        }
    }
}

/// Format, rate and channel count of a stream or device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StreamSpec {
    /// Sample format.
    pub format: SampleFormat,
    /// Frames per second.
    pub rate: u32,
    /// Interleaved channels per frame.
    pub channels: u8,
}

/// Why a [`StreamSpec`] is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// Rate outside [`MIN_RATE`]..=[`MAX_RATE`].
    #[error("sample rate {0} Hz is outside {MIN_RATE}..={MAX_RATE}")]
    Rate(u32),
    /// Channel count outside 1..=[`MAX_CHANNELS`].
    #[error("channel count {0} is outside 1..={MAX_CHANNELS}")]
    Channels(u8),
}

impl StreamSpec {
    /// Bytes one interleaved frame takes.
    pub const fn frame_bytes(&self) -> usize {
        self.format.bytes() * self.channels as usize
    }

    /// Checks rate and channel count are in range.
    pub fn validate(&self) -> Result<(), SpecError> {
        if !(MIN_RATE..=MAX_RATE).contains(&self.rate) {
            return Err(SpecError::Rate(self.rate));
        }
        if self.channels == 0 || self.channels > MAX_CHANNELS {
            return Err(SpecError::Channels(self.channels));
        }
        Ok(())
    }

    /// Frames that `ms` milliseconds take at this rate (at least one).
    pub fn frames_for_ms(&self, ms: u32) -> u64 {
        (u64::from(self.rate) * u64::from(ms) / 1000).max(1)
    }
}

impl fmt::Display for StreamSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}ch {}Hz", self.format, self.channels, self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_names_round_trip() {
        for f in [
            SampleFormat::S16Le,
            SampleFormat::S32Le,
            SampleFormat::F32Le,
        ] {
            assert_eq!(f.name().parse::<SampleFormat>().unwrap(), f);
        }
        assert!("u8".parse::<SampleFormat>().is_err());
    }

    #[test]
    fn spec_validation() {
        let ok = StreamSpec {
            format: SampleFormat::S16Le,
            rate: 48_000,
            channels: 2,
        };
        assert_eq!(ok.frame_bytes(), 4);
        assert!(ok.validate().is_ok());
        assert_eq!(
            StreamSpec { channels: 0, ..ok }.validate(),
            Err(SpecError::Channels(0))
        );
        assert_eq!(
            StreamSpec {
                rate: 1_000_000,
                ..ok
            }
            .validate(),
            Err(SpecError::Rate(1_000_000))
        );
        assert_eq!(ok.frames_for_ms(10), 480);
    }
}
