//! End-to-end tests across binaries live in `tests/tests/`; this library is empty on purpose.
