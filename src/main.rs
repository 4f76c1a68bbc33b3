use std::process::ExitCode;

// Spans are built on the request's worker thread and freed on the exporter's thread;
// glibc's malloc spent a third of the service's CPU on that cross-thread churn
// (docs/performance.md), mimalloc a fraction of it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    lead_lab::cli::main()
}
