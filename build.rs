//! espeak-ng (built statically by espeak-rs-sys for Piper) uses the system's libsonic when
//! it is installed (`libsonic-dev`, which scripts/setup installs on Debian/Ubuntu); the final
//! binary then has to link it itself.
fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-lib=sonic");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
