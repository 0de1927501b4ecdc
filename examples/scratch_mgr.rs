use std::time::Instant;
fn child(l: mproc::ListProxy<u64>, d: mproc::DictProxy<u64, u64>, n: u64) -> mproc::Result<(f64, f64, f64)> {
    let t = Instant::now();
    for i in 0..n { l.append(&i)?; }
    let a = n as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for i in 0..n { d.insert(i, i)?; }
    let b = n as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for i in 0..n { d.get(&i)?; }
    let c = n as f64 / t.elapsed().as_secs_f64();
    Ok((a, b, c))
}
fn main() -> mproc::Result<()> {
    let m = mproc::Manager::start()?;
    let t = Instant::now();
    let _l0 = m.list::<u64>()?;
    println!("first create {:?}", t.elapsed());
    let t = Instant::now();
    for _ in 0..1000 { let _ = m.list::<u64>()?; }
    println!("create {:?}", t.elapsed() / 1000);
    let (l, d) = (m.list()?, m.dict()?);
    let r = mproc::spawn(child, (l, d, 20000))?.result()??;
    println!("append {:.0} set {:.0} get {:.0} ops/s", r.0, r.1, r.2);
    Ok(())
}
