//! `pod-identity-agent`: hand the arguments to the library.

fn main() -> std::process::ExitCode {
    pod_identity_agent::entry::main(std::env::args_os())
}
