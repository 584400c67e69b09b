//! What every Latchkey binary shares, in one place:
//!
//! - [`log`]: one `tracing` setup — journald with priorities under systemd, one line per event
//!   on stderr elsewhere, JSON on request, a level that can be changed while running.
//! - [`secret_input`]: reading a token or passcode from stdin or from a file that only its owner
//!   can read (never argv).
//! - [`hex`]: lower-case hex that zeroes its temporaries.
//! - [`time`]: the Unix clock in milliseconds.
//! - [`exit`]: the process exit codes and the one way errors are printed.
//! - [`socket`]: Unix sockets that are 0600 from the moment they exist.
//! - [`cli`]: man pages and shell completions generated from a binary's `clap` definition.
//! - [`nested_cargo`]: building the server binary from the demo and the tests.
//! - [`sqlite`] (feature `sqlite`): statements through the statement cache (the journal and the
//!   server's store).
#![forbid(unsafe_code)]

/// `--version` of every binary: the package version and the git revision it was built from.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (git ", env!("LATCHKEY_GIT_REV"), ")");

#[cfg(feature = "docs")]
pub mod cli;
pub mod exit;
pub mod hex;
pub mod log;
pub mod nested_cargo;
pub mod secret_input;
pub mod socket;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub mod time;
