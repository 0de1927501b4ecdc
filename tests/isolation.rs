//! Isolation: every limit and sandbox option, each with a task that tries to break it (and
//! is stopped, or refused) and a control showing the same task succeeds without it; the
//! pool goes on after a limit stops a worker; the post-mortem of a dead worker; bad input.

mod util;

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mproc::{Error, Limit, Limits, Pool, Process, Sandbox, get_context};
use util::*;

const MIB: u64 = 1 << 20;

/// Allocates `mib` MiB and touches every page; returns how many bytes it holds.
fn allocate(mib: u64) -> u64 {
    let v = vec![1u8; (mib * MIB) as usize];
    v.iter().step_by(4096).map(|&b| b as u64).sum::<u64>() * 4096
}

/// Allocates `mib` MiB, touches it, keeps it; returns this worker's pid.
fn grow_and_pid(mib: u64) -> u32 {
    if mib > 0 {
        let v = vec![1u8; (mib * MIB) as usize];
        std::hint::black_box(&v);
        std::mem::forget(v);
    }
    std::process::id()
}

fn abort_after_touching(mib: u64) {
    let v = vec![1u8; (mib * MIB) as usize];
    std::hint::black_box(&v);
    std::process::abort();
}

/// Burns CPU for `ms` milliseconds of this process's CPU time.
fn spin_cpu(ms: u64) -> u64 {
    let start = cpu_now();
    let mut x = 0u64;
    while cpu_now() - start < Duration::from_millis(ms) {
        for i in 0..10_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
    }
    ms
}

fn cpu_now() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Writes `bytes` bytes to `path`.
fn write_file(path: PathBuf, bytes: u64) -> Result<u64, String> {
    let mut f = std::fs::File::create(&path).map_err(|e| format!("{:?}", e.kind()))?;
    f.write_all(&vec![7u8; bytes as usize])
        .map_err(|e| format!("{:?}", e.kind()))?;
    Ok(bytes)
}

/// Opens `/dev/null` `n` times, keeping them open.
fn open_many(n: usize) -> Result<usize, String> {
    let mut files = Vec::new();
    for _ in 0..n {
        files.push(std::fs::File::open("/dev/null").map_err(|e| e.to_string())?);
    }
    Ok(files.len())
}

/// Tries to lift the open-files limit to 256 (a privileged task could, but for the filter).
fn raise_open_files() -> Result<(), String> {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let to = Rlimit {
        current: Some(256),
        maximum: Some(256),
    };
    setrlimit(Resource::Nofile, to).map_err(|e| format!("{:?}", std::io::Error::from(e).kind()))
}

/// Starts `/bin/true` (a fork and an exec).
fn run_true() -> Result<bool, String> {
    std::process::Command::new("/bin/true")
        .status()
        .map(|s| s.success())
        .map_err(|e| format!("{:?}", e.kind()))
}

/// Starts a thread (threads stay allowed under `processes(0)`).
fn start_thread() -> u32 {
    std::thread::spawn(|| 7).join().unwrap()
}

/// Opens a TCP listener on the loopback (a socket of the network).
fn listen_tcp() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .map(|l| l.local_addr().unwrap().port())
        .map_err(|e| format!("{:?}", e.kind()))
}

/// A pipe of mproc's, made and used inside the task.
fn own_pipe(v: u64) -> u64 {
    let (a, b) = mproc::pipe::<u64>().unwrap();
    a.send(&v).unwrap();
    b.recv().unwrap()
}

fn read_status() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok()
}

/// VmData of this worker, in bytes.
fn vm_data() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmData:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kb * 1024
}

fn sqr(x: u64) -> u64 {
    x * x
}

fn pool_with(limits: Limits, sandbox: Sandbox) -> Pool {
    Pool::builder()
        .processes(1)
        .limits(limits)
        .sandbox(sandbox)
        .build()
        .unwrap()
}

