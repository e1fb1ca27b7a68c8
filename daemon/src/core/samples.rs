//! The sample cache: short sounds a client uploads once and plays with low latency.
//!
//! **Namespace.** Samples are keyed by `(uploading connection, name)`: a client uploads,
//! plays, lists and removes only its own samples, and another client naming the same sample
//! gets *not found* (the default policy's "play or remove a cached sample: its uploader only",
//! enforced structurally by the key, not by a rule a config could loosen). Administrators see
//! every client's samples in [`Request::ListSamples`] (`list-streams` on the server), and nothing
//! more. A connection's samples
//! are freed when it disconnects ([`SampleCache::forget`]).
//!
//! **Upload** ([`Request::UploadSample`]) carries one sealed memfd
//! (`F_SEAL_SHRINK|F_SEAL_GROW|F_SEAL_SEAL`) of exactly `frames × frame_bytes` bytes. The
//! server copies the PCM into its own memory with `pread` (no mapping, so the client cannot
//! change the cached sound afterwards) and closes the fd. A client's samples together may hold
//! at most `limits.sample_cache_bytes`; one sample at most [`MAX_SAMPLE_SECS`] seconds;
//! names are 1..=[`MAX_SAMPLE_NAME`] bytes. Uploading an existing name replaces it.
//!
//! **Play** ([`Request::PlaySample`]) is a `play` on the sink for the policy, is refused
//! (`busy`) while another client holds the sink with an exclusive stream, and counts against
//! the stream quotas. The server builds a playback stream it owns: a fresh memfd ring
//! filled with the whole sample (write index = its frames), marked draining so the engine
//! plays it once without counting an underrun. No fd of it is held by anyone but the server
//! (the memfd is closed once mapped), and nobody waits on its ring: the engine never wakes it,
//! since nothing sets its waiting flag. While it plays it is
//! one of the client's streams (listed, controllable, deleted on disconnect); once the engine
//! has consumed every frame, [`Core::samples_tick`] (called from [`Core::tick`]) removes it.
//! The sample's rate must be the sink's (the client library resamples before uploading).

use super::{check_volume, err, ring_size, Core, NewPlayback, Registry};
use crate::engine::StreamShared;
use crate::policy::{Action, Decision, Object};
use soundgate_proto::ring::{self, Ring};
use soundgate_proto::shm::{self, Mapping};
use soundgate_proto::wire::{ClientId, ErrorKind, Reply, Request, SampleInfo, StreamId, WireError};
use soundgate_proto::StreamSpec;
use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Longest sample name, in bytes.
pub const MAX_SAMPLE_NAME: usize = 64;
/// Longest sample, in seconds.
pub const MAX_SAMPLE_SECS: u64 = 10;
/// Prefix of the stream name a sample plays under (`sample:NAME`).
pub const SAMPLE_STREAM_PREFIX: &str = "sample:";

/// One cached sample: server-owned PCM.
#[derive(Debug)]
struct Sample {
    spec: StreamSpec,
    frames: u64,
    /// Shared with plays being built outside the registry lock.
    pcm: Arc<[u8]>,
}

/// Every client's samples, and the sample plays in progress. Lives in the registry.
#[derive(Debug, Default)]
pub(super) struct SampleCache {
    samples: BTreeMap<(ClientId, String), Sample>,
    /// Streams playing a sample, with the frames they end after.
    pub(super) plays: BTreeMap<StreamId, u64>,
}

impl SampleCache {
    /// Bytes `client`'s samples hold, leaving out the one named `except`.
    fn bytes_of(&self, client: ClientId, except: Option<&str>) -> u64 {
        self.of(client)
            .filter(|((_, name), _)| Some(name.as_str()) != except)
            .map(|(_, s)| s.pcm.len() as u64)
            .sum()
    }

    fn of(&self, client: ClientId) -> impl Iterator<Item = (&(ClientId, String), &Sample)> {
        self.samples
            .range((client, String::new())..)
            .take_while(move |((owner, _), _)| *owner == client)
    }

    /// Frees every sample of `client` (it disconnected). Its plays are streams and end with
    /// its other streams.
    pub(super) fn forget(&mut self, client: ClientId) {
        let names: Vec<(ClientId, String)> = self.of(client).map(|(k, _)| k.clone()).collect();
        let bytes = self.bytes_of(client, None);
        for k in names {
            self.samples.remove(&k);
        }
        if bytes > 0 {
            tracing::debug!(client, bytes, "freed the client's samples");
        }
    }
}

fn info(owner: ClientId, name: &str, s: &Sample) -> SampleInfo {
    SampleInfo {
        name: name.to_string(),
        owner,
        spec: s.spec,
        frames: s.frames,
        bytes: s.pcm.len() as u64,
    }
}

