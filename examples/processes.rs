//! The classic `Process` lesson: start, join, is_alive, pid and names.
//!
//! Python:
//! ```python
//! def info(title):
//!     print(title)
//!     print('parent process:', os.getppid())
//!     print('process id:', os.getpid())
//! def f(name):
//!     info('function f')
//!     print('hello', name)
//! if __name__ == '__main__':
//!     info('main line')
//!     p = Process(target=f, args=('bob',))
//!     p.start(); p.join()
//! ```

use std::time::Duration;

use mproc::Process;

fn info(title: &str) {
    println!("{title}");
    println!("parent process: {}", std::os::unix::process::parent_id());
    println!("process id: {}", std::process::id());
}

fn f(name: String) {
    info("function f");
    println!("hello {name}");
}

fn worker(seconds: f64) {
    let me = mproc::current_process();
    println!("{} (pid {}) working for {seconds} s", me.name(), me.pid());
    std::thread::sleep(Duration::from_secs_f64(seconds));
}

fn main() -> mproc::Result<()> {
    info("main line");
    let mut p = Process::new(f, ("bob".to_string(),));
    p.start()?;
    p.join()?;

    // Names, pids, is_alive, join, exitcode.
    let mut p1 = Process::new(worker, (0.2,));
    let mut p2 = Process::new(worker, (0.1,));
    p2.set_name("Worker-2");
    let alive = p1.is_alive();
    println!(
        "before start: {} alive={alive} pid={:?}",
        p1.name(),
        p1.pid()
    );
    p1.start()?;
    p2.start()?;
    let alive = p1.is_alive();
    println!("after start: {} alive={alive}", p1.name());
    println!("active children: {}", mproc::active_children().len());
    p1.join()?;
    p2.join()?;
    for p in [&mut p1, &mut p2] {
        let alive = p.is_alive();
        println!(
            "after join: {} alive={alive} exitcode={:?}",
            p.name(),
            p.exitcode()
        );
    }
    Ok(())
}
