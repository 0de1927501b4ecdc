//! mproc: Python's `multiprocessing`, done right, in Rust.
//!
//! Real OS processes that run Rust functions, with Python's names: [`Process`], [`pipe`]
//! and [`Connection`], start methods ([`StartMethod`]: fork, spawn, forkserver), and what
//! Python lacks: typed messages, no `if __name__ == "__main__"` guard, children that never
//! outlive their parent by accident.
//!
//! # A tour
//!
//! Run a function in a child process and get its result back:
//!
//! ```
//! # fn main() -> mproc::Result<()> {
//! fn square(x: u64) -> u64 { x * x }
//!
//! let mut p = mproc::Process::new(square, (12,));
//! p.start()?;
//! p.join()?;
//! assert_eq!(p.exitcode(), Some(0));
//! assert_eq!(p.result()?, 144);
//! # Ok(()) }
//! ```
//!
//! A target is a fn item or a closure that captures nothing, with owned serde arguments.
//! Two mistakes give compiler messages that do not say so: a `&str` parameter ("`Deserialize`
//! is not general enough": take a `String`), and a fn pointer or a capturing closure (passes
//! `cargo check`, then `cargo build` fails with a const-eval panic inside `core`: pass the fn
//! item or a non-capturing closure, and the data as arguments). [`Target`]'s docs list these
//! and the other compiler messages that need a translation.
//!
//! Talk to it over a typed pipe; a connection can itself travel to the child:
//!
//! ```
//! # fn main() -> mproc::Result<()> {
//! fn echo(conn: mproc::Connection<Vec<u32>>) -> mproc::Result<()> {
//!     while let Ok(v) = conn.recv() {
//!         conn.send(&v.iter().map(|x| x * 2).collect())?;
//!     }
//!     Ok(())
//! }
//! let (here, there) = mproc::pipe()?;
//! let p = mproc::spawn(echo, (there,))?;
//! here.send(&vec![1, 2, 3])?;
//! assert_eq!(here.recv()?, vec![2, 4, 6]);
//! drop(here); // the child sees EOF and returns
//! p.result()??;
//! # Ok(()) }
//! ```
//!
//! A panic in the child comes back as an error with its message and where it happened:
//!
//! ```
//! # fn main() -> mproc::Result<()> {
//! let p = mproc::spawn(|| -> u8 { panic!("boom") }, ())?;
//! match p.result() {
//!     Err(mproc::Error::TaskPanicked { message, location }) => {
//!         assert_eq!(message, "boom");
//!         assert!(location.is_some()); // "src/main.rs:3:33"
//!     }
//!     other => panic!("unexpected {other:?}"),
//! }
//! # Ok(()) }
//! ```
//!
//! Queues ([`Queue`], [`JoinableQueue`], [`SimpleQueue`]) are rings in shared memory: no
//! feeder thread, so an item whose `put` returned is delivered even if its producer dies the
//! next instant, and a producer can be joined before anyone reads its items:
//!
//! ```
//! # fn main() -> mproc::Result<()> {
//! fn produce(q: mproc::Queue<Option<u32>>) -> mproc::Result<()> {
//!     for i in 0..3 {
//!         q.put(Some(i))?;
//!     }
//!     q.put(None)
//! }
//! let q = mproc::Queue::new()?;
//! mproc::spawn(produce, (q.clone(),))?.result()??;
//! let mut got = Vec::new();
//! while let Some(i) = q.get()? {
//!     got.push(i);
//! }
//! assert_eq!(got, [0, 1, 2]);
//! # Ok(()) }
//! ```
//!
//! Shared memory and locks: a [`Value`] is a number in shared memory with its own lock, and
//! a lock whose holder dies is recovered, never a deadlock:
//!
//! ```
//! # fn main() -> mproc::Result<()> {
//! fn deposit(balance: mproc::Value<i64>, times: u32) {
//!     for _ in 0..times {
//!         *balance.lock() += 1;
//!     }
//! }
//! let balance = mproc::Value::new(0i64)?;
//! let a = mproc::spawn(deposit, (balance.clone(), 1000))?;
//! let b = mproc::spawn(deposit, (balance.clone(), 1000))?;
//! a.result()?;
//! b.result()?;
//! assert_eq!(balance.get(), 2000);
//! # Ok(()) }
//! ```
//!
//! A [`Pool`] of workers, which survives crashing tasks:
//!
//! ```
//! # fn main() -> mproc::Result<()> {
//! fn square(x: u64) -> u64 { x * x }
//! let pool = mproc::Pool::new(2)?;
//! assert_eq!(pool.map(square, 1..=4)?, vec![1, 4, 9, 16]);
//! let r: Vec<_> = pool.imap(|x: u64| if x == 1 { std::process::abort() } else { x }, 0..3).collect();
//! assert!(r[0].is_ok() && matches!(r[1], Err(mproc::Error::WorkerDied { .. })) && r[2].is_ok());
//! # Ok(()) }
//! ```
//!
//! Workers can be limited and sandboxed ([`Limits`], [`Sandbox`]): a task that allocates
//! past its worker's memory limit fails alone, and the pool goes on:
//!
//! ```
//! # fn main() -> mproc::Result<()> {
//! fn parse(n: usize) -> usize { vec![1u8; n].len() }
//! let pool = mproc::Pool::builder()
//!     .processes(1)
//!     .limits(mproc::Limits::new().memory(64 << 20))
//!     .sandbox(mproc::Sandbox::new().no_network().read_only())
//!     .build()?;
//! let r = pool.apply(parse, (1 << 30,));
//! assert!(matches!(r, Err(mproc::Error::LimitExceeded { limit: mproc::Limit::Memory(_) })));
//! assert_eq!(pool.apply(parse, (1000,))?, 1000);
//! # Ok(()) }
//! ```
//!
//! Listen and connect across processes and hosts ([`Listener`], [`connect`]: Python's
//! `Listener` and `Client`, with the same mutual HMAC authentication), and [`wait`] on
//! connections, listeners and processes at once. It is CPython's own wire protocol, so the
//! peer may be a Python program (see the README's "Talking to Python"):
//!
//! ```
//! # fn main() -> mproc::Result<()> {
//! fn client(at: mproc::Address) -> mproc::Result<()> {
//!     let conn = mproc::connect::<String>(at, Some(b"secret"))?;
//!     conn.send(&"hi".to_string())
//! }
//! let listener = mproc::Listener::<String>::bind("127.0.0.1:0".parse()?, Some(b"secret"))?;
//! let p = mproc::spawn(client, (listener.address(),))?;
//! assert_eq!(mproc::wait(&[&listener], None)?, [0]); // a peer is waiting
//! assert_eq!(listener.accept()?.recv()?, "hi");
//! p.result()??;
//! # Ok(()) }
//! ```
//!
//! A [`Manager`] keeps lists, dicts, queues, locks and your own types in a server process;
//! its proxies travel to children like any handle, and `modify` updates an entry atomically
//! in the server (Python's `d[k] += 1` through a proxy loses updates):
//!
//! ```
//! # fn main() -> mproc::Result<()> {
//! fn count(counts: mproc::DictProxy<String, u64>, word: String) -> mproc::Result<u64> {
//!     counts.modify(word, |n: Option<u64>| n.unwrap_or(0) + 1)
//! }
//! let manager = mproc::Manager::start()?;
//! let counts = manager.dict()?;
//! let children: Vec<_> = (0..4)
//!     .map(|_| mproc::spawn(count, (counts.clone(), "word".to_string())))
//!     .collect::<mproc::Result<_>>()?;
//! for c in children {
//!     c.result()??;
//! }
//! assert_eq!(counts.get(&"word".to_string())?, Some(4));
//! # Ok(()) }
//! ```
//!
//! Pick a start method per process or per context ([`get_context`]): `ForkServer` (the
//! default) forks children from a clean single-threaded server; `Fork` forks the caller;
//! `Spawn` re-executes the program. Children are routed before `main` runs, so `main`
//! needs no guard; [`init`] is the explicit alternative.
//!
//! # What a child inherits
//!
//! What a child starts with, under each start method. "At `start`" means as the parent had
//! it when it called `start`, not when the program began.
//!
//! | | `Fork` | `Spawn` | `ForkServer` (the default) |
//! |---|---|---|---|
//! | environment, working directory | the parent's at `start` | the parent's at `start` | the parent's at `start` (sent with each request; the server `chdir`s and sets the environment in the new child) |
//! | globals (`static`s, `thread_local!`s, lazies) | copies of the parent's values at `start` | fresh: as the program starts, `main` not run | fresh: as the program starts, `main` not run |
//! | `log` logger | a copy of the parent's logger | records forwarded to the parent's logger | records forwarded to the parent's logger |
//! | start method ([`get_start_method`]) | the one it was started with, if chosen (a [`Context`]'s, [`Process::set_start_method`]), else the parent's | the same | the same |
//! | threads | only the one that called `start` | only the main thread | only the main thread |
//! | descriptors | all of the parent's but mproc handles it was not given | stdio and the handles it was given | stdio and the handles it was given |
//! | signal handlers | the parent's | default, but SIGPIPE ignored (as Rust's `main` does) | default, but SIGPIPE ignored |
//! | ignored signals | the parent's | the parent's (`exec` keeps "ignore") | the server's: what the parent ignored when the server started, and SIGPIPE |
//! | signal mask | the calling thread's | empty | the server's: empty |
//! | rlimits, umask, nice value | the parent's at `start` | the parent's at `start` | the fork server's: the parent's when the server started (a later `setrlimit` or `umask` is not seen) |
//! | daemon flag, name, pid of the parent | set by the parent ([`current_process`], [`parent_process`]) | the same | the same |
//! | name in `ps`/`top` (the kernel's 15-byte `comm`) | the name set with [`Process::set_name`], else the program's | the same | the same (the server itself shows `mproc-forkserver`) |
//!
//! Every child dies with its parent (a parent-death signal, checked against thread exits).
//! Pool workers, the fork server and manager servers ignore SIGINT: Ctrl-C goes to the whole process group,
//! so the parent decides. By default it dies, and every child follows at once; a parent
//! that handles SIGINT keeps its pool. A child started by a pool worker inherits the
//! ignored SIGINT under `Spawn` (`exec` keeps it), as in Python.
//!
//! **When the target returns, the child exits**, like a Rust program when `main` returns:
//! threads the target started are cut off, whether or not they finished. Python joins a
//! child's non-daemon threads first; Rust threads have no daemon flag, and joining every
//! thread would hang on the first background thread that never ends (a runtime, a logger).
//! Join the threads whose work matters before returning.
//!
//! [`Process::set_daemon`] after `start` panics, as Python's assertion fails: the flag is
//! fixed when the child starts.
//!
//! # Logging
//!
//! Install any [`log`](https://docs.rs/log) logger in `main` (env_logger, your own, or
//! [`log_to_stderr`], Python's `[LEVEL/ProcessName] message`): records logged in children
//! reach it under every start method, from pool workers and grandchildren too, at the
//! parent's level, in order per child, none lost when a child exits right after logging.
//! Under `Spawn` and `ForkServer` each child forwards its records to the parent, tagged
//! with the key-values `process_name` and `pid` (loggers that print key-values show them:
//! env_logger with its `kv` feature); once `join` has seen a child exit, its records have
//! been delivered. Under `Fork` a child keeps its copy of the parent's logger (the `log`
//! crate allows one logger per process, so it cannot be swapped), which writes where the
//! parent's does. `tracing` users: enable `tracing`'s `log` feature so children's events
//! become `log` records, and install `tracing_log::LogTracer` in the parent; the tags are
//! lost on that way, as `tracing-log` drops `log` key-values.
//!
//! # Cargo features
//!
//! The default build is the whole crate described above; no feature is needed for it. On
//! [docs.rs](https://docs.rs/mproc) every feature is built, and an item that needs one
//! says which.
//!
//! | feature | what it adds | what it needs to build |
//! |---|---|---|
//! | `mpi` | `mproc::mpi`: the same [`Pool`] API with its workers on MPI ranks, across hosts, launched by `mpirun` or `srun` (README, "Beyond one machine") | an MPI library (Open MPI or MPICH) and libclang |
//! | `pickle` | `Codec::Pickle` for [`connect_with`]/[`Listener`] connections: typed messages as Python pickles (serde-pickle), so a Python peer's `conn.send({'a': 1})` arrives as a Rust value | nothing more |
//!
//! # Codec
//!
//! Messages are serde values encoded with postcard: maintained, compact, with a documented
//! stable format. Raw bytes (`send_bytes`) skip the codec entirely. It was chosen by
//! measurement (`cargo run --release -p mproc-bench -- codec`): among codecs that take any
//! serde type, postcard was the fastest on every message shape measured but long integer
//! vectors (where bitcode wins 5×), and the most compact; wincode is faster still but has
//! no serde support, so it cannot carry "any serde type". No codec keeps the text of a
//! custom serde error in release builds; mproc keeps its own messages beside the codec.

