//! Link flags for the agent's binaries.
//!
//! On GNU/Linux the relative relocations of this position-independent executable are packed
//! (`DT_RELR`, binutils ≥ 2.38, glibc ≥ 2.36): a table of about 270 KB becomes a few KB, the
//! executable stays PIE (ASLR unchanged), and the loader has less to read at start. Android's
//! linker packs them by default from API 28; other targets are left as they are.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
