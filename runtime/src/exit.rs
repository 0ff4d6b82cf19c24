//! How a service's process ends, one way for every binary: its exit code, its last words on
//! stderr, and the tokio runtime it runs in.

use std::process::ExitCode;

/// EX_USAGE: a configuration the service refuses (as linkerd2-proxy does). Anything else that
/// stops it is 1; 2 is clap's, for a flag it cannot parse.
pub const EXIT_CONFIG: u8 = 64;

/// An error that ends a service.
pub trait Failure: std::fmt::Display {
    /// Whether the operator fixes it in the flags or the files they name (exit
    /// [`EXIT_CONFIG`]), rather than by waiting or retrying.
    fn is_config(&self) -> bool;
}

/// The process's exit code for `result`: the success's own, else [`EXIT_CONFIG`] or 1, with the
/// error on stderr as `name: error` (the log, which may be a file or a collector, has said it
/// already where logging was up).
pub fn code<E: Failure>(name: &str, result: Result<ExitCode, E>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::from(if e.is_config() { EXIT_CONFIG } else { 1 })
        }
    }
}

/// A multi-thread runtime with every driver, `workers` threads (default: one per core).
pub fn runtime(workers: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        builder.worker_threads(n);
    }
    builder.enable_all().build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E(bool);

    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("boom")
        }
    }

    impl Failure for E {
        fn is_config(&self) -> bool {
            self.0
        }
    }

    #[test]
    fn codes() {
        assert_eq!(code::<E>("x", Ok(ExitCode::SUCCESS)), ExitCode::SUCCESS);
        assert_eq!(code::<E>("x", Ok(ExitCode::from(3))), ExitCode::from(3));
        assert_eq!(code("x", Err(E(true))), ExitCode::from(EXIT_CONFIG));
        assert_eq!(code("x", Err(E(false))), ExitCode::from(1));
    }
}
