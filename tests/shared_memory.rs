//! SharedMemory: named segments, Python's errors, travel to children, and cleanup when the
//! creating program's tree is done. Ports CPython's `_TestSharedMemory`
//! (`_test_multiprocessing.py`, cpython.md §4). Also checks that the shared-memory and sync
//! types leave no descriptors and no `/dev/shm` entries behind.

mod util;

use std::io::ErrorKind;
use std::process::Command;
use std::time::Duration;

use mproc::{Error, SharedMemory, get_context};
use util::*;

fn io_kind(r: mproc::Result<SharedMemory>) -> Option<ErrorKind> {
    match r {
        Err(Error::Io(e)) => Some(e.kind()),
        _ => None,
    }
}

fn unique(tag: &str) -> String {
    format!("mproc_test_{tag}_{}", std::process::id())
}

fn write_by_name(name: String) -> mproc::Result<()> {
    SharedMemory::open(&name)?.write_at(0, b"by name")
}

fn write_by_handle(shm: SharedMemory) -> mproc::Result<()> {
    shm.write_at(8, b"by handle")
}

/// This test binary's entries in /dev/shm: its tracking markers (other programs on the
/// machine may be creating their own at the same time).
fn mproc_entries() -> Vec<String> {
    let mine = format!("-{}-n-", std::process::id());
    let mut v: Vec<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("mproc-") && n.contains(&mine))
        .collect();
    v.sort();
    v
}

// Ports _TestSharedMemory.test_shared_memory_basics: name and size as requested, attaching
// by name sees the same bytes, a size given on attach is not needed.
#[test]
fn basics() {
    let _s = shared();
    let name = unique("basics");
    let a = SharedMemory::create_named(&name, 512).unwrap();
    assert_eq!(a.name(), name);
    assert_eq!(a.size(), 512);
    assert!(format!("{a:?}").contains(&name) && format!("{a:?}").contains("512"));
    a.write_at(10, b"howdy").unwrap();
    let b = SharedMemory::open(&format!("/{name}")).unwrap();
    assert_eq!(b.size(), 512);
    let mut buf = [0u8; 5];
    b.read_at(10, &mut buf).unwrap();
    assert_eq!(&buf, b"howdy");
    assert_eq!(&b.to_vec()[10..15], b"howdy");
    assert!(matches!(b.write_at(510, b"xyz"), Err(Error::ValueError(_))));
    a.unlink().unwrap();
    // Ports the unlink/exists/missing checks: FileNotFoundError and FileExistsError.
    assert!(matches!(a.unlink(), Err(Error::Io(e)) if e.kind() == ErrorKind::NotFound));
    assert_eq!(
        io_kind(SharedMemory::open(&name)),
        Some(ErrorKind::NotFound)
    );
    // The memory itself lives on while mapped.
    b.read_at(10, &mut buf).unwrap();
    assert_eq!(&buf, b"howdy");
}

// Ports the invalid-argument checks: zero size, NUL in the name, an existing name.
#[test]
fn pythons_errors() {
    let _s = shared();
    assert!(matches!(SharedMemory::create(0), Err(Error::ValueError(_))));
    assert!(matches!(
        SharedMemory::create_named("a\0b", 10),
        Err(Error::ValueError(_))
    ));
    assert!(matches!(
        SharedMemory::open("a\0b"),
        Err(Error::ValueError(_))
    ));
    assert!(matches!(SharedMemory::open(""), Err(Error::ValueError(_))));
    let a = SharedMemory::create(64).unwrap();
    assert!(a.name().starts_with("mproc_"));
    assert_eq!(
        io_kind(SharedMemory::create_named(a.name(), 64)),
        Some(ErrorKind::AlreadyExists)
    );
    a.unlink().unwrap();
}

// Ports test_shared_memory_across_processes and the pickling test: a child writes through a
// segment attached by name and through a handle it was sent, under every start method.
#[test]
fn children_write_by_name_and_by_handle_under_every_method() {
    let _s = shared();
    let _w = watchdog("shared memory children", 60);
    for m in METHODS {
        let shm = SharedMemory::create(32).unwrap();
        let mut p = get_context(m).process(write_by_name, (shm.name().to_string(),));
        p.start().unwrap();
        p.result().unwrap().unwrap();
        let mut p = get_context(m).process(write_by_handle, (shm.clone(),));
        p.start().unwrap();
        p.result().unwrap().unwrap();
        let v = shm.to_vec();
        assert_eq!(&v[..7], b"by name", "{m:?}");
        assert_eq!(&v[8..17], b"by handle", "{m:?}");
        shm.unlink().unwrap();
    }
}

