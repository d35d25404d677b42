//! Every exit status mcpvisor's commands return, in one place (README.md and
//! `docs/control-protocol.md` document them; scripts and systemd units depend on them).

/// Clean exit: the client closed the session, SIGTERM/SIGINT drained it, or a client command
/// succeeded (for `status`: every instance shown is ready).
pub const OK: u8 = 0;
/// `run`: an internal error (the runtime or stdin/stdout could not be set up, or the event loop
/// did not stop after a second SIGTERM). Client commands: the instance refused, or (`status`)
/// some instance is not ready.
pub const FAILURE: u8 = 1;
/// Bad usage: unknown option, bad value, no command after `--`, unusable `--log-file`.
pub const USAGE: u8 = 2;
/// `run`: the server command could not be started at all. Client commands and `connect`: no
/// instance or socket could be reached.
pub const UNAVAILABLE: u8 = 3;
/// `run`: the restart limit was reached and `--on-failure exit` was given.
pub const RESTART_LIMIT: u8 = 4;
