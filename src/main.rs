//! The `wsloop` binary: an echo / broadcast / chat playground server.
//! Run `wsloop --help` for the flags.

mod cli;
mod json;
mod playground;

use std::process::ExitCode;

use wsloop::Server;

use crate::cli::{Mode, Parsed};
use crate::playground::Playground;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
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
    let server = match Server::bind(
        options.listen,
        options.config.clone(),
        Playground::new(options.mode),
    ) {
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
    log::info!(
        "wsloop {} listening on ws://{} ({mode} mode)",
        env!("CARGO_PKG_VERSION"),
        server.local_addr()
    );
    signals::shut_down_on_signal(server.handle());
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

/// SIGINT/SIGTERM start a graceful shutdown.
///
/// Neither std nor the allowed dependencies offer a signal API, so this is
/// the one `unsafe` block in the project: registering a handler with the C
/// library's `signal`. The handler only stores a flag and writes to mio's
/// waker (an eventfd), both async-signal-safe.
mod signals {
    use std::sync::OnceLock;

    use wsloop::Handle;

    static HANDLE: OnceLock<Handle> = OnceLock::new();

    const SIGINT: i32 = 2;
    const SIGTERM: i32 = 15;

    unsafe extern "C" {
        fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
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
