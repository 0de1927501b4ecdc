//! The Pool over MPI ranks (cargo feature `mpi`): real `mpirun` jobs of this very test
//! binary, checked against a local `Pool` running the same programs.
//!
//! `harness = false`: `main` is ours. Started by `cargo test`, it runs each case as
//! `timeout 60 mpirun -np N <this binary>` with `MPROC_MPI_TEST=<program>` in the
//! environment; started by `mpirun` (that variable set), it *is* the MPI program: every rank
//! calls `mproc::mpi::init()`, rank 0 runs the program on `world.pool()` and prints what it
//! got. Set `OMPI_MCA_btl=tcp,self` to force TCP for every case; the TCP case forces it
//! anyway. Needs `mpirun` (OpenMPI) on the PATH.

mod util;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use mproc::{Error, Pool};

const ROLE: &str = "MPROC_MPI_TEST";
/// Set on every job this run starts, to this process's pid: the stray check looks only at
/// processes carrying it, so another MPI run on the machine (another checkout's tests, a
/// user's job) is never mistaken for a leak of ours. An environment variable, not a
/// process tree or group: a leaked rank is reparented when its `mpirun` exits, and
/// launchers may move ranks to process groups of their own, but the environment stays.
const OWNER: &str = "MPROC_MPI_TEST_OWNER";

fn main() {
    match std::env::var(ROLE) {
        Ok(program) => std::process::exit(mpi_program(&program)),
        Err(_) => run_cases(),
    }
}

// ---- the programs (the seeds' Pool programs, and the failure cases) ----

fn square(n: i64) -> i64 {
    n * n
}

fn multiply(a: i64, b: i64) -> i64 {
    a * b
}

