//! Compiles `bpf/*.bpf.c` into BPF objects in `OUT_DIR` with clang (`-O2 -g -target bpf`).
//!
//! A missing clang is a build error that names the Debian package to install.

use std::path::{Path, PathBuf};
use std::process::Command;

const PROGRAMS: [&str; 3] = ["lb", "decap", "sink"];

fn main() {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let bpf_dir = Path::new("bpf");
    println!("cargo:rerun-if-changed=bpf");
    for entry in std::fs::read_dir(bpf_dir).expect("xdp/bpf exists") {
        let path = entry.expect("readable bpf dir").path();
        println!("cargo:rerun-if-changed={}", path.display());
    }
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    println!("cargo:rerun-if-env-changed=CLANG");
    for program in PROGRAMS {
        let source = bpf_dir.join(format!("{program}.bpf.c"));
        let object = out_dir.join(format!("{program}.bpf.o"));
        let output = Command::new(&clang)
            .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
            .arg("-I/usr/include/x86_64-linux-gnu")
            .arg("-c")
            .arg(&source)
            .arg("-o")
            .arg(&object)
            .output();
        match output {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => panic!(
                "`{clang}` not found: cairn-xdp compiles its BPF programs with clang; \
                 install the Debian package `clang` (and `libbpf-dev`)"
            ),
            Err(err) => panic!("running `{clang}`: {err}"),
            Ok(out) if !out.status.success() => panic!(
                "clang failed on {}:\n{}",
                source.display(),
                String::from_utf8_lossy(&out.stderr)
            ),
            Ok(_) => {}
        }
    }
}
