//! Exit codes and error printing, the same for every Latchkey binary.
//!
//! The codes are a contract with service managers: the systemd unit does not restart on
//! [`Code::NotEnrolled`], [`Code::IdentityUnusable`] or [`Code::Unmanaged`]
//! (`RestartPreventExitStatus=`), because restarting cannot fix them.
use std::fmt::Write;

/// A process exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    /// Success.
    Ok = 0,
    /// A failure a retry or a restart may fix.
    Failure = 1,
    /// Bad arguments or configuration.
    Usage = 2,
    /// The device is not enrolled.
    NotEnrolled = 3,
    /// The device identity is damaged or not this device's: re-enroll.
    IdentityUnusable = 4,
    /// The server retired this device, or it unenrolled: nothing to manage.
    Unmanaged = 5,
}

impl Code {
    /// The numeric code.
    pub fn number(self) -> i32 {
        self as i32
    }
}

/// An error with the exit code it should end the process with.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exit {
    /// The code.
    pub code: Code,
    /// What went wrong, in words, with the way out.
    pub message: String,
}

impl Exit {
    /// An error that ends the process with `code`.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

/// Ends the process: success or failure by its code, an error printed once as
/// `program: what: why` and its code (an [`Exit`] inside it) as the exit status.
pub fn finish(program: &str, result: anyhow::Result<Code>) -> ! {
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            let code = e.downcast_ref::<Exit>().map(|e| e.code).unwrap_or(Code::Failure);
            eprintln!("{program}: {}", render(e.as_ref()));
            code
        }
    };
    std::process::exit(code.number());
}

/// Renders an error and its causes as one line: `a: b: c`, each cause once (I/O errors often
/// repeat their cause in their own text).
pub fn render(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.ends_with(&text) && !out.contains(&format!(": {text}")) {
            let _ = write!(out, ": {text}");
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading /etc/x: {0}")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let text = render(&Outer(io));
        assert_eq!(text.matches("not found").count(), 1, "{text}");
        assert_eq!(Code::IdentityUnusable.number(), 4);
    }
}
