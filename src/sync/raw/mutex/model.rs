use super::*;
use crate::shim::model::{Fate, MWord, check, marked_at_death, victim};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

struct Shared {
    lock: MWord,
    /// Threads inside the critical section (a dead owner's count is reset by the next).
    inside: MWord,
}

/// Enters the critical section: nobody else may be in it.
fn enter(s: &Shared, owner_died: bool) {
    if owner_died {
        // What the dead owner left is the survivor's to repair.
        s.inside.store(0, Ordering::Relaxed);
    }
    assert_eq!(
        s.inside.fetch_add(1, Ordering::Relaxed),
        0,
        "two owners at once"
    );
}

fn leave(s: &Shared) {
    s.inside.fetch_sub(1, Ordering::Relaxed);
}

/// The victim takes the lock, works (a die point inside), releases it; the survivor
/// contends, then takes the lock once more after the victim's end. For every die point
/// the victim can reach: the survivor always gets the lock (a stranded lock deadlocks),
/// the two never hold it together, and `owner_died` is reported once exactly when the
/// victim died holding the lock (the kernel marked it), never otherwise.
#[test]
fn owner_death_at_every_die_point() {
    static DIED: AtomicBool = AtomicBool::new(false);
    let mut k = 0;
    loop {
        DIED.store(false, std::sync::atomic::Ordering::SeqCst);
        check(move || {
            let s = Arc::new(Shared {
                lock: MWord::new(0),
                inside: MWord::new(0),
            });
            let s2 = s.clone();
            let v = loom::thread::spawn(move || {
                let fate = victim(Some(k), || {
                    let me = MWord::me();
                    let died = lock(&s2.lock, me, None).unwrap();
                    enter(&s2, died);
                    MWord::die_point();
                    leave(&s2);
                    unlock(&s2.lock, me);
                    died
                });
                (fate, marked_at_death())
            });
            let me = MWord::me();
            let first = lock(&s.lock, me, None).unwrap();
            enter(&s, first);
            leave(&s);
            unlock(&s.lock, me);
            let (fate, marked) = v.join().unwrap();
            let second = lock(&s.lock, me, None).unwrap();
            unlock(&s.lock, me);
            let reported = usize::from(first) + usize::from(second);
            match fate {
                Fate::Lived(victim_saw) => {
                    assert!(!victim_saw && reported == 0, "owner_died without a death");
                }
                Fate::Died => {
                    DIED.store(true, std::sync::atomic::Ordering::SeqCst);
                    assert!(marked <= 1);
                    assert_eq!(reported, marked, "owner_died reported {reported} times");
                }
            }
            assert!(!is_locked(&s.lock));
        });
        if !DIED.load(std::sync::atomic::Ordering::SeqCst) {
            // No schedule reaches die point k: every point has been a death.
            assert!(k >= 3, "the victim never reached its die points");
            break;
        }
        k += 1;
    }
}
