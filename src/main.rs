//! The `wsloop` binary: an echo / broadcast / chat playground server.
//! Run `wsloop --help` for the flags.

mod cli;
mod json;
mod playground;

use std::process::ExitCode;

use wsloop::Server;

use crate::cli::{Mode, Parsed};
use crate::playground::Playground;

/// The log filter without `RUST_LOG`. rustls logs each misbehaving TLS
/// client (a bad SNI, an alert it sends) at `warn`, which lets any peer
/// flood the log; the loop counts those failures in `/metrics` instead.
const DEFAULT_LOG_FILTER: &str = "info,rustls=error";

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(DEFAULT_LOG_FILTER))
        .init();
    let options = match cli::parse(std::env::args().skip(1)) {
        Ok(Parsed::Run(options)) => options,
        Ok(Parsed::Help) => {
            print!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Version) => {
            println!("wsloop {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("wsloop: {message}");
            return ExitCode::from(2);
        }
    };
    #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
    let mut config = options.config.clone();
    #[cfg(feature = "tls")]
    if let Some(files) = &options.tls {
        match wsloop::TlsConfig::from_pem_files(&files.cert, &files.key) {
            Ok(tls) => config.tls = Some(tls),
            Err(e) => {
                eprintln!("wsloop: TLS: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let scheme = if options.tls.is_some() { "wss" } else { "ws" };
    let server = match Server::bind(options.listen, config, Playground::new(options.mode)) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("wsloop: cannot listen on {}: {e}", options.listen);
            return ExitCode::FAILURE;
        }
    };
    let mode = match options.mode {
        Mode::Playground => "playground",
        Mode::Echo => "echo",
        Mode::Broadcast => "broadcast",
    };
    // The handlers go in before the "listening" line: a supervisor that
    // waits for it may signal at once (SIGHUP's default action would end
    // the process).
    signals::shut_down_on_signal(server.handle());
    #[cfg(feature = "tls")]
    if let Some(files) = options.tls.clone() {
        signals::reload_tls_on_sighup(server.handle(), files);
    }
    log::info!(
        "wsloop {} listening on {scheme}://{} ({mode} mode)",
        env!("CARGO_PKG_VERSION"),
        server.local_addr()
    );
    if let (Mode::Playground, Some(interval)) = (options.mode, options.ticker_interval) {
        playground::spawn_ticker(server.handle(), interval);
    }
    match server.run() {
        Ok(()) => {
            log::info!("shut down cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("event loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// SIGINT/SIGTERM start a graceful shutdown; SIGHUP reloads the TLS
/// certificate and key.
///
/// Neither std nor the allowed dependencies offer a signal API, so this is
/// the binary's one `unsafe` module: registering handlers with the C
/// library's `signal`, and (for SIGHUP) `write` from the handler. The
/// handlers only store a flag and write to a descriptor (mio's waker, an
/// eventfd, or a socket), all async-signal-safe; the files are read on a
/// thread of their own.
mod signals {
    use std::sync::OnceLock;

    use wsloop::Handle;

    static HANDLE: OnceLock<Handle> = OnceLock::new();

    const SIGINT: i32 = 2;
    const SIGTERM: i32 = 15;

    unsafe extern "C" {
        fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
    }

    #[cfg(feature = "tls")]
    pub use reload::reload_tls_on_sighup;

    #[cfg(feature = "tls")]
    mod reload {
        use std::io::Read;
        use std::os::fd::{AsRawFd, RawFd};
        use std::os::unix::net::UnixStream;
        use std::sync::atomic::{AtomicI32, Ordering};

        use wsloop::{Handle, TlsConfig};

        use crate::cli::TlsFiles;

        const SIGHUP: i32 = 1;

        /// The socket the SIGHUP handler writes a byte to.
        static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

        unsafe extern "C" {
            fn write(fd: RawFd, buf: *const u8, count: usize) -> isize;
        }

        extern "C" fn on_sighup(_signum: i32) {
            let fd = WAKE_FD.load(Ordering::Relaxed);
            if fd >= 0 {
                // SAFETY: `write` is async-signal-safe; the buffer is a
                // static byte. A full socket (reloads piling up) only loses
                // a redundant wake-up.
                unsafe {
                    write(fd, b"h".as_ptr(), 1);
                }
            }
        }

        /// Reloads `files` on every SIGHUP, on a thread that waits for
        /// the handler's byte. A file that fails to load is logged and the
        /// running certificate stays.
        pub fn reload_tls_on_sighup(handle: Handle, files: TlsFiles) {
            let (mut wake_rx, wake_tx) = match UnixStream::pair() {
                Ok(pair) => pair,
                Err(e) => {
                    log::warn!("SIGHUP reload unavailable: {e}");
                    return;
                }
            };
            let _ = wake_tx.set_nonblocking(true);
            WAKE_FD.store(wake_tx.as_raw_fd(), Ordering::Relaxed);
            // The handler's end lives as long as the process.
            std::mem::forget(wake_tx);
            std::thread::spawn(move || {
                let mut byte = [0u8; 64];
                while matches!(wake_rx.read(&mut byte), Ok(n) if n > 0) {
                    match TlsConfig::from_pem_files(&files.cert, &files.key) {
                        Ok(tls) => {
                            log::info!(
                                "SIGHUP: reloading {} and {}",
                                files.cert.display(),
                                files.key.display()
                            );
                            if !handle.reload_tls(tls) {
                                return;
                            }
                        }
                        Err(e) => log::error!(
                            "SIGHUP: TLS reload failed, keeping the current certificate: {e}"
                        ),
                    }
                }
            });
            // SAFETY: `on_sighup` has the C signature `signal` expects and
            // does only async-signal-safe work (an atomic load and a write).
            unsafe {
                super::signal(SIGHUP, on_sighup);
            }
        }
    }

    extern "C" fn on_signal(_signum: i32) {
        if let Some(handle) = HANDLE.get() {
            handle.shutdown();
        }
    }

    pub fn shut_down_on_signal(handle: Handle) {
        if HANDLE.set(handle).is_ok() {
            // SAFETY: `on_signal` has the C signature `signal` expects and
            // does only async-signal-safe work (an atomic store and a write).
            unsafe {
                signal(SIGINT, on_signal);
                signal(SIGTERM, on_signal);
            }
        }
    }
}
