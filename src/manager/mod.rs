//! Managers: a server process that owns lists, dicts, queues, locks and custom objects, and
//! proxies that reach them from any process, on this host or another.
//!
//! Protocol. The server listens on an address (a private abstract Unix socket by default,
//! TCP for remote use) and authenticates each connection with the manager's key. A client
//! process opens one connection per thread and reuses it for every proxy (`client.rs`); on
//! it, the client writes one request frame and reads one reply frame (`wire.rs`). The server
//! gives each connection a thread (`server.rs`) that applies requests to the shared store
//! (`store.rs`) under one mutex, so every request — including a `modify` — is atomic with
//! respect to all others; blocking calls wait in the server on a condition variable.
//!
//! Lifetime. [`Manager::start`] runs the server as a daemon child (any start method); the
//! child ignores SIGINT (a Ctrl-C is for the owner to handle, as in Python), watches a
//! lifeline pipe from its owner, and dies with it: owner exit, even by SIGKILL, ends the
//! server. [`Manager::shutdown`] (or dropping the owning `Manager`) stops it: every
//! client's connection is shut down, so every proxy call — a blocked `get` too — answers
//! `Err(Closed)`. Objects are reference counted (`handle.rs`, `store/claims.rs`): an object
//! is freed when the last proxy to it, in any process, is gone — dropped, held by a process
//! that died, or stored inside an object that was freed.
//!
//! Only the process that started a server (or serves it) can stop it: a `Shutdown` carries
//! an owner's token that no other client has (`server.rs`).
//!
//! The protocol is mproc's own (`wire.rs`: postcard frames), not CPython's pickle-based
//! manager protocol: a Python `BaseManager` cannot talk to an mproc manager, nor the
//! reverse. To exchange data with a Python program, use [`crate::Listener`] and
//! [`crate::connect`], which speak CPython's connection protocol.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

mod client;
mod conns;
mod handle;
mod locks;
mod managed;
mod object;
mod proxy;
mod server;
mod store;
mod sync_proxy;
mod transport;
mod wire;

pub use self::locks::{
    BarrierProxy, ConditionProxy, ConditionProxyGuard, RLockProxy, RLockProxyGuard, SemaphoreProxy,
};
pub use self::managed::{Managed, Proxy};
pub use self::proxy::{ArrayProxy, DictProxy, ListProxy, Namespace, ValueProxy};
pub use self::sync_proxy::{EventProxy, JoinableQueueProxy, LockProxy, LockProxyGuard, QueueProxy};

use self::client::ServerRef;
use self::handle::{Handle, unexpected};
use self::proxy::{done, enc};
use self::wire::{Answer, Bytes, Kind, Request};
use crate::codec;
use crate::connection::{Address, Connection, socket_pipe};
use crate::context::StartMethod;
use crate::error::{Error, Result};
use crate::process::Process;

/// How long an owner waits for its server to come up (a spawned server re-executes the
/// program, which on a loaded machine takes a while).
const STARTUP: Duration = Duration::from_secs(30);
/// How long `shutdown` waits for the server process to exit before killing it.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// What a starting server tells its owner: the address it listens on, or why it could not.
type Ready = std::result::Result<Address, Error>;

/// A manager: a server process holding shared objects, and the way to create them (Python's
/// `multiprocessing.Manager()` / `SyncManager` / `BaseManager`).
///
/// mproc managers speak their own protocol, not Python's: a Python `BaseManager` cannot
/// connect to one, nor can an mproc `Manager` connect to a Python manager (the handshake
/// would pass, then the first request fails to decode). Talk to Python programs with
/// [`Listener`](crate::Listener) and [`connect`](crate::connect) instead.
///
/// ```
/// # fn main() -> mproc::Result<()> {
/// fn worker(l: mproc::ListProxy<u32>, d: mproc::DictProxy<String, u32>) -> mproc::Result<()> {
///     l.append(&1)?;
///     d.insert("from".into(), std::process::id())?;
///     Ok(())
/// }
/// let manager = mproc::Manager::start()?;
/// let (l, d) = (manager.list()?, manager.dict()?);
/// mproc::spawn(worker, (l.clone(), d.clone()))?.result()??;
/// assert_eq!(l.to_vec()?, [1]);
/// assert!(d.contains_key(&"from".to_string())?);
/// manager.shutdown()?;
/// assert!(matches!(l.len(), Err(mproc::Error::Closed)));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Manager {
    server: Arc<ServerRef>,
    /// The token a `Shutdown` must carry: set when this manager started the server, or
    /// connected from the process that serves it (`serve_forever`).
    owner_token: Option<Vec<u8>>,
    /// The server process, when this manager started it.
    owner: Option<Mutex<Option<Owned>>>,
}

