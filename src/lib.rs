//! The soundgate end-to-end test suite lives in `tests/`; this package has no code of its own.
