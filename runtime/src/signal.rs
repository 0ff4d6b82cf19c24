//! The signal to stop: SIGTERM (what the kubelet sends at pod deletion) or SIGINT (Ctrl-C in a
//! terminal). Each server then stops accepting and drains its open connections.

use tokio::signal::unix::{SignalKind, signal};

/// Resolves at the first SIGTERM or SIGINT after its first poll, which installs the handlers
/// (from then on neither signal kills the process). Fails only if they cannot be installed.
pub async fn shutdown() -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn sigterm_resolves_it() {
        let mut stop = Box::pin(shutdown());
        // Poll once so the handlers are in place before the signal is sent.
        tokio::select! {
            biased;
            r = &mut stop => panic!("resolved before any signal: {r:?}"),
            () = std::future::ready(()) => {}
        }
        let status = std::process::Command::new("kill")
            .args(["-s", "TERM", &std::process::id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(10), stop)
            .await
            .expect("SIGTERM seen")
            .expect("handlers installed");
    }
}
