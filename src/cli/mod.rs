//! The command-line commands that are not the agent itself: the simulator, the policy checker
//! and the demo. They live in the binary, not the library: a process that embeds the agent
//! (the fleet benchmark) does not carry them.
#[cfg(feature = "demo")]
pub mod demo;
pub mod policy;
pub mod sim;