#[derive(Debug)]
struct Owned {
    process: Process<Result<()>>,
    _lifeline: Connection<Ready>,
}

/// Options for a manager's server: where it listens, its key, how it starts.
#[derive(Debug, Default, Clone)]
pub struct ManagerBuilder {
    address: Option<Address>,
    authkey: Option<Vec<u8>>,
    start_method: Option<StartMethod>,
}

impl ManagerBuilder {
    /// Listens at `address` (default: a private abstract Unix socket). A TCP address makes
    /// the manager reachable from other hosts.
    pub fn address(mut self, address: Address) -> Self {
        self.address = Some(address);
        self
    }

    /// The key clients must prove they know (default: 32 fresh random bytes).
    pub fn authkey(mut self, key: &[u8]) -> Self {
        self.authkey = Some(key.to_vec());
        self
    }

    /// How the server process starts (default: the process-wide start method).
    pub fn start_method(mut self, m: StartMethod) -> Self {
        self.start_method = Some(m);
        self
    }

    fn resolve(&self) -> Result<(Address, Vec<u8>)> {
        let authkey = match &self.authkey {
            Some(k) => k.clone(),
            None => random_key()?,
        };
        let address = match &self.address {
            Some(a) => a.clone(),
            None => Address::unique()?,
        };
        Ok((address, authkey))
    }

    /// Starts the server in a new process and connects to it.
    pub fn start(self) -> Result<Manager> {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let (address, authkey) = self.resolve()?;
        let token = random_key()?;
        let (here, there) = socket_pipe::<Ready>()?;
        let mut process = Process::new(
            server_main,
            (address, authkey.clone(), token.clone(), there),
        );
        process.set_name(&format!(
            "SyncManager-{}",
            COUNT.fetch_add(1, Ordering::Relaxed) + 1
        ));
        process.set_daemon(true);
        if let Some(m) = self.start_method {
            process.set_start_method(m);
        }
        process.start()?;
        let ready = match here.recv_timeout(STARTUP) {
            Ok(r) => r,
            Err(e) => {
                let _ = process.kill();
                let _ = process.join();
                return Err(match e {
                    Error::Closed => {
                        Error::ValueError("the manager's server died while starting".into())
                    }
                    e => e,
                });
            }
        };
        let address = match ready {
            Ok(a) => a,
            Err(e) => {
                let _ = process.join();
                return Err(e);
            }
        };
        let server = client::connect(address, authkey)?;
        Ok(Manager {
            server,
            owner_token: Some(token),
            owner: Some(Mutex::new(Some(Owned {
                process,
                _lifeline: here,
            }))),
        })
    }

    /// Serves from this process (Python's `get_server().serve_forever()`, for a dedicated
    /// server host) until a [`Manager`] connected from this same process (another thread)
    /// calls [`shutdown`](Manager::shutdown): other clients cannot stop it.
    pub fn serve_forever(self) -> Result<()> {
        let (address, authkey) = self.resolve()?;
        let token = random_key()?;
        let server = server::Server::bind(&address, &authkey, &token)?;
        let nonce = server.nonce();
        serving().insert(nonce, token);
        let out = server.serve::<()>(None);
        serving().remove(&nonce);
        out
    }
}

/// 32 fresh random bytes (a key or an owner's token).
fn random_key() -> Result<Vec<u8>> {
    let mut k = vec![0u8; 32];
    crate::sys::net::random_bytes(&mut k)?;
    Ok(k)
}

/// The owner tokens of the servers this process serves (`serve_forever`), by nonce: a
/// `Manager` that connects to one of them from this process may shut it down.
fn serving() -> std::sync::MutexGuard<'static, BTreeMap<u64, Vec<u8>>> {
    static SERVING: Mutex<BTreeMap<u64, Vec<u8>>> = Mutex::new(BTreeMap::new());
    SERVING.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The server process's body.
fn server_main(
    address: Address,
    authkey: Vec<u8>,
    token: Vec<u8>,
    lifeline: Connection<Ready>,
) -> Result<()> {
    // As CPython's manager server does: Ctrl-C reaches the whole process group, and the
    // owner, not the server, decides what it means.
    crate::sys::signal::ignore_interrupts();
    let server = match server::Server::bind(&address, &authkey, &token) {
        Ok(s) => s,
        Err(e) => return lifeline.send(&Err(e)),
    };
    lifeline.send(&Ok(server.address()))?;
    server.serve(Some(lifeline))
}

