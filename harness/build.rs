//! Builds the probe library (the `probe/` crate, a `cdylib`) for the target being built, so that the
//! `threadleak` binary carries it: `exec` writes it out at run time (`src/exec/probe.rs`). A binary is then
//! all there is to install (`cargo install` installs binaries only).
//!
//! The probe is built by a nested `cargo build` of the `probe/` crate, with the same profile and target
//! as this build and in a target folder of its own beside this build's (`<target>/probe-embedded`), so that
//! it never waits on this build's lock and is rebuilt incrementally. The probe depends on the small
//! `threadleak-census` crate (libc and nix), not on this one, so the nested build compiles a dozen small
//! packages and none of this build's larger ones (clap, serde's derive, the DWARF readers). For an Apple
//! target it also builds the other Apple architecture's probe, when the toolchain can, and carries both
//! in one universal file (`src/exec/fat.rs`).
//!
//! `THREADLEAK_EMBED_PROBE=0` builds a binary without a probe, whose `exec` then needs `--probe PATH`:
//! for `cargo clippy` on a target this machine cannot link for (CI lints the Apple targets that way, and
//! links them, probe included, with zig).

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "src/exec/fat.rs"]
mod fat;

const EMBED: &str = "THREADLEAK_EMBED_PROBE";

fn main() {
    println!("cargo::rustc-check-cfg=cfg(threadleak_embedded_probe)");
    println!("cargo::rerun-if-env-changed={EMBED}");
    // Only the binary (the `cli` feature) carries the probe; a crate that uses the library in its tests
    // has no use for one.
    if env::var_os("CARGO_FEATURE_CLI").is_none() || env::var_os(EMBED).is_some_and(|v| v == "0") {
        return;
    }
    let manifest_dir = PathBuf::from(var("CARGO_MANIFEST_DIR"));
    let probe_crate = manifest_dir.join("../probe");
    if !probe_crate.join("Cargo.toml").is_file() {
        fail(&format!(
            "the probe crate was not found at {}: threadleak is built from its whole repository (`cargo install \
             --path harness` in a checkout, or `cargo install --git URL threadleak`); {EMBED}=0 builds a binary \
             without a probe, whose exec then needs --probe PATH",
            probe_crate.display()
        ));
    }
    // The probe is built from these, and from the census crate, which it uses.
    for input in ["../probe/src", "../probe/Cargo.toml", "../census/src", "../census/Cargo.toml", "../Cargo.lock"] {
        println!("cargo::rerun-if-changed={input}");
    }

    let target = var("TARGET");
    let (profile, profile_dir) = match var("PROFILE").as_str() {
        "release" => ("release", "release"),
        _ => ("dev", "debug"),
    };
    let out_dir = PathBuf::from(var("OUT_DIR"));
    let target_dir = probe_target_dir(&out_dir, &target);
    let build = |target: &str| -> Result<Vec<u8>, String> {
        let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
        let status = Command::new(cargo)
            .arg("build")
            .arg("--manifest-path")
            .arg(probe_crate.join("Cargo.toml"))
            .args(["-p", "threadleak-probe", "--lib", "--target", target, "--profile", profile])
            .arg("--target-dir")
            .arg(&target_dir)
            .env(EMBED, "0")
            // What the binary carries, it carries without debug information (a tenth of the size).
            .env(format!("CARGO_PROFILE_{}_STRIP", profile.to_uppercase()), "debuginfo")
            // Clippy's driver lints; it does not build what this binary carries.
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET_DIR")
            .status()
            .map_err(|e| format!("cannot run cargo to build the probe library: {e}"))?;
        if !status.success() {
            return Err(format!("building the probe library for {target} failed ({status})"));
        }
        let file = if target.contains("apple") { "libthreadleak_probe.dylib" } else { "libthreadleak_probe.so" };
        let built = target_dir.join(target).join(profile_dir).join(file);
        std::fs::read(&built)
            .map_err(|e| format!("the probe library was built but {} cannot be read: {e}", built.display()))
    };
    let own = build(&target).unwrap_or_else(|e| fail(&format!("{e}; its messages are above")));
    // On a Mac, the probe carries both Apple architectures where the toolchain has both targets: a
    // program under Rosetta, or a child of the other architecture, loads the slice of its own
    // (src/exec/fat.rs). Without the other target, the probe is this architecture's only, and exec
    // refuses programs of the other with the reason.
    let other = match target.as_str() {
        "aarch64-apple-darwin" => Some("x86_64-apple-darwin"),
        "x86_64-apple-darwin" => Some("aarch64-apple-darwin"),
        _ => None,
    };
    let carried = match other.map(|other| (other, build(other))) {
        None => own,
        Some((_, Ok(second))) => {
            fat::universal(&[&own, &second]).unwrap_or_else(|e| fail(&format!("the universal probe: {e}")))
        }
        Some((other, Err(e))) => {
            println!(
                "cargo::warning=the probe is built for {target} only ({e}): exec refuses programs that run as {other}; \
                 `rustup target add {other}` (and its linker) makes it universal"
            );
            own
        }
    };
    let embedded = out_dir.join("probe.bin");
    if let Err(e) = std::fs::write(&embedded, carried) {
        fail(&format!("the probe library cannot be written to {}: {e}", embedded.display()));
    }
    println!("cargo::rustc-cfg=threadleak_embedded_probe");
}

/// `<target>/probe-embedded`, where `<target>` is this build's target folder, found above `OUT_DIR`
/// (`<target>/[<triple>/]<profile>/build/<package>/out`) and recognised by the `CACHEDIR.TAG` cargo
/// writes there; `OUT_DIR/probe-target` if the layout is not that one.
fn probe_target_dir(out_dir: &Path, target: &str) -> PathBuf {
    let mut dir = out_dir.ancestors().nth(4);
    if dir.is_some_and(|d| d.file_name().is_some_and(|n| n == target)) {
        dir = dir.and_then(Path::parent);
    }
    match dir {
        Some(dir) if dir.join("CACHEDIR.TAG").is_file() => dir.join("probe-embedded"),
        _ => out_dir.join("probe-target"),
    }
}

fn var(name: &str) -> String {
    env::var(name).unwrap_or_else(|_| fail(&format!("cargo did not set {name}")))
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}
