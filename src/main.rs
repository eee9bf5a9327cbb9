//! The `avatar-edge` binary: everything lives in the library; see `cli`.

fn main() -> anyhow::Result<()> {
    avatar_edge::cli::main()
}
