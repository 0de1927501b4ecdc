//! How a Rust function becomes something another process can call.
//!
//! A target is a fn item or a non-capturing closure: a zero-sized type, so the function *is*
//! its type and no data needs to travel. For each `(F, Args, R)` the compiler instantiates
//! one [`entry`] function and a constant *record* naming it (`target/record.rs`); the
//! record's offset from a fixed anchor (valid across ASLR, since both live in the same
//! executable) is what the parent sends. The child checks that it runs the same executable
//! (the fingerprint in the handshake) and that the offset lands on a real record in its
//! executable's constant data, then calls the entry the record names, which decodes the
//! arguments, conjures the zero-sized `F`, calls it, and sends back the outcome. An offset
//! that names no record (a forged or corrupt start-up message) is refused: nothing that
//! came from outside is ever jumped to unchecked.

#![allow(unsafe_code)]

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::{self, HandleFd};
use crate::connection::framing;

mod panic;
mod record;
pub(crate) mod server;

pub(crate) use panic::{Panic, catch};

/// A function another process can run with `Args` and return `R`: any fn item or
/// non-capturing closure taking 0 to 8 serde arguments. Implemented automatically.
///
/// ```
/// # fn main() -> mproc::Result<()> {
/// fn heavy_op(i: u32, n: usize) -> usize { i as usize + n }
/// let p = mproc::spawn(heavy_op, (1, 10_000_000))?;
/// assert_eq!(p.result()?, 10_000_001);
/// let p = mproc::spawn(|x: u32| x + 5, (1u32,))?; // a closure that captures nothing
/// assert_eq!(p.result()?, 6);
/// # Ok(()) }
/// ```
///
/// What is not a target fails to compile:
///
/// ```compile_fail
/// // A capturing closure is not a target: it carries data the child cannot have.
/// let n = 5u32;
/// let _ = mproc::Process::new(move |x: u32| x + n, (1u32,));
/// ```
///
/// # Compiler messages that need a translation
///
/// - **A fn pointer, or a closure that captures a `Copy` value** (an integer, a reference),
///   passes `cargo check` and is refused by `cargo build`, with an error that points inside
///   `core`, not at your code: "error\[E0080\]: evaluation panicked: a target must be a fn
///   item or a closure that captures nothing --> .../library/core/src/panic.rs", "evaluation
///   of `mproc::target::assert_zero_sized::<fn(u32) -> u32>::{constant#0}` failed" (the type
///   in the angle brackets is your target's: `fn(..)` for a fn pointer, `{closure@..}` for a
///   closure). A fn pointer or a capture is data the child cannot have; whether a target
///   carries data can only be asserted after monomorphization on stable Rust (a trait bound
///   for it needs the unstable `generic_const_exprs`), and `cargo check` stops before that.
///   **Fix:** pass the fn item itself (`Process::new(double, (1,))`, not a `let f: fn(u32) ->
///   u32 = double` or a field holding one), or a closure that captures nothing, and pass the
///   data as arguments: `Process::new(|x: u32, n: u32| x + n, (1, n))`. To choose between
///   functions at run time, branch on a plain argument inside one target.
/// - **A parameter that borrows** (`fn greet(name: &str)`, `&[u8]`, `&T`) is refused with
///   "implementation of `Deserialize` is not general enough", whose notes name an unrelated
///   type ("`usize` must implement `Deserialize<'de>`"). The arguments are decoded in the child
///   from a buffer that ends with the call, so they must own their data. **Fix:** take the
///   owned type (`String`, `Vec<u8>`, `T`) and pass an owned value: `Process::new(greet,
///   ("hi".to_string(),))`.
/// - **A closure that captures a `String`** (or any non-`Copy` value) is refused by
///   `cargo check` with "the trait bound `String: Copy` is not satisfied in `{closure@...}`":
///   the capture is the problem, not the `String`. Pass it as an argument.
/// - **A closure that never returns** (`|| loop { ... }`) has return type `!`, which is not
///   a serde type: "the trait bound `!: serde::Serialize` is not satisfied". Write its
///   return type: `|| -> () { loop { ... } }`.
///
/// ```compile_fail
/// // A fn pointer is data, not a function known from its type: refused at `cargo build`.
/// fn double(x: u32) -> u32 { x * 2 }
/// let f: fn(u32) -> u32 = double;
/// let _ = mproc::Process::new(f, (1u32,));
/// ```
///
/// ```compile_fail
/// // A borrowed parameter: "implementation of `Deserialize` is not general enough".
/// fn greet(name: &str) -> usize { name.len() }
/// let _ = mproc::Process::new(greet, ("hi",));
/// ```
///
/// ```compile_fail
/// // Arguments must be serde types that can be sent: an `Rc` cannot.
/// fn f(_: std::rc::Rc<u32>) {}
/// let _ = mproc::Process::<()>::new(f, (std::rc::Rc::new(1u32),));
/// ```
///
/// ```compile_fail
/// // A type without serde support cannot cross a process boundary.
/// struct NotSerde;
/// fn f(_: NotSerde) {}
/// let _ = mproc::Process::<()>::new(f, (NotSerde,));
/// ```
pub trait Target<Args, R>: Copy + Send + 'static {
    /// Calls the function with the unpacked arguments.
    #[doc(hidden)]
    fn call(self, args: Args) -> R;
}

