fn main() {
    std::process::exit(upkeep::cli::run());
}
