//! Pi by the midpoint rule on a Pool of MPI ranks: the seeds' `pi` program, unchanged but
//! for how the pool is made.
//!
//! ```text
//! cargo build --release --features mpi --example mpi_pi
//! mpirun -np 3 target/release/examples/mpi_pi            # rank 0 + 2 worker ranks
//! mpirun -np 9 --hostfile hosts target/release/examples/mpi_pi   # across hosts
//! ```
//!
//! Python (mpi4py): `mpiexec -n 3 python -m mpi4py.futures pi.py`, with
//! `MPIPoolExecutor().starmap(calc_partial_pi, ...)`. It prints the same lines as
//! `examples/pi.rs`.

use std::time::Instant;

fn calc_partial_pi(rank: u64, nprocs: u64, nsteps: u64, dx: f64) -> f64 {
    let mut partial = 0.0;
    let mut i = rank;
    while i < nsteps {
        let x = (i as f64 + 0.5) * dx;
        partial += 4.0 / (1.0 + x * x);
        i += nprocs;
    }
    partial * dx
}

fn main() -> mproc::Result<()> {
    // First thing: ranks 1.. serve the pool's tasks inside this call and never return.
    let world = mproc::mpi::init()?;
    let nsteps: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000_000);
    let dx = 1.0 / nsteps as f64;

    let t = Instant::now();
    let serial = calc_partial_pi(0, 1, nsteps, dx);
    let t_serial = t.elapsed().as_secs_f64();

    let pool = world.pool()?;
    let nprocs = pool.processes() as u64;
    let t = Instant::now();
    let parts = pool.starmap(
        calc_partial_pi,
        (0..nprocs).map(|r| (r, nprocs, nsteps, dx)),
    )?;
    let pi: f64 = parts.iter().sum();
    let t_pool = t.elapsed().as_secs_f64();

    println!(
        "serial: {t_serial:.3} s, pool of {nprocs} MPI ranks: {t_pool:.3} s, speedup {:.2}",
        t_serial / t_pool
    );
    println!("pi = {pi:.10}");
    assert!((pi - serial).abs() < 1e-9 && (pi - std::f64::consts::PI).abs() < 1e-8);
    Ok(())
}