macro_rules! impl_target {
    ($($a:ident),*) => {
        impl<Func, Ret, $($a,)*> Target<($($a,)*), Ret> for Func
        where
            Func: Fn($($a),*) -> Ret + Copy + Send + 'static,
        {
            #[allow(non_snake_case, clippy::unused_unit)]
            fn call(self, args: ($($a,)*)) -> Ret {
                let ($($a,)*) = args;
                (self)($($a),*)
            }
        }
    };
}
impl_target!();
impl_target!(A);
impl_target!(A, B);
impl_target!(A, B, C);
impl_target!(A, B, C, D);
impl_target!(A, B, C, D, E);
impl_target!(A, B, C, D, E, G);
impl_target!(A, B, C, D, E, G, H);
impl_target!(A, B, C, D, E, G, H, I);

/// What a child reports back over its result channel.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) enum Outcome<R> {
    /// The target returned this value.
    Returned(R),
    /// The target panicked.
    Panicked(Panic),
    /// The child could not run the target (arguments did not decode, result did not encode).
    Failed(String),
}

/// The signature of every entry function: encoded arguments and their descriptors in,
/// the outcome written to `out`, the process's exit code returned.
pub(crate) type Entry = fn(&[u8], Vec<OwnedFd>, BorrowedFd<'_>) -> i32;

/// Refuses, at compile time, a target that carries data (a capturing closure).
fn assert_zero_sized<F>() {
    const {
        assert!(
            std::mem::size_of::<F>() == 0,
            "a target must be a fn item or a closure that captures nothing"
        )
    };
}

/// The entry for `(F, Args, R)` as an offset from [`anchor`].
pub(crate) fn entry_offset<F, Args, R>() -> i64
where
    F: Target<Args, R>,
    Args: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    assert_zero_sized::<F>();
    record::offset_of(record::Records::<F, Args, R>::ENTRY)
}

/// The exit code of a child told to run something that is not a target entry of its
/// executable (a forged or corrupt start-up message).
pub(crate) const REFUSED_ENTRY: i32 = 75;

/// Runs the entry at `offset` (from [`entry_offset`] in the parent) if `fingerprint` is
/// this executable's and `offset` names a real entry record (`target/record.rs`); returns
/// its exit code, or `None` on a fingerprint mismatch. A refused offset is reported on
/// `out` and exits with [`REFUSED_ENTRY`]: nothing is called.
pub(crate) fn run_entry(
    offset: i64,
    fingerprint: u64,
    args: &[u8],
    fds: Vec<OwnedFd>,
    out: BorrowedFd<'_>,
) -> Option<i32> {
    if fingerprint != self::fingerprint() {
        return None;
    }
    let Some(entry) = record::entry_at(offset) else {
        send_outcome::<()>(
            out,
            &Outcome::Failed(format!(
                "refused to start: entry {offset:#x} is not a target entry of this executable"
            )),
        );
        return Some(REFUSED_ENTRY);
    };
    Some(entry(args, fds, out))
}