fn check_sample_name(name: &str) -> Result<(), WireError> {
    if name.is_empty() || name.len() > MAX_SAMPLE_NAME {
        return Err(err(
            ErrorKind::Invalid,
            format!(
                "a sample name must be 1..={MAX_SAMPLE_NAME} bytes, got {}",
                name.len()
            ),
        ));
    }
    Ok(())
}

fn internal(e: &dyn std::fmt::Display) -> WireError {
    err(ErrorKind::Internal, e.to_string())
}

impl Core {
    pub(super) fn samples_request(
        &self,
        client: ClientId,
        req: Request,
        fds: Vec<OwnedFd>,
    ) -> Result<Reply, WireError> {
        match req {
            Request::UploadSample { name, spec, frames } => {
                self.upload_sample(client, name, spec, frames, fds)
            }
            Request::PlaySample {
                name,
                device,
                volume,
            } => self.play_sample(client, &name, device.as_deref(), volume),
            Request::RemoveSample { name } => self.remove_sample(client, &name),
            Request::ListSamples => self.list_samples(client),
            other => Err(err(
                ErrorKind::Internal,
                format!("{other:?} is not a sample-cache request"),
            )),
        }
    }

    /// Refuses an upload that would take `client`'s samples over the byte quota.
    fn check_sample_quota(
        &self,
        reg: &Registry,
        client: ClientId,
        name: &str,
        bytes: u64,
    ) -> Result<(), WireError> {
        let limit = self.live().limits.sample_cache_bytes;
        let others = reg.samples.bytes_of(client, Some(name));
        if others.saturating_add(bytes) > limit {
            return Err(err(
                ErrorKind::Quota,
                format!(
                    "sample {name:?} of {bytes} bytes would take this client's samples to {} \
                     bytes (limit {limit} bytes)",
                    others.saturating_add(bytes)
                ),
            ));
        }
        Ok(())
    }

    fn upload_sample(
        &self,
        client: ClientId,
        name: String,
        spec: StreamSpec,
        frames: u64,
        fds: Vec<OwnedFd>,
    ) -> Result<Reply, WireError> {
        check_sample_name(&name)?;
        spec.validate()
            .map_err(|e| err(ErrorKind::Invalid, e.to_string()))?;
        let max_frames = u64::from(spec.rate) * MAX_SAMPLE_SECS;
        if !(1..=max_frames).contains(&frames) {
            return Err(err(
                ErrorKind::Invalid,
                format!(
                    "a sample holds 1..={max_frames} frames ({MAX_SAMPLE_SECS} s at {} Hz), \
                     got {frames}",
                    spec.rate
                ),
            ));
        }
        // At most 10 s × 384 kHz × 32 bytes: no overflow, and it fits a usize.
        let bytes = frames * spec.frame_bytes() as u64;
        let size =
            usize::try_from(bytes).map_err(|_| err(ErrorKind::Invalid, "sample too large"))?;
        let [memfd]: [OwnedFd; 1] = fds.try_into().map_err(|fds: Vec<OwnedFd>| {
            err(
                ErrorKind::Protocol,
                format!("an upload needs 1 fd (a sealed memfd), got {}", fds.len()),
            )
        })?;
        shm::verify_sealed(memfd.as_fd(), size)
            .map_err(|e| err(ErrorKind::Protocol, e.to_string()))?;
        self.check_sample_quota(&self.reg(), client, &name, bytes)?;
        // Copy outside the registry lock: up to the quota's bytes.
        let file = std::fs::File::from(memfd);
        let mut pcm = vec![0u8; size];
        file.read_exact_at(&mut pcm, 0).map_err(|e| {
            err(
                ErrorKind::Protocol,
                format!("reading the sample memfd: {e}"),
            )
        })?;
        drop(file);
        let mut reg = self.reg();
        if !reg.clients.contains_key(&client) {
            return Err(err(ErrorKind::Protocol, "unknown client"));
        }
        // Again: another upload of this client may have landed meanwhile.
        self.check_sample_quota(&reg, client, &name, bytes)?;
        tracing::debug!(client, sample = %name, %spec, frames, bytes, "sample uploaded");
        reg.samples.samples.insert(
            (client, name),
            Sample {
                spec,
                frames,
                pcm: pcm.into(),
            },
        );
        Ok(Reply::Ok)
    }

