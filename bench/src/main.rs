//! mproc-bench: one command that runs the same workloads through mproc, CPython's
//! `multiprocessing`, procspawn, ipc-channel, threads/rayon and raw OS floors, in one run on
//! one machine, and prints one markdown table of medians, min–max and mproc/peer ratios.
//!
//! ```text
//! cargo run --release -p mproc-bench -- all            # every workload
//! cargo run --release -p mproc-bench -- pipe queue     # a subset, by name or name prefix
//! cargo run --release -p mproc-bench -- all --quick    # small sizes, under a minute
//! cargo run --release -p mproc-bench -- all --json     # the same data as JSON
//! ```
//!
//! Every cell (one workload through one implementation) runs in a fresh process: a re-exec
//! of this binary (`mproc-bench cell WORKLOAD IMPL N REPS`) or the CPython program, so no
//! cell inherits threads, pools or servers from another, and a cell that hangs is killed at
//! its deadline (with its whole process group) and shown as a timeout.

mod cells;
mod codec;
mod isolation;
mod measure;
#[cfg(feature = "mpi")]
mod mpi_side;
mod mproc_side;
mod net;
mod peers;
mod raw;
mod report;
mod threads;
mod transport;
mod workloads;

use std::time::Instant;

fn usage() -> ! {
    eprintln!(
        "usage: mproc-bench [all | codec | WORKLOAD | PREFIX ...] [--quick] [--json]\n\
         workloads: codec {}",
        workloads::all()
            .map(|w| w.name)
            .collect::<Vec<_>>()
            .join(" ")
    );
    std::process::exit(2)
}

/// Checks that procspawn and mproc children start from the same binary and the same
/// process: procspawn routes its children in `main` (`procspawn::init()`, by its
/// environment variable), mproc before `main` (a constructor, by its own).
fn coexist() {
    fn twice(x: u64) -> u64 {
        2 * x
    }
    let a = procspawn::spawn(21u64, twice)
        .join()
        .expect("a procspawn child");
    let mut p = mproc::get_context(mproc::StartMethod::Spawn).process(twice, (21u64,));
    p.start().expect("an mproc Spawn child starts");
    let b = p.result().expect("an mproc Spawn child returns");
    let mut q = mproc::get_context(mproc::StartMethod::ForkServer).process(twice, (4u64,));
    q.start().expect("an mproc ForkServer child starts");
    let c = q.result().expect("an mproc ForkServer child returns");
    let d = procspawn::spawn(5u64, twice)
        .join()
        .expect("a procspawn child after mproc's");
    assert_eq!((a, b, c, d), (42, 42, 8, 10));
    println!(
        "procspawn and mproc coexist: procspawn 42, mproc spawn 42, forkserver 8, procspawn again 10"
    );
}

fn main() {
    // In a procspawn child this runs the closure and exits; mproc's own children were
    // routed before main by its constructor, so the two never meet.
    procspawn::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        // The raw floor of a Spawn start: an exec of this binary that does nothing.
        Some("noop") => return,
        Some("ipc-child") => {
            peers::ipc_child(args.get(1).map(String::as_str).unwrap_or_else(|| usage()));
            return;
        }
        Some("coexist") => {
            coexist();
            return;
        }
        Some("cell") => {
            cells::worker(&args[1..]);
            return;
        }
        _ => {}
    }

    let mut quick = false;
    let mut json = false;
    let mut names = Vec::new();
    for a in &args {
        match a.as_str() {
            "--quick" => quick = true,
            "--json" => json = true,
            "-h" | "--help" => usage(),
            s if s.starts_with('-') => usage(),
            s => names.push(s.to_string()),
        }
    }
    let selected = workloads::select(&names);
    let want_codec = names.is_empty() || names.iter().any(|n| n == "all" || n == "codec");
    if selected.is_empty() && !want_codec {
        usage();
    }

    let started = Instant::now();
    let mut run = report::Run::begin(&args, quick);
    if want_codec {
        eprintln!("[codec] postcard / bitcode / wincode ...");
        run.codec = Some(codec::run(quick));
    }
    let python = cells::Python::find();
    for w in selected {
        run.rows.push(cells::run_row(w, quick, &python));
    }
    run.finish(started.elapsed().as_secs_f64());
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&run).expect("the report is plain data")
        );
    } else {
        print!("{}", run.markdown());
    }
}
