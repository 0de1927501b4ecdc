//! The catalog: every workload, its unit, its sizes, and which implementations run it.
//!
//! A workload is one row of the table. `n` is the number of operations per repetition
//! (for the pi rows: the number of steps, and one operation is one whole computation of
//! pi). Every implementation of a row does the same work with the same item types and
//! sizes; only the machinery differs.

use serde::Serialize;

/// Who does the work: one column of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Impl {
    /// This crate.
    Mproc,
    /// CPython's `multiprocessing` (bench/python/mp_bench.py).
    #[serde(rename = "cpython")]
    CPython,
    /// procspawn 1.0.2.
    Procspawn,
    /// ipc-channel 0.23.1.
    IpcChannel,
    /// Threads (std) or rayon in one process: the physical reference without processes.
    Threads,
    /// The OS floor, written with std + libc.
    Raw,
}

impl Impl {
    /// Every column, in table order.
    pub const ALL: [Impl; 6] = [
        Impl::Mproc,
        Impl::CPython,
        Impl::Procspawn,
        Impl::IpcChannel,
        Impl::Threads,
        Impl::Raw,
    ];

    /// The name used on the command line of a cell worker and in JSON.
    pub fn key(self) -> &'static str {
        match self {
            Impl::Mproc => "mproc",
            Impl::CPython => "cpython",
            Impl::Procspawn => "procspawn",
            Impl::IpcChannel => "ipc-channel",
            Impl::Threads => "threads",
            Impl::Raw => "raw",
        }
    }

    /// Parses [`Impl::key`].
    pub fn from_key(s: &str) -> Option<Impl> {
        Impl::ALL.into_iter().find(|i| i.key() == s)
    }

    /// The column header.
    pub fn header(self) -> &'static str {
        match self {
            Impl::Mproc => "mproc",
            Impl::CPython => "CPython mp",
            Impl::Procspawn => "procspawn",
            Impl::IpcChannel => "ipc-channel",
            Impl::Threads => "threads/rayon",
            Impl::Raw => "raw floor",
        }
    }
}

/// How a row's figures are shown. Samples are always seconds per operation.
#[derive(Clone, Copy, Debug, Serialize)]
pub enum Unit {
    /// Seconds per operation.
    S,
    /// Milliseconds per operation.
    Ms,
    /// Microseconds per operation.
    Us,
    /// Nanoseconds per operation.
    Ns,
    /// Throughput, for operations of this many bytes (1 GB = 1e9 B).
    GBps(u64),
}

impl Unit {
    /// Converts seconds per operation to this unit.
    pub fn show(self, secs_per_op: f64) -> f64 {
        match self {
            Unit::S => secs_per_op,
            Unit::Ms => secs_per_op * 1e3,
            Unit::Us => secs_per_op * 1e6,
            Unit::Ns => secs_per_op * 1e9,
            Unit::GBps(bytes) => bytes as f64 / secs_per_op / 1e9,
        }
    }

    /// The unit's label.
    pub fn label(self) -> &'static str {
        match self {
            Unit::S => "s",
            Unit::Ms => "ms",
            Unit::Us => "µs",
            Unit::Ns => "ns",
            Unit::GBps(_) => "GB/s",
        }
    }
}

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// The name on the command line and in JSON.
    pub name: &'static str,
    /// What one operation is.
    pub op: &'static str,
    /// How figures are shown.
    pub unit: Unit,
    /// Operations per repetition: (full, quick).
    pub n: (u64, u64),
    /// Repetitions after the warm-up: (full, quick).
    pub reps: (usize, usize),
    /// Implementations that run this row.
    pub impls: &'static [Impl],
    /// What the non-mproc cells are, for the legend.
    pub notes: &'static str,
}

const MIB: u64 = 1 << 20;

use Impl::*;