fn fail_on_3(n: i64) -> i64 {
    if n == 3 {
        panic!("boom on {n}");
    }
    n
}

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Logs at info (forwarded at rank 0's level) and at debug (not), then returns `n`.
fn logs(n: i64) -> i64 {
    log::info!("task {n} on a worker rank");
    log::debug!("hidden {n}");
    n
}

fn abort_on_5(n: i64) -> i64 {
    if n == 5 {
        std::process::abort();
    }
    nap(20);
    n
}

fn calc_partial_pi(rank: u64, nprocs: u64, nsteps: u64, dx: f64) -> f64 {
    let mut partial = 0.0;
    let mut i = rank;
    while i < nsteps {
        let x = (i as f64 + 0.5) * dx;
        partial += 4.0 / (1.0 + x * x);
        i += nprocs;
    }
    partial * dx
}

/// The seeds' Pool programs and every Pool method; one line each. The same lines must come
/// from a local pool and from an MPI pool.
fn seeds(pool: &Pool) -> mproc::Result<Vec<String>> {
    let mut out = Vec::new();
    out.push(format!(
        "map: {:?}",
        pool.map(square, [3, 4, 5, 6, 6, 7, 87, 8, 8])?
    ));
    let pairs = vec![(1, 2), (3, 4), (5, 6), (7, 8)];
    out.push(format!("starmap: {:?}", pool.starmap(multiply, pairs)?));
    let v = pool.map_chunked(square, 0..200, 1)?;
    out.push(format!(
        "map_chunked 1: {} items, sum {}",
        v.len(),
        v.iter().sum::<i64>()
    ));
    let v: Vec<i64> = pool.imap(square, 0..30).collect::<mproc::Result<_>>()?;
    out.push(format!("imap: {v:?}"));
    let firsts: Vec<i64> = pool
        .imap(square, 0..)
        .take(5)
        .collect::<mproc::Result<_>>()?;
    out.push(format!("imap of an endless input: {firsts:?}"));
    let mut v: Vec<i64> = pool
        .imap_unordered(square, 0..30)
        .collect::<mproc::Result<_>>()?;
    v.sort();
    out.push(format!("imap_unordered, sorted: {v:?}"));
    out.push(format!("apply: {}", pool.apply(multiply, (6, 7))?));
    out.push(format!(
        "apply_async: {}",
        pool.apply_async(square, (12,)).get()?
    ));
    // The async form: an AsyncResult is a future, whatever kind of worker runs it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(mproc::Error::Io)?;
    let awaited = rt.block_on(async { pool.apply_async(square, (11,)).await })?;
    out.push(format!("apply_async(..).await: {awaited}"));
    let a = pool.map_async(square, 0..10);
    let b = pool.starmap_async(multiply, (0..10).map(|i| (i, i + 1)));
    out.push(format!("map_async: {:?}", a.get()?));
    out.push(format!("starmap_async: {:?}", b.get()?));
    match pool.map(fail_on_3, 0..6) {
        Err(Error::TaskPanicked { message, .. }) => {
            out.push(format!("map, a task panics: {message}"))
        }
        other => out.push(format!("map, a task panics: UNEXPECTED {other:?}")),
    }
    let each: Vec<String> = pool
        .imap(fail_on_3, 0..6)
        .map(|r| match r {
            Ok(v) => v.to_string(),
            Err(e) => format!("<{e}>"),
        })
        .collect();
    out.push(format!("imap, a task panics: {}", each.join(" ")));
    out.push(format!(
        "and the pool goes on: {:?}",
        pool.map(square, 0..5)?
    ));
    let nsteps = 2_000_000u64;
    let dx = 1.0 / nsteps as f64;
    let parts = pool.starmap(calc_partial_pi, (0..8).map(|r| (r, 8, nsteps, dx)))?;
    out.push(format!("pi = {:.10}", parts.iter().sum::<f64>()));
    pool.close();
    pool.join();
    out.push(format!(
        "after close: {}",
        pool.apply(square, (2,))
            .map_err(|e| e.to_string())
            .unwrap_err()
    ));
    Ok(out)
}

/// The MPI side: every rank runs this; only rank 0 gets past `init`.
fn mpi_program(program: &str) -> i32 {
    let world = match mproc::mpi::init() {
        Ok(w) => w,
        Err(e) => {
            println!("init: {e:?}");
            return 3;
        }
    };
    let run = || -> mproc::Result<()> {
        match program {
            "seeds" => {
                let pool = world.pool()?;
                println!("workers: {}", pool.processes());
                for line in seeds(&pool)? {
                    println!("{line}");
                }
            }
            "timeout" => {
                let pool = world
                    .pool_builder()
                    .task_timeout(Duration::from_millis(300))
                    .build()?;
                let t = Instant::now();
                let slow = pool.apply_async(nap, (20_000,));
                let quick: Vec<u64> = pool.map_chunked(nap, vec![10; 20], 1)?;
                println!("quick tasks: {}", quick.len());
                match slow.get() {
                    Err(Error::TaskTimedOut { timeout }) => println!(
                        "slow task: timed out after {timeout:?}, reported in {} ms",
                        t.elapsed().as_millis()
                    ),
                    other => println!("slow task: UNEXPECTED {other:?}"),
                }
                println!("and the pool goes on: {:?}", pool.map(square, 0..5)?);
            }
            "die" => {
                let pool = world.pool()?;
                println!("starting");
                let r = pool.map_chunked(abort_on_5, 0..40, 1);
                // Only when the launcher lets the job outlive the rank (recovery on).
                println!("UNREACHABLE: the job went on after a rank died: {r:?}");
                // The other ranks still serve: the pool goes on without the dead one.
                println!("and the pool goes on: {:?}", pool.map(square, 0..5)?);
            }
            "panic0" => {
                let pool = world.pool()?;
                let _pending = pool.map_async(nap, vec![50; 20]);
                panic!("rank 0 panics with work in flight");
            }
            "log" => {
                mproc::log_to_stderr(log::LevelFilter::Info)?;
                let pool = world.pool()?;
                println!("logged: {:?}", pool.map_chunked(logs, 0..8, 1)?);
                log::info!("rank 0 done");
            }
            "alone" => match world.pool() {
                Err(e) => println!("pool of one rank: {e}"),
                Ok(_) => println!("pool of one rank: UNEXPECTED Ok"),
            },
            "two" => {
                let _a = world.pool()?;
                match world.pool() {
                    Err(e) => println!("second pool: {e}"),
                    Ok(_) => println!("second pool: UNEXPECTED Ok"),
                }
            }
            other => println!("unknown program {other}"),
        }
        Ok(())
    };
    match run() {
        Ok(()) => 0,
        Err(e) => {
            println!("error: {e:?}");
            2
        }
    }
}

// ---- the test runner ----

/// An mpirun job of this binary running `program`.
struct Job {
    out: Output,
    elapsed: Duration,
}

impl Job {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
    fn code(&self) -> Option<i32> {
        self.out.status.code()
    }
    fn explain(&self) -> String {
        format!(
            "exit {:?} after {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code(),
            self.elapsed,
            self.stdout(),
            self.stderr()
        )
    }
}

fn mpirun(program: &str, np: &[(usize, &std::path::Path)], tcp: bool) -> Job {
    mpirun_with(program, np, tcp, &[])
}

fn mpirun_with(
    program: &str,
    np: &[(usize, &std::path::Path)],
    tcp: bool,
    options: &[&str],
) -> Job {
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "5", "60", "mpirun"]).args(options);
    for (i, (n, exe)) in np.iter().enumerate() {
        if i > 0 {
            cmd.arg(":");
        }
        cmd.arg("-np").arg(n.to_string()).arg(exe);
    }
    // What CI and containers need: root, and more ranks than cores.
    cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_rmaps_base_oversubscribe", "1")
        .env(OWNER, std::process::id().to_string())
        .env(ROLE, program);
    if tcp {
        cmd.env("OMPI_MCA_btl", "tcp,self");
    }
    let t = Instant::now();
    let out = cmd
        .output()
        .expect("cannot run `timeout mpirun`: is OpenMPI installed?");
    Job {
        out,
        elapsed: t.elapsed(),
    }
}