impl Manager {
    /// Starts a manager's server process on a private address with a fresh random key
    /// (Python's `Manager()`).
    pub fn start() -> Result<Manager> {
        Manager::builder().start()
    }

    /// Options: address, key, start method; or serve from this process.
    pub fn builder() -> ManagerBuilder {
        ManagerBuilder::default()
    }

    /// Connects to a running manager (Python's `BaseManager(address, authkey).connect()`).
    /// `Err(AuthenticationError)` for a wrong key. Dropping it does not stop the server.
    pub fn connect(address: Address, authkey: &[u8]) -> Result<Manager> {
        let server = client::connect(address, authkey.to_vec())?;
        let owner_token = serving().get(&server.nonce).cloned();
        Ok(Manager {
            server,
            owner_token,
            owner: None,
        })
    }

    /// The address the server listens on.
    pub fn address(&self) -> Address {
        self.server.address.clone()
    }

    /// The key clients authenticate with (to hand to processes that will `connect`).
    pub fn authkey(&self) -> &[u8] {
        &self.server.authkey
    }

    /// Stops the server. Afterwards every proxy call, in every process, is `Err(Closed)`.
    /// Calling it again is `Ok`. Only the manager that started the server (or one connected
    /// from the process that [serves](ManagerBuilder::serve_forever) it) may: for any other
    /// client it is `Err(ValueError)` and the server goes on.
    pub fn shutdown(&self) -> Result<()> {
        let Some(token) = &self.owner_token else {
            return Err(server::not_owner());
        };
        let asked = client::call(&self.server, &Request::Shutdown(Bytes(token)), None);
        self.server.closed.store(true, Ordering::Relaxed);
        // This thread's connection is of no further use; other threads' and processes'
        // see the end of stream and are dropped at their next call.
        client::forget_client(&self.server);
        if let Some(owner) = &self.owner {
            if let Some(mut owned) = owner.lock().unwrap_or_else(PoisonError::into_inner).take() {
                if !owned.process.join_timeout(EXIT_GRACE)? {
                    owned.process.kill()?;
                    owned.process.join()?;
                }
            }
        }
        match asked {
            Ok(_) | Err(Error::Closed) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// How many objects the server holds now (a diagnostic: objects are freed when the
    /// last proxy to them, in any process, is gone).
    #[doc(hidden)]
    pub fn object_count(&self) -> Result<usize> {
        match client::call(&self.server, &Request::ObjectCount, None)? {
            Answer::Len(n) => Ok(n as usize),
            a => Err(unexpected(a)),
        }
    }

    fn new_object(&self, kind: Kind<'_>) -> Result<Handle> {
        match client::call(&self.server, &Request::Create(kind), None)? {
            Answer::Id(id) => Ok(Handle {
                server: self.server.clone(),
                id,
                _claim: Some(handle::Life::new(&self.server, id)),
            }),
            a => Err(unexpected(a)),
        }
    }

    /// A new shared list.
    pub fn list<T>(&self) -> Result<ListProxy<T>> {
        Ok(ListProxy::from_handle(self.new_object(Kind::List)?))
    }

    /// A new shared dict.
    pub fn dict<K, V>(&self) -> Result<DictProxy<K, V>> {
        Ok(DictProxy::from_handle(self.new_object(Kind::Dict)?))
    }

    /// A new namespace.
    pub fn namespace(&self) -> Result<Namespace> {
        Ok(Namespace::from_handle(self.new_object(Kind::Namespace)?))
    }

    /// A new unbounded queue.
    pub fn queue<T>(&self) -> Result<QueueProxy<T>> {
        Ok(QueueProxy::from_handle(self.new_object(Kind::Queue(None))?))
    }

    /// A new queue of at most `maxsize` items (Python's `manager.Queue(maxsize)`): `put`
    /// waits while it is full; `put_timeout` and `try_put` answer `Err(Full)`. A `maxsize`
    /// of 0 is unbounded, as in Python.
    pub fn queue_bounded<T>(&self, maxsize: usize) -> Result<QueueProxy<T>> {
        let bound = (maxsize > 0).then_some(maxsize as u64);
        Ok(QueueProxy::from_handle(
            self.new_object(Kind::Queue(bound))?,
        ))
    }

    /// A new joinable queue (Python's `manager.JoinableQueue()`), unbounded.
    pub fn joinable_queue<T>(&self) -> Result<JoinableQueueProxy<T>> {
        Ok(JoinableQueueProxy::from_handle(
            self.new_object(Kind::Queue(None))?,
        ))
    }

    /// A new reentrant lock (Python's `manager.RLock()`).
    pub fn rlock(&self) -> Result<RLockProxy> {
        Ok(RLockProxy::from_handle(self.new_object(Kind::RLock)?))
    }

    /// A new semaphore of value `n` (Python's `manager.Semaphore(n)`); releases may raise
    /// it past `n`.
    pub fn semaphore(&self, n: usize) -> Result<SemaphoreProxy> {
        Ok(SemaphoreProxy::from_handle(
            self.new_object(Kind::Semaphore(n as u64, false))?,
        ))
    }

    /// A new bounded semaphore of value `n` (Python's `manager.BoundedSemaphore(n)`): a
    /// release that would raise it past `n` is `Err(ValueError)`.
    pub fn bounded_semaphore(&self, n: usize) -> Result<SemaphoreProxy> {
        Ok(SemaphoreProxy::from_handle(
            self.new_object(Kind::Semaphore(n as u64, true))?,
        ))
    }

    /// A new condition variable with its own lock (Python's `manager.Condition()`).
    pub fn condition(&self) -> Result<ConditionProxy> {
        Ok(ConditionProxy::from_handle(
            self.new_object(Kind::Condition)?,
        ))
    }

    /// A new barrier for `parties` parties (Python's `manager.Barrier(parties)`); 0 is
    /// `Err(ValueError)`.
    pub fn barrier(&self, parties: usize) -> Result<BarrierProxy> {
        Ok(BarrierProxy::from_handle(
            self.new_object(Kind::Barrier(parties as u64))?,
        ))
    }

    /// A new fixed-length array holding `items` (Python's `manager.Array`).
    pub fn array<T: Serialize>(&self, items: Vec<T>) -> Result<ArrayProxy<T>> {
        let items: Vec<Vec<u8>> = items.iter().map(enc).collect::<Result<_>>()?;
        let items = items.iter().map(|b| Bytes(b)).collect();
        Ok(ArrayProxy::from_handle(
            self.new_object(Kind::Array(items))?,
        ))
    }

    /// A new lock.
    pub fn lock(&self) -> Result<LockProxy> {
        Ok(LockProxy::from_handle(self.new_object(Kind::Lock)?))
    }

    /// A new event, clear.
    pub fn event(&self) -> Result<EventProxy> {
        Ok(EventProxy::from_handle(self.new_object(Kind::Event)?))
    }

    /// A new value holding `v`.
    pub fn value<T: Serialize>(&self, v: T) -> Result<ValueProxy<T>> {
        let bytes = enc(&v)?;
        Ok(ValueProxy::from_handle(
            self.new_object(Kind::Value(Bytes(&bytes)))?,
        ))
    }

    /// Moves `state` into the server and returns a proxy to it (Python's
    /// `BaseManager.register` plus the call that creates one). The server finds `S`'s code
    /// the way a child finds its target, so the caller must run the server's executable
    /// (over TCP, a peer running another executable gets `Err(ValueError)` saying so);
    /// any client may then [`call`](Proxy::call) the object.
    pub fn create<S: Managed>(&self, state: S) -> Result<Proxy<S>> {
        let bytes = enc(&state)?;
        let entry = managed::Records::<S, ()>::CUSTOM;
        let kind = Kind::Custom {
            state: Bytes(&bytes),
            code: managed::code_of(entry),
        };
        Ok(Proxy::from_handle(self.new_object(kind)?))
    }

    /// Publishes `proxy` under `name`, for clients that [`lookup`](Manager::lookup) it
    /// (Python's `register('get_queue', callable=lambda: queue)`).
    pub fn publish<P: Serialize>(&self, name: &str, proxy: &P) -> Result<()> {
        let bytes = enc(proxy)?;
        done(client::call(
            &self.server,
            &Request::Publish(name, std::any::type_name::<P>(), Bytes(&bytes)),
            None,
        )?)
    }

    /// The proxy published under `name`; `Err(ValueError)` if there is none, or if it was
    /// published as another type than `P` (another kind of proxy, or other element types:
    /// the error names both). Its calls go to the address this manager reached the server
    /// by.
    pub fn lookup<P: DeserializeOwned>(&self, name: &str) -> Result<P> {
        let want = std::any::type_name::<P>();
        match client::call(&self.server, &Request::Lookup(name, want), None)? {
            Answer::One(b) => handle::rebased(&self.server, || codec::decode_plain(&b.0)),
            a => Err(unexpected(a)),
        }
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        if self.owner.is_some() {
            let _ = self.shutdown();
        }
    }
}