    fn play_sample(
        &self,
        client: ClientId,
        name: &str,
        device: Option<&str>,
        volume: f32,
    ) -> Result<Reply, WireError> {
        check_volume(volume)?;
        let not_found = || err(ErrorKind::NotFound, format!("no sample named {name:?}"));
        let (index, spec, frames, pcm) = {
            let mut reg = self.reg();
            let (spec, frames, pcm) = match reg.samples.samples.get(&(client, name.to_string())) {
                Some(s) => (s.spec, s.frames, Arc::clone(&s.pcm)),
                None => return Err(not_found()),
            };
            let index = self.sink_index(&reg, device)?;
            let sink = &self.sinks[index];
            self.authorize(
                &mut reg,
                client,
                Action::Play,
                &Object::Sink { name: &sink.name },
            )?;
            // A sample is a playback stream like any other: an exclusive stream keeps it out.
            self.check_exclusive(&reg, index, client, false)?;
            let capacity = frames.max(u64::from(self.sinks[index].handle.quantum()));
            self.check_quota(&reg, client, ring_size(capacity, &spec)?)?;
            (index, spec, frames, pcm)
        };
        let sink = &self.sinks[index];
        let dev = sink.handle.spec();
        if spec.rate != dev.rate {
            return Err(err(
                ErrorKind::Invalid,
                format!(
                    "sample {name:?} is at {} Hz but {} runs at {} Hz (the client library \
                     resamples before uploading)",
                    spec.rate, sink.name, dev.rate
                ),
            ));
        }
        // Build the whole stream outside the lock: a memfd ring holding every frame.
        let capacity = frames.max(u64::from(sink.handle.quantum()));
        let size = ring::ring_bytes(capacity, spec.frame_bytes())
            .map_err(|e| err(ErrorKind::Invalid, e.to_string()))?;
        let memfd = shm::create_sealed("soundgate-sample", size).map_err(|e| internal(&e))?;
        let map = Mapping::new(memfd.as_fd(), size, true).map_err(|e| internal(&e))?;
        drop(memfd);
        let ring = Ring::init(map, capacity, spec.frame_bytes()).map_err(|e| internal(&e))?;
        ring.copy_in(0, &pcm).map_err(|e| internal(&e))?;
        ring.store_write(frames).map_err(|e| internal(&e))?;
        drop(pcm);
        let shared = StreamShared::new(volume, false, false);
        shared.set_draining(true);

        let mut reg = self.reg();
        if !reg.clients.contains_key(&client) {
            return Err(err(ErrorKind::Protocol, "unknown client"));
        }
        // Again: the client may have opened streams, and another an exclusive one, meanwhile.
        self.check_exclusive(&reg, index, client, false)?;
        self.check_quota(&reg, client, size as u64)?;
        if sink.dev.is_removed() {
            return Err(err(
                ErrorKind::NotFound,
                format!("sink {} was removed", sink.name),
            ));
        }
        let new = NewPlayback {
            name: format!("{SAMPLE_STREAM_PREFIX}{name}"),
            ring,
            spec,
            shared,
            capacity,
            exclusive: false,
        };
        let id = self.attach_playback(&mut reg, client, index, new, "sample")?;
        tracing::debug!(client, stream = id, sample = name, sink = %sink.name, frames, "sample playing");
        reg.samples.plays.insert(id, frames);
        Ok(Reply::StreamCreated {
            stream: id,
            spec,
            capacity_frames: capacity,
            quantum: sink.handle.quantum(),
        })
    }

    fn remove_sample(&self, client: ClientId, name: &str) -> Result<Reply, WireError> {
        let mut reg = self.reg();
        match reg.samples.samples.remove(&(client, name.to_string())) {
            Some(s) => {
                tracing::debug!(client, sample = name, bytes = s.pcm.len(), "sample removed");
                Ok(Reply::Ok)
            }
            None => Err(err(
                ErrorKind::NotFound,
                format!("no sample named {name:?}"),
            )),
        }
    }

    fn list_samples(&self, client: ClientId) -> Result<Reply, WireError> {
        let reg = self.reg();
        let Some(c) = reg.clients.get(&client) else {
            return Err(err(ErrorKind::Protocol, "unknown client"));
        };
        let everyone = Object::Server;
        let list = if self.permitted(&c.subject, Action::ListStreams, &everyone) == Decision::Allow
        {
            reg.samples
                .samples
                .iter()
                .map(|((owner, name), s)| info(*owner, name, s))
                .collect()
        } else {
            reg.samples
                .of(client)
                .map(|((owner, name), s)| info(*owner, name, s))
                .collect()
        };
        Ok(Reply::Samples(list))
    }

    /// Ends sample plays the engine has played out (called every tick). Their streams leave
    /// the engine through its retire queue, as deleted streams do.
    pub(super) fn samples_tick(&self) {
        let mut reg = self.reg();
        if reg.samples.plays.is_empty() {
            return;
        }
        let mut done = Vec::new();
        for (&id, &frames) in &reg.samples.plays {
            match reg.streams.get(&id) {
                // Deleted by its owner, or ended with its client or its device.
                None => done.push((id, false)),
                Some(s) if s.shared.frames() >= frames => done.push((id, true)),
                Some(_) => {}
            }
        }
        for (id, played) in done {
            reg.samples.plays.remove(&id);
            if !played {
                continue;
            }
            if let Some(s) = reg.streams.remove(&id) {
                tracing::debug!(stream = id, client = s.owner, "sample played out");
                self.detach(&mut reg, &s, id);
                self.stream_removed(&mut reg, id, &s);
            }
        }
    }
}
