//! `pod-identity-lab`: hand the arguments to the library.

fn main() -> std::process::ExitCode {
    pod_identity_lab::entry::main(std::env::args_os())
}
