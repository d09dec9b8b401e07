// Links the bare-metal kernel with ballast's linker script; host builds
// (never run as a kernel) are left alone.
fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let script = root.parent().unwrap().join("linker.ld");
    println!("cargo:rerun-if-changed={}", script.display());
    if target == "x86_64-unknown-none" {
        println!("cargo:rustc-link-arg-bins=-T{}", script.display());
        println!("cargo:rustc-link-arg-bins=--gc-sections");
        println!("cargo:rustc-link-arg-bins=-znoexecstack");
    }
}
