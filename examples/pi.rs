//! Pi by the midpoint rule, serially and on a Pool: the speedup of real processes.
//!
//! Python:
//! ```python
//! def calc_partial_pi(rank, nprocs, nsteps, dx):
//!     partial = 0.0
//!     for i in range(rank, nsteps, nprocs):
//!         x = (i + 0.5) * dx
//!         partial += 4.0 / (1.0 + x * x)
//!     return partial * dx
//! if __name__ == "__main__":
//!     nsteps = 100_000_000; dx = 1.0 / nsteps
//!     # serial, then Pool(nprocs).starmap(calc_partial_pi, [(r, nprocs, nsteps, dx) ...])
//!     print(f"serial: {t_serial:.3f} s, pool: {t_pool:.3f} s, speedup {t_serial / t_pool:.2f}")
//!     print(f"pi = {pi:.10f}")
//! ```

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
    let nsteps: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000_000);
    let dx = 1.0 / nsteps as f64;
    let nprocs = mproc::cpu_count() as u64;

    let t = Instant::now();
    let serial = calc_partial_pi(0, 1, nsteps, dx);
    let t_serial = t.elapsed().as_secs_f64();

    let pool = mproc::Pool::new(nprocs as usize)?;
    let t = Instant::now();
    let parts = pool.starmap(
        calc_partial_pi,
        (0..nprocs).map(|r| (r, nprocs, nsteps, dx)),
    )?;
    let pi: f64 = parts.iter().sum();
    let t_pool = t.elapsed().as_secs_f64();

    println!(
        "serial: {t_serial:.3} s, pool of {nprocs}: {t_pool:.3} s, speedup {:.2}",
        t_serial / t_pool
    );
    println!("pi = {pi:.10}");
    assert!((pi - serial).abs() < 1e-9 && (pi - std::f64::consts::PI).abs() < 1e-8);
    Ok(())
}
