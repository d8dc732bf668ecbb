//! `tongbao-hub`: serve the exchange, and operator commands.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    // A build of the whole workspace turns on the test hub's crash and
    // tampering points for this binary too (features are unified): such a
    // hub must not run anywhere.
    if cfg!(feature = "failpoints") {
        eprintln!(
            "error: this tongbao-hub was built with the test-only `failpoints` feature \
             (a build of the whole workspace turns it on); build the hub by itself: \
             cargo build --release -p tongbao-server"
        );
        return std::process::ExitCode::FAILURE;
    }
    tongbao_server::cli::main()
}
