//! The MPI rows (cargo feature `mpi`): mproc's Pool over MPI ranks, beside the local
//! pool's rows and a raw rsmpi ping-pong floor on the same transport.
//!
//! Each cell is an `mpirun` job of this binary (`mpirun -np 3 mproc-bench cell mpi_... `):
//! every rank runs the cell; rank 0 measures and prints the `BENCH-CELL` line, the other
//! ranks serve (mproc's pool workers, or the echo side of the ping-pong) and exit. The
//! `_tcp` rows force OpenMPI's TCP transport (`OMPI_MCA_btl=tcp,self`), the path used
//! across hosts; the others use shared memory.

use std::process::Command;

use mpi::point_to_point::{Destination, Source};
use mpi::topology::Communicator;

use crate::measure::{per_op, reps, rounds};
use crate::raw::{calc_pi, pi_check};

/// The `mpirun` command that runs one cell of workload `w` through `imp`.
pub fn command(w: &str, imp: &str, n: u64, r: usize) -> Command {
    // Rank 0 + 2 workers, like the local rows' Pool(2); the ping-pong needs 2 ranks.
    let np = if imp == "raw" { "2" } else { "3" };
    let mut cmd = Command::new("mpirun");
    cmd.args(["-np", np])
        .arg(std::env::current_exe().expect("the harness knows its own path"))
        .args(["cell", w, imp, &n.to_string(), &r.to_string()])
        // Root in containers, more ranks than cores on small machines.
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_rmaps_base_oversubscribe", "1");
    if w.ends_with("_tcp") {
        cmd.env("OMPI_MCA_btl", "tcp,self");
    }
    cmd
}

fn ident(x: u64) -> u64 {
    x
}

/// mproc's side: a pool of the job's ranks. Ranks other than 0 never return from `init`.
pub fn mproc(w: &str, n: u64, r: usize) -> Vec<f64> {
    let world = mproc::mpi::init().unwrap_or_else(|e| panic!("mproc::mpi::init: {e}"));
    let pool = world.pool().unwrap_or_else(|e| panic!("world.pool(): {e}"));
    let map = |k: u64, chunksize: Option<usize>| {
        let out = match chunksize {
            None => pool.map(ident, 0..k),
            Some(c) => pool.map_chunked(ident, 0..k, c),
        }
        .unwrap_or_else(|e| panic!("map over MPI: {e}"));
        assert_eq!(out.len() as u64, k);
        assert_eq!(out.last().copied(), k.checked_sub(1));
    };
    match w.trim_end_matches("_shm").trim_end_matches("_tcp") {
        "mpi_map" => rounds(r, 1000, n, |k| map(k, None)),
        "mpi_map_chunk1" => rounds(r, 1000, n, |k| map(k, Some(1))),
        "mpi_pi" => {
            let once = |steps: u64| {
                let parts: Vec<f64> = pool
                    .starmap(calc_pi, (0..2u64).map(|rank| (rank, 2u64, steps)))
                    .unwrap_or_else(|e| panic!("starmap over MPI: {e}"));
                pi_check(parts.iter().sum());
            };
            reps(r, || once(1000), || per_op(1, || once(n)))
        }
        other => panic!("no MPI program for {other}"),
    }
}

/// The floor: an 8-byte ping-pong between ranks 0 and 1 with blocking rsmpi calls, one
/// round trip per operation (a pool task needs at least one).
pub fn raw(w: &str, n: u64, r: usize) -> Option<Vec<f64>> {
    if w == "mpi_pi" {
        return None;
    }
    let universe = mpi::initialize().expect("MPI initializes once");
    let world = universe.world();
    if world.rank() != 0 {
        let peer = world.process_at_rank(0);
        loop {
            let (x, _) = peer.receive::<u64>();
            if x == u64::MAX {
                break;
            }
            peer.send(&x);
        }
        drop(universe);
        std::process::exit(0);
    }
    let peer = world.process_at_rank(1);
    let samples = rounds(r, 1000, n, |k| {
        for i in 0..k {
            peer.send(&i);
            let (back, _) = peer.receive::<u64>();
            assert_eq!(back, i);
        }
    });
    peer.send(&u64::MAX);
    Some(samples)
}
