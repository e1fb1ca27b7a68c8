//! Core records (devices, streams, samples) as PulseAudio introspection records. Pure
//! translation: what is listed was already filtered by the core for this client.

use super::convert::default_map;
use super::stream::{bytes_usec, Play, Rec};
use pulseaudio::protocol as pa;
use soundgate_proto::wire::{DeviceInfo, DeviceKind, SampleInfo, StreamInfo};
use soundgate_proto::{SampleFormat, StreamSpec};
use std::ffi::CString;

/// A C string from any text (interior NULs dropped).
pub fn cstr(s: &str) -> CString {
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

/// Our sample format as PulseAudio's.
pub fn pa_format(f: SampleFormat) -> pa::SampleFormat {
    match f {
        SampleFormat::S16Le => pa::SampleFormat::S16Le,
        SampleFormat::S32Le => pa::SampleFormat::S32Le,
        SampleFormat::F32Le => pa::SampleFormat::Float32Le,
    }
}

/// Our stream spec as PulseAudio's sample spec.
pub fn pa_spec(s: &StreamSpec) -> pa::SampleSpec {
    pa::SampleSpec {
        format: pa_format(s.format),
        channels: s.channels,
        sample_rate: s.rate,
    }
}

/// A linear gain as a per-channel PulseAudio volume.
pub fn cvolume(linear: f32, channels: u8) -> pa::ChannelVolume {
    let mut v = pa::ChannelVolume::empty();
    for _ in 0..channels.max(1) {
        v.push(pa::Volume::from_linear(linear.max(0.0)));
    }
    v
}

/// The mean linear gain of a PulseAudio volume.
pub fn linear(v: &pa::ChannelVolume) -> f32 {
    let ch = v.channels();
    if ch.is_empty() {
        return 1.0;
    }
    ch.iter().map(|v| v.to_linear()).sum::<f32>() / ch.len() as f32
}

fn props(pairs: &[(&str, &str)]) -> pa::Props {
    let mut p = pa::Props::new();
    for (k, v) in pairs {
        let mut value = v.replace('\0', "").into_bytes();
        value.push(0);
        p.set_bytes(cstr(k), value);
    }
    p
}

fn latency(d: &DeviceInfo) -> u64 {
    u64::from(d.quantum) * 1_000_000 / u64::from(d.spec.rate.max(1))
}

fn state(d: &DeviceInfo) -> (pa::SinkState, pa::SourceState) {
    if d.suspended || d.state != soundgate_proto::wire::DeviceState::Running {
        (pa::SinkState::Suspended, pa::SourceState::Suspended)
    } else {
        (pa::SinkState::Running, pa::SourceState::Running)
    }
}

/// A sink. `index` is its device table index; its monitor has the same source index.
pub fn sink(d: &DeviceInfo, index: u32) -> pa::SinkInfo {
    let ch = d.spec.channels;
    let description = format!("soundgate {} sink {}", d.backend, d.name);
    pa::SinkInfo {
        index,
        name: cstr(&d.name),
        description: Some(cstr(&description)),
        props: props(&[
            ("device.description", &description),
            ("device.api", &d.backend),
            ("device.class", "sound"),
        ]),
        state: state(d).0,
        sample_spec: pa_spec(&d.spec),
        channel_map: default_map(ch),
        owner_module_index: None,
        cvolume: cvolume(d.volume, ch),
        muted: d.muted,
        monitor_source_index: Some(index),
        monitor_source_name: Some(cstr(&format!("{}.monitor", d.name))),
        flags: pa::SinkFlags::LATENCY | pa::SinkFlags::DECIBEL_VOLUME,
        actual_latency: latency(d),
        configured_latency: latency(d),
        driver: Some(cstr("soundgate")),
        base_volume: pa::Volume::NORM,
        volume_steps: Some(65_537),
        card_index: None,
        ports: Vec::new(),
        active_port: 0,
        formats: vec![pa::FormatInfo::new(pa::FormatEncoding::Pcm)],
    }
}

/// A source: a capture source (its own index) or a monitor (`monitor_of` = the sink's index,
/// which is also the monitor's source index).
pub fn source(d: &DeviceInfo, index: u32, monitor_of: Option<u32>) -> pa::SourceInfo {
    let ch = d.spec.channels;
    let description = match d.kind {
        DeviceKind::Monitor => format!("Monitor of {}", d.monitor_of.as_deref().unwrap_or("?")),
        _ => format!("soundgate {} source {}", d.backend, d.name),
    };
    let class = if d.kind == DeviceKind::Monitor {
        "monitor"
    } else {
        "sound"
    };
    pa::SourceInfo {
        index,
        name: cstr(&d.name),
        description: Some(cstr(&description)),
        props: props(&[
            ("device.description", &description),
            ("device.api", &d.backend),
            ("device.class", class),
        ]),
        state: state(d).1,
        sample_spec: pa_spec(&d.spec),
        channel_map: default_map(ch),
        owner_module_index: None,
        cvolume: cvolume(d.volume, ch),
        base_volume: pa::Volume::NORM,
        volume_steps: Some(65_537),
        muted: d.muted,
        monitor_of_sink_index: monitor_of,
        monitor_of_sink_name: d.monitor_of.as_deref().map(cstr),
        flags: pa::SourceFlags::LATENCY | pa::SourceFlags::DECIBEL_VOLUME,
        actual_latency: latency(d),
        configured_latency: latency(d),
        driver: Some(cstr("soundgate")),
        card_index: None,
        ports: Vec::new(),
        active_port: 0,
        formats: vec![pa::FormatInfo::new(pa::FormatEncoding::Pcm)],
    }
}

/// A sink input: one of this client's playback streams. `play` is the pulse side of it when
/// this connection made it (its client spec and map), `sink` its sink's index.
pub fn sink_input(s: &StreamInfo, sink: u32, play: Option<&Play>) -> pa::SinkInputInfo {
    let (spec, map) = match play {
        Some(p) => (p.spec, p.map),
        None => (pa_spec(&s.spec), default_map(s.spec.channels)),
    };
    let buffer = play.map_or(0, |p| {
        bytes_usec(&p.spec, p.write_offset() - p.read_offset())
    });
    pa::SinkInputInfo {
        index: s.id,
        name: cstr(&s.name),
        owner_module_index: None,
        client_index: Some(s.client),
        sink_index: sink,
        sample_spec: spec,
        channel_map: map,
        cvolume: cvolume(s.volume, map.num_channels()),
        buffer_latency: buffer,
        sink_latency: play.map_or(0, Play::sink_usec),
        resample_method: Some(cstr("sinc")),
        driver: Some(cstr("soundgate-pulse")),
        props: props(&[("media.name", &s.name)]),
        muted: s.muted,
        corked: s.corked,
        has_volume: true,
        volume_writable: true,
        format: pa::FormatInfo::new(pa::FormatEncoding::Pcm),
    }
}

/// A source output: one of this client's record streams.
pub fn source_output(s: &StreamInfo, source: u32, rec: Option<&Rec>) -> pa::SourceOutputInfo {
    let (spec, map) = match rec {
        Some(r) => (r.spec, r.map),
        None => (pa_spec(&s.spec), default_map(s.spec.channels)),
    };
    pa::SourceOutputInfo {
        index: s.id,
        name: cstr(&s.name),
        owner_module_index: None,
        client_index: Some(s.client),
        source_index: source,
        sample_spec: spec,
        channel_map: map,
        cvolume: cvolume(s.volume, map.num_channels()),
        buffer_latency: 0,
        source_latency: rec.map_or(0, Rec::source_usec),
        resample_method: Some(cstr("sinc")),
        driver: Some(cstr("soundgate-pulse")),
        props: props(&[("media.name", &s.name)]),
        muted: s.muted,
        corked: s.corked,
        has_volume: true,
        volume_writable: true,
        format: pa::FormatInfo::new(pa::FormatEncoding::Pcm),
    }
}

/// A cached sample of this client. Samples have no index in the core: their position in the
/// client's own list serves.
pub fn sample(s: &SampleInfo, index: u32) -> pa::SampleInfo {
    let spec = pa_spec(&s.spec);
    let duration = u64::try_from(u128::from(s.frames) * 1_000_000 / u128::from(s.spec.rate.max(1)))
        .unwrap_or(u64::MAX);
    pa::SampleInfo {
        index,
        name: cstr(&s.name),
        cvolume: cvolume(1.0, s.spec.channels),
        sample_spec: spec,
        channel_map: default_map(s.spec.channels),
        duration,
        length: u32::try_from(s.bytes).unwrap_or(u32::MAX),
        lazy: None,
        props: pa::Props::new(),
    }
}

/// This connection's own client record. Its properties are what it sent: labels.
pub fn client(index: u32, label: &str, props: &pa::Props) -> pa::ClientInfo {
    pa::ClientInfo {
        index,
        name: cstr(label),
        owner_module_index: None,
        driver: Some(cstr("soundgate-pulse")),
        props: props.clone(),
    }
}
