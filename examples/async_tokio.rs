//! Awaiting pool results under tokio: an `AsyncResult` is a future, woken when its result
//! arrives (no thread blocked on it, no polling loop), so the runtime goes on with other
//! work while the pool computes.
//!
//! Python (asyncio over a process pool):
//! ```python
//! def slow_square(x):
//!     time.sleep(0.2)
//!     return x * x
//! async def main():
//!     loop = asyncio.get_running_loop()
//!     with concurrent.futures.ProcessPoolExecutor(2) as pool:
//!         a = loop.run_in_executor(pool, slow_square, 3)
//!         b = loop.run_in_executor(pool, slow_square, 4)
//!         print("meanwhile, the event loop is free")
//!         print("results:", await asyncio.gather(a, b))
//! asyncio.run(main())
//! ```

use std::future::IntoFuture;

fn slow_square(x: u64) -> u64 {
    std::thread::sleep(std::time::Duration::from_millis(200));
    x * x
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> mproc::Result<()> {
    let pool = mproc::Pool::new(2)?;
    let a = pool.apply_async(slow_square, (3,)).into_future();
    let b = pool.apply_async(slow_square, (4,)).into_future();
    println!("meanwhile, the event loop is free");
    let (a, b) = tokio::join!(a, b);
    println!("results: {:?}", [a?, b?]);
    // `.await` works on an AsyncResult directly, too.
    let c = pool.apply_async(slow_square, (5,)).await?;
    println!("and one more: {c}");
    Ok(())
}
