//! The native command line: the same engine as the browser, driven from a terminal.
//! (Built for wasm32 too, as an empty program, because `cargo test --target wasm32` builds
//! every binary; the browser drives the engine through `src/web`.)

#[cfg(not(target_arch = "wasm32"))]
mod cli;

#[cfg(not(target_arch = "wasm32"))]
fn main() -> anyhow::Result<()> {
    cli::main()
}

#[cfg(target_arch = "wasm32")]
fn main() {}
