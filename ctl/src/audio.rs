//! Audio input and output for `sgcat`: WAV and FLAC decoding (symphonia), raw PCM, WAV writing
//! (hound).
//!
//! Whatever the container, an [`AudioReader`] yields interleaved little-endian bytes in one of
//! the three stream formats, described by its [`StreamSpec`]: integer sources of up to 16 bits
//! become `s16le`, wider integer sources (24- and 32-bit) become `s32le` at full scale, float
//! sources become `f32le`. An [`AudioWriter`] takes such bytes and writes a WAV file or raw PCM.

use soundgate_proto::{SampleFormat, StreamSpec};
use std::fs::File;
use std::io::{self, BufWriter, Cursor, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use symphonia::core::audio::{AudioBufferRef, SampleBuffer};
use symphonia::core::codecs::{Decoder, DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::{MediaSource, MediaSourceStream, ReadOnlySource};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

/// Frames a raw PCM reader hands out per [`AudioReader::read`].
const RAW_CHUNK_FRAMES: usize = 4096;

/// Why audio could not be read or written. Variants are named for the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// The input file could not be opened.
    #[error("cannot open {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    /// The output file could not be created.
    #[error("cannot create {}: {source}", path.display())]
    Create { path: PathBuf, source: hound::Error },
    /// Reading the input failed.
    #[error("reading input: {0}")]
    Read(#[source] io::Error),
    /// Writing the output failed.
    #[error("writing output: {0}")]
    Write(#[source] io::Error),
    /// The input is neither WAV nor FLAC and no raw format was given.
    #[error(
        "input is not a WAV or FLAC file (for raw PCM give --raw, or --format/--rate/--channels)"
    )]
    Unrecognised,
    /// symphonia could not make sense of the container.
    #[error("reading the container: {0}")]
    Container(#[source] SymError),
    /// The container holds no audio track.
    #[error("the input has no audio track")]
    NoTrack,
    /// No decoder for the track's codec.
    #[error("unsupported codec: {0}")]
    Codec(#[source] SymError),
    /// Decoding a packet failed.
    #[error("decoding: {0}")]
    Decode(#[source] SymError),
    /// The decoded audio cannot be described as a soundgate stream.
    #[error("unsupported audio: {0}")]
    Unsupported(String),
    /// hound failed while writing the WAV file.
    #[error("writing WAV: {0}")]
    Wav(#[source] hound::Error),
}

/// Containers `sgcat` recognises by content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// RIFF/WAVE.
    Wav,
    /// Native FLAC.
    Flac,
}

impl Container {
    /// The container whose magic bytes `prefix` starts with, if any (needs 12 bytes for WAV).
    pub fn sniff(prefix: &[u8]) -> Option<Container> {
        if prefix.len() >= 12 && &prefix[0..4] == b"RIFF" && &prefix[8..12] == b"WAVE" {
            Some(Container::Wav)
        } else if prefix.starts_with(b"fLaC") {
            Some(Container::Flac)
        } else {
            None
        }
    }

    /// The container a file name extension suggests.
    pub fn from_extension(ext: &str) -> Option<Container> {
        match ext.to_ascii_lowercase().as_str() {
            "wav" | "wave" => Some(Container::Wav),
            "flac" => Some(Container::Flac),
            _ => None,
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Container::Wav => "wav",
            Container::Flac => "flac",
        }
    }
}

/// How to treat input that may be raw PCM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawMode {
    /// Only WAV or FLAC; anything else is an error.
    Never,
    /// WAV or FLAC when recognised by content, otherwise raw PCM in this spec.
    Fallback(StreamSpec),
    /// Raw PCM in this spec, whatever the content.
    Always(StreamSpec),
}

/// A source of interleaved PCM bytes in a [`StreamSpec`].
pub struct AudioReader {
    spec: StreamSpec,
    source: Source,
}

impl std::fmt::Debug for AudioReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.source {
            Source::Raw { .. } => "raw",
            Source::Decoded(_) => "decoded",
        };
        f.debug_struct("AudioReader")
            .field("spec", &self.spec)
            .field("source", &kind)
            .finish()
    }
}

enum Source {
    Raw {
        input: Box<dyn Read + Send + Sync>,
        partial: Vec<u8>,
        eof: bool,
    },
    Decoded(Box<Decoded>),
}

struct Decoded {
    format: Box<dyn FormatReader>,
    decoder: Box<dyn Decoder>,
    track: u32,
    /// Bytes decoded ahead (the first packet, decoded at open to learn the spec).
    pending: Vec<u8>,
}

impl AudioReader {
    /// Opens a file. WAV and FLAC are recognised by content, else by extension.
    pub fn open_path(path: &Path, raw: RawMode) -> Result<AudioReader, AudioError> {
        let open_err = |source| AudioError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::open(path).map_err(open_err)?;
        if let RawMode::Always(spec) = raw {
            return Ok(AudioReader::raw(Box::new(file), spec));
        }
        let prefix = read_prefix(&mut file, 12)?;
        file.seek(SeekFrom::Start(0)).map_err(AudioError::Read)?;
        let by_ext = path
            .extension()
            .and_then(|e| e.to_str())
            .and_then(Container::from_extension);
        match (Container::sniff(&prefix).or(by_ext), raw) {
            (Some(container), _) => AudioReader::decode(Box::new(file), container),
            (None, RawMode::Fallback(spec)) => Ok(AudioReader::raw(Box::new(file), spec)),
            (None, _) => Err(AudioError::Unrecognised),
        }
    }

    /// Opens a non-seekable stream such as stdin, recognising WAV and FLAC by content.
    pub fn open_stream(
        mut input: Box<dyn Read + Send + Sync>,
        raw: RawMode,
    ) -> Result<AudioReader, AudioError> {
        if let RawMode::Always(spec) = raw {
            return Ok(AudioReader::raw(input, spec));
        }
        let prefix = read_prefix(&mut input, 12)?;
        let sniffed = Container::sniff(&prefix);
        let chained: Box<dyn Read + Send + Sync> = Box::new(Cursor::new(prefix).chain(input));
        match (sniffed, raw) {
            (Some(container), _) => {
                AudioReader::decode(Box::new(ReadOnlySource::new(chained)), container)
            }
            (None, RawMode::Fallback(spec)) => Ok(AudioReader::raw(chained, spec)),
            (None, _) => Err(AudioError::Unrecognised),
        }
    }

    /// Raw interleaved PCM in `spec`.
    pub fn raw(input: Box<dyn Read + Send + Sync>, spec: StreamSpec) -> AudioReader {
        AudioReader {
            spec,
            source: Source::Raw {
                input,
                partial: Vec::new(),
                eof: false,
            },
        }
    }

    fn decode(
        source: Box<dyn MediaSource>,
        container: Container,
    ) -> Result<AudioReader, AudioError> {
        let mss = MediaSourceStream::new(source, Default::default());
        let mut hint = Hint::new();
        hint.with_extension(container.extension());
        let probed = symphonia::default::get_probe()
            .format(
                &hint,
                mss,
                &FormatOptions::default(),
                &MetadataOptions::default(),
            )
            .map_err(AudioError::Container)?;
        let format = probed.format;
        let track = format
            .tracks()
            .iter()
            .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
            .ok_or(AudioError::NoTrack)?;
        let track_id = track.id;
        let bits = track.codec_params.bits_per_sample;
        let decoder = symphonia::default::get_codecs()
            .make(&track.codec_params, &DecoderOptions::default())
            .map_err(AudioError::Codec)?;
        let mut dec = Decoded {
            format,
            decoder,
            track: track_id,
            pending: Vec::new(),
        };
        // Decode the first packet to learn what the decoder really produces.
        let spec = loop {
            let Some(packet) = next_packet(&mut *dec.format, dec.track)? else {
                return Err(AudioError::NoTrack);
            };
            let buf = match dec.decoder.decode(&packet) {
                Ok(buf) => buf,
                Err(SymError::DecodeError(e)) => {
                    tracing::warn!("skipping undecodable packet: {e}");
                    continue;
                }
                Err(e) => return Err(AudioError::Decode(e)),
            };
            if buf.frames() == 0 {
                continue;
            }
            let spec = spec_of(&buf, bits)?;
            append_interleaved(buf, spec.format, &mut dec.pending);
            break spec;
        };
        Ok(AudioReader {
            spec,
            source: Source::Decoded(Box::new(dec)),
        })
    }

    /// Whether the input is read as raw PCM rather than decoded from a container.
    pub fn is_raw(&self) -> bool {
        matches!(self.source, Source::Raw { .. })
    }

    /// What [`read`](Self::read) yields.
    pub fn spec(&self) -> StreamSpec {
        self.spec
    }

    /// Appends some whole frames to `out` and returns how many bytes it appended; 0 means the
    /// input has ended. A trailing partial frame of raw input is dropped with a warning.
    pub fn read(&mut self, out: &mut Vec<u8>) -> Result<usize, AudioError> {
        let frame = self.spec.frame_bytes();
        match &mut self.source {
            Source::Raw {
                input,
                partial,
                eof,
            } => {
                let want = RAW_CHUNK_FRAMES * frame;
                while !*eof && partial.len() < want {
                    let start = partial.len();
                    partial.resize(want, 0);
                    match input.read(&mut partial[start..]) {
                        Ok(0) => {
                            partial.truncate(start);
                            *eof = true;
                        }
                        Ok(n) => partial.truncate(start + n),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => partial.truncate(start),
                        Err(e) => {
                            partial.truncate(start);
                            return Err(AudioError::Read(e));
                        }
                    }
                }
                let whole = partial.len() / frame * frame;
                out.extend_from_slice(&partial[..whole]);
                partial.drain(..whole);
                if *eof && whole == 0 && !partial.is_empty() {
                    tracing::warn!(
                        "dropping {} trailing bytes that make no whole frame",
                        partial.len()
                    );
                    partial.clear();
                }
                Ok(whole)
            }
            Source::Decoded(dec) => loop {
                if !dec.pending.is_empty() {
                    let n = dec.pending.len();
                    out.append(&mut dec.pending);
                    return Ok(n);
                }
                let Some(packet) = next_packet(&mut *dec.format, dec.track)? else {
                    return Ok(0);
                };
                match dec.decoder.decode(&packet) {
                    Ok(buf) => {
                        let channels = buf.spec().channels.count();
                        if buf.spec().rate != self.spec.rate
                            || channels != usize::from(self.spec.channels)
                        {
                            return Err(AudioError::Unsupported(
                                "the stream changes its format midway".into(),
                            ));
                        }
                        append_interleaved(buf, self.spec.format, &mut dec.pending);
                    }
                    Err(SymError::DecodeError(e)) => {
                        tracing::warn!("skipping undecodable packet: {e}")
                    }
                    Err(e) => return Err(AudioError::Decode(e)),
                }
            },
        }
    }
}

/// Reads up to `n` bytes, fewer only at end of input.
fn read_prefix(input: &mut dyn Read, n: usize) -> Result<Vec<u8>, AudioError> {
    let mut prefix = Vec::with_capacity(n);
    input
        .take(n as u64)
        .read_to_end(&mut prefix)
        .map_err(AudioError::Read)?;
    Ok(prefix)
}

/// The next packet of `track`, or `None` at the end of the stream.
fn next_packet(
    format: &mut dyn FormatReader,
    track: u32,
) -> Result<Option<symphonia::core::formats::Packet>, AudioError> {
    loop {
        match format.next_packet() {
            Ok(p) if p.track_id() == track => return Ok(Some(p)),
            Ok(_) => continue,
            Err(SymError::IoError(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Ok(None)
            }
            // A chained stream with new parameters; sgcat plays only the first.
            Err(SymError::ResetRequired) => return Ok(None),
            Err(e) => return Err(AudioError::Container(e)),
        }
    }
}

/// The stream spec for a decoded buffer: float stays float, integers of up to 16 bits become
/// s16le, wider ones s32le.
fn spec_of(
    buf: &AudioBufferRef<'_>,
    bits_per_sample: Option<u32>,
) -> Result<StreamSpec, AudioError> {
    let format = match buf {
        AudioBufferRef::F32(_) | AudioBufferRef::F64(_) => SampleFormat::F32Le,
        AudioBufferRef::U8(_)
        | AudioBufferRef::S8(_)
        | AudioBufferRef::U16(_)
        | AudioBufferRef::S16(_) => SampleFormat::S16Le,
        AudioBufferRef::U24(_)
        | AudioBufferRef::S24(_)
        | AudioBufferRef::U32(_)
        | AudioBufferRef::S32(_) => match bits_per_sample {
            Some(b) if b <= 16 => SampleFormat::S16Le,
            _ => SampleFormat::S32Le,
        },
    };
    let channels = buf.spec().channels.count();
    let spec = StreamSpec {
        format,
        rate: buf.spec().rate,
        channels: u8::try_from(channels)
            .map_err(|_| AudioError::Unsupported(format!("{channels} channels")))?,
    };
    spec.validate()
        .map_err(|e| AudioError::Unsupported(e.to_string()))?;
    Ok(spec)
}

/// Converts a decoded buffer to interleaved little-endian bytes of `format`, appended to `out`.
fn append_interleaved(buf: AudioBufferRef<'_>, format: SampleFormat, out: &mut Vec<u8>) {
    let spec = *buf.spec();
    let duration = buf.capacity() as u64;
    match format {
        SampleFormat::S16Le => {
            let mut sb = SampleBuffer::<i16>::new(duration, spec);
            sb.copy_interleaved_ref(buf);
            out.extend(sb.samples().iter().flat_map(|s| s.to_le_bytes()));
        }
        SampleFormat::S32Le => {
            let mut sb = SampleBuffer::<i32>::new(duration, spec);
            sb.copy_interleaved_ref(buf);
            out.extend(sb.samples().iter().flat_map(|s| s.to_le_bytes()));
        }
        SampleFormat::F32Le => {
            let mut sb = SampleBuffer::<f32>::new(duration, spec);
            sb.copy_interleaved_ref(buf);
            out.extend(sb.samples().iter().flat_map(|s| s.to_le_bytes()));
        }
    }
}

/// A sink for interleaved PCM bytes: a WAV file or a raw byte stream.
pub struct AudioWriter {
    spec: StreamSpec,
    sink: Sink,
    frames: u64,
}

impl std::fmt::Debug for AudioWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.sink {
            Sink::Wav(_) => "wav",
            Sink::Raw(_) => "raw",
        };
        f.debug_struct("AudioWriter")
            .field("spec", &self.spec)
            .field("sink", &kind)
            .field("frames", &self.frames)
            .finish()
    }
}