/// Whether `offset` names an entry record of either kind (for the adversarial tests).
#[cfg(test)]
pub(crate) fn resolves(offset: i64) -> bool {
    record::entry_at(offset).is_some() || record::pool_entry_at(offset).is_some()
}

/// Installs the panic hook (`target/panic.rs`) and reads what resolving entries needs,
/// before this process forks children: a forked child must do neither itself. An error if
/// the entries cannot be read now (they are read again next time: a shortage is not
/// remembered); the hook is installed either way.
pub(crate) fn warm() -> crate::Result<()> {
    panic::install_hook();
    record::warm()
}

/// A fingerprint of the running executable and of this build's code layout.
pub(crate) fn fingerprint() -> u64 {
    use std::hash::{Hash, Hasher};
    static CACHE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *CACHE.get_or_init(|| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let id = crate::sys::pid::exe_identity(&crate::sys::pid::self_exe()).unwrap_or_default();
        id.hash(&mut h);
        fn probe() -> u8 {
            0
        }
        fn offset_of<F: Target<(), u8>>(_: F) -> i64 {
            entry_offset::<F, (), u8>()
        }
        offset_of(probe).hash(&mut h);
        h.finish()
    })
}

fn entry<F, Args, R>(args: &[u8], fds: Vec<OwnedFd>, out: BorrowedFd<'_>) -> i32
where
    F: Target<Args, R>,
    Args: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    let args: Args = match codec::decode(args, fds) {
        Ok(a) => a,
        Err(e) => {
            send_outcome::<R>(
                out,
                &Outcome::Failed(format!("arguments did not decode: {e}")),
            );
            return 1;
        }
    };
    // SAFETY: `F` is zero-sized (asserted in `entry_offset`, the only way to reach this
    // function), so reading one from a dangling, well-aligned pointer reads no bytes; fn
    // items and non-capturing closures have no invariants beyond existing.
    let f: F = unsafe { NonNull::<F>::dangling().as_ptr().read() };
    // Not quiet: a child's panic is reported on its stderr as well, as Python's
    // `Process._bootstrap` prints a child's traceback.
    match catch(false, || f.call(args)) {
        Ok(value) => {
            if send_outcome(out, &Outcome::Returned(value)) {
                0
            } else {
                1
            }
        }
        Err(p) => {
            send_outcome::<R>(out, &Outcome::Panicked(p));
            1
        }
    }
}

/// Sends an outcome frame; on an encoding failure sends `Failed` instead. Returns whether
/// the value itself went out.
fn send_outcome<R: Serialize>(out: BorrowedFd<'_>, outcome: &Outcome<R>) -> bool {
    let mut buf = Vec::new();
    let mut fds = Vec::new();
    match codec::encode_into(outcome, &mut buf, &mut fds) {
        Ok(()) => framing::write_frame(out.as_fd(), &buf, &crate::sys::fd::borrowed(&fds)).is_ok(),
        Err(e) => {
            let failed = Outcome::<R>::Failed(format!("result did not encode: {e}"));
            buf.clear();
            fds.clear();
            if codec::encode_into(&failed, &mut buf, &mut fds).is_ok() {
                let _ = framing::write_frame(out.as_fd(), &buf, &[]);
            }
            false
        }
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// What a pool task reports for one item of its chunk.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) enum ItemOutcome<R> {
    /// The function returned this value.
    Returned(R),
    /// The function panicked.
    Panicked(Panic),
}

/// The signature of a pool entry: a chunk of encoded argument tuples (and their
/// descriptors) in; the encoded `Vec<ItemOutcome<R>>` (and its descriptors) out, or why
/// the chunk could not be run.
pub(crate) type PoolEntry =
    fn(&[u8], Vec<OwnedFd>, &mut Vec<u8>, &mut Vec<HandleFd>) -> Result<(), String>;

/// The pool entry for `(F, Args, R)` as an offset from [`anchor`].
pub(crate) fn pool_entry_offset<F, Args, R>() -> i64
where
    F: Target<Args, R>,
    Args: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    assert_zero_sized::<F>();
    record::offset_of(record::Records::<F, Args, R>::POOL)
}