fn me() -> std::path::PathBuf {
    std::env::current_exe().expect("the test binary's path")
}

/// Processes still running one of this run's MPI programs (leaks after a job ended).
fn strays() -> Vec<u32> {
    let marker = format!("{OWNER}={}", std::process::id());
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if util::proc_state(pid) == Some('Z') {
            continue;
        }
        if let Ok(env) = std::fs::read(entry.path().join("environ")) {
            if env.split(|&b| b == 0).any(|kv| kv == marker.as_bytes()) {
                found.push(pid);
            }
        }
    }
    found
}

fn no_strays() -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = strays();
        if s.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("processes left behind by the job: {s:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn expect(cond: bool, what: &str, job: &Job) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(format!("{what}\n{}", job.explain()))
    }
}

/// The seeds on an MPI pool print what they print on a local pool.
fn seeds_case(np: usize, tcp: bool) -> Result<(), String> {
    let local = Pool::new(2).map_err(|e| e.to_string())?;
    let mut expected = vec![format!("workers: {}", np - 1)];
    expected.extend(seeds(&local).map_err(|e| e.to_string())?);
    drop(local);
    let job = mpirun("seeds", &[(np, &me())], tcp);
    let got: Vec<String> = job.stdout().lines().map(str::to_owned).collect();
    expect(job.code() == Some(0), "the job failed", &job)?;
    if got != expected {
        let diff: Vec<String> = expected
            .iter()
            .zip(got.iter().chain(std::iter::repeat(&String::new())))
            .filter(|(e, g)| e != g)
            .map(|(e, g)| format!("  local: {e}\n  mpi:   {g}"))
            .collect();
        return Err(format!(
            "MPI results differ from the local pool's:\n{}\n{}",
            diff.join("\n"),
            job.explain()
        ));
    }
    no_strays()
}

/// Records logged in tasks on worker ranks reach rank 0's logger (here `log_to_stderr`),
/// each once, at rank 0's level, tagged with the rank, before the results come back.
fn log_case() -> Result<(), String> {
    let job = mpirun("log", &[(3, &me())], false);
    expect(job.code() == Some(0), "the job failed", &job)?;
    expect(
        job.stdout().contains("logged: [0, 1, 2, 3, 4, 5, 6, 7]"),
        "the tasks did not run",
        &job,
    )?;
    let err = job.stderr();
    for n in 0..8 {
        let line = format!("] task {n} on a worker rank");
        let found: Vec<&str> = err.lines().filter(|l| l.ends_with(&line)).collect();
        expect(
            found.len() == 1
                && (found[0].starts_with("[INFO/Rank-1]") || found[0].starts_with("[INFO/Rank-2]")),
            &format!(
                "task {n}'s record did not reach rank 0 once, tagged with its rank: {found:?}"
            ),
            &job,
        )?;
    }
    expect(
        !err.contains("hidden"),
        "a debug record passed rank 0's info level",
        &job,
    )?;
    expect(
        err.contains("[INFO/MainProcess] rank 0 done"),
        "rank 0's own record",
        &job,
    )?;
    no_strays()
}

