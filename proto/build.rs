//! Compiles the `.proto` contracts with the pure-Rust `protox` compiler: no system `protoc`.

/// Messages that carry secrets get hand-written, redacting `Debug` impls in `src/redact.rs`.
const SECRET_BEARING: &[&str] = &[
    "latchkey.v1.EnrollRequest",
    "latchkey.v1.UnlockToken",
    "latchkey.v1.ResetToken",
    "latchkey.v1.ResetPasscode",
    "latchkey.v1.RemovePasscode",
    "latchkey.v1.RemoteLock",
    "latchkey.v1.CommandResult",
    "latchkey.bridge.v1.SetCredentialRequest",
    "latchkey.bridge.v1.LockRequest",
    "latchkey.bridge.v1.TokenRequest",
    "latchkey.bridge.v1.TokenResponse",
    "latchkey.bridge.v1.GeneratedPinResponse",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["latchkey/v1/device.proto", "latchkey/bridge/v1/bridge.proto"];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let fds = protox::compile(files, ["."])?;
    tonic_prost_build::configure()
        .codec_path("crate::codec::SmallCodec")
        .skip_debug(SECRET_BEARING.iter().map(|p| format!(".{p}")))
        .compile_fds(fds)?;
    Ok(())
}
