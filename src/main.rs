//! The `batch-processor` binary: everything lives in the library; see [`batch_processor::cli`].

fn main() -> std::process::ExitCode {
    batch_processor::cli::main()
}
