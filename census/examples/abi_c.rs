//! Prints the C program that checks the hand-declared Mach items against the Darwin SDK headers.
//!
//! `cargo run -p threadleak-census --example abi_c -- ARCH [--deliberate-errors]` (ARCH: aarch64 or x86_64);
//! `ci/abi-check.sh` compiles the output with `zig cc -target ARCH-macos`.

use threadleak_census::mach::abi;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arch = args.first().map(String::as_str).unwrap_or_default();
    if !abi::ARCHES.iter().any(|&(a, _)| a == arch) {
        let known: Vec<&str> = abi::ARCHES.iter().map(|&(a, _)| a).collect();
        eprintln!("usage: abi_c ARCH [--deliberate-errors]   (ARCH: {})", known.join(", "));
        std::process::exit(2);
    }
    let mut manifest = abi::manifest(arch);
    if args.iter().any(|a| a == "--deliberate-errors") {
        manifest = abi::with_deliberate_errors(manifest);
    }
    print!("{}", abi::c_check(&manifest));
}
