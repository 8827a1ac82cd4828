// glibc's allocator spent about a fifth of the server's CPU time under the
// sign-up load (see BENCHMARKS.md); mimalloc's thread-local heaps do not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    standby::cli::main()
}
