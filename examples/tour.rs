//! A tour of mproc: every capability, one short scene each.
//!
//! `cargo run --release --example tour`

use std::time::{Duration, Instant};

use mproc::{Connection, Error, Process, StartMethod, get_context, pipe, pipe_simplex};

fn square(x: u64) -> u64 {
    x * x
}

fn greet(conn: Connection<String>) -> mproc::Result<()> {
    let name = conn.recv()?;
    conn.send(&format!(
        "hello, {name}, from {}",
        mproc::current_process().name()
    ))
}

fn dial(at: mproc::Address) -> mproc::Result<()> {
    // Python's `Client(address, authkey=...)`: a Python program could be on either end.
    let conn = mproc::connect::<String>(at, Some(b"tour key"))?;
    conn.send(&"hello through a Listener".to_string())
}

fn crash(kind: String) {
    match kind.as_str() {
        "panic" => panic!("something went wrong"),
        "abort" => std::process::abort(),
        _ => std::process::exit(3),
    }
}

fn nap(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

fn relay(inner: mproc::Sender<u32>) -> mproc::Result<()> {
    // A grandchild, handed a connection its grandparent created.
    let p = mproc::spawn(|tx: mproc::Sender<u32>| tx.send(&42), (inner,))?;
    p.result()?
}

fn fill(q: mproc::Queue<Option<String>>, n: u32) -> mproc::Result<()> {
    for i in 0..n {
        q.put(Some(format!("item {i}")))?;
    }
    q.put(Some("last words".to_string()))?;
    std::process::abort() // no feeder thread: what was put is already in the queue
}

fn deposit(balance: mproc::Value<i64>, times: u32) {
    for _ in 0..times {
        *balance.lock() += 1;
    }
}

fn die_holding(lock: mproc::Lock) {
    let _guard = lock.acquire();
    std::process::abort();
}

fn wait_for_go(go: mproc::Event, arrived: mproc::Barrier) -> mproc::Result<usize> {
    go.wait();
    arrived.wait()
}

fn count_words(counts: mproc::DictProxy<String, u64>, text: String) -> mproc::Result<()> {
    for w in text.split_whitespace() {
        // Runs inside the manager's server, atomically: no lost updates.
        counts.modify(w.to_string(), |n: Option<u64>| n.unwrap_or(0) + 1)?;
    }
    Ok(())
}

fn main() -> mproc::Result<()> {
    println!("== processes: a Rust function in another process, its result back");
    let mut p = Process::new(square, (12,));
    p.start()?;
    let (name, pid) = (p.name().to_string(), p.pid().unwrap_or(0));
    println!("{name} (pid {pid}) computed {}", p.result()?);

    println!("\n== start methods: the same call under fork, spawn and forkserver");
    for m in [
        StartMethod::Fork,
        StartMethod::Spawn,
        StartMethod::ForkServer,
    ] {
        let t = Instant::now();
        let mut p = get_context(m).process(square, (9,));
        p.start()?;
        let r = p.result()?;
        println!(
            "{:<10} 9² = {r}   ({:.2?} for start + run + join)",
            m.name(),
            t.elapsed()
        );
    }

    println!("\n== pipes: typed messages both ways");
    let (here, there) = pipe::<String>()?;
    let p = mproc::spawn(greet, (there,))?;
    here.send(&"tour".to_string())?;
    println!("{}", here.recv()?);
    p.result()??;

    println!("\n== handles travel: a pipe end passed through a child to a grandchild");
    let (rx, tx) = pipe_simplex::<u32>()?;
    let p = mproc::spawn(relay, (tx,))?;
    println!("the grandchild sent {}", rx.recv()?);
    p.result()??;

    println!("\n== listeners: authenticated connections on TCP, and wait() over anything");
    let listener = mproc::Listener::<String>::bind("127.0.0.1:0".parse()?, Some(b"tour key"))?;
    let p = mproc::spawn(dial, (listener.address(),))?;
    let ready = mproc::wait(&[&listener, &p], Some(Duration::from_secs(10)))?;
    println!("wait() says ready: {ready:?} (0: a peer is waiting to be accepted)");
    let conn = listener.accept()?;
    println!(
        "{} (over {}, after a mutual HMAC handshake)",
        conn.recv()?,
        listener.address()
    );
    p.result()??;
    let at = listener.address();
    let guesser = std::thread::spawn(move || mproc::connect::<String>(at, Some(b"a guess")));
    let refused = listener.accept().map(drop);
    let guessed = guesser
        .join()
        .map_err(|_| Error::ValueError("guesser panicked".into()))?;
    println!(
        "a client with the wrong key: accept() -> {:?}, connect() -> {:?}",
        refused,
        guessed.map(drop)
    );

    println!("\n== failures are values: panic, abort, exit(3)");
    for kind in ["panic", "abort", "exit"] {
        let p = mproc::spawn(crash, (kind.to_string(),))?;
        match p.result() {
            Err(e @ Error::TaskPanicked { .. }) | Err(e @ Error::ChildFailed { .. }) => {
                println!("{kind:<5} -> {e}")
            }
            other => println!("{kind:<5} -> unexpected {other:?}"),
        }
    }

    println!("\n== timeouts and signals: nothing blocks for ever");
    let mut p = Process::new(nap, (60_000,));
    p.start()?;
    println!(
        "join_timeout(100ms) -> exited: {}",
        p.join_timeout(Duration::from_millis(100))?
    );
    p.terminate()?;
    p.join()?;
    println!("after terminate: {p}");

    println!("\n== shared memory and locks: 4 processes x 10 000 increments under a Value's lock");
    let balance = mproc::Value::new(0i64)?;
    let mut workers = Vec::new();
    for _ in 0..4 {
        workers.push(mproc::spawn(deposit, (balance.clone(), 10_000))?);
    }
    for w in workers {
        w.result()?;
    }
    println!("balance = {}", balance.get());

    println!("\n== a lock whose holder dies is recovered, and the next holder is told");
    let lock = mproc::Lock::new()?;
    let mut p = Process::new(die_holding, (lock.clone(),));
    p.start()?;
    p.join()?;
    match lock.acquire_timeout(Duration::from_secs(5)) {
        Some(g) => println!(
            "acquired after the holder died: owner_died() = {}",
            g.owner_died()
        ),
        None => println!("still locked (unexpected)"),
    }

    println!("\n== Event and Barrier across processes");
    let go = mproc::Event::new()?;
    let arrived = mproc::Barrier::new(3)?;
    let a = mproc::spawn(wait_for_go, (go.clone(), arrived.clone()))?;
    let b = mproc::spawn(wait_for_go, (go.clone(), arrived.clone()))?;
    go.set();
    let mine = arrived.wait()?;
    let mut indices = vec![mine, a.result()??, b.result()??];
    indices.sort();
    println!("three parties passed the barrier with indices {indices:?}");

    println!("\n== queues: shared-memory rings, no feeder thread, nothing lost");
    let q = mproc::Queue::new()?;
    let mut p = Process::new(fill, (q.clone(), 3));
    p.start()?;
    p.join()?; // joined before anyone reads: fine below the ring's 1 MiB
    println!(
        "the producer died with {:?}; the queue holds {} items:",
        p.exitcode(),
        q.qsize()
    );
    while let Ok(Some(item)) = q.try_get() {
        println!("  {item}");
    }

    println!("\n== pools: map, starmap, imap, apply_async with a callback");
    let pool = mproc::Pool::new(2)?;
    println!("map      {:?}", pool.map(square, 1..=8)?);
    println!(
        "starmap  {:?}",
        pool.starmap(|a: u64, b: u64| a * b, [(2, 3), (4, 5)])?
    );
    let firsts: Vec<u64> = pool
        .imap(square, 0..)
        .take(5)
        .collect::<mproc::Result<_>>()?;
    println!("imap     {firsts:?} (from an endless input)");
    let r = pool
        .apply_async(square, (11,))
        .on_complete(|v| println!("callback got {v}"), |e| println!("error {e}"));
    r.wait();

    println!("\n== pools survive crashing workers: only the crashed task fails");
    let results: Vec<String> = pool
        .imap(
            |n: u64| {
                if n == 2 {
                    std::process::abort()
                } else {
                    n * 10
                }
            },
            0..5,
        )
        .map(|r| match r {
            Ok(v) => v.to_string(),
            Err(e) => format!("<{e}>"),
        })
        .collect();
    println!("{}", results.join(", "));
    let pool = mproc::Pool::builder()
        .processes(1)
        .task_timeout(Duration::from_millis(200))
        .build()?;
    println!(
        "a task that hangs: {:?}",
        pool.apply(nap, (60_000,)).map_err(|e| e.to_string())
    );
    println!("the pool goes on:  {:?}", pool.apply(square, (3,))?);

    println!("\n== managers: a shared dict in a server process, updated atomically by 3 children");
    let manager = mproc::Manager::start()?;
    let counts = manager.dict::<String, u64>()?;
    let texts = ["to be or not to be", "to do is to be", "to be is to do"];
    let children: Vec<_> = texts
        .iter()
        .map(|t| mproc::spawn(count_words, (counts.clone(), t.to_string())))
        .collect::<mproc::Result<_>>()?;
    for c in children {
        c.result()??;
    }
    let mut items = counts.items()?;
    items.sort();
    println!("{items:?}");
    manager.shutdown()?;
    println!(
        "after shutdown, a proxy call answers: {}",
        counts.len().unwrap_err()
    );

    println!("\n== daemons: ended with their parent, never left behind");
    let mut d = Process::new(nap, (60_000,));
    d.set_daemon(true);
    d.start()?;
    println!("{d} will be terminated when this program exits");
    Ok(())
}
