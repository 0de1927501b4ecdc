//! A child's globals are its own: what it appends to a global list stays in the child.
//!
//! Python:
//! ```python
//! result = []
//! def square_list(mylist):
//!     global result
//!     for num in mylist:
//!         result.append(num * num)
//!     print("Result(in process p1): {}".format(result))
//! if __name__ == "__main__":
//!     p1 = multiprocessing.Process(target=square_list, args=([1, 2, 3, 4],))
//!     p1.start(); p1.join()
//!     print("Result(in main program): {}".format(result))
//! ```

use std::sync::Mutex;

static RESULT: Mutex<Vec<i64>> = Mutex::new(Vec::new());

fn square_list(mylist: Vec<i64>) {
    let mut result = RESULT.lock().expect("not poisoned");
    for num in mylist {
        result.push(num * num);
    }
    println!("Result(in process p1): {:?}", *result);
}

fn main() -> mproc::Result<()> {
    let mut p1 = mproc::Process::new(square_list, (vec![1, 2, 3, 4],));
    p1.start()?;
    p1.join()?;
    println!(
        "Result(in main program): {:?}",
        *RESULT.lock().expect("not poisoned")
    );
    Ok(())
}
