//! The one async runtime builder. A current-thread runtime: a relay gains nothing from more
//! threads, and one thread avoids a cross-thread hand-off on every message.

use std::future::Future;

/// Runs `main` on a fresh runtime and returns its exit status; a runtime that cannot be built is
/// reported on stderr as an internal error.
pub fn block_on(main: impl Future<Output = u8>) -> u8 {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(main),
        Err(e) => {
            eprintln!("mcpvisor: cannot start the async runtime: {e}");
            crate::exit::FAILURE
        }
    }
}
