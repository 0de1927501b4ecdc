//! The in-process reference: the same work between threads (std) or with rayon. What the
//! hardware gives when no process boundary is crossed.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rayon::prelude::*;

use crate::measure::{per_op, reps, rounds};
use crate::raw::pi_check;

/// Runs workload `w`; `None` if threads have nothing to compare for it.
pub fn run(w: &str, n: u64, r: usize) -> Option<Vec<f64>> {
    Some(match w {
        "pipe_rtt" => mpsc_pingpong(n, r),
        "queue_stream" => mpsc_stream(n, r),
        "lock_uncontended" => {
            let m = Mutex::new(0u64);
            let round = |k: u64| {
                for _ in 0..k {
                    *std::hint::black_box(&m).lock().expect("not poisoned") += 1;
                }
            };
            rounds(r, 1000, n, round)
        }
        "value_incr" => reps(r, || mutex_counter(n / 10 + 1), || mutex_counter(n)),
        "pool_map" => {
            let round = |k: u64| {
                let out: Vec<u64> = (0..k).into_par_iter().map(std::hint::black_box).collect();
                assert_eq!(out.len() as u64, k);
            };
            rounds(r, 1000, n, round)
        }
        "pi_pool" => reps(
            r,
            || pi_check(rayon_pi(1000)),
            || per_op(1, || pi_check(rayon_pi(std::hint::black_box(n)))),
        ),
        _ => return None,
    })
}

fn rayon_pi(n: u64) -> f64 {
    let dx = 1.0 / n as f64;
    (0..n)
        .into_par_iter()
        .map(|i| {
            let x = (i as f64 + 0.5) * dx;
            4.0 / (1.0 + x * x)
        })
        .sum::<f64>()
        * dx
}

fn mpsc_pingpong(n: u64, r: usize) -> Vec<f64> {
    let (to_tx, to_rx) = mpsc::channel::<u64>();
    let (back_tx, back_rx) = mpsc::channel::<u64>();
    let echo = std::thread::spawn(move || {
        for x in to_rx {
            if back_tx.send(x).is_err() {
                break;
            }
        }
    });
    let round = |k: u64| {
        for i in 0..k {
            to_tx.send(i).expect("echo thread alive");
            back_rx.recv().expect("echo thread alive");
        }
    };
    let v = rounds(r, 1000, n, round);
    drop(to_tx);
    echo.join().expect("echo thread");
    v
}

fn mpsc_stream(n: u64, r: usize) -> Vec<f64> {
    let round = |k: u64| {
        let (tx, rx) = mpsc::channel::<u64>();
        let go = Arc::new(std::sync::Barrier::new(2));
        let g = go.clone();
        let producer = std::thread::spawn(move || {
            g.wait();
            for i in 0..k {
                tx.send(i).expect("receiver alive");
            }
        });
        go.wait();
        let t = Instant::now();
        let mut s = 0u64;
        for _ in 0..k {
            s = s.wrapping_add(rx.recv().expect("producer alive"));
        }
        let dt = t.elapsed().as_secs_f64();
        producer.join().expect("producer");
        assert_eq!(s, k * k.saturating_sub(1) / 2);
        dt / k as f64
    };
    reps(r, || round(1000), || round(n))
}

fn mutex_counter(n: u64) -> f64 {
    let m = Arc::new(Mutex::new(0i64));
    let go = Arc::new(std::sync::Barrier::new(3));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (m, go) = (m.clone(), go.clone());
            std::thread::spawn(move || {
                go.wait();
                for _ in 0..n {
                    *m.lock().expect("not poisoned") += 1;
                }
            })
        })
        .collect();
    go.wait();
    let t = Instant::now();
    for w in workers {
        w.join().expect("worker");
    }
    let dt = t.elapsed().as_secs_f64();
    assert_eq!(*m.lock().expect("not poisoned"), 2 * n as i64);
    dt / (2 * n) as f64
}
