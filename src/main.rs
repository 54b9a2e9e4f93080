//! The `sluice` binary: parses the command line and runs it. What the library cannot
//! know lives here: the allocator, and the process-wide settings that go with it.

use std::process::ExitCode;

use clap::Parser;
use sluice::cli::{Cli, Command};
use sluice::{Process, check, run};

// glibc's malloc took about a tenth of the proxy's CPU time under load (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => {
            disable_transparent_huge_pages();
            let process = Process {
                release_free_memory: Some(release_free_memory),
            };
            run(*args, process)
        }
        Command::Check(args) => check::check(&args),
        Command::Crds => check::print_crds(),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("sluice: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Keeps the kernel from backing Sluice's heap with transparent huge pages. mimalloc asks
/// for them on its arenas, and khugepaged then fills whole 2 MiB regions around the pages
/// that parked connections freed: idle memory grows back, counted against the memory
/// limit, where there is no traffic at all.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(error) = rustix::thread::disable_transparent_huge_pages(true) {
        eprintln!("sluice: cannot turn transparent huge pages off: {error}");
    }
}

/// Returns the calling thread's free mimalloc pages to the system. mimalloc keeps the
/// pages a thread freed until that thread allocates again; a traffic thread whose
/// connections just parked may not for a long time.
fn release_free_memory() {
    // SAFETY: mi_collect takes no pointers and only walks the calling thread's own heap.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