enum Sink {
    Wav(hound::WavWriter<BufWriter<File>>),
    Raw(Box<dyn Write + Send>),
}

/// The WAV header fields for a stream spec.
pub fn wav_spec(spec: StreamSpec) -> hound::WavSpec {
    let (bits_per_sample, sample_format) = match spec.format {
        SampleFormat::S16Le => (16, hound::SampleFormat::Int),
        SampleFormat::S32Le => (32, hound::SampleFormat::Int),
        SampleFormat::F32Le => (32, hound::SampleFormat::Float),
    };
    hound::WavSpec {
        channels: u16::from(spec.channels),
        sample_rate: spec.rate,
        bits_per_sample,
        sample_format,
    }
}

impl AudioWriter {
    /// Creates (or truncates) a WAV file at `path`.
    pub fn wav(path: &Path, spec: StreamSpec) -> Result<AudioWriter, AudioError> {
        let writer = hound::WavWriter::create(path, wav_spec(spec)).map_err(|source| {
            AudioError::Create {
                path: path.to_path_buf(),
                source,
            }
        })?;
        Ok(AudioWriter {
            spec,
            sink: Sink::Wav(writer),
            frames: 0,
        })
    }

    /// Raw interleaved PCM to `out`.
    pub fn raw(out: Box<dyn Write + Send>, spec: StreamSpec) -> AudioWriter {
        AudioWriter {
            spec,
            sink: Sink::Raw(out),
            frames: 0,
        }
    }

