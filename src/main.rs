//! The `scim-bridge` binary: everything it does is in the library (`scim_bridge::cli`).

/// mimalloc instead of glibc's malloc: a request allocates and frees dozens of small buffers (JSON
/// values, headers, audit strings) across threads, where glibc's arenas spent 9-14 % of the CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    scim_bridge::cli::main()
}