/// Every workload, in table order.
pub const WORKLOADS: &[Workload] = &[
    Workload {
        name: "start_fork",
        op: "start + join of a no-op child, Fork",
        unit: Unit::Ms,
        n: (200, 40),
        reps: (5, 3),
        impls: &[Mproc, CPython, Raw],
        notes: "CPython `get_context('fork').Process`; raw: fork() + _exit(0) + waitpid",
    },
    Workload {
        name: "start_spawn",
        op: "start + join of a no-op child, Spawn",
        unit: Unit::Ms,
        n: (20, 5),
        reps: (5, 3),
        impls: &[Mproc, CPython, Procspawn, Raw],
        notes: "CPython `spawn` (a fresh interpreter); procspawn re-execs itself; raw: std Command re-exec of this binary, which exits at once",
    },
    Workload {
        name: "start_forkserver",
        op: "start + join of a no-op child, ForkServer",
        unit: Unit::Ms,
        n: (100, 20),
        reps: (5, 3),
        impls: &[Mproc, CPython, Raw],
        notes: "server started by a warm-up child; raw: a minimal fork server (one socket round trip, fork + waitpid in the server)",
    },
    Workload {
        name: "pipe_rtt",
        op: "round trip of a u64 over a duplex pipe",
        unit: Unit::Us,
        n: (20_000, 2_000),
        reps: (5, 3),
        impls: &[Mproc, CPython, IpcChannel, Threads, Raw],
        notes: "CPython `Pipe()` send/recv of an int; ipc-channel `IpcSender<u64>` pair; threads: std mpsc pair; raw: UnixStream 8-byte ping-pong",
    },
    Workload {
        name: "pipe_bw",
        op: "one 1 MiB message, send_bytes → recv_bytes",
        unit: Unit::GBps(MIB),
        n: (1024, 128),
        reps: (3, 3),
        impls: &[Mproc, CPython, IpcChannel, Raw],
        notes: "CPython send_bytes/recv_bytes; ipc-channel `IpcBytesSender`; raw: 1 MiB write()s on a socketpair into a reused buffer",
    },
    Workload {
        name: "pipe_idle_cpu",
        op: "CPU burnt by a receiver blocked in recv, per idle second",
        unit: Unit::Ms,
        n: (1000, 300),
        reps: (3, 2),
        impls: &[Mproc, Raw],
        notes: "n = idle ms per repetition; the blocked child's run time from /proc/<pid>/schedstat; raw: a child blocked in read() on a UnixStream. Shown as ms of CPU per idle second",
    },
    Workload {
        name: "pipe_oversub",
        op: "round trip of a u64, 2 × CPUs ping-pong pairs at once (4 pairs on 2 cores)",
        unit: Unit::Us,
        n: (5_000, 500),
        reps: (3, 2),
        impls: &[Mproc, Raw],
        notes: "time of the slowest pair over all round trips of all pairs; raw: the same pairs on blocking UnixStreams between forked processes (the plain blocking path a spin must not fall below)",
    },
    Workload {
        name: "listener_tcp_rtt",
        op: "round trip of a u64 over an authenticated TCP loopback connection (Listener/connect)",
        unit: Unit::Us,
        n: (20_000, 2_000),
        reps: (5, 3),
        impls: &[Mproc, CPython, Raw],
        notes: "CPython `Listener(('127.0.0.1', 0), authkey=...)` and `Client` send/recv of an int; raw: TcpStream 8-byte ping-pong with TCP_NODELAY",
    },
    Workload {
        name: "listener_unix_rtt",
        op: "round trip of a u64 over an authenticated Unix-socket Listener connection",
        unit: Unit::Us,
        n: (20_000, 2_000),
        reps: (5, 3),
        impls: &[Mproc, CPython, Raw],
        notes: "CPython `Listener` on an AF_UNIX path and `Client`; raw: UnixStream 8-byte ping-pong",
    },
    Workload {
        name: "listener_connect",
        op: "connect + mutual authentication handshake on TCP loopback, client side",
        unit: Unit::Us,
        n: (400, 50),
        reps: (5, 3),
        impls: &[Mproc, CPython, Raw],
        notes: "CPython `Client(address, authkey=...)` against a `Listener` accepting in a child; raw: TCP connect + the handshake's six messages (same sizes) without HMACs",
    },
    Workload {
        name: "lock_uncontended",
        op: "acquire + release of a free Lock",
        unit: Unit::Ns,
        n: (2_000_000, 200_000),
        reps: (5, 3),
        impls: &[Mproc, CPython, Threads, Raw],
        notes: "CPython `Lock()` acquire/release; threads: std Mutex; raw: CAS 0→1 + store 0 on a shared-memory word",
    },
    Workload {
        name: "value_incr",
        op: "one locked increment of a shared i64, 2 processes × n",
        unit: Unit::Ns,
        n: (100_000, 20_000),
        reps: (5, 3),
        impls: &[Mproc, CPython, Threads, Raw],
        notes: "CPython `Value('q')` + get_lock(); threads: 2 threads on a std Mutex<i64>; raw: 2 forked processes, CAS spinlock in shared memory",
    },
    Workload {
        name: "event_wake",
        op: "Event set → waiter awake (half of a two-Event round trip)",
        unit: Unit::Us,
        n: (5_000, 500),
        reps: (5, 3),
        impls: &[Mproc, CPython, Raw],
        notes: "CPython two `Event`s; raw: futex ping-pong on a shared word, sleeping at once (half a round trip)",
    },
    Workload {
        name: "queue_stream",
        op: "one small int through a Queue, child put → parent get (stream)",
        unit: Unit::Ns,
        n: (200_000, 20_000),
        reps: (5, 3),
        impls: &[Mproc, CPython, IpcChannel, Threads, Raw],
        notes: "CPython `Queue`; ipc-channel one-way `IpcSender<u64>`; threads: std mpsc; raw: one 8-byte write() per message on a UnixStream (the floor of a syscall per message; a shared-memory ring can go under it)",
    },
    Workload {
        name: "queue_rtt",
        op: "put → get round trip of a u64 over two Queues",
        unit: Unit::Us,
        n: (10_000, 1_000),
        reps: (5, 3),
        impls: &[Mproc, CPython, Raw],
        notes: "CPython two `Queue`s; raw: ping-pong on a shared word, spinning up to 20 µs before futex_wait (the strategy of mproc's ring)",
    },
    Workload {
        name: "queue_64mib",
        op: "one 64 MiB item, parent put → child get",
        unit: Unit::GBps(64 * MIB),
        n: (8, 2),
        reps: (3, 3),
        impls: &[Mproc, CPython, IpcChannel, Raw],
        notes: "items are bytes (`serde_bytes::ByteBuf` in Rust); mproc puts one shared payload again and again (an `Arc<ByteBuf>` newtype, encoded as the `ByteBuf`), as CPython and the floor do, so no 64 MiB is made or freed per item on the clock, and its consumer receives with `Queue::get_into` into one reused buffer; CPython `Queue.put(bytes)`; ipc-channel `IpcBytesSender`; raw: socketpair write() into a reused 64 MiB buffer",
    },
    Workload {
        name: "queue_idle_cpu",
        op: "CPU burnt by a consumer blocked in Queue::get, per idle second",
        unit: Unit::Ms,
        n: (1000, 300),
        reps: (3, 2),
        impls: &[Mproc, Raw],
        notes: "n = idle ms per repetition; the blocked child's run time from /proc/<pid>/schedstat (its backoff must stop spinning and sleep); raw: a child blocked in read() on a UnixStream. Shown as ms of CPU per idle second",
    },
    Workload {
        name: "pool_start",
        op: "build a Pool(2) (Fork) and get its first apply back",
        unit: Unit::Ms,
        n: (100, 10),
        reps: (5, 3),
        impls: &[Mproc, CPython],
        notes: "teardown (terminate + reap) outside the clock, before the next start; CPython `Pool(2)` (fork), `apply`, then `terminate()` + `join()`",
    },
    Workload {
        name: "pool_start_isolated",
        op: "build a Pool(2) (Fork) whose workers are limited and sandboxed (`Limits::new().memory(256 MiB).cpu_time(60 s)`, `Sandbox::new().no_network().read_only()`) and get its first apply back",
        unit: Unit::Ms,
        n: (100, 10),
        reps: (5, 3),
        impls: &[Mproc, Raw],
        notes: "no peer has the equivalent; raw floor: the plain pool of `pool_start`, run again in this row, so ÷ floor is isolated ÷ plain (goal: ≤ 2×)",
    },
    Workload {
        name: "pool_apply",
        op: "Pool(2) apply of an identity task, round trip",
        unit: Unit::Us,
        n: (2_000, 200),
        reps: (5, 3),
        impls: &[Mproc, CPython, Procspawn],
        notes: "CPython `Pool(2).apply`; procspawn `Pool::new(2)` spawn(..).join()",
    },
    Workload {
        name: "pool_apply_isolated",
        op: "`pool_apply` on a Pool(2) whose workers have `pool_start_isolated`'s limits and sandbox",
        unit: Unit::Us,
        n: (5_000, 200),
        reps: (5, 3),
        impls: &[Mproc, Raw],
        notes: "no peer has the equivalent; raw floor: the same pool without isolation (as `pool_apply`), run again in this row, so ÷ floor is isolated ÷ plain (goal: ≤ 1.1×)",
    },
    Workload {
        name: "pool_map",
        op: "one task of Pool(2).map(identity, 0..1 000 000), default chunking",
        unit: Unit::Ns,
        n: (1_000_000, 100_000),
        reps: (3, 3),
        impls: &[Mproc, CPython, Threads],
        notes: "CPython `Pool(2).map`; threads: rayon `into_par_iter().map().collect()`",
    },
    Workload {
        name: "pool_map_chunk1",
        op: "one task of Pool(2).map_chunked(identity, .., 1)",
        unit: Unit::Us,
        n: (20_000, 2_000),
        reps: (3, 3),
        impls: &[Mproc, CPython, Procspawn],
        notes: "CPython `map(chunksize=1)`; procspawn `Pool::new(2)` with ≤256 tasks in flight (it has no map)",
    },
    Workload {
        name: "pool_hetero",
        op: "Pool(2) imap_unordered over one long sleep (n ms) and n/10 sleeps of 10 ms; ideal: n ms",
        unit: Unit::Ms,
        n: (400, 100),
        reps: (3, 3),
        impls: &[Mproc, CPython, Raw],
        notes: "pull scheduling: the short tasks run on the worker the long one does not hold; CPython `imap_unordered`; raw: the ideal schedule, 2 threads pulling from one list (÷ floor is the time over ideal)",
    },
    Workload {
        name: "pool_idle_cpu",
        op: "CPU time the parent of an idle Pool(2) uses per idle second (warm pool, after a task)",
        unit: Unit::Ms,
        n: (2, 1),
        reps: (3, 3),
        impls: &[Mproc, CPython],
        notes: "getrusage(RUSAGE_SELF) user+system over n idle seconds; goal ≤ 20 ms per second",
    },
    Workload {
        name: "manager_list_append",
        op: "append of a u64 to a manager list through a proxy, from a child",
        unit: Unit::Us,
        n: (20_000, 2_000),
        reps: (5, 3),
        impls: &[Mproc, CPython],
        notes: "CPython `Manager().list()` proxy `.append(i)` in a forked child",
    },
    Workload {
        name: "manager_dict_set",
        op: "set of a u64 key in a manager dict through a proxy, from a child",
        unit: Unit::Us,
        n: (20_000, 2_000),
        reps: (5, 3),
        impls: &[Mproc, CPython],
        notes: "CPython `Manager().dict()` proxy `d[i] = i` in a forked child",
    },
    Workload {
        name: "manager_dict_get",
        op: "get of a u64 key from a manager dict through a proxy, from a child",
        unit: Unit::Us,
        n: (20_000, 2_000),
        reps: (5, 3),
        impls: &[Mproc, CPython],
        notes: "CPython `Manager().dict()` proxy `d[i]` in a forked child (keys filled first)",
    },
    Workload {
        name: "manager_create",
        op: "creation of a manager list proxy, in the manager's owner",
        unit: Unit::Us,
        n: (2_000, 200),
        reps: (5, 3),
        impls: &[Mproc, CPython],
        notes: "CPython `Manager().list()` (a new authenticated connection per proxy)",
    },
    Workload {
        name: "pi_serial",
        op: "pi by the midpoint rule, 1e8 steps (1e6 with --quick), one process",
        unit: Unit::S,
        n: (100_000_000, 1_000_000),
        reps: (3, 3),
        impls: &[CPython, Raw],
        notes: "CPython plain loop; raw: the same loop in Rust",
    },
    Workload {
        name: "pi_pool",
        op: "pi, the same steps split over 2 workers (warm pool)",
        unit: Unit::S,
        n: (100_000_000, 1_000_000),
        reps: (5, 3),
        impls: &[Mproc, CPython, Procspawn, Threads, Raw],
        notes: "2 strided ranks: CPython `Pool(2).starmap`; procspawn 2 spawns; threads: rayon par_iter over all steps; raw: 2 forked children",
    },
];

