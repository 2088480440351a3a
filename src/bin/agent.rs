//! The guest agent binary: PID 1 of the initramfs (see `sockmatrix::agent`).
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    sockmatrix::agent::main(&args)
}
