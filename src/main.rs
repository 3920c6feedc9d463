fn main() {
    std::process::exit(bldr::cli::main());
}
