//! Bounds on what devices and admins may send, so one bad or hostile input cannot bloat the
//! database or every listing (a 3 MB hostname once made `devices --json` 3 MB).
use latchkey_proto::v1;

/// Longest hostname (DNS limit).
pub const HOSTNAME: usize = 253;
/// Longest model, OS version or agent version string.
pub const SHORT_TEXT: usize = 128;
/// Longest admin message a device may report, and longest lock-screen message or phone number.
pub const MESSAGE: usize = 2048;
/// Longest command id or error code.
pub const IDENT: usize = 64;
/// Most outputs in one result, and the longest output key and value.
pub const OUTPUTS: usize = 32;
/// Longest output value.
pub const OUTPUT_VALUE: usize = 1024;
/// Longest escrowed token.
pub const TOKEN: usize = 1024;

fn check(what: &str, value: &str, max: usize) -> Result<(), String> {
    if value.len() > max {
        return Err(format!("{what} is {} bytes; at most {max} are accepted", value.len()));
    }
    Ok(())
}

/// Device facts within bounds.
pub fn facts(f: &v1::DeviceFacts) -> Result<(), String> {
    check("hostname", &f.hostname, HOSTNAME)?;
    check("model", &f.model, SHORT_TEXT)?;
    check("os_version", &f.os_version, SHORT_TEXT)
}

/// A command result within bounds.
pub fn result(r: &v1::CommandResult) -> Result<(), String> {
    check("command_id", &r.command_id, IDENT)?;
    check("error_code", &r.error_code, IDENT)?;
    check("message", &r.message, MESSAGE)?;
    check("generated_pin", &r.generated_pin, SHORT_TEXT)?;
    if r.outputs.len() > OUTPUTS {
        return Err(format!("{} outputs; at most {OUTPUTS} are accepted", r.outputs.len()));
    }
    for (key, value) in &r.outputs {
        check("output name", key, IDENT)?;
        check("output value", value, OUTPUT_VALUE)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_facts_and_results_are_named() {
        let big = v1::DeviceFacts { hostname: "h".repeat(3 << 20), ..Default::default() };
        assert!(facts(&big).expect_err("too big").starts_with("hostname"));
        let r = v1::CommandResult { message: "m".repeat(MESSAGE + 1), ..Default::default() };
        assert!(result(&r).expect_err("too big").starts_with("message"));
    }
}
