//! A list shared by two processes through a manager: one adds numbers, the other doubles
//! them in place, and the parent prints the result.
//!
//! Python:
//! ```python
//! def adder(shared_list):
//!     for i in range(5):
//!         shared_list.append(i)
//!         print(f"Adder added {i}")
//! def modifier(shared_list):
//!     for i in range(len(shared_list)):
//!         shared_list[i] = shared_list[i] * 2
//!         print(f"Modifier doubled index {i} to {shared_list[i]}")
//! if __name__ == "__main__":
//!     with multiprocessing.Manager() as manager:
//!         shared_list = manager.list()
//!         p1 = multiprocessing.Process(target=adder, args=(shared_list,))
//!         p2 = multiprocessing.Process(target=modifier, args=(shared_list,))
//!         p1.start(); p1.join()
//!         p2.start(); p2.join()
//!         print(f"Final list: {list(shared_list)}")
//! ```
//!
//! Prints the five adder lines, the five modifier lines, then `Final list: [0, 2, 4, 6, 8]`.
//! The doubling runs inside the manager's server (`modify`), so it is atomic: Python's
//! `shared_list[i] = shared_list[i] * 2` is two round trips with a race between them.

use mproc::{ListProxy, Manager, Process};

fn adder(shared_list: ListProxy<u32>) -> mproc::Result<()> {
    for i in 0..5 {
        shared_list.append(&i)?;
        println!("Adder added {i}");
    }
    Ok(())
}

fn modifier(shared_list: ListProxy<u32>) -> mproc::Result<()> {
    for i in 0..shared_list.len()? {
        let doubled = shared_list.modify(i, |x: u32| x * 2)?;
        println!("Modifier doubled index {i} to {doubled}");
    }
    Ok(())
}

fn main() -> mproc::Result<()> {
    let manager = Manager::start()?;
    let shared_list = manager.list()?;
    let mut p1 = Process::new(adder, (shared_list.clone(),));
    let mut p2 = Process::new(modifier, (shared_list.clone(),));
    p1.start()?;
    p1.join()?;
    p2.start()?;
    p2.join()?;
    println!("Final list: {:?}", shared_list.to_vec()?);
    manager.shutdown()
}