// docs.rs labels feature-gated items with the feature they need.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod codec;
mod connection;
mod context;
mod error;
#[cfg(test)]
mod fuzz_tests;
mod isolation;
mod log;
mod manager;
#[cfg(feature = "mpi")]
#[cfg_attr(docsrs, doc(cfg(feature = "mpi")))]
pub mod mpi;
mod name;
mod pool;
mod process;
mod queue;
mod shared;
mod shim;
mod start;
mod sync;
mod sys;
mod target;

/// A pipe over a plain socket, without shared memory (mproc's internal protocols and tests
/// of the socket path). Not part of the API.
#[doc(hidden)]
pub use crate::connection::socket_pipe;
pub use crate::connection::{
    Address, Codec, Connection, HANDSHAKE_TIMEOUT, Listener, Receiver, RecvFuture, Sender,
    Waitable, connect, connect_timeout, connect_with, pipe, pipe_simplex, wait,
};
pub use crate::context::{
    Context, StartMethod, cpu_count, get_all_start_methods, get_context, get_start_method, init,
    set_executable, set_start_method,
};
pub use crate::error::{Error, Result};
pub use crate::isolation::{Limit, Limits, Sandbox};
pub use crate::log::log_to_stderr;
pub use crate::manager::{
    ArrayProxy, BarrierProxy, ConditionProxy, ConditionProxyGuard, DictProxy, EventProxy,
    JoinableQueueProxy, ListProxy, LockProxy, LockProxyGuard, Managed, Manager, ManagerBuilder,
    Namespace, Proxy, QueueProxy, RLockProxy, RLockProxyGuard, SemaphoreProxy, ValueProxy,
};
pub use crate::pool::{AsyncResult, IMap, Pool, PoolBuilder, ResultFuture};
pub use crate::process::{
    Process, ProcessInfo, active_children, current_process, parent_process, spawn,
};
pub use crate::queue::{GetFuture, JoinableQueue, Queue, SimpleQueue};
pub use crate::shared::{
    Array, ArrayGuard, Pod, RawArray, RawValue, SharedMemory, Value, ValueGuard,
};
pub use crate::sync::{
    Barrier, BoundedSemaphore, Condition, Event, Lock, LockGuard, RLock, RLockGuard, Semaphore,
    SemaphoreGuard,
};
pub use crate::target::Target;
