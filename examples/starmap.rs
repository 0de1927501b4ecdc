//! `starmap`: products of pairs.
//!
//! Python:
//! ```python
//! def multiply(a, b):
//!     return a * b
//! if __name__ == "__main__":
//!     pairs = [(1, 2), (3, 4), (5, 6), (7, 8)]
//!     with multiprocessing.Pool() as pool:
//!         print(pool.starmap(multiply, pairs))
//! ```

fn multiply(a: i64, b: i64) -> i64 {
    a * b
}

fn main() -> mproc::Result<()> {
    let pairs = vec![(1, 2), (3, 4), (5, 6), (7, 8)];
    let pool = mproc::Pool::new(0)?;
    println!("{:?}", pool.starmap(multiply, pairs)?);
    Ok(())
}
