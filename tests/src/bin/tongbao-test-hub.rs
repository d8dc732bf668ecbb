//! The hub's own entry point, built inside the test package so that
//! end-to-end tests can start it as a separate process and kill it.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    tongbao_server::cli::main()
}
