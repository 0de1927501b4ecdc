//! The Pool's workers as MPI ranks (cargo feature `mpi`): the same [`Pool`]
//! across hosts, launched by `mpirun`, `srun` or a hostfile.
//!
//! **Roles.** Every rank runs the same executable and calls [`init`] first thing in `main`.
//! Rank 0 gets the [`World`] back and runs the user's program; ranks 1..size never return
//! from `init`: they serve tasks (`rank.rs`) until rank 0 says `STOP`, then finalize MPI
//! and exit the process with code 0.
//!
//! **Protocol** (`wire.rs`). Each worker rank says `HELLO` with its build fingerprint;
//! rank 0 waits for all of them in `init` and refuses a different build with
//! `Error::BinaryMismatch`. Then rank 0 sends `TASK`s (the same `entry ++ args` payload a
//! local worker gets), several in flight per rank; a worker answers each with a `RESULT`,
//! in order, and says `BEAT` while it holds tasks and is otherwise silent. At the end
//! rank 0 sends `STOP`, keeps reading until every worker answered `BYE`, and finalizes.
//!
//! **Who polls.** MPI receives busy-poll, so neither side blocks in MPI: rank 0's pool
//! driver and each worker's communication thread probe with `MPI_Improbe` and back off
//! (spin, yield, then sleeps up to a millisecond) while nothing comes. A worker runs tasks
//! on a second thread, so its communication thread keeps receiving (and large sends from
//! rank 0 keep completing) while a long task runs.
//!
//! **Failure.** A panic inside a task is caught and reported as `TaskPanicked`; any other
//! panic on a thread that talks MPI calls `MPI_Abort`, because an unwinding rank would
//! otherwise sit in `MPI_Finalize` and hang the whole job. MPI is not fault-tolerant: a rank
//! that dies (signal, `exit`) makes `mpirun` end the whole job with an error, rank 0
//! included (OpenMPI's default, verified in the tests).

use std::cell::Cell;
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

mod driver;
mod link;
mod rank;
mod wire;

use crate::pool::Pool;
use link::Link;

/// Tasks (chunks) each worker rank holds at once by default: enough to hide a network
/// round trip behind the task it runs.
const IN_FLIGHT: usize = 4;

/// The MPI job as rank 0 sees it: its size, and the pool of the other ranks.
///
/// Dropping it (at the end of `main`) stops the worker ranks and finalizes MPI, from the
/// thread that called [`init`] as MPI requires. The job's `MPI_COMM_WORLD` belongs to the
/// pool: mproc's messages use tags of their own, and a message it does not know from a
/// worker rank makes the pool stop trusting that rank.
#[derive(Debug)]
pub struct World {
    link: Arc<Link>,
}

/// Initializes MPI. On rank 0 it returns the [`World`]; on every other rank it serves
/// tasks and then exits the process, so code after it runs on rank 0 only.
///
/// Call it first thing in `main`, before any other thread starts: the program is started
/// on every rank by the launcher (`mpirun -np 3 ./app`, `srun -n 3 ./app`), and every rank
/// must run the same build (a different one is refused with `Error::BinaryMismatch`).
/// Without a launcher it runs as a job of one rank: [`World::pool`] then has no workers.
///
/// ```no_run
/// fn square(x: u64) -> u64 { x * x }
///
/// fn main() -> mproc::Result<()> {
///     let world = mproc::mpi::init()?; // ranks 1.. serve tasks inside this call
///     let pool = world.pool()?;
///     assert_eq!(pool.map(square, 0..4)?, vec![0, 1, 4, 9]);
///     Ok(())
/// }
/// ```
pub fn init() -> Result<World> {
    let Some((universe, threading)) =
        ::mpi::initialize_with_threading(::mpi::Threading::Serialized)
    else {
        return Err(Error::ValueError(
            "mproc::mpi::init was called twice (or MPI was initialized elsewhere)".into(),
        ));
    };
    install_panic_hook();
    if !matches!(
        threading,
        ::mpi::Threading::Serialized | ::mpi::Threading::Multiple
    ) {
        // Rank 0's pool driver talks MPI from its own thread, and workers receive while a
        // task runs: both need calls from more than one thread.
        eprintln!("mproc: this MPI library does not support MPI_THREAD_SERIALIZED");
        abort_job(1);
    }
    let world = ::mpi::topology::SimpleCommunicator::world();
    use ::mpi::topology::Communicator;
    let (me, size) = (world.rank(), world.size());
    if me != 0 {
        rank::serve(universe);
    }
    let link = Link::handshake(universe, size as usize, build_fingerprint())?;
    Ok(World {
        link: Arc::new(link),
    })
}

impl World {
    /// This rank's number: always 0, since only rank 0 gets a `World`.
    pub fn rank(&self) -> usize {
        0
    }

    /// The number of ranks in the job, rank 0 included.
    pub fn size(&self) -> usize {
        self.link.size()
    }

