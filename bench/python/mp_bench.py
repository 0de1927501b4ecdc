"""CPython multiprocessing side of the mproc benchmark harness.

usage: mp_bench.py WORKLOAD N REPS

Runs one workload (the same names, sizes and item types as the Rust side, see
bench/src/workloads.rs) with one warm-up and REPS timed repetitions of N operations each,
timed inside the script with time.perf_counter, and prints one JSON line:
    {"samples": [seconds per operation, ...]}
Every workload forces the start method it measures (`fork` unless the row says otherwise).
"""
import json
import math
import multiprocessing as mp
import sys
import time

now = time.perf_counter
MIB = 1 << 20


def reps(r, warm, once):
    warm()
    return [once() for _ in range(r)]


def per_op(n, fn):
    t0 = now()
    fn()
    return (now() - t0) / max(n, 1)


def noop():
    pass


def ident(x):
    return x


# ---- process start -------------------------------------------------------------------

def start(method, n, r):
    ctx = mp.get_context(method)

    def batch(k):
        for _ in range(k):
            p = ctx.Process(target=noop)
            p.start()
            p.join()

    # The warm-up also starts the forkserver process.
    return reps(r, lambda: batch(2), lambda: per_op(n, lambda: batch(n)))


# ---- pipes ---------------------------------------------------------------------------

def echo(conn):
    while True:
        x = conn.recv()
        if x is None:
            break
        conn.send(x)


def pipe_rtt(n, r):
    a, b = mp.Pipe()
    p = mp.Process(target=echo, args=(b,))
    p.start()

    def batch(k):
        send, recv = a.send, a.recv
        for i in range(k):
            send(i)
            recv()

    out = reps(r, lambda: batch(1000), lambda: per_op(n, lambda: batch(n)))
    a.send(None)
    p.join()
    return out


def bytes_sink(conn):
    while True:
        k = conn.recv()
        if k == 0:
            break
        got = 0
        for _ in range(k):
            got += len(conn.recv_bytes())
        conn.send(got)


def pipe_bw(n, r):
    a, b = mp.Pipe()
    p = mp.Process(target=bytes_sink, args=(b,))
    p.start()
    payload = bytes(MIB)

    def batch(k):
        a.send(k)
        for _ in range(k):
            a.send_bytes(payload)
        assert a.recv() == k * MIB

    out = reps(r, lambda: batch(4), lambda: per_op(n, lambda: batch(n)))
    a.send(0)
    p.join()
    return out


# ---- locks, values, events -----------------------------------------------------------

def lock_uncontended(n, r):
    lock = mp.Lock()

    def batch(k):
        acquire, release = lock.acquire, lock.release
        for _ in range(k):
            acquire()
            release()

    return reps(r, lambda: batch(1000), lambda: per_op(n, lambda: batch(n)))


def incr_worker(v, go, n):
    go.wait()
    lock = v.get_lock()
    for _ in range(n):
        with lock:
            v.value += 1


def value_incr_once(n):
    go = mp.Event()
    v = mp.Value("q", 0)
    ps = [mp.Process(target=incr_worker, args=(v, go, n)) for _ in range(2)]
    for p in ps:
        p.start()
    t0 = now()
    go.set()
    for p in ps:
        p.join()
    dt = now() - t0
    assert v.value == 2 * n, v.value
    return dt / (2 * n)