fn timeout_case() -> Result<(), String> {
    let job = mpirun("timeout", &[(3, &me())], false);
    let out = job.stdout();
    expect(job.code() == Some(0), "the job failed", &job)?;
    expect(out.contains("quick tasks: 20"), "quick tasks missing", &job)?;
    let ms: Option<u64> = out
        .lines()
        .find_map(|l| l.strip_prefix("slow task: timed out after 300ms, reported in "))
        .and_then(|l| l.strip_suffix(" ms"))
        .and_then(|n| n.parse().ok());
    expect(
        ms.is_some_and(|ms| (300..5_000).contains(&ms)),
        "the slow task did not time out on time",
        &job,
    )?;
    expect(
        out.contains("and the pool goes on: [0, 1, 4, 9, 16]"),
        "the pool did not go on",
        &job,
    )?;
    // The job ended although a rank was still inside the 20 s task.
    expect(
        job.elapsed < Duration::from_secs(15),
        "the job waited for the overdue task",
        &job,
    )?;
    no_strays()
}

fn die_case(tcp: bool) -> Result<(), String> {
    let job = mpirun("die", &[(3, &me())], tcp);
    expect(
        // Not 0, and not `timeout`'s own codes (124, or 137 after its KILL).
        matches!(job.code(), Some(c) if c != 0 && c != 124 && c != 137),
        "a dead rank did not end the job with an error",
        &job,
    )?;
    expect(
        !job.stdout().contains("UNREACHABLE"),
        "the job went on",
        &job,
    )?;
    expect(
        job.elapsed < Duration::from_secs(20),
        "the job took too long to end",
        &job,
    )?;
    no_strays()
}

/// With OpenMPI's recovery on, the job outlives a dead rank: rank 0's pool must notice the
/// silence itself, fail the task the rank held, and end the job at the end (it aborts:
/// MPI cannot finalize without the lost rank). Whether the other ranks still communicate
/// is up to OpenMPI: with 4.1.4 they did not, and the pool failed their tasks the same way.
fn die_recovery_case() -> Result<(), String> {
    let job = mpirun_with(
        "die",
        &[(3, &me())],
        false,
        &["--mca", "orte_enable_recovery", "1"],
    );
    expect(
        job.stdout()
            .contains("has been silent for 10s: it is taken for dead"),
        "the dead rank's task did not fail",
        &job,
    )?;
    // mpirun's own exit code is 0 with recovery on, even after MPI_Abort: read the message.
    expect(
        job.stderr().contains("aborting it instead of finalizing"),
        "rank 0 did not end the job",
        &job,
    )?;
    expect(
        job.elapsed < Duration::from_secs(40),
        "the job took too long to end",
        &job,
    )?;
    no_strays()
}

