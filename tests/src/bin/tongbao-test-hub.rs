//! The hub's own entry point, built inside the test package so that
//! end-to-end tests can start it as a separate process and kill it; the
//! only binary that turns the crash and tampering points on.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    tongbao_server::failpoint::enable();
    tongbao_server::cli::main()
}