    /// Frames written so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Writes whole frames of interleaved bytes in the writer's spec.
    pub fn write(&mut self, data: &[u8]) -> Result<(), AudioError> {
        let frame = self.spec.frame_bytes();
        if !data.len().is_multiple_of(frame) {
            return Err(AudioError::Unsupported(format!(
                "{} bytes are not whole {frame}-byte frames",
                data.len()
            )));
        }
        match &mut self.sink {
            Sink::Raw(out) => out.write_all(data).map_err(AudioError::Write)?,
            Sink::Wav(w) => match self.spec.format {
                SampleFormat::S16Le => {
                    for s in data.chunks_exact(2) {
                        w.write_sample(i16::from_le_bytes([s[0], s[1]]))
                            .map_err(AudioError::Wav)?;
                    }
                }
                SampleFormat::S32Le => {
                    for s in data.chunks_exact(4) {
                        w.write_sample(i32::from_le_bytes([s[0], s[1], s[2], s[3]]))
                            .map_err(AudioError::Wav)?;
                    }
                }
                SampleFormat::F32Le => {
                    for s in data.chunks_exact(4) {
                        w.write_sample(f32::from_le_bytes([s[0], s[1], s[2], s[3]]))
                            .map_err(AudioError::Wav)?;
                    }
                }
            },
        }
        self.frames += (data.len() / frame) as u64;
        Ok(())
    }

