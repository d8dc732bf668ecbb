//! The hub's own entry point, built inside the test package so that
//! end-to-end tests can start it as a separate process and kill it.
#![forbid(unsafe_code)]

/// The same allocator as `tongbao-hub`.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    tongbao_server::cli::main()
}