/// Runs the pool entry at `offset` on one chunk, if `offset` names a real pool entry
/// record (`target/record.rs`); otherwise nothing is called and the chunk fails.
/// With the `mpi` feature, MPI worker ranks call it too, with offsets from rank 0 of the
/// same MPI job, which compared every rank's build fingerprint (the executable's content)
/// with its own before sending any (`mpi::init`).
pub(crate) fn run_pool_entry(
    offset: i64,
    args: &[u8],
    fds: Vec<OwnedFd>,
    out: &mut Vec<u8>,
    out_fds: &mut Vec<HandleFd>,
) -> Result<(), String> {
    let entry = record::pool_entry_at(offset).ok_or_else(|| {
        format!("refused to run: entry {offset:#x} is not a pool entry of this executable")
    })?;
    entry(args, fds, out, out_fds)
}

fn pool_entry<F, Args, R>(
    args: &[u8],
    fds: Vec<OwnedFd>,
    out: &mut Vec<u8>,
    out_fds: &mut Vec<HandleFd>,
) -> Result<(), String>
where
    F: Target<Args, R>,
    Args: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    let items: Vec<Args> =
        codec::decode(args, fds).map_err(|e| format!("task arguments did not decode: {e}"))?;
    // SAFETY: `F` is zero-sized (asserted in `pool_entry_offset`, the only way to reach
    // this function), so reading one from a dangling, well-aligned pointer reads no bytes.
    let f: F = unsafe { NonNull::<F>::dangling().as_ptr().read() };
    // Quiet: the panic goes back to the caller only, as Python's `Pool` hands a task's
    // exception back without printing it.
    let outcomes: Vec<ItemOutcome<R>> = items
        .into_iter()
        .map(|a| match catch(true, || f.call(a)) {
            Ok(v) => ItemOutcome::Returned(v),
            Err(p) => ItemOutcome::Panicked(p),
        })
        .collect();
    codec::encode_into(&outcomes, out, out_fds)
        .map_err(|e| format!("task result did not encode: {e}"))
}

/// A zero-sized function value conjured from its type, for code that runs a function the
/// way a child does (a manager's `modify`).
pub(crate) fn conjure<F, Args, R>() -> F
where
    F: Target<Args, R>,
{
    assert_zero_sized::<F>();
    // SAFETY: `F` is zero-sized (asserted above at compile time), so reading one from a
    // dangling, well-aligned pointer reads no bytes; fn items and non-capturing closures
    // (the only `Target`s of size zero) have no invariants beyond existing.
    unsafe { NonNull::<F>::dangling().as_ptr().read() }
}

pub(crate) use record::{Record, server_record};

/// A manager server's entry record (a `modify` or a custom object's handler) as an offset
/// from the anchor.
pub(crate) fn server_entry_offset(record: &'static Record<server::ServerEntry>) -> i64 {
    record::offset_of(record)
}

/// The manager server's entry at `offset`, if `fingerprint` is this executable's and
/// `offset` names a real server entry record. The server takes offsets only from local
/// (Unix-socket) clients that authenticated, never from a network peer.
pub(crate) fn server_entry_at(offset: i64, fingerprint: u64) -> Option<server::ServerEntry> {
    if fingerprint != self::fingerprint() {
        return None;
    }
    record::server_entry_at(offset)
}
