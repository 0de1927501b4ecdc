//! The classic shared-memory lesson: a child fills an `Array` and a `Value` the parent reads.
//!
//! Python:
//! ```python
//! def calc_square(numbers, result, v):
//!     v.value = 5.0
//!     for idx, n in enumerate(numbers):
//!         result[idx] = n * n
//! if __name__ == '__main__':
//!     numbers = [2, 3, 5]
//!     result = multiprocessing.Array('i', 3)
//!     v = multiprocessing.Value('d', 0.0)
//!     p = multiprocessing.Process(target=calc_square, args=(numbers, result, v))
//!     p.start(); p.join()
//!     print(result[:])   # [4, 9, 25]
//!     print(v.value)     # 5.0
//! ```

use mproc::{Array, Process, Value};

fn calc_square(numbers: Vec<i32>, result: Array<i32>, v: Value<f64>) {
    v.set(5.0);
    for (idx, n) in numbers.iter().enumerate() {
        result.set(idx, n * n);
    }
}

fn main() -> mproc::Result<()> {
    let numbers = vec![2, 3, 5];
    let result = Array::<i32>::new(3)?;
    let v = Value::new(0.0f64)?;
    let mut p = Process::new(calc_square, (numbers, result.clone(), v.clone()));
    p.start()?;
    p.join()?;
    println!("{:?}", result.to_vec());
    println!("{:?}", v.get());
    Ok(())
}
