//! The sample cache in the client library: upload a short sound once, play it with low
//! latency as often as wanted, list and remove it.
//!
//! ```no_run
//! use soundgate_proto::client::{server_path, Client};
//! use soundgate_proto::{SampleFormat, StreamSpec};
//! let client = Client::connect(&server_path(None), "demo")?;
//! let spec = StreamSpec { format: SampleFormat::S16Le, rate: 44_100, channels: 1 };
//! let pcm = vec![0u8; 2 * 4410]; // 100 ms of silence
//! client.upload_sample("click", spec, &pcm)?; // resampled to the default sink's rate
//! client.play_sample("click", None, 1.0)?;
//! # Ok::<(), soundgate_proto::client::ClientError>(())
//! ```
//!
//! Samples belong to the connection that uploaded them: other clients can neither play, remove
//! nor list them, and the server frees them when the connection closes. The server plays a
//! sample only at a sink's own rate, so [`Client::upload_sample`] resamples to the default
//! sink's rate first (the cached sample is then f32); [`Client::upload_sample_raw`] sends the
//! bytes unchanged.

use crate::client::{Client, ClientError};
use crate::convert;
use crate::format::{SampleFormat, StreamSpec};
use crate::resample::Resampler;
use crate::shm;
use crate::wire::{Reply, Request, SampleInfo, StreamId};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;

fn unexpected(r: &Reply) -> ClientError {
    ClientError::Protocol(format!("unexpected reply {r:?}"))
}

/// Converts `pcm` (interleaved frames of `spec`) to f32 at `rate` Hz.
fn resample(spec: StreamSpec, pcm: &[u8], rate: u32) -> Result<Vec<u8>, ClientError> {
    let mut input = vec![0.0f32; pcm.len() / spec.format.bytes()];
    convert::decode_into(spec.format, pcm, &mut input);
    let mut rs = Resampler::new(spec.rate, rate, spec.channels.into())?;
    let mut out = Vec::new();
    rs.process(&input, &mut out)?;
    rs.finish(&mut out)?;
    let mut bytes = vec![0u8; out.len() * SampleFormat::F32Le.bytes()];
    convert::encode_into(SampleFormat::F32Le, &out, &mut bytes);
    Ok(bytes)
}

impl Client {
    /// Uploads `pcm`, interleaved frames of `spec`, as this connection's sample `name`
    /// (replacing one of the same name). If the default sink runs at another rate, the audio
    /// is resampled to it first and cached as f32. Returns what the server now holds.
    pub fn upload_sample(
        &self,
        name: &str,
        spec: StreamSpec,
        pcm: &[u8],
    ) -> Result<SampleInfo, ClientError> {
        spec.validate()?;
        let default = self.server_info()?.default_sink;
        let rate = self
            .sinks()?
            .into_iter()
            .find(|s| Some(&s.name) == default.as_ref())
            .map(|s| s.spec.rate);
        match rate {
            Some(rate) if rate != spec.rate => {
                check_frames(spec, pcm)?;
                let bytes = resample(spec, pcm, rate)?;
                let spec = StreamSpec {
                    format: SampleFormat::F32Le,
                    rate,
                    channels: spec.channels,
                };
                self.upload_sample_raw(name, spec, &bytes)
            }
            _ => self.upload_sample_raw(name, spec, pcm),
        }
    }

    /// Uploads `pcm`, interleaved frames of `spec`, unchanged: the library puts it in a memfd
    /// sealed against shrinking and growing and passes that with the request.
    pub fn upload_sample_raw(
        &self,
        name: &str,
        spec: StreamSpec,
        pcm: &[u8],
    ) -> Result<SampleInfo, ClientError> {
        let frames = check_frames(spec, pcm)?;
        let memfd = shm::create_sealed("soundgate-sample", pcm.len())?;
        let file = std::fs::File::from(memfd);
        file.write_all_at(pcm, 0).map_err(|e| ClientError::Sys {
            op: "writing the sample memfd",
            errno: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        })?;
        let req = Request::UploadSample {
            name: name.to_string(),
            spec,
            frames,
        };
        match self.request(req, &[file.as_fd()])?.0 {
            Reply::Ok => Ok(SampleInfo {
                name: name.to_string(),
                owner: self.client_id(),
                spec,
                frames,
                bytes: pcm.len() as u64,
            }),
            r => Err(unexpected(&r)),
        }
    }

    /// Plays this connection's sample `name` once on `device` (`None`: the default sink) at
    /// linear `volume`. Returns the id of the stream playing it; it ends on its own.
    pub fn play_sample(
        &self,
        name: &str,
        device: Option<&str>,
        volume: f32,
    ) -> Result<StreamId, ClientError> {
        let req = Request::PlaySample {
            name: name.to_string(),
            device: device.map(str::to_string),
            volume,
        };
        match self.request(req, &[])?.0 {
            Reply::StreamCreated { stream, .. } => Ok(stream),
            r => Err(unexpected(&r)),
        }
    }

    /// Removes this connection's sample `name`.
    pub fn remove_sample(&self, name: &str) -> Result<(), ClientError> {
        let req = Request::RemoveSample {
            name: name.to_string(),
        };
        match self.request(req, &[])?.0 {
            Reply::Ok => Ok(()),
            r => Err(unexpected(&r)),
        }
    }

    /// This connection's samples (an administrator's: every client's).
    pub fn samples(&self) -> Result<Vec<SampleInfo>, ClientError> {
        match self.request(Request::ListSamples, &[])?.0 {
            Reply::Samples(v) => Ok(v),
            r => Err(unexpected(&r)),
        }
    }
}

/// Frames in `pcm`, which must be a non-empty whole number of `spec`'s frames.
fn check_frames(spec: StreamSpec, pcm: &[u8]) -> Result<u64, ClientError> {
    let fb = spec.frame_bytes();
    if pcm.is_empty() || fb == 0 || !pcm.len().is_multiple_of(fb) {
        return Err(ClientError::Invalid(format!(
            "a sample needs a non-empty whole number of {fb}-byte frames, got {} bytes",
            pcm.len()
        )));
    }
    Ok((pcm.len() / fb) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resampling_keeps_length_and_format() {
        let spec = StreamSpec {
            format: SampleFormat::S16Le,
            rate: 44_100,
            channels: 2,
        };
        let pcm = vec![0u8; 4 * 4410];
        let out = resample(spec, &pcm, 48_000).unwrap();
        assert_eq!(out.len(), 4800 * 2 * 4, "100 ms at 48 kHz, f32 stereo");
    }

    #[test]
    fn partial_frames_are_refused() {
        let spec = StreamSpec {
            format: SampleFormat::S16Le,
            rate: 48_000,
            channels: 2,
        };
        assert!(check_frames(spec, &[0u8; 6]).is_err());
        assert!(check_frames(spec, &[]).is_err());
        assert_eq!(check_frames(spec, &[0u8; 8]).unwrap(), 2);
    }
}
