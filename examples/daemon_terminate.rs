//! Daemons and terminate(): a process state before start, while running, after SIGTERM.
//!
//! Python (from the `multiprocessing` docs):
//! ```python
//! p = multiprocessing.Process(target=time.sleep, args=(1000,))
//! print(p, p.is_alive())      # <Process ... initial> False
//! p.start()
//! print(p, p.is_alive())      # <Process ... started> True
//! p.terminate()
//! time.sleep(0.1)
//! print(p, p.is_alive())      # <Process ... stopped exitcode=-SIGTERM> False
//! p.exitcode == -signal.SIGTERM   # True
//! ```

use std::time::Duration;

use mproc::Process;

fn sleep(seconds: u64) {
    std::thread::sleep(Duration::from_secs(seconds));
}

fn main() -> mproc::Result<()> {
    let mut p = Process::new(sleep, (1000,));
    let alive = p.is_alive();
    println!("{p} {alive}");
    p.start()?;
    let alive = p.is_alive();
    println!("{p} {alive}");
    p.terminate()?;
    std::thread::sleep(Duration::from_millis(100));
    let alive = p.is_alive();
    println!("{p} {alive}");
    println!("{}", p.exitcode() == Some(-15));

    // A daemon child is terminated when its parent exits instead of being waited for:
    // this program ends at once although the daemon would sleep for 1000 s.
    let mut d = Process::new(sleep, (1000,));
    d.set_daemon(true);
    d.start()?;
    println!("daemon {} started; exiting without joining it", d.name());
    Ok(())
}
