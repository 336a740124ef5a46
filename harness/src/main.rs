//! The `threadleak` binary; everything lives in the library.

fn main() {
    std::process::exit(threadleak::cli::main());
}
