//! The synchronization lessons: Event, Condition, Semaphore and Barrier across processes.
//!
//! Python (abridged):
//! ```python
//! def setter(e): print('child: setting the event'); e.set()
//! e = Event(); Process(target=setter, args=(e,)).start(); e.wait(); print('main: the event is set')
//!
//! def consumer(cond, item):
//!     with cond:
//!         cond.wait_for(lambda: item.value != 0)
//!         print('consumer: got', item.value)
//! with cond: item.value = 42; cond.notify_all()
//!
//! def worker(sem, ...):
//!     with sem: ...                    # at most 2 inside at once
//!
//! def party(b): return b.wait()        # each party gets a distinct index
//! ```

use std::time::Duration;

use mproc::{Barrier, Condition, Event, Process, Semaphore, Value};

fn setter(e: Event) {
    std::thread::sleep(Duration::from_millis(100));
    println!("child: setting the event");
    e.set();
}

fn consumer(cond: Condition, item: Value<i32>, done: Event) {
    let g = cond.acquire();
    let _g = cond.wait_for(g, || item.get() != 0);
    println!("consumer: got {}", item.get());
    done.set();
}

fn worker(sem: Semaphore, inside: Value<u32>, most: Value<u32>) {
    for _ in 0..20 {
        let _permit = sem.guard();
        let now = {
            let mut g = inside.lock();
            *g += 1;
            *g
        };
        {
            let mut m = most.lock();
            *m = (*m).max(now);
        }
        std::thread::sleep(Duration::from_millis(1));
        *inside.lock() -= 1;
    }
}

fn party(b: Barrier) -> mproc::Result<usize> {
    b.wait()
}

fn main() -> mproc::Result<()> {
    println!("-- Event");
    let e = Event::new()?;
    let mut p = Process::new(setter, (e.clone(),));
    p.start()?;
    println!("main: waiting for the event");
    e.wait();
    println!("main: the event is set");
    p.join()?;

    println!("-- Condition");
    let (cond, item, done) = (Condition::new()?, Value::new(0i32)?, Event::new()?);
    let mut p = Process::new(consumer, (cond.clone(), item.clone(), done.clone()));
    p.start()?;
    std::thread::sleep(Duration::from_millis(100));
    {
        let _g = cond.acquire();
        item.set(42);
        println!("producer: made 42");
        cond.notify_all();
    }
    done.wait();
    p.join()?;

    println!("-- Semaphore");
    let sem = Semaphore::new(2)?;
    let (inside, most) = (Value::new(0u32)?, Value::new(0u32)?);
    let mut ps: Vec<_> = (0..4)
        .map(|_| Process::new(worker, (sem.clone(), inside.clone(), most.clone())))
        .collect();
    for p in &mut ps {
        p.start()?;
    }
    for p in &mut ps {
        p.join()?;
    }
    println!(
        "4 workers, Semaphore(2): at most {} inside at once",
        most.get()
    );

    println!("-- Barrier");
    let b = Barrier::new(3)?;
    let mut ps: Vec<_> = (0..2).map(|_| Process::new(party, (b.clone(),))).collect();
    for p in &mut ps {
        p.start()?;
    }
    let mut indices = vec![b.wait()?];
    for p in ps {
        indices.push(p.result()??);
    }
    indices.sort();
    println!("3 parties passed the barrier with indices {indices:?}");
    Ok(())
}
