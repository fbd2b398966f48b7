//! The `scim-bridge` binary: everything it does is in the library (`scim_bridge::cli`).

fn main() -> std::process::ExitCode {
    scim_bridge::cli::main()
}
