//! The `null` backend: discards the mix (sink) or produces silence (source). The engine's timer
//! paces it.

use super::{Backend, BackendError, CaptureBackend};
use soundgate_proto::StreamSpec;

/// Discards everything written to it.
#[derive(Debug)]
pub struct NullBackend {
    spec: StreamSpec,
}

impl NullBackend {
    /// A null backend for a sink of `spec`.
    pub fn new(spec: StreamSpec) -> NullBackend {
        NullBackend { spec }
    }

    /// The sink spec it was opened with.
    pub fn spec(&self) -> StreamSpec {
        self.spec
    }
}

impl Backend for NullBackend {
    fn write(&mut self, _data: &[u8]) -> Result<(), BackendError> {
        Ok(())
    }

    fn finish(&mut self) -> Result<(), BackendError> {
        Ok(())
    }

    fn name(&self) -> &'static str {
        "null"
    }
}

impl CaptureBackend for NullBackend {
    fn read(&mut self, data: &mut [u8]) -> Result<(), BackendError> {
        // Zero bytes are silence in every format we use (s16le, s32le, f32le).
        data.fill(0);
        Ok(())
    }

    fn name(&self) -> &'static str {
        "null"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use soundgate_proto::SampleFormat;

    #[test]
    fn discards() {
        let spec = StreamSpec {
            format: SampleFormat::S16Le,
            rate: 48_000,
            channels: 2,
        };
        let mut b = crate::backend::open_null(spec);
        assert_eq!(b.name(), "null");
        b.write(&[1, 2, 3, 4]).unwrap();
        b.finish().unwrap();
        assert_eq!(b.dropped_bytes(), 0);
    }
}
