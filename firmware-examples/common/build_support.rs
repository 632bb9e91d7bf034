// Shared by the firmware build scripts (`include!`d): writes the board's memory.x into
// OUT_DIR (a memory.x at the package root would shadow it, so there is none), and copies
// the model file and test vectors the binary embeds into OUT_DIR.

use std::path::{Path, PathBuf};

fn setup(memory_x: &str, files: &[(&str, &str, &str)]) {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    std::fs::write(out.join("memory.x"), memory_x).expect("write memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=build.rs");
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("manifest dir"));
    // (environment variable, default path relative to the crate, name in OUT_DIR)
    for &(var, default, name) in files {
        println!("cargo:rerun-if-env-changed={var}");
        let src = std::env::var(var)
            .map(PathBuf::from)
            .unwrap_or_else(|_| root.join(default));
        println!("cargo:rerun-if-changed={}", src.display());
        if let Err(e) = std::fs::copy(&src, out.join(name)) {
            panic!(
                "{}: {e}. Set {var} to the file, or see firmware-examples/README.md for the command that makes it",
                display(&src)
            );
        }
    }
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
