// Links libhmsffi (the C ABI, libclient/include/hms/ffi/hms_ffi.h) from HMS_FFI_LIB_DIR, by default
// the tree's release build, and records that directory as an rpath so that tests and examples run
// without LD_LIBRARY_PATH.
use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=HMS_FFI_LIB_DIR");
    println!("cargo:rerun-if-changed=build.rs");
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let dir = match env::var("HMS_FFI_LIB_DIR") {
        Ok(d) if !d.is_empty() => PathBuf::from(d),
        _ => manifest.join("../../build/release/libclient"),
    };
    // An absolute, normalised path: the rpath must not depend on the directory a binary runs in.
    let dir = dir.canonicalize().unwrap_or_else(|_| {
        if dir.is_absolute() {
            dir.clone()
        } else {
            manifest.join(&dir)
        }
    });
    if !dir.join("libhmsffi.so").exists() {
        println!(
            "cargo:warning=libhmsffi.so is not in {} (set HMS_FFI_LIB_DIR to the directory that holds it)",
            dir.display()
        );
    }
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rustc-link-lib=dylib=hmsffi");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    println!("cargo:root={}", dir.display());
}