    /// Flushes raw output, or finalises the WAV header.
    pub fn finish(self) -> Result<(), AudioError> {
        match self.sink {
            Sink::Raw(mut out) => out.flush().map_err(AudioError::Write),
            Sink::Wav(w) => w.finalize().map_err(AudioError::Wav),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(mut r: AudioReader) -> Vec<u8> {
        let mut out = Vec::new();
        while r.read(&mut out).unwrap() > 0 {}
        out
    }

    fn write_wav<S: hound::Sample + Copy>(path: &Path, spec: hound::WavSpec, samples: &[S]) {
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        for &s in samples {
            w.write_sample(s).unwrap();
        }
        w.finalize().unwrap();
    }

    fn le16(s: &[i16]) -> Vec<u8> {
        s.iter().flat_map(|v| v.to_le_bytes()).collect()
    }
    fn le32(s: &[i32]) -> Vec<u8> {
        s.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// A few thousand samples so that the decoder produces more than one packet.
    fn ramp16(n: usize) -> Vec<i16> {
        (0..n).map(|i| ((i * 37) % 65_536) as i16).collect()
    }

    #[test]
    fn sniffs_by_content_and_extension() {
        assert_eq!(
            Container::sniff(b"RIFF\0\0\0\0WAVEfmt "),
            Some(Container::Wav)
        );
        assert_eq!(Container::sniff(b"fLaC\0\0\0\x22"), Some(Container::Flac));
        assert_eq!(Container::sniff(b"RIFF"), None);
        assert_eq!(Container::sniff(&[0; 12]), None);
        assert_eq!(Container::from_extension("WAV"), Some(Container::Wav));
        assert_eq!(Container::from_extension("flac"), Some(Container::Flac));
        assert_eq!(Container::from_extension("mp3"), None);
    }

    #[test]
    fn wav_16_bit_stereo_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.wav");
        let samples = ramp16(10_000);
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 44_100,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        write_wav(&path, spec, &samples);
        let r = AudioReader::open_path(&path, RawMode::Never).unwrap();
        assert_eq!(
            r.spec(),
            StreamSpec {
                format: SampleFormat::S16Le,
                rate: 44_100,
                channels: 2
            }
        );
        assert_eq!(read_all(r), le16(&samples));
    }

    #[test]
    fn wav_24_bit_mono_becomes_full_scale_s32() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.wav");
        let samples: Vec<i32> = vec![0, 1, -1, 8_388_607, -8_388_608, 12_345, -54_321];
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 48_000,
            bits_per_sample: 24,
            sample_format: hound::SampleFormat::Int,
        };
        write_wav(&path, spec, &samples);
        let r = AudioReader::open_path(&path, RawMode::Never).unwrap();
        assert_eq!(
            r.spec(),
            StreamSpec {
                format: SampleFormat::S32Le,
                rate: 48_000,
                channels: 1
            }
        );
        let expected: Vec<i32> = samples.iter().map(|s| s << 8).collect();
        assert_eq!(read_all(r), le32(&expected));
    }

