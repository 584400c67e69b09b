//! Link flags for the agent's binaries.
//!
//! On GNU/Linux the relative relocations of this position-independent executable are packed
//! (`DT_RELR`, binutils ≥ 2.38, glibc ≥ 2.36): a table of about 270 KB becomes a few KB, the
//! executable stays PIE (ASLR unchanged), and the loader has less to read at start. Android's
//! linker packs them by default from API 28; other targets are left as they are.
//!
//! Size-optimised builds (the `device` profile) whose linker is LLD — rustc's own on x86_64
//! GNU/Linux, the NDK's on Android — also fold identical functions (`--icf=all`: generic code
//! instantiated for types of the same layout often compiles to the same bytes; −55 KB here).
//! Rust makes no promise that two functions have distinct addresses, and LLD folds code only,
//! not data, so vtables and statics keep their identities.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let var = |name| std::env::var(name).unwrap_or_default();
    let (os, env, arch) = (var("CARGO_CFG_TARGET_OS"), var("CARGO_CFG_TARGET_ENV"), var("CARGO_CFG_TARGET_ARCH"));
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    let lld = (os == "linux" && env == "gnu" && arch == "x86_64") || os == "android";
    if lld && matches!(var("OPT_LEVEL").as_str(), "s" | "z") {
        println!("cargo:rustc-link-arg-bins=-Wl,--icf=all");
    }
}
