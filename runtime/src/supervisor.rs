//! What a running service is made of, and how it stops: listeners that drain their open
//! requests at shutdown, background jobs (periodic or not) that stop at once, and clean-ups that
//! run after the drain. Each service assembles one [`Supervisor`] and calls
//! [`Supervisor::shutdown`] when [`crate::signal::shutdown`] resolves.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::serve::{ConnectionLimits, Listener, serve};

type Cleanup = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The tasks of one running service. Dropping it aborts its background jobs but not its
/// listeners; call [`Supervisor::shutdown`].
pub struct Supervisor {
    stop: watch::Sender<bool>,
    listeners: JoinSet<()>,
    jobs: JoinSet<()>,
    cleanups: Vec<Cleanup>,
    grace: Duration,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("listeners", &self.listeners.len())
            .field("jobs", &self.jobs.len())
            .field("cleanups", &self.cleanups.len())
            .field("grace", &self.grace)
            .finish()
    }
}

impl Supervisor {
    /// At shutdown, open connections may finish their current request within `grace`.
    pub fn new(grace: Duration) -> Self {
        Self {
            stop: watch::channel(false).0,
            listeners: JoinSet::new(),
            jobs: JoinSet::new(),
            cleanups: Vec::new(),
            grace,
        }
    }

    /// Serve `listener` (see [`crate::serve::serve`]) until shutdown, and say so in one
    /// `listening` line naming it; returns its address.
    pub fn serve<Ctx, C, F, Fut, B>(
        &mut self,
        name: &'static str,
        listener: impl Into<Listener>,
        limits: ConnectionLimits,
        context: Ctx,
        service: F,
    ) -> std::io::Result<SocketAddr>
    where
        Ctx: Fn(SocketAddr) -> C + Send + 'static,
        C: Clone + Send + Sync + 'static,
        F: Fn(C, Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<B>> + Send + 'static,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let listener = listener.into();
        let addr = listener.local_addr()?;
        tracing::info!(listener = name, addr = %addr, tls = listener.is_tls(), "listening");
        self.listeners.spawn(serve(
            name,
            listener,
            limits,
            self.stop.subscribe(),
            self.grace,
            context,
            service,
        ));
        Ok(addr)
    }

    /// Run `job` until it ends or shutdown begins, whichever is first: a job waiting on
    /// something slow (a rate limiter, a retry's backoff) never holds the shutdown up.
    pub fn spawn(&mut self, job: impl Future<Output = ()> + Send + 'static) {
        let mut stop = self.stop.subscribe();
        self.jobs.spawn(async move {
            tokio::select! {
                _ = stop.wait_for(|stopping| *stopping) => {}
                () = job => {}
            }
        });
    }

    /// Run `tick` every `period`, the first one period from now; a tick that runs late delays
    /// the next rather than bunching them. Stops as [`Supervisor::spawn`]'s jobs do, even
    /// mid-tick.
    pub fn every<F, Fut>(&mut self, period: Duration, mut tick: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        self.spawn(async move {
            let mut interval =
                tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                tick().await;
            }
        });
    }

    /// Run `cleanup` at shutdown, after the listeners have drained (stopping watchers whose
    /// state the last requests still read).
    pub fn on_shutdown(&mut self, cleanup: impl Future<Output = ()> + Send + 'static) {
        self.cleanups.push(Box::pin(cleanup));
    }

    /// Stop accepting, let open connections finish their request within the grace period, stop
    /// the jobs, then run the clean-ups in the order they were given.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.listeners.join_next().await.is_some() {}
        self.jobs.shutdown().await;
        for cleanup in std::mem::take(&mut self.cleanups) {
            cleanup.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn every_ticks_after_each_period_until_shutdown() {
        let mut sup = Supervisor::new(Duration::from_secs(1));
        let ticks = Arc::new(AtomicUsize::new(0));
        let counted = ticks.clone();
        sup.every(Duration::from_secs(10), move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(ticks.load(Ordering::SeqCst), 0, "not at once");
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(ticks.load(Ordering::SeqCst), 3, "at 10, 20 and 30 s");
        sup.shutdown().await;
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(ticks.load(Ordering::SeqCst), 3, "none after shutdown");
    }

    #[tokio::test]
    async fn a_stuck_job_does_not_hold_shutdown_and_cleanups_run_in_order() {
        let mut sup = Supervisor::new(Duration::from_secs(1));
        sup.spawn(std::future::pending());
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        for n in [1, 2] {
            let order = order.clone();
            sup.on_shutdown(async move { order.lock().unwrap().push(n) });
        }
        tokio::time::timeout(Duration::from_secs(5), sup.shutdown())
            .await
            .expect("shutdown ends");
        assert_eq!(*order.lock().unwrap(), [1, 2]);
    }

    #[tokio::test]
    async fn a_listener_serves_until_shutdown_then_closes() {
        let mut sup = Supervisor::new(Duration::from_secs(1));
        let tcp = crate::serve::bind("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = sup
            .serve(
                "test",
                tcp,
                ConnectionLimits::admin(),
                |_peer| (),
                |(), _req| async {
                    Response::new(http_body_util::Full::new(hyper::body::Bytes::from("hi")))
                },
            )
            .unwrap();
        let body = reqwest::get(format!("http://{addr}/")).await.unwrap();
        assert_eq!(body.text().await.unwrap(), "hi");
        sup.shutdown().await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
}