fn scratch_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mproc-isolation-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn memory_limit_fails_the_task_and_the_pool_goes_on() {
    let _s = shared();
    let _w = watchdog("memory_limit", 180);
    for m in METHODS {
        let pool = Pool::builder()
            .processes(1)
            .start_method(m)
            .limits(Limits::new().memory(64 * MIB))
            .build()
            .unwrap();
        let r = pool.apply(allocate, (256,));
        assert!(
            matches!(
                r,
                Err(Error::LimitExceeded {
                    limit: Limit::Memory(b)
                }) if b == 64 * MIB
            ),
            "{m:?}: {r:?}"
        );
        // A fresh worker takes its place, under the same limit.
        assert_eq!(pool.apply(allocate, (16,)).unwrap(), 16 * MIB, "{m:?}");
        // An abort that is not an allocation failure stays a death, not a limit.
        let r = pool.apply(abort_after_touching, (1,));
        assert!(
            matches!(r, Err(Error::WorkerDied { exitcode: -6, .. })),
            "{m:?}: {r:?}"
        );
        assert_eq!(pool.map(sqr, 0..50).unwrap().len(), 50);
    }
    // Control: the same task without the limit.
    let pool = Pool::builder().processes(1).build().unwrap();
    assert_eq!(pool.apply(allocate, (256,)).unwrap(), 256 * MIB);
}

// The memory floor: mproc's own needs in a worker (its set-up is what the limit counts
// from; then per-task buffers, the answer, the pool's traffic) fit in 16 MiB.
#[test]
fn mprocs_own_work_fits_in_a_16_mib_limit() {
    let _s = shared();
    let _w = watchdog("memory_floor", 180);
    for m in METHODS {
        let pool = Pool::builder()
            .processes(2)
            .start_method(m)
            .limits(Limits::new().memory(16 * MIB))
            .build()
            .unwrap();
        for i in 0..200 {
            assert_eq!(pool.apply(sqr, (i,)).unwrap(), i * i);
        }
        let squares = pool.map(sqr, 0..20_000).unwrap();
        assert_eq!(squares.len(), 20_000);
        let ordered: Vec<u64> = pool.imap(sqr, 0..2_000).map(|r| r.unwrap()).collect();
        assert_eq!(ordered.len(), 2_000);
        // A task's own 4 MiB fits as well.
        assert_eq!(pool.apply(allocate, (4,)).unwrap(), 4 * MIB);
        eprintln!(
            "{m:?}: a worker's VmData while serving: {} KiB",
            pool.apply(vm_data, ()).unwrap() / 1024
        );
    }
}

