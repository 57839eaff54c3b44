//! Generates the Rust bindings of the kernel ABI from the UAPI header
//! `include/uapi/linux/loop_file_fmt.h`, the single source of truth.
//!
//! Only the `lff_*`/`LFF_*` items are generated. The ioctl request numbers
//! (`LFF_CONFIGURE = _IOW(...)` and friends) are object-like macros whose
//! bodies use the function-like `_IO*` macros, which bindgen's own macro
//! parser cannot expand; bindgen's clang macro fallback evaluates them with
//! libclang for the target being built, so the numbers come from the header
//! and the target's `<linux/ioctl.h>`, never retyped.

use std::env;
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    // Canonicalize so that a symlinked package directory still finds the
    // repository's include/ directory.
    let manifest = std::fs::canonicalize(&manifest).unwrap_or(manifest);
    let uapi = manifest.join("../../include/uapi");
    let header = uapi.join("linux/loop_file_fmt.h");
    let wrapper = manifest.join("src/uapi_wrapper.h");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));

    println!("cargo:rerun-if-changed={}", header.display());
    println!("cargo:rerun-if-changed={}", wrapper.display());
    println!("cargo:rerun-if-changed=build.rs");

    let bindings = bindgen::Builder::default()
        .header(wrapper.to_string_lossy())
        .clang_arg(format!("-I{}", uapi.display()))
        .allowlist_item("(lff|LFF)_.*")
        // Evaluate LFF_CONFIGURE & co. (they expand to _IOW()/_IOR()/_IO()).
        .clang_macro_fallback()
        .clang_macro_fallback_build_dir(&out)
        .derive_default(true)
        .layout_tests(true)
        .use_core()
        .generate()
        .unwrap_or_else(|e| panic!("bindgen failed on {}: {e}", header.display()));

    let text = bindings.to_string();
    // Fail the build loudly if the ioctl numbers could not be evaluated
    // (e.g. an old libclang without the macro fallback).
    for name in [
        "LFF_CONFIGURE",
        "LFF_CLR_FD",
        "LFF_GET_STATUS",
        "LFF_GET_MAP",
        "LFF_CTL_ADD",
        "LFF_CTL_REMOVE",
        "LFF_CTL_GET_FREE",
    ] {
        assert!(
            text.contains(&format!("pub const {name}:")),
            "bindgen did not evaluate {name} from {}",
            header.display()
        );
    }
    std::fs::write(out.join("uapi.rs"), text).expect("write uapi.rs");
}
