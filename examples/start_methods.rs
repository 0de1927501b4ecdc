//! The three start methods, each through a context.
//!
//! Python:
//! ```python
//! def foo(q):
//!     q.put('hello')
//! if __name__ == '__main__':
//!     for method in ['fork', 'spawn', 'forkserver']:
//!         ctx = mp.get_context(method)
//!         q = ctx.Queue()
//!         p = ctx.Process(target=foo, args=(q,))
//!         p.start(); print(q.get()); p.join()
//! ```

use mproc::{Connection, StartMethod, get_context, pipe};

fn foo(conn: Connection<String>) -> mproc::Result<()> {
    conn.send(&"hello".to_string())
}

fn main() -> mproc::Result<()> {
    println!("default start method: {}", mproc::get_start_method().name());
    for method in [
        StartMethod::Fork,
        StartMethod::Spawn,
        StartMethod::ForkServer,
    ] {
        let ctx = get_context(method);
        let (here, there) = pipe::<String>()?;
        let mut p = ctx.process(foo, (there,));
        p.start()?;
        println!("{}: {}", method.name(), here.recv()?);
        p.join()?;
    }
    Ok(())
}