#[test]
fn cpu_time_is_per_task() {
    let _s = shared();
    let _w = watchdog("cpu_time", 180);
    let limit = Duration::from_millis(400);
    let pool = pool_with(Limits::new().cpu_time(limit), Sandbox::new());
    // Five tasks of 150 ms each on the one worker: 750 ms in all, each under its limit.
    for _ in 0..5 {
        assert_eq!(pool.apply(spin_cpu, (150,)).unwrap(), 150);
    }
    // Sleeping is not CPU time.
    let slept = pool.apply(
        |ms: u64| {
            std::thread::sleep(Duration::from_millis(ms));
            ms
        },
        (600,),
    );
    assert_eq!(slept.unwrap(), 600);
    let started = Instant::now();
    let r = pool.apply(spin_cpu, (5_000,));
    assert!(
        matches!(r, Err(Error::LimitExceeded { limit: Limit::CpuTime(d) }) if d == limit),
        "{r:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(pool.apply(spin_cpu, (10,)).unwrap(), 10);
    // Control: no limit.
    let pool = Pool::builder().processes(1).build().unwrap();
    assert_eq!(pool.apply(spin_cpu, (1_000,)).unwrap(), 1_000);
}

#[test]
fn file_size_limit_stops_the_worker() {
    let _s = shared();
    let _w = watchdog("file_size", 120);
    let dir = scratch_dir("fsize");
    let pool = pool_with(Limits::new().file_size(4096), Sandbox::new());
    assert_eq!(
        pool.apply(write_file, (dir.join("small"), 1000)).unwrap(),
        Ok(1000)
    );
    let r = pool.apply(write_file, (dir.join("big"), 64 * 1024));
    assert!(
        matches!(
            r,
            Err(Error::LimitExceeded {
                limit: Limit::FileSize(4096)
            })
        ),
        "{r:?}"
    );
    assert_eq!(pool.apply(sqr, (3,)).unwrap(), 9);
    // Control.
    let pool = Pool::builder().processes(1).build().unwrap();
    let r = pool
        .apply(write_file, (dir.join("big"), 64 * 1024))
        .unwrap();
    assert_eq!(r, Ok(64 * 1024));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn open_files_is_an_error_inside_the_task() {
    let _s = shared();
    let _w = watchdog("open_files", 120);
    let pool = pool_with(Limits::new().open_files(64), Sandbox::new());
    let r = pool.apply(open_many, (100,)).unwrap();
    assert!(
        matches!(&r, Err(m) if m.contains("Too many open files")),
        "{r:?}"
    );
    assert_eq!(pool.apply(open_many, (10,)).unwrap(), Ok(10));
    // The task cannot lift it (as root it could, but for the filter).
    let r = pool.apply(raise_open_files, ()).unwrap();
    assert_eq!(r, Err("PermissionDenied".to_string()));
    let pool = Pool::builder().processes(1).build().unwrap();
    assert_eq!(pool.apply(open_many, (100,)).unwrap(), Ok(100));
    assert_eq!(pool.apply(raise_open_files, ()).unwrap(), Ok(()));
}

#[test]
fn processes_zero_refuses_children_not_threads() {
    let _s = shared();
    let _w = watchdog("processes", 120);
    let pool = pool_with(Limits::new().processes(0), Sandbox::new());
    let r = pool.apply(run_true, ()).unwrap();
    assert!(r.is_err(), "{r:?}");
    assert_eq!(pool.apply(start_thread, ()).unwrap(), 7);
    let pool = Pool::builder().processes(1).build().unwrap();
    assert_eq!(pool.apply(run_true, ()).unwrap(), Ok(true));
    // A count the kernel cannot keep per task is refused, not ignored.
    let r = Pool::builder()
        .processes(1)
        .limits(Limits::new().processes(2))
        .build();
    assert!(matches!(&r, Err(Error::Unsupported(m)) if m.contains("processes(2)")));
}

#[test]
fn no_network_refuses_sockets_but_not_mprocs_channels() {
    let _s = shared();
    let _w = watchdog("no_network", 120);
    for m in METHODS {
        let pool = Pool::builder()
            .processes(1)
            .start_method(m)
            .sandbox(Sandbox::new().no_network())
            .build()
            .unwrap();
        let r = pool.apply(listen_tcp, ()).unwrap();
        assert_eq!(r, Err("PermissionDenied".to_string()), "{m:?}");
        assert_eq!(pool.apply(own_pipe, (5,)).unwrap(), 5, "{m:?}");
        assert_eq!(pool.map(sqr, 0..100).unwrap().len(), 100);
    }
    let pool = Pool::builder().processes(1).build().unwrap();
    assert!(pool.apply(listen_tcp, ()).unwrap().is_ok());
}

#[test]
fn read_only_refuses_writes_except_under_writable() {
    let _s = shared();
    let _w = watchdog("read_only", 120);
    let dir = scratch_dir("ro");
    let open = scratch_dir("rw");
    for m in METHODS {
        let pool = Pool::builder()
            .processes(1)
            .start_method(m)
            .sandbox(Sandbox::new().read_only().writable(open.clone()))
            .build()
            .unwrap();
        let r = pool.apply(write_file, (dir.join("f"), 10)).unwrap();
        assert_eq!(r, Err("PermissionDenied".to_string()), "{m:?}");
        let r = pool.apply(write_file, (open.join("f"), 10)).unwrap();
        assert_eq!(r, Ok(10), "{m:?}");
        assert!(pool.apply(read_status, ()).unwrap());
        assert_eq!(pool.map(sqr, 0..100).unwrap().len(), 100);
        // A process too.
        let mut p = get_context(m).process(write_file, (dir.join("g"), 10));
        p.set_sandbox(Sandbox::new().read_only());
        p.start().unwrap();
        assert_eq!(p.result().unwrap(), Err("PermissionDenied".to_string()));
    }
    let pool = Pool::builder().processes(1).build().unwrap();
    assert_eq!(pool.apply(write_file, (dir.join("f"), 10)).unwrap(), Ok(10));
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(open);
}

#[test]
fn no_exec_refuses_execve() {
    let _s = shared();
    let _w = watchdog("no_exec", 120);
    let pool = pool_with(Limits::new(), Sandbox::new().no_exec());
    let r = pool.apply(run_true, ()).unwrap();
    assert_eq!(r, Err("PermissionDenied".to_string()));
    let pool = Pool::builder().processes(1).build().unwrap();
    assert_eq!(pool.apply(run_true, ()).unwrap(), Ok(true));
}

#[test]
fn max_worker_memory_replaces_a_grown_worker() {
    let _s = shared();
    let _w = watchdog("max_worker_memory", 120);
    let pool = Pool::builder()
        .processes(1)
        .start_method(mproc::StartMethod::Spawn)
        .max_worker_memory(100 * MIB)
        .build()
        .unwrap();
    let first = pool.apply(grow_and_pid, (0,)).unwrap();
    assert_eq!(pool.apply(grow_and_pid, (0,)).unwrap(), first);
    // This one grows past the bound: it answers (no task fails), then is replaced.
    assert_eq!(pool.apply(grow_and_pid, (150,)).unwrap(), first);
    let next = pool.apply(grow_and_pid, (0,)).unwrap();
    assert_ne!(next, first);
    // Tasks queued behind it all run.
    let r: Vec<u32> = pool.map(grow_and_pid, vec![150, 0, 0, 150, 0]).unwrap();
    assert_eq!(r.len(), 5);
    // Control: without the bound the worker stays.
    let pool = Pool::builder()
        .processes(1)
        .start_method(mproc::StartMethod::Spawn)
        .build()
        .unwrap();
    let first = pool.apply(grow_and_pid, (150,)).unwrap();
    assert_eq!(pool.apply(grow_and_pid, (0,)).unwrap(), first);
}

#[test]
fn a_dead_worker_reports_its_peak_memory() {
    let _s = shared();
    let _w = watchdog("peak_rss", 120);
    let pool = get_context(mproc::StartMethod::Spawn).pool(1).unwrap();
    let r = pool.apply(abort_after_touching, (64,));
    assert!(
        matches!(r, Err(Error::WorkerDied { exitcode: -6, peak_rss }) if peak_rss >= 64 * MIB),
        "{r:?}"
    );
}

#[test]
fn bad_input_is_refused_at_build() {
    let r = Pool::builder().limits(Limits::new().memory(0)).build();
    assert!(matches!(r, Err(Error::ValueError(_))), "{r:?}");
    let r = Pool::builder()
        .limits(Limits::new().cpu_time(Duration::ZERO))
        .build();
    assert!(matches!(r, Err(Error::ValueError(_))), "{r:?}");
    let r = Pool::builder()
        .sandbox(Sandbox::new().writable("/nonexistent/mproc-isolation"))
        .build();
    assert!(
        matches!(&r, Err(Error::ValueError(m)) if m.contains("/nonexistent/mproc-isolation")),
        "{r:?}"
    );
    let r = Pool::builder().max_worker_memory(0).build();
    assert!(matches!(r, Err(Error::ValueError(_))), "{r:?}");
    let mut p = Process::<u64>::new(sqr, (2,));
    p.set_limits(Limits::new().memory(0));
    assert!(matches!(p.start(), Err(Error::ValueError(_))));
}

#[test]
fn a_process_gets_limits_and_a_sandbox_too() {
    let _s = shared();
    let _w = watchdog("process_isolation", 120);
    for m in METHODS {
        let mut p = Process::<u64>::new(spin_cpu, (10_000,));
        p.set_start_method(m);
        p.set_limits(Limits::new().cpu_time(Duration::from_millis(300)));
        p.start().unwrap();
        let r = p.result();
        assert!(
            matches!(
                r,
                Err(Error::LimitExceeded {
                    limit: Limit::CpuTime(_)
                })
            ),
            "{m:?}: {r:?}"
        );
        let mut p = Process::<u64>::new(allocate, (256,));
        p.set_start_method(m);
        p.set_limits(Limits::new().memory(64 * MIB));
        p.start().unwrap();
        let r = p.result();
        assert!(
            matches!(
                r,
                Err(Error::LimitExceeded {
                    limit: Limit::Memory(_)
                })
            ),
            "{m:?}: {r:?}"
        );
        let mut p = Process::<Result<u16, String>>::new(listen_tcp, ());
        p.set_start_method(m);
        p.set_sandbox(Sandbox::new().no_network());
        p.start().unwrap();
        assert_eq!(p.result().unwrap(), Err("PermissionDenied".to_string()));
        // Control.
        let mut p = Process::<u64>::new(allocate, (256,));
        p.set_start_method(m);
        p.start().unwrap();
        assert_eq!(p.result().unwrap(), 256 * MIB);
    }
}
