//! The Rust peers: procspawn 1.0.2 (process spawning, a pool) and ipc-channel 0.23.1
//! (typed and byte channels between processes). Each does a row only where it has the
//! capability; the rest of its cells stay empty.

use std::collections::VecDeque;
use std::process::Command;

use ipc_channel::ipc::{
    self, IpcBytesReceiver, IpcBytesSender, IpcOneShotServer, IpcReceiver, IpcSender,
};
use serde::{Deserialize, Serialize};

use crate::measure::{per_op, reps, rounds};
use crate::raw::{calc_pi, pi_check};

/// procspawn's rows; `None` where it has nothing to offer.
pub fn procspawn(w: &str, n: u64, r: usize) -> Option<Vec<f64>> {
    Some(match w {
        "start_spawn" => {
            let round = |k: u64| {
                for _ in 0..k {
                    procspawn::spawn((), |()| ())
                        .join()
                        .expect("procspawn child");
                }
            };
            rounds(r, 1, n, round)
        }
        "pool_apply" => {
            let pool = procspawn::Pool::new(2).expect("procspawn pool");
            let round = |k: u64| {
                for i in 0..k {
                    assert_eq!(pool.spawn(i, ident).join().expect("task"), i);
                }
            };
            let v = rounds(r, 100, n, round);
            pool.shutdown();
            v
        }
        "pool_map_chunk1" => {
            let pool = procspawn::Pool::new(2).expect("procspawn pool");
            // Every queued task holds two ipc channels until joined: queueing thousands at
            // once runs out of descriptors, so keep a window of tasks in flight.
            const WINDOW: usize = 256;
            let round = |k: u64| {
                let mut q = VecDeque::with_capacity(WINDOW + 1);
                let mut s = 0u64;
                for i in 0..k {
                    q.push_back(pool.spawn(i, ident));
                    if q.len() > WINDOW {
                        s += q
                            .pop_front()
                            .expect("window not empty")
                            .join()
                            .expect("task");
                    }
                }
                for h in q {
                    s += h.join().expect("task");
                }
                assert_eq!(s, k * k.saturating_sub(1) / 2);
            };
            let v = rounds(r, 100, n, round);
            pool.shutdown();
            v
        }
        "pi_pool" => {
            let run = |steps: u64| {
                let hs: Vec<_> = (0..2u64)
                    .map(|rank| {
                        procspawn::spawn((rank, steps), |(rank, steps): (u64, u64)| {
                            calc_pi(rank, 2, steps)
                        })
                    })
                    .collect();
                hs.into_iter()
                    .map(|h| h.join().expect("pi child"))
                    .sum::<f64>()
            };
            reps(r, || pi_check(run(1000)), || per_op(1, || pi_check(run(n))))
        }
        _ => return None,
    })
}

fn ident(x: u64) -> u64 {
    x
}

#[derive(Serialize, Deserialize)]
enum Ctl {
    /// Echo this many u64 from ping to pong.
    Echo(u64),
    /// Receive this many byte messages, ack their total length.
    Bytes(u64),
    /// Receive this many u64 on the stream, ack their sum.
    Ints(u64),
}

/// What the child hands the parent when it starts.
#[derive(Serialize, Deserialize)]
struct Boot {
    ping: IpcSender<u64>,
    pong: IpcReceiver<u64>,
    ctl: IpcSender<Ctl>,
    bytes: IpcBytesSender,
    ints: IpcSender<u64>,
    ack: IpcReceiver<u64>,
}

/// The child side of the ipc-channel rows: `mproc-bench ipc-child SERVER`.
pub fn ipc_child(server: &str) {
    let boot_tx: IpcSender<Boot> =
        IpcSender::connect(server.to_string()).expect("connect to the parent");
    let (ping, ping_rx) = ipc::channel::<u64>().expect("channel");
    let (pong_tx, pong) = ipc::channel::<u64>().expect("channel");
    let (ctl, ctl_rx) = ipc::channel::<Ctl>().expect("channel");
    let (bytes, bytes_rx): (IpcBytesSender, IpcBytesReceiver) =
        ipc::bytes_channel().expect("channel");
    let (ints, ints_rx) = ipc::channel::<u64>().expect("channel");
    let (ack_tx, ack) = ipc::channel::<u64>().expect("channel");
    boot_tx
        .send(Boot {
            ping,
            pong,
            ctl,
            bytes,
            ints,
            ack,
        })
        .expect("boot");
    while let Ok(c) = ctl_rx.recv() {
        match c {
            Ctl::Echo(k) => {
                for _ in 0..k {
                    pong_tx.send(ping_rx.recv().expect("ping")).expect("pong");
                }
            }
            Ctl::Bytes(k) => {
                let mut got = 0u64;
                for _ in 0..k {
                    got += bytes_rx.recv().expect("bytes").len() as u64;
                }
                ack_tx.send(got).expect("ack");
            }
            Ctl::Ints(k) => {
                let mut s = 0u64;
                for _ in 0..k {
                    s = s.wrapping_add(ints_rx.recv().expect("int"));
                }
                ack_tx.send(s).expect("ack");
            }
        }
    }
}

/// ipc-channel's rows; `None` where it has nothing to offer.
pub fn ipc_channel(w: &str, n: u64, r: usize) -> Option<Vec<f64>> {
    if !matches!(w, "pipe_rtt" | "pipe_bw" | "queue_stream" | "queue_64mib") {
        return None;
    }
    let (server, name) = IpcOneShotServer::<Boot>::new().expect("one-shot server");
    let exe = std::env::current_exe().expect("the harness knows its own path");
    let mut kid = Command::new(exe)
        .arg("ipc-child")
        .arg(name)
        .spawn()
        .expect("start the ipc child");
    let (_, b) = server.accept().expect("the child connects");
    let v = match w {
        "pipe_rtt" => {
            let round = |k: u64| {
                b.ctl.send(Ctl::Echo(k)).expect("ctl");
                for i in 0..k {
                    b.ping.send(i).expect("ping");
                    assert_eq!(b.pong.recv().expect("pong"), i);
                }
            };
            rounds(r, 1000, n, round)
        }
        "pipe_bw" | "queue_64mib" => {
            let size: usize = if w == "pipe_bw" { 1 << 20 } else { 64 << 20 };
            let payload = vec![7u8; size];
            let round = |k: u64| {
                b.ctl.send(Ctl::Bytes(k)).expect("ctl");
                for _ in 0..k {
                    b.bytes.send(&payload).expect("bytes");
                }
                assert_eq!(b.ack.recv().expect("ack"), k * size as u64);
            };
            rounds(r, 2, n, round)
        }
        _ => {
            let round = |k: u64| {
                b.ctl.send(Ctl::Ints(k)).expect("ctl");
                for i in 0..k {
                    b.ints.send(i).expect("int");
                }
                assert_eq!(b.ack.recv().expect("ack"), k * k.saturating_sub(1) / 2);
            };
            rounds(r, 1000, n, round)
        }
    };
    drop(b);
    kid.wait().expect("the ipc child exits");
    Some(v)
}
