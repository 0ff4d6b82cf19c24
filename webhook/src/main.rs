//! `pod-identity-webhook`: hand the arguments to the library.

fn main() -> std::process::ExitCode {
    pod_identity_webhook::entry::main(std::env::args_os())
}