    #[test]
    fn wav_float_stereo_round_trips_from_a_stream() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.wav");
        let samples: Vec<f32> = (0..4000).map(|i| (i as f32 / 4000.0) * 2.0 - 1.0).collect();
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 96_000,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        write_wav(&path, spec, &samples);
        // Through a non-seekable stream, as from stdin.
        let stream = Box::new(File::open(&path).unwrap());
        let r = AudioReader::open_stream(stream, RawMode::Never).unwrap();
        assert_eq!(
            r.spec(),
            StreamSpec {
                format: SampleFormat::F32Le,
                rate: 96_000,
                channels: 2
            }
        );
        let bytes: Vec<u8> = samples.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(read_all(r), bytes);
    }

    #[test]
    fn raw_stream_yields_whole_frames() {
        let spec = StreamSpec {
            format: SampleFormat::S16Le,
            rate: 48_000,
            channels: 2,
        };
        let mut data = le16(&ramp16(20_000));
        data.extend_from_slice(&[1, 2, 3]); // a partial frame at the end
        let r =
            AudioReader::open_stream(Box::new(Cursor::new(data.clone())), RawMode::Fallback(spec))
                .unwrap();
        assert_eq!(r.spec(), spec);
        assert_eq!(read_all(r), data[..40_000]);
        // Forced raw does not look at the content, even if it looks like WAV.
        let wavish = b"RIFF\0\0\0\0WAVEfmt ".to_vec();
        let r =
            AudioReader::open_stream(Box::new(Cursor::new(wavish.clone())), RawMode::Always(spec))
                .unwrap();
        assert_eq!(read_all(r), wavish[..16]);
    }

    #[test]
    fn unrecognised_input_without_raw_spec_is_refused() {
        let err = AudioReader::open_stream(Box::new(Cursor::new(vec![0u8; 100])), RawMode::Never)
            .unwrap_err();
        assert!(matches!(err, AudioError::Unrecognised), "{err}");
        let err =
            AudioReader::open_path(Path::new("/nonexistent/x.wav"), RawMode::Never).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot open /nonexistent/x.wav"),
            "{err}"
        );
    }

    #[test]
    fn writer_round_trips_through_reader() {
        let dir = tempfile::tempdir().unwrap();
        for (format, bytes) in [
            (SampleFormat::S16Le, le16(&ramp16(6000))),
            (
                SampleFormat::S32Le,
                le32(&(0..6000).map(|i| i * 65_537 - 7).collect::<Vec<_>>()),
            ),
            (
                SampleFormat::F32Le,
                (0..6000)
                    .flat_map(|i| (i as f32 / 6000.0).to_le_bytes())
                    .collect(),
            ),
        ] {
            for channels in [1u8, 2] {
                let spec = StreamSpec {
                    format,
                    rate: 22_050,
                    channels,
                };
                let path = dir.path().join(format!("{format}-{channels}.wav"));
                let mut w = AudioWriter::wav(&path, spec).unwrap();
                w.write(&bytes[..bytes.len() / 2]).unwrap();
                w.write(&bytes[bytes.len() / 2..]).unwrap();
                assert_eq!(w.frames() as usize, bytes.len() / spec.frame_bytes());
                w.finish().unwrap();
                let r = AudioReader::open_path(&path, RawMode::Never).unwrap();
                assert_eq!(r.spec(), spec);
                assert_eq!(read_all(r), bytes, "{spec}");
            }
        }
    }

    #[test]
    fn writer_refuses_partial_frames() {
        let spec = StreamSpec {
            format: SampleFormat::S16Le,
            rate: 48_000,
            channels: 2,
        };
        let mut w = AudioWriter::raw(Box::new(io::sink()), spec);
        assert!(w.write(&[0; 6]).is_err());
        w.write(&[0; 8]).unwrap();
        assert_eq!(w.frames(), 2);
    }

    /// FLAC needs an encoder this crate does not have; use the `flac` tool when it is installed.
    #[test]
    fn flac_decodes_when_the_flac_tool_is_installed() {
        let dir = tempfile::tempdir().unwrap();
        let wav = dir.path().join("in.wav");
        let flac = dir.path().join("out.flac");
        let samples = ramp16(20_000);
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 48_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        write_wav(&wav, spec, &samples);
        let status = std::process::Command::new("flac")
            .args(["--silent", "--force", "-o"])
            .arg(&flac)
            .arg(&wav)
            .status();
        match status {
            Ok(s) if s.success() => {}
            _ => {
                eprintln!("note: `flac` is not installed; skipping the FLAC decoding test");
                return;
            }
        }
        let r = AudioReader::open_path(&flac, RawMode::Never).unwrap();
        assert_eq!(
            r.spec(),
            StreamSpec {
                format: SampleFormat::S16Le,
                rate: 48_000,
                channels: 2
            }
        );
        assert_eq!(read_all(r), le16(&samples));
        // And through a stream, sniffed by content.
        let r =
            AudioReader::open_stream(Box::new(File::open(&flac).unwrap()), RawMode::Never).unwrap();
        assert_eq!(read_all(r), le16(&samples));
    }
}
