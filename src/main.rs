use std::process::ExitCode;

fn main() -> ExitCode {
    lead_lab::cli::main()
}
