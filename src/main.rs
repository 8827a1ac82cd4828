fn main() -> std::process::ExitCode {
    standby::cli::main()
}