def value_incr(n, r):
    return reps(r, lambda: value_incr_once(max(n // 10, 1)), lambda: value_incr_once(n))


def event_echo(ping, pong, n):
    for _ in range(n):
        ping.wait()
        ping.clear()
        pong.set()


def event_wake(n, r):
    total = 1000 + n * r
    ping, pong = mp.Event(), mp.Event()
    p = mp.Process(target=event_echo, args=(ping, pong, total))
    p.start()

    def batch(k):
        for _ in range(k):
            ping.set()
            pong.wait()
            pong.clear()

    # Two wake-ups per round trip.
    out = reps(r, lambda: batch(1000), lambda: per_op(2 * n, lambda: batch(n)))
    p.join()
    return out


# ---- queues --------------------------------------------------------------------------

def producer(q, go, n):
    go.wait()
    put = q.put
    for i in range(n):
        put(i)


def queue_stream_once(n):
    q = mp.Queue()
    go = mp.Event()
    p = mp.Process(target=producer, args=(q, go, n))
    p.start()
    t0 = now()
    go.set()
    get = q.get
    s = 0
    for _ in range(n):
        s += get()
    dt = now() - t0
    p.join()
    assert s == n * (n - 1) // 2
    return dt / n


def queue_stream(n, r):
    return reps(r, lambda: queue_stream_once(1000), lambda: queue_stream_once(n))


def queue_echo(inq, outq):
    while True:
        x = inq.get()
        if x is None:
            break
        outq.put(x)


def queue_rtt(n, r):
    inq, outq = mp.Queue(), mp.Queue()
    p = mp.Process(target=queue_echo, args=(inq, outq))
    p.start()

    def batch(k):
        put, get = inq.put, outq.get
        for i in range(k):
            put(i)
            get()

    out = reps(r, lambda: batch(1000), lambda: per_op(n, lambda: batch(n)))
    inq.put(None)
    p.join()
    return out


def big_sink(q, acks):
    while True:
        k = q.get()
        if k == 0:
            break
        got = 0
        for _ in range(k):
            got += len(q.get())
        acks.put(got)


def queue_64mib(n, r):
    size = 64 * MIB
    q, acks = mp.Queue(), mp.Queue()
    p = mp.Process(target=big_sink, args=(q, acks))
    p.start()
    payload = bytes(size)

    def batch(k):
        q.put(k)
        for _ in range(k):
            q.put(payload)
        assert acks.get() == k * size

    out = reps(r, lambda: batch(1), lambda: per_op(n, lambda: batch(n)))
    q.put(0)
    p.join()
    return out


# ---- pools ---------------------------------------------------------------------------

def pool_start(n, r):
    def once(k):
        busy = 0.0
        for i in range(k):
            t0 = now()
            pool = mp.Pool(2)
            assert pool.apply(ident, (i,)) == i
            busy += now() - t0
            # Teardown outside the clock, before the next start (as the Rust side).
            pool.terminate()
            pool.join()
        return busy / max(k, 1)

    return reps(r, lambda: once(2), lambda: once(n))


def pool_apply(n, r):
    with mp.Pool(2) as pool:
        def batch(k):
            for i in range(k):
                assert pool.apply(ident, (i,)) == i

        return reps(r, lambda: batch(100), lambda: per_op(n, lambda: batch(n)))


def pool_map(chunksize):
    def run(n, r):
        with mp.Pool(2) as pool:
            def batch(k):
                if chunksize is None:
                    out = pool.map(ident, range(k))
                else:
                    out = pool.map(ident, range(k), chunksize=chunksize)
                assert len(out) == k

            return reps(r, lambda: batch(1000), lambda: per_op(n, lambda: batch(n)))

    return run


def sleep_ms(ms):
    time.sleep(ms / 1000)
    return ms


def pool_hetero(n, r):
    tasks = [n] + [10] * (n // 10)
    with mp.Pool(2) as pool:
        def once(ts):
            assert len(list(pool.imap_unordered(sleep_ms, ts))) == len(ts)

        return reps(r, lambda: once([1, 1]), lambda: per_op(1, lambda: once(tasks)))


def pool_idle_cpu(n, r):
    import resource

    def cpu():
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return ru.ru_utime + ru.ru_stime

    with mp.Pool(2) as pool:
        assert pool.apply(ident, (1,)) == 1

        def once():
            before = cpu()
            time.sleep(n)
            return (cpu() - before) / max(n, 1)

        return reps(r, lambda: None, once)


def calc_pi(rank, nprocs, nsteps):
    dx = 1.0 / nsteps
    s = 0.0
    for i in range(rank, nsteps, nprocs):
        x = (i + 0.5) * dx
        s += 4.0 / (1.0 + x * x)
    return s * dx


def check_pi(pi):
    assert abs(pi - math.pi) < 1e-6, pi


def pi_serial(n, r):
    return reps(r, lambda: check_pi(calc_pi(0, 1, 1000)),
                lambda: per_op(1, lambda: check_pi(calc_pi(0, 1, n))))


def pi_pool(n, r):
    with mp.Pool(2) as pool:
        def once(steps):
            check_pi(sum(pool.starmap(calc_pi, [(rank, 2, steps) for rank in range(2)])))

        return reps(r, lambda: once(1000), lambda: per_op(1, lambda: once(n)))


# ---- managers ------------------------------------------------------------------------

def manager_child(kind, proxy, n, r, conn):
    def batch(k):
        if kind == "list_append":
            for i in range(k):
                proxy.append(i)
        elif kind == "dict_set":
            for i in range(k):
                proxy[i] = i
        else:
            for i in range(k):
                assert proxy[i] == i

    conn.send(reps(r, lambda: batch(min(n, 100)), lambda: per_op(n, lambda: batch(n))))


def manager_ops(kind):
    def run(n, r):
        ctx = mp.get_context("fork")
        with ctx.Manager() as m:
            proxy = m.list() if kind == "list_append" else m.dict()
            if kind == "dict_get":
                proxy.update({i: i for i in range(n)})
            a, b = ctx.Pipe()
            p = ctx.Process(target=manager_child, args=(kind, proxy, n, r, b))
            p.start()
            samples = a.recv()
            p.join()
            return samples
    return run


def manager_create(n, r):
    ctx = mp.get_context("fork")
    with ctx.Manager() as m:
        def batch(k):
            for _ in range(k):
                m.list()
        return reps(r, lambda: batch(10), lambda: per_op(n, lambda: batch(n)))


# ---- Listener / Client ---------------------------------------------------------------

KEY = b"bench key"


def listener_echo(address):
    from multiprocessing.connection import Client
    c = Client(address, authkey=KEY)
    while True:
        x = c.recv()
        if x is None:
            break
        c.send(x)


def listener_rtt(family):
    def run(n, r):
        import os
        import tempfile
        from multiprocessing.connection import Listener
        if family == "tcp":
            address = ("127.0.0.1", 0)
        else:
            address = os.path.join(tempfile.gettempdir(), f"mp-bench-{os.getpid()}.sock")
        with Listener(address, authkey=KEY) as listener:
            p = mp.Process(target=listener_echo, args=(listener.address,))
            p.start()
            conn = listener.accept()

            def batch(k):
                send, recv = conn.send, conn.recv
                for i in range(k):
                    send(i)
                    recv()

            out = reps(r, lambda: batch(1000), lambda: per_op(n, lambda: batch(n)))
            conn.send(None)
            p.join()
            return out
    return run


def listener_serve(listener, total):
    for _ in range(total):
        listener.accept().close()


def listener_connect(n, r):
    from multiprocessing.connection import Client, Listener
    warm = 20
    with Listener(("127.0.0.1", 0), authkey=KEY, backlog=128) as listener:
        p = mp.Process(target=listener_serve, args=(listener, warm + n * r))
        p.start()
        address = listener.address

        def batch(k):
            for _ in range(k):
                Client(address, authkey=KEY).close()

        out = reps(r, lambda: batch(warm), lambda: per_op(n, lambda: batch(n)))
        p.join()
        return out


WORKLOADS = {
    "start_fork": lambda n, r: start("fork", n, r),
    "start_spawn": lambda n, r: start("spawn", n, r),
    "start_forkserver": lambda n, r: start("forkserver", n, r),
    "pipe_rtt": pipe_rtt,
    "pipe_bw": pipe_bw,
    "lock_uncontended": lock_uncontended,
    "value_incr": value_incr,
    "event_wake": event_wake,
    "queue_stream": queue_stream,
    "queue_rtt": queue_rtt,
    "queue_64mib": queue_64mib,
    "pool_start": pool_start,
    "pool_apply": pool_apply,
    "pool_map": pool_map(None),
    "pool_map_chunk1": pool_map(1),
    "pool_hetero": pool_hetero,
    "pool_idle_cpu": pool_idle_cpu,
    "pi_serial": pi_serial,
    "pi_pool": pi_pool,
    "manager_list_append": manager_ops("list_append"),
    "manager_dict_set": manager_ops("dict_set"),
    "manager_dict_get": manager_ops("dict_get"),
    "manager_create": manager_create,
    "listener_tcp_rtt": listener_rtt("tcp"),
    "listener_unix_rtt": listener_rtt("unix"),
    "listener_connect": listener_connect,
}


if __name__ == "__main__":
    name, n, r = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if name not in WORKLOADS:
        print(json.dumps({"error": f"no CPython program for {name}"}))
        sys.exit(2)
    mp.set_start_method("fork")
    print(json.dumps({"samples": WORKLOADS[name](n, r)}), flush=True)
