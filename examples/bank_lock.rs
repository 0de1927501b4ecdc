//! The classic `Lock` lesson: deposit and withdraw 100 times each from a shared balance.
//! Without a lock, read-modify-write races lose updates and the balance drifts; with one,
//! it ends where it started.
//!
//! Python:
//! ```python
//! def deposit(balance, lock):
//!     for i in range(100):
//!         time.sleep(0.01)
//!         lock.acquire()
//!         balance.value = balance.value + 1
//!         lock.release()
//! def withdraw(balance, lock):
//!     for i in range(100):
//!         time.sleep(0.01)
//!         lock.acquire()
//!         balance.value = balance.value - 1
//!         lock.release()
//! if __name__ == '__main__':
//!     balance = multiprocessing.Value('i', 200)
//!     lock = multiprocessing.Lock()
//!     d = multiprocessing.Process(target=deposit, args=(balance, lock))
//!     w = multiprocessing.Process(target=withdraw, args=(balance, lock))
//!     d.start(); w.start(); d.join(); w.join()
//!     print(balance.value)   # 200
//! ```

use std::time::Duration;

use mproc::{Lock, Process, RawValue};

/// A slow read-modify-write: the pause between read and write is where a racing process
/// slips in when nothing excludes it.
fn change(balance: &RawValue<i32>, by: i32) {
    let v = balance.get();
    std::thread::sleep(Duration::from_micros(200));
    balance.set(v + by);
}

fn unlocked(balance: RawValue<i32>, by: i32) {
    for _ in 0..100 {
        change(&balance, by);
    }
}

fn locked(balance: RawValue<i32>, lock: Lock, by: i32) {
    for _ in 0..100 {
        std::thread::sleep(Duration::from_micros(100));
        let _g = lock.acquire();
        change(&balance, by);
    }
}

fn main() -> mproc::Result<()> {
    let balance = RawValue::new(200i32)?;
    let mut d = Process::new(unlocked, (balance.clone(), 1));
    let mut w = Process::new(unlocked, (balance.clone(), -1));
    d.start()?;
    w.start()?;
    d.join()?;
    w.join()?;
    let drifted = balance.get();
    if drifted == 200 {
        println!("without a lock: 200 (lucky this time: no update was lost)");
    } else {
        println!("without a lock: {drifted} (updates were lost)");
    }

    let balance = RawValue::new(200i32)?;
    let lock = Lock::new()?;
    let mut d = Process::new(locked, (balance.clone(), lock.clone(), 1));
    let mut w = Process::new(locked, (balance.clone(), lock.clone(), -1));
    d.start()?;
    w.start()?;
    d.join()?;
    w.join()?;
    println!("{}", balance.get());
    Ok(())
}