fn mismatch_case() -> Result<(), String> {
    // The same program, one byte longer: another build as far as anyone can tell.
    let dir = std::env::temp_dir().join(format!("mproc-mpi-mismatch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let other = dir.join("other");
    let mut bytes = std::fs::read(me()).map_err(|e| e.to_string())?;
    bytes.push(0);
    std::fs::write(&other, bytes).map_err(|e| e.to_string())?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    let job = mpirun("seeds", &[(1, &me()), (2, &other)], false);
    let _ = std::fs::remove_dir_all(&dir);
    expect(
        job.stdout().contains("init: BinaryMismatch") && job.code() == Some(3),
        "a different build was not refused",
        &job,
    )?;
    no_strays()
}

fn panic0_case() -> Result<(), String> {
    let job = mpirun("panic0", &[(3, &me())], false);
    expect(
        job.code() == Some(101),
        "a panic on rank 0 did not end the job with its code",
        &job,
    )?;
    no_strays()
}

fn alone_case() -> Result<(), String> {
    let job = mpirun("alone", &[(1, &me())], false);
    expect(
        job.code() == Some(0)
            && job
                .stdout()
                .contains("pool of one rank: an MPI pool needs worker ranks"),
        "a job of one rank did not refuse a pool",
        &job,
    )?;
    no_strays()
}

fn two_pools_case() -> Result<(), String> {
    let job = mpirun("two", &[(2, &me())], false);
    expect(
        job.code() == Some(0)
            && job
                .stdout()
                .contains("second pool: the MPI ranks already serve a pool"),
        "a second pool was not refused",
        &job,
    )?;
    no_strays()
}

/// `examples/mpi_pi`, if it was built (`cargo build --features mpi --example mpi_pi`).
fn mpi_pi_case() -> Result<(), String> {
    let exe = me()
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("examples").join("mpi_pi"));
    let Some(exe) = exe.filter(|e| e.exists()) else {
        println!("  (skipped: build it with `cargo build --features mpi --example mpi_pi`)");
        return Ok(());
    };
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "5", "60", "mpirun", "-np", "3"])
        .arg(&exe)
        .arg("2000000")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_rmaps_base_oversubscribe", "1")
        .env(OWNER, std::process::id().to_string())
        .env("OMPI_MCA_btl", "tcp,self");
    let t = Instant::now();
    let out = cmd.output().map_err(|e| e.to_string())?;
    let job = Job {
        out,
        elapsed: t.elapsed(),
    };
    expect(
        job.code() == Some(0) && job.stdout().contains("pi = 3.14159265"),
        "mpi_pi did not print pi",
        &job,
    )?;
    no_strays()
}

/// One test: `Err` says what went wrong.
type Case = fn() -> Result<(), String>;

fn run_cases() {
    let _w = util::watchdog("mpi tests", 600);
    if Command::new("mpirun").arg("--version").output().is_err() {
        eprintln!("mpirun is missing: install OpenMPI (see .ci/run)");
        std::process::exit(1);
    }
    let tcp_everywhere = std::env::var("OMPI_MCA_btl").is_ok_and(|b| b.contains("tcp"));
    let cases: Vec<(&str, Case)> = vec![
        ("seeds on 3 ranks, shared memory", || seeds_case(3, false)),
        ("seeds on 3 ranks, TCP", || seeds_case(3, true)),
        ("seeds on 2 ranks (one worker)", || seeds_case(2, false)),
        ("seeds on 4 ranks, oversubscribed", || seeds_case(4, false)),
        ("worker ranks' log records reach rank 0's logger", log_case),
        ("task_timeout", timeout_case),
        ("a killed rank ends the job", || die_case(false)),
        ("a killed rank ends the job, TCP", || die_case(true)),
        (
            "a killed rank, recovery on: its task fails",
            die_recovery_case,
        ),
        ("a different build is refused", mismatch_case),
        ("a panic on rank 0 ends the job", panic0_case),
        ("a job of one rank has no pool", alone_case),
        ("one pool at a time", two_pools_case),
        ("examples/mpi_pi", mpi_pi_case),
    ];
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    // A process of another run, as if another checkout's tests ran beside these: the
    // stray checks must not take it for a leak of ours.
    let mut decoy = Command::new("sleep")
        .arg("600")
        .env(ROLE, "seeds")
        .env(OWNER, "1")
        .spawn()
        .expect("cannot run `sleep`");
    let (mut passed, mut failed) = (0, 0);
    for (name, case) in cases {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        println!(
            "test {name}{} ...",
            if tcp_everywhere { " (TCP)" } else { "" }
        );
        let t = Instant::now();
        match case() {
            Ok(()) => {
                passed += 1;
                println!("  ok ({:.1} s)", t.elapsed().as_secs_f64());
            }
            Err(e) => {
                failed += 1;
                println!("  FAILED: {e}");
            }
        }
    }
    let _ = decoy.kill();
    let _ = decoy.wait();
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}
