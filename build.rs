//! espeak-ng (built statically by espeak-rs-sys for Piper) uses the system's libsonic when
//! it is installed (`libsonic-dev`, which scripts/setup installs on Debian/Ubuntu); the final
//! binary then has to link it itself.
//!
//! whisper.cpp's matrix products go through OpenBLAS on Linux (whisper-rs's `openblas`
//! feature). Debian ships it built two ways behind one soname, chosen system-wide by
//! update-alternatives: the binaries look in the OpenMP build's directory first, so they use
//! the OpenMP one (`libopenblas-openmp-dev`, which scripts/setup installs) even where the
//! pthreads one is the system's choice. Its threads wait as whisper.cpp's own OpenMP threads
//! do, spinning briefly and then sleeping; the pthreads build's spin while other programs
//! hold the cores.
fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-lib=sonic");
        let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
        println!("cargo:rustc-link-arg=-Wl,-rpath,/usr/lib/{arch}-linux-gnu/openblas-openmp");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
