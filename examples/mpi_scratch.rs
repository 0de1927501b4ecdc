fn main() -> mproc::Result<()> {
    let world = mproc::mpi::init()?;
    let mode = std::env::args().nth(1).unwrap_or_default();
    eprintln!("rank0 pid {} size {}", std::process::id(), world.size());
    match mode.as_str() {
        "sleep" => std::thread::sleep(std::time::Duration::from_secs(20)),
        "panic" => panic!("rank 0 panics"),
        "exit" => std::process::exit(3),
        _ => {}
    }
    eprintln!("rank0 done");
    Ok(())
}
