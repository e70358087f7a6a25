//! A server with any handler on an ephemeral port in its own thread, and
//! probes: closures run on the loop's thread through `Handle::post`.

use std::any::Any;
use std::io;
use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wsloop::{Config, Ctx, Handle, Handler, Server};

use super::EVENT_TIMEOUT;

// ------------------------------------------------------------------ server

/// A server running `run()` in a background thread. Dropping it shuts the
/// server down and waits (bounded) for the thread.
pub struct Running {
    pub addr: SocketAddr,
    pub handle: Handle,
    thread: Option<JoinHandle<io::Result<()>>>,
}

/// Binds a server on 127.0.0.1:0 in a new thread, with the handler built
/// there by `make` (servers are not `Send`).
pub fn spawn<H, F>(config: Config, make: F) -> Running
where
    H: Handler + 'static,
    F: FnOnce() -> H + Send + 'static,
{
    spawn_with(config, make, |_| {})
}

/// Like [`spawn`], with `setup` run on the bound server before `run()`.
pub fn spawn_with<H, F, G>(config: Config, make: F, setup: G) -> Running
where
    H: Handler + 'static,
    F: FnOnce() -> H + Send + 'static,
    G: FnOnce(&mut Server<H>) + Send + 'static,
{
    let (ready_tx, ready_rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let mut server = Server::bind("127.0.0.1:0".parse().unwrap(), config, make())?;
        setup(&mut server);
        ready_tx
            .send((server.local_addr(), server.handle()))
            .expect("test alive");
        server.run()
    });
    let (addr, handle) = ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("server thread did not start");
    Running {
        addr,
        handle,
        thread: Some(thread),
    }
}

impl Running {
    /// Waits up to `within` for `run()` to return; returns how long it
    /// took, or `None` if it is still running.
    pub fn join_within(&mut self, within: Duration) -> Option<Duration> {
        let start = Instant::now();
        let thread = self.thread.as_ref()?;
        while !thread.is_finished() {
            if start.elapsed() >= within {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let result = self.thread.take().unwrap().join();
        // Not while a failing test unwinds: a second panic would abort.
        if !std::thread::panicking() {
            assert!(
                matches!(result, Ok(Ok(()))),
                "run() failed: {:?}",
                result.map(|r| r.map_err(|e| e.to_string()))
            );
        }
        Some(start.elapsed())
    }

    /// Whether `run()` already returned.
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

impl Running {
    /// Shuts the server down and waits up to 3 s for `run()` to return;
    /// returns whether it has (true if it already had).
    pub fn stop(&mut self) -> bool {
        if self.thread.is_none() {
            return true;
        }
        self.handle.shutdown();
        self.join_within(Duration::from_secs(3)).is_some()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A closure to run on the loop's thread, delivered through
/// [`Handle::post`]. Handlers forward posts to [`run_probe`].
pub struct Probe<S>(ProbeFn<S>);

type ProbeFn<S> = Box<dyn FnOnce(&mut Ctx<'_, S>) + Send>;

/// Runs `f` on the loop's thread (the handler must pass posts to
/// [`run_probe`]) and returns its result.
pub fn probe<S: 'static, T: Send + 'static>(
    handle: &Handle,
    f: impl FnOnce(&mut Ctx<'_, S>) -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let posted = handle.post(Probe::<S>(Box::new(move |ctx| {
        let _ = tx.send(f(ctx));
    })));
    assert!(posted, "Handle::post failed: the server stopped");
    rx.recv_timeout(EVENT_TIMEOUT)
        .expect("the loop did not run the probe")
}

/// For `Handler::on_post`: runs a [`Probe`], or gives the value back.
pub fn run_probe<S: 'static>(
    ctx: &mut Ctx<'_, S>,
    value: Box<dyn Any + Send>,
) -> Option<Box<dyn Any + Send>> {
    match value.downcast::<Probe<S>>() {
        Ok(probe) => {
            (probe.0)(ctx);
            None
        }
        Err(value) => Some(value),
    }
}

/// The next value on `rx` matching `pred` within `timeout`.
pub fn recv_matching<E, T>(
    rx: &Receiver<E>,
    timeout: Duration,
    mut pred: impl FnMut(&E) -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(event) => {
                if let Some(found) = pred(&event) {
                    return Some(found);
                }
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
        }
    }
}

/// Polls `cond` every few milliseconds until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
