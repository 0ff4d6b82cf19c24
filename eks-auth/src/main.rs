//! `eks-auth`: hand the arguments to the library.

fn main() -> std::process::ExitCode {
    eks_auth::entry::main(std::env::args_os())
}
