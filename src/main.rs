//! The `offsite` binary: everything but the exit code lives in the library.

fn main() {
    std::process::exit(offsite::main_with_args(std::env::args_os().collect()));
}
