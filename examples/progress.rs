//! A progress bar over a pool: `imap` with an `indicatif` bar that knows the total.
//!
//! Python (with tqdm):
//! ```python
//! def work(x):
//!     time.sleep(0.001)
//!     return x * x
//! if __name__ == "__main__":
//!     with multiprocessing.Pool() as pool:
//!         results = list(tqdm(pool.imap(work, range(3000)), total=3000))
//!     print(f"{len(results)} results, sum of squares {sum(results)}")
//! ```
//!
//! `IMap::size_hint` is exact when its input's is (and counts down), so the bar gets its
//! total from the iterator itself; no `total=` to keep in sync by hand. The bar draws on
//! stderr (and hides itself when stderr is not a terminal); the result goes to stdout.

use indicatif::{ProgressBar, ProgressIterator, ProgressStyle};

fn work(x: u64) -> u64 {
    std::thread::sleep(std::time::Duration::from_millis(1));
    x * x
}

fn main() -> mproc::Result<()> {
    let pool = mproc::Pool::new(0)?;
    let results = pool.imap(work, 0..3000u64);
    let total = results.size_hint().1.unwrap_or(0) as u64;
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} [{elapsed_precise}<{eta_precise}]")
            .expect("a valid template"),
    );
    let results: Vec<u64> = results.progress_with(bar).collect::<mproc::Result<_>>()?;
    println!(
        "{} results, sum of squares {}",
        results.len(),
        results.iter().sum::<u64>()
    );
    Ok(())
}