/// Run only as a helper by `segments_left_behind_are_unlinked_when_the_tree_is_done`.
#[test]
#[ignore]
fn helper_creates_and_leaves() {
    let Ok(name) = std::env::var("MPROC_TEST_SHM_NAME") else {
        return;
    };
    let named = SharedMemory::create_named(&name, 100).unwrap();
    let anon = SharedMemory::create(100).unwrap();
    println!("ANON={}", anon.name());
    match std::env::var("MPROC_TEST_SHM_MODE").as_deref() {
        Ok("abort") => std::process::abort(),
        Ok("persist") => named.persist(),
        _ => {}
    }
    drop((named, anon)); // neither unlinked: the exit hook of the tree's root does it
}

fn run_helper(name: &str, mode: &str) -> String {
    // A copy of this test binary under another path is its own program (its own tree root).
    let dir = std::env::temp_dir().join(format!("mproc-shm-helper-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("helper");
    if !exe.exists() {
        std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    }
    let mut cmd = Command::new(&exe);
    cmd.args([
        "--exact",
        "helper_creates_and_leaves",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    cmd.env("MPROC_TEST_SHM_NAME", name);
    cmd.env("MPROC_TEST_SHM_MODE", mode);
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let anon = stdout
        .lines()
        .find_map(|l| l.split("ANON=").nth(1)?.split_whitespace().next())
        .unwrap_or_else(|| panic!("helper printed no name: {stdout}"))
        .to_string();
    let _ = std::fs::remove_dir_all(&dir);
    anon
}

fn create_one() -> mproc::Result<()> {
    SharedMemory::create(8)?.unlink()
}

/// Creates a segment in a fresh process (its first creation, which sweeps dead trees).
fn create_in_a_new_process() {
    let mut p = get_context(Spawn).process(create_one, ());
    p.start().unwrap();
    p.result().unwrap().unwrap();
}

// Ports test_shared_memory_cleaned_after_process_termination, without CPython's warnings:
// segments a program created and never unlinked are gone once it exits; if it was killed,
// the first creation in a later mproc process sweeps them.
#[test]
fn segments_left_behind_are_unlinked_when_the_tree_is_done() {
    let _x = exclusive();
    let _w = watchdog("shared memory cleanup", 60);
    let name = unique("left");
    let anon = run_helper(&name, "leave");
    assert_eq!(
        io_kind(SharedMemory::open(&name)),
        Some(ErrorKind::NotFound)
    );
    assert_eq!(
        io_kind(SharedMemory::open(&anon)),
        Some(ErrorKind::NotFound)
    );

    let name = unique("killed");
    let anon = run_helper(&name, "abort");
    assert!(
        SharedMemory::open(&name).is_ok(),
        "a killed root leaves its segments for now"
    );
    create_in_a_new_process();
    assert_eq!(
        io_kind(SharedMemory::open(&name)),
        Some(ErrorKind::NotFound)
    );
    assert_eq!(
        io_kind(SharedMemory::open(&anon)),
        Some(ErrorKind::NotFound)
    );
}

/// The marker a killed tree `root` would have left for segment `name`.
fn plant_dead_marker(name: &str, root: u32) -> String {
    let ns = std::fs::read_link("/proc/self/ns/pid").unwrap();
    let ns = ns
        .to_str()
        .unwrap()
        .trim_start_matches("pid:[")
        .trim_end_matches(']');
    let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
    let marker = format!("mproc-{ns}-{root}-n-{hex}");
    std::fs::File::create(format!("/dev/shm/{marker}")).unwrap();
    marker
}

/// A pid that no process has (a child that exited and was reaped).
fn dead_pid() -> u32 {
    let mut c = Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    pid
}

// Issue 12, defect 4: every creation used to read all of /dev/shm (7 ms per call with
// 20 000 entries). Now only a process's first creation sweeps: a dead tree's marker
// planted after it stays until another process creates a segment, and a creation costs
// the same whatever else /dev/shm holds.
#[test]
fn creating_a_segment_does_not_scan_dev_shm() {
    let _x = exclusive();
    let _w = watchdog("shm create cost", 120);
    create_one().unwrap(); // this process's one sweep
    let victim = unique("dead_tree");
    let seg = SharedMemory::create_named(&victim, 8).unwrap();
    seg.persist();
    let marker = plant_dead_marker(&victim, dead_pid());
    for _ in 0..3 {
        create_one().unwrap();
    }
    assert!(
        SharedMemory::open(&victim).is_ok(),
        "a creation after the first swept /dev/shm again"
    );
    create_in_a_new_process();
    assert_eq!(
        io_kind(SharedMemory::open(&victim)),
        Some(ErrorKind::NotFound),
        "a new process's first creation sweeps the dead tree"
    );
    assert!(!std::path::Path::new(&format!("/dev/shm/{marker}")).exists());

    // 10 000 unrelated entries: 200 creations stay at their usual cost.
    let junk_dir = format!("mproc_test_junk_{}", std::process::id());
    let junk: Vec<String> = (0..10_000)
        .map(|i| format!("/dev/shm/{junk_dir}_{i}"))
        .collect();
    let time_200 = || {
        let t = std::time::Instant::now();
        for _ in 0..200 {
            create_one().unwrap();
        }
        t.elapsed()
    };
    let empty = time_200();
    for j in &junk {
        std::fs::File::create(j).unwrap();
    }
    let full = time_200();
    for j in &junk {
        let _ = std::fs::remove_file(j);
    }
    // The old cost was ~3.5 ms per creation here (700 ms); allow a busy machine 4x noise.
    assert!(
        full < empty * 4 + Duration::from_millis(100),
        "200 creations took {full:?} with 10 000 entries, {empty:?} without"
    );
}

// `persist` opts a segment out of the cleanup (Python's track=False).
#[test]
fn persisted_segments_are_not_swept() {
    let _s = shared();
    let a = SharedMemory::create(8).unwrap();
    a.persist();
    assert!(!mproc_entries().iter().any(|e| {
        e.contains("-n-")
            && e.ends_with(
                &a.name()
                    .bytes()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>(),
            )
    }));
    a.unlink().unwrap();
}

fn touch_everything(v: mproc::Value<u64>, l: mproc::Lock, e: mproc::Event) {
    *v.lock() += 1;
    drop(l.acquire());
    e.set();
}

// Creating, sending and dropping every shared type leaves no descriptor and no /dev/shm
// entry behind.
#[test]
fn no_descriptors_or_segments_left_behind() {
    let _x = exclusive();
    let _w = watchdog("leak check", 60);
    // The first use of a start method may open descriptors it keeps (the fork server's
    // socket): start one child of each before counting.
    for m in METHODS {
        let mut p = get_context(m).process(|| (), ());
        p.start().unwrap();
        p.join().unwrap();
    }
    let (fds, entries) = (fd_count(), mproc_entries());
    for m in METHODS {
        let v = mproc::Value::new(0u64).unwrap();
        let (l, e) = (mproc::Lock::new().unwrap(), mproc::Event::new().unwrap());
        let mut p = get_context(m).process(touch_everything, (v.clone(), l.clone(), e.clone()));
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(v.get(), 1);
        assert!(e.wait_timeout(Duration::from_secs(1)));
    }
    for _ in 0..20 {
        let _ = (
            mproc::Array::<u8>::new(10).unwrap(),
            mproc::RawArray::<u8>::new(10).unwrap(),
            mproc::RawValue::new(1u8).unwrap(),
            mproc::RLock::new().unwrap(),
            mproc::Semaphore::new(1).unwrap(),
            mproc::BoundedSemaphore::new(1).unwrap(),
            mproc::Condition::new().unwrap(),
            mproc::Barrier::new(2).unwrap(),
        );
        let s = SharedMemory::create(10).unwrap();
        s.unlink().unwrap();
        assert_eq!(
            io_kind(SharedMemory::open(s.name())),
            Some(ErrorKind::NotFound)
        );
    }
    assert_eq!(fd_count(), fds, "descriptors leaked");
    assert_eq!(mproc_entries(), entries, "/dev/shm entries leaked");
}
