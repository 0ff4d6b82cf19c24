//! `/go-runner` in the agent's image: runs its command in its place (see `go_runner`).

fn main() -> std::process::ExitCode {
    pod_identity_agent::go_runner::main(std::env::args_os())
}