    /// A [`Pool`] whose workers are ranks 1..size: the same type, with the same methods
    /// and results, as a local pool (`processes()` is `size - 1`). One pool at a time
    /// uses the ranks; `Err` if there are none (a job of one rank) or another pool has them.
    pub fn pool(&self) -> Result<Pool> {
        self.pool_builder().build()
    }

    /// Configures the pool before it starts: tasks in flight per rank, a task timeout.
    pub fn pool_builder(&self) -> PoolBuilder<'_> {
        PoolBuilder {
            world: self,
            in_flight: IN_FLIGHT,
            timeout: None,
        }
    }
}

/// Configures the [`Pool`] of a [`World`]'s ranks.
#[derive(Debug)]
pub struct PoolBuilder<'w> {
    world: &'w World,
    in_flight: usize,
    timeout: Option<Duration>,
}

impl PoolBuilder<'_> {
    /// How many tasks (chunks) a rank holds at once, running one and queueing the rest
    /// (default 4; at least 1). More hides more network latency for small tasks; fewer
    /// balances long, uneven tasks better.
    pub fn in_flight(mut self, n: usize) -> Self {
        self.in_flight = n.max(1);
        self
    }

    /// A task (chunk) running longer than `d` fails with `Error::TaskTimedOut`, on time.
    /// Unlike a local pool, MPI cannot kill one rank without ending the job: the rank
    /// finishes the task (its result is dropped) and gets no work until then; the tasks
    /// queued behind it are cancelled and run on other ranks.
    pub fn task_timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    /// Starts the pool's driver on rank 0.
    pub fn build(self) -> Result<Pool> {
        let link = &self.world.link;
        let workers = link.size().saturating_sub(1);
        if workers == 0 {
            return Err(Error::ValueError(
                "an MPI pool needs worker ranks: launch the program with `mpirun -np N` \
                 (N >= 2: rank 0 runs main, ranks 1..N run the tasks)"
                    .into(),
            ));
        }
        link.claim()?;
        let (in_flight, timeout) = (self.in_flight, self.timeout);
        let driver_link = Arc::clone(link);
        let pool = Pool::with_remote_workers(
            workers,
            Box::new(move |shared| {
                driver::Driver::new(shared, driver_link, in_flight, timeout).run()
            }),
        );
        if pool.is_err() {
            link.release();
        }
        pool
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.link.shutdown();
    }
}

/// A fingerprint of this build that is the same on every host: the executable's bytes
/// (not its inode, which differs between copies) and this build's code layout.
pub(crate) fn build_fingerprint() -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match std::fs::read("/proc/self/exe") {
        Ok(bytes) => bytes.hash(&mut h),
        // No readable executable: the layout probe below still tells most builds apart.
        Err(e) => e.kind().hash(&mut h),
    }
    fn probe(x: u8) -> u8 {
        x
    }
    fn offset_of<F: crate::Target<(u8,), u8>>(_: F) -> i64 {
        crate::target::pool_entry_offset::<F, (u8,), u8>()
    }
    offset_of(probe).hash(&mut h);
    h.finish()
}

/// What a panic on the current thread means for the job.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum OnPanic {
    /// Not a thread of ours: the default behaviour (rank 0's main thread unwinds, and
    /// dropping the `World` stops the job cleanly).
    Unwind,
    /// A thread that talks MPI: an unwinding panic would hang the job, so abort it.
    Abort,
    /// Inside a task: the panic is caught and reported as the task's result.
    InTask,
}

thread_local! {
    static ON_PANIC: Cell<OnPanic> = const { Cell::new(OnPanic::Unwind) };
}

/// Sets what a panic on this thread means, returning the previous setting.
pub(crate) fn set_on_panic(p: OnPanic) -> OnPanic {
    ON_PANIC.with(|c| c.replace(p))
}

/// After the usual report, a panic on a thread marked `Abort` aborts the whole MPI job
/// (rsmpi #197: otherwise the rank unwinds into `MPI_Finalize` while the others wait).
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            if ON_PANIC.with(Cell::get) == OnPanic::Abort {
                eprintln!("mproc: a panic on an MPI thread aborts the job");
                abort_job(101);
            }
        }));
    });
}

/// Ends every rank of the job (`MPI_Abort`): the launcher reports `code`.
pub(crate) fn abort_job(code: i32) -> ! {
    use ::mpi::topology::Communicator;
    ::mpi::topology::SimpleCommunicator::world().abort(code)
}

/// Polling without burning a core: spin briefly, then yield, then sleep a little longer
/// each round, up to a millisecond, while there is nothing to do.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    idle_since: Option<Instant>,
}

impl Backoff {
    /// Something happened: poll eagerly again.
    pub(crate) fn reset(&mut self) {
        self.idle_since = None;
    }

    /// Nothing happened: wait a moment before the next poll.
    pub(crate) fn idle(&mut self) {
        let idle = self.idle_since.get_or_insert_with(Instant::now).elapsed();
        if idle < Duration::from_micros(50) {
            std::hint::spin_loop();
        } else if idle < Duration::from_micros(500) {
            std::thread::yield_now();
        } else {
            std::thread::sleep((idle / 8).min(Duration::from_millis(1)));
        }
    }
}