/// The MPI rows (cargo feature `mpi`): mproc's Pool over 2 worker ranks (`mpirun -np 3`),
/// beside the local pool's rows above; the raw floor is an rsmpi ping-pong on the same
/// transport (`mpirun -np 2`).
#[cfg(feature = "mpi")]
pub const MPI_WORKLOADS: &[Workload] = &[
    Workload {
        name: "mpi_map_shm",
        op: "one task of map(identity, 0..1 000 000) on 2 MPI ranks, default chunking, shared memory",
        unit: Unit::Ns,
        n: (1_000_000, 100_000),
        reps: (3, 3),
        impls: &[Mproc],
        notes: "beside `pool_map` (a local Pool(2)); OpenMPI's shared-memory transport",
    },
    Workload {
        name: "mpi_map_tcp",
        op: "the same over TCP (`OMPI_MCA_btl=tcp,self`)",
        unit: Unit::Ns,
        n: (1_000_000, 100_000),
        reps: (3, 3),
        impls: &[Mproc],
        notes: "beside `pool_map`; TCP on loopback, the path used across hosts",
    },
    Workload {
        name: "mpi_map_chunk1_shm",
        op: "one task of map_chunked(identity, .., 1) on 2 MPI ranks, shared memory",
        unit: Unit::Us,
        n: (20_000, 2_000),
        reps: (3, 3),
        impls: &[Mproc, Raw],
        notes: "beside `pool_map_chunk1`; raw: one 8-byte rsmpi send/receive round trip between 2 ranks",
    },
    Workload {
        name: "mpi_map_chunk1_tcp",
        op: "the same over TCP",
        unit: Unit::Us,
        n: (20_000, 2_000),
        reps: (3, 3),
        impls: &[Mproc, Raw],
        notes: "beside `pool_map_chunk1`; raw: the rsmpi round trip over TCP",
    },
    Workload {
        name: "mpi_pi",
        op: "pi split over 2 MPI worker ranks (warm pool), shared memory",
        unit: Unit::S,
        n: (100_000_000, 1_000_000),
        reps: (5, 3),
        impls: &[Mproc],
        notes: "beside `pi_pool` (a local Pool(2)); rank 0 shares the 2 cores with the 2 workers",
    },
];

