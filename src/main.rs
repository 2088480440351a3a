//! The `sockmatrix` binary; everything lives in the library's `cli` module.
fn main() -> std::process::ExitCode {
    sockmatrix::cli::main()
}
