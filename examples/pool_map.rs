//! The Pool lesson: squares with `map`.
//!
//! Python:
//! ```python
//! def square(n):
//!     return n * n
//! if __name__ == "__main__":
//!     with multiprocessing.Pool() as pool:
//!         print(pool.map(square, [3, 4, 5, 6, 6, 7, 87, 8, 8]))
//! ```

fn square(n: i64) -> i64 {
    n * n
}

fn main() -> mproc::Result<()> {
    let pool = mproc::Pool::new(0)?;
    println!("{:?}", pool.map(square, [3, 4, 5, 6, 6, 7, 87, 8, 8])?);
    Ok(())
}
