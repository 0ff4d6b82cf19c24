//! `demo-app`: walk the credential chain as a pod's SDK does and explain it.

fn main() {
    std::process::exit(demo_app::entry::main(std::env::args_os()));
}
