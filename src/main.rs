//! The `upkeep` command: parses the command line and hands each command to the module that owns
//! it (`cli`); `demo` runs the whole loop on the emulators.

mod cli;
mod demo;
mod rehearse;

fn main() {
    std::process::exit(cli::run());
}