/// Without the `mpi` feature there are no MPI rows.
#[cfg(not(feature = "mpi"))]
pub const MPI_WORKLOADS: &[Workload] = &[];

/// Every row: [`WORKLOADS`], then the MPI rows if built.
pub fn all() -> impl Iterator<Item = &'static Workload> {
    WORKLOADS.iter().chain(MPI_WORKLOADS)
}

/// Selects workloads by exact name or by prefix up to an underscore (`start` → every
/// `start_*`, `pi` → `pi_serial`, `pi_pool` but not `pipe_*`); `all` is every workload.
pub fn select(names: &[String]) -> Vec<&'static Workload> {
    if names.is_empty() || names.iter().any(|n| n == "all") {
        return all().collect();
    }
    let hit = |w: &Workload, n: &str| {
        w.name == n
            || w.name
                .strip_prefix(n)
                .is_some_and(|rest| rest.starts_with('_'))
    };
    all().filter(|w| names.iter().any(|n| hit(w, n))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(args: &[&str]) -> Vec<&'static str> {
        select(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .iter()
            .map(|w| w.name)
            .collect()
    }

    #[test]
    fn prefixes_stop_at_underscores() {
        assert_eq!(names(&["pi"]), vec!["pi_serial", "pi_pool"]);
        assert_eq!(
            names(&["pipe"]),
            vec!["pipe_rtt", "pipe_bw", "pipe_idle_cpu", "pipe_oversub"]
        );
        assert_eq!(names(&["pool_map"]), vec!["pool_map", "pool_map_chunk1"]);
        assert_eq!(names(&["start_spawn"]), vec!["start_spawn"]);
        assert_eq!(
            names(&["pool_start", "pool_apply"]),
            vec![
                "pool_start",
                "pool_start_isolated",
                "pool_apply",
                "pool_apply_isolated"
            ]
        );
        assert!(names(&["nothing"]).is_empty());
        assert_eq!(names(&["all"]).len(), all().count());
    }

    /// The isolated rows' ratio is isolated ÷ plain only if their floor is the plain pool
    /// and no peer's column suggests an equivalent.
    #[test]
    fn isolated_rows_compare_with_their_plain_pool_only() {
        let iso: Vec<_> = WORKLOADS
            .iter()
            .filter(|w| w.name.ends_with("_isolated"))
            .collect();
        assert_eq!(iso.len(), 2);
        for w in iso {
            assert_eq!(w.impls, &[Mproc, Raw], "{}", w.name);
            let plain = w.name.strip_suffix("_isolated").expect("the suffix");
            assert!(WORKLOADS.iter().any(|p| p.name == plain), "{plain}");
        }
    }

    #[test]
    fn units_convert_seconds_per_operation() {
        assert_eq!(Unit::Ms.show(0.002), 2.0);
        assert!((Unit::Us.show(3e-6) - 3.0).abs() < 1e-9);
        assert!((Unit::GBps(1 << 20).show((1u64 << 20) as f64 / 1e9) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn every_row_is_unique_and_runs_somewhere() {
        for (i, w) in WORKLOADS.iter().enumerate() {
            assert!(!w.impls.is_empty(), "{} has no implementation", w.name);
            assert!(
                WORKLOADS[i + 1..].iter().all(|o| o.name != w.name),
                "{} twice",
                w.name
            );
            assert!(
                w.n.1 <= w.n.0 && w.reps.1 <= w.reps.0,
                "{}: --quick is not smaller",
                w.name
            );
        }
    }
}
