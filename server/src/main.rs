//! `tongbao-hub`: serve the exchange, and operator commands.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    tongbao_server::cli::main()
}
