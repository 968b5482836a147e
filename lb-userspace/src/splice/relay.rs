//! Moving a TCP connection's bytes between client and backend: small
//! messages are copied through a buffer, bulk moves with splice(2)
//! (socket -> pipe -> socket, in the kernel, never copied to userspace).
//!
//! Why both: for a message smaller than the buffer, a read and a write are
//! the fewest syscalls there are, and a read that returns less than asked
//! proves the socket drained, so the next read waits instead of failing
//! with EAGAIN. A splice into a pipe proves nothing of the kind (the pipe
//! may be what filled), costs a retry each message, and needs a pipe. At
//! 1000 clients making short connections (64-byte request, 128-byte
//! response) splice alone made 24 syscalls a connection where HAProxy,
//! which splices only bulk too, made 19 (`strace -c -f`). A direction
//! switches to splice for good at its first read that fills the buffer.
//!
//! Each direction runs until its reader sees EOF. The first to end
//! half-closes the other side's writer (so `shutdown(SHUT_WR)` travels
//! through the proxy both ways); the last leaves that to the close that
//! follows the relay. The connection is idle when neither direction has
//! moved a byte for the idle timeout.

use std::{
    io,
    net::Shutdown,
    os::fd::{AsFd, OwnedFd},
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use super::budget;
use nix::{
    fcntl::{OFlag, SpliceFFlags, splice},
    unistd::pipe2,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, Interest},
    net::{
        TcpStream,
        tcp::{ReadHalf, WriteHalf},
    },
};

/// Bytes moved each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    /// Client to backend.
    pub up: u64,
    /// Backend to client.
    pub down: u64,
}

/// Largest chunk per splice call: a pipe holds 64 KiB by default.
const CHUNK: usize = 1 << 16;

/// The copy buffer of each direction: a message that fits is copied; a
/// read that fills it switches the direction to splice. Small, as every
/// open connection holds two.
const COPY: usize = 2048;

/// Called as bytes move, with (up, down) increments, so counters grow
/// while a long connection lasts rather than when it ends.
pub type Tally<'a> = &'a (dyn Fn(u64, u64) + Sync);

/// The pipe of one spliced direction (read end, write end), and its two
/// descriptors' share of the budget.
#[derive(Debug)]
struct Pipe(
    OwnedFd,
    OwnedFd,
    // Never read: held so that the pipe gives its share back as it closes.
    #[allow(dead_code)] budget::Held,
);

/// Pipes of finished relays, kept for the next ones: making and closing a
/// pipe is three syscalls.
static POOL: std::sync::Mutex<Vec<Pipe>> = std::sync::Mutex::new(Vec::new());
/// Pipes kept at most (each holds two descriptors, no buffer pages while
/// empty).
const POOL_MAX: usize = 512;

/// Closes the pipes kept for reuse: at the descriptor budget, connections
/// waiting to be accepted need their descriptors more.
pub fn release_pooled_pipes() {
    let idle = std::mem::take(&mut *POOL.lock().unwrap_or_else(|p| p.into_inner()));
    if !idle.is_empty() {
        tracing::debug!(pipes = idle.len(), "closed idle pipes: the descriptor budget is spent");
    }
}

impl Pipe {
    /// A non-blocking pipe: from the pool, or new if the budget allows.
    fn take() -> Option<Self> {
        if let Some(p) = POOL.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Some(p);
        }
        let held = budget::take(2)?;
        let (r, w) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).ok()?;
        Some(Self(r, w, held))
    }

    /// Gives the pipe back for reuse; only an empty one (its direction
    /// reached EOF with everything drained).
    fn recycle(self) {
        let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOL_MAX {
            pool.push(self);
        }
    }
}

/// Relays until both directions have ended, either side fails, or nothing
/// moved for `idle`. The caller closes both sockets afterwards: that close
/// sends the last direction's FIN.
pub async fn relay(
    client: &mut TcpStream,
    backend: &mut TcpStream,
    idle: Duration,
    tally: Tally<'_>,
) -> io::Result<Moved> {
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let mark = || last.store(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    let (tally_up, tally_down) = (|n| tally(n, 0), |n| tally(0, n));
    let ended = AtomicBool::new(false);
    let (client_r, client_w) = client.split();
    let (backend_r, backend_w) = backend.split();
    let moving = async {
        tokio::try_join!(
            pump(client_r, backend_w, &ended, &mark, &tally_up),
            pump(backend_r, client_w, &ended, &mark, &tally_down)
        )
    };
    // One timer per connection, not one per wait: it wakes once per idle
    // period and ends the relay if nothing moved during it.
    let watchdog = async {
        loop {
            let quiet =
                start.elapsed().saturating_sub(Duration::from_nanos(last.load(Ordering::Relaxed)));
            if quiet >= idle {
                return io::Error::new(io::ErrorKind::TimedOut, "connection idle");
            }
            tokio::time::sleep(idle - quiet).await;
        }
    };
    tokio::select! {
        moved = moving => moved.map(|(up, down)| Moved { up, down }),
        idle = watchdog => Err(idle),
    }
}

/// One direction, `from` to `to`, until EOF on `from`: copied while reads
/// fit the buffer, spliced from the first that fills it (copied on if no
/// pipe can be had: out of descriptors or of the budget, the bytes still
/// move).
async fn pump(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    ended: &AtomicBool,
    mark: &(dyn Fn() + Sync),
    tally: &(dyn Fn(u64) + Sync),
) -> io::Result<u64> {
    let mut buf = [0u8; COPY];
    let mut pipe: Option<Pipe> = None;
    let mut total = 0u64;
    loop {
        let n = match &pipe {
            None => {
                let n = from.read(&mut buf).await?;
                to.write_all(&buf[..n]).await?; // nothing at EOF
                if n == COPY {
                    pipe = Pipe::take();
                }
                n
            }
            Some(p) => spliced(from.as_ref(), to.as_ref(), p, mark).await?,
        };
        if n == 0 {
            // EOF. The first direction to end passes the half-close on;
            // the last leaves it to the close after the relay.
            if !ended.swap(true, Ordering::AcqRel) {
                socket2::SockRef::from(to.as_ref())
                    .shutdown(Shutdown::Write)
                    .or_else(not_connected_ok)?;
            }
            // Drained: every spliced read was written out before the next.
            if let Some(p) = pipe {
                p.recycle();
            }
            return Ok(total);
        }
        total += n as u64;
        tally(n as u64);
        mark();
    }
}

/// One splice from `from` into the pipe and all of it on to `to`: the
/// bytes moved, 0 at EOF.
async fn spliced(
    from: &TcpStream,
    to: &TcpStream,
    Pipe(pipe_r, pipe_w, _): &Pipe,
    mark: &(dyn Fn() + Sync),
) -> io::Result<usize> {
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    let n = wait_and(from, Interest::READABLE, || {
        splice(from.as_fd(), None, pipe_w.as_fd(), None, CHUNK, flags).map_err(io::Error::from)
    })
    .await?;
    let mut left = n;
    while left > 0 {
        let m = wait_and(to, Interest::WRITABLE, || {
            splice(pipe_r.as_fd(), None, to.as_fd(), None, left, flags).map_err(io::Error::from)
        })
        .await?;
        left -= m;
        // A slow reader still counts as moving while its bytes trickle out.
        mark();
    }
    Ok(n)
}

/// Waits until `s` is ready for `interest` and runs `op`, retrying on
/// spurious readiness.
async fn wait_and(
    s: &TcpStream,
    interest: Interest,
    mut op: impl FnMut() -> io::Result<usize>,
) -> io::Result<usize> {
    loop {
        s.ready(interest).await?;
        match s.try_io(interest, &mut op) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

fn not_connected_ok(e: io::Error) -> io::Result<()> {
    // The peer may already be gone; its side is closed either way.
    if e.kind() == io::ErrorKind::NotConnected { Ok(()) } else { Err(e) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
    }

    /// A proxy in front of `server`: returns its address; each connection is
    /// relayed, and the result sent on `done`.
    async fn proxy(
        server: std::net::SocketAddr,
        idle: Duration,
    ) -> (std::net::SocketAddr, tokio::sync::mpsc::UnboundedReceiver<io::Result<Moved>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (mut c, _) = l.accept().await.unwrap();
                let mut b = TcpStream::connect(server).await.unwrap();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(relay(&mut c, &mut b, idle, &|_, _| ()).await);
                });
            }
        });
        (addr, rx)
    }

    fn fnv(h: &mut u64, data: &[u8]) {
        for b in data {
            *h = (*h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    #[test]
    fn half_close_travels_both_ways() {
        rt().block_on(async {
            let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let saddr = server.local_addr().unwrap();
            // Reads to EOF, then answers with what it got, reversed.
            tokio::spawn(async move {
                let (mut s, _) = server.accept().await.unwrap();
                let mut got = Vec::new();
                s.read_to_end(&mut got).await.unwrap();
                got.reverse();
                s.write_all(&got).await.unwrap();
            });
            let (paddr, mut done) = proxy(saddr, Duration::from_secs(5)).await;
            let mut c = TcpStream::connect(paddr).await.unwrap();
            c.write_all(b"hello splice").await.unwrap();
            c.shutdown().await.unwrap(); // half-close: we still read
            let mut back = Vec::new();
            c.read_to_end(&mut back).await.unwrap();
            assert_eq!(back, b"ecilps olleh");
            let moved = done.recv().await.unwrap().unwrap();
            assert_eq!(moved, Moved { up: 12, down: 12 });
        });
    }

    #[test]
    fn a_large_transfer_arrives_intact() {
        const SIZE: usize = 256 << 20;
        rt().block_on(async {
            let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let saddr = server.local_addr().unwrap();
            let sink = tokio::spawn(async move {
                let (mut s, _) = server.accept().await.unwrap();
                let (mut h, mut n, mut buf) =
                    (0xcbf2_9ce4_8422_2325u64, 0usize, vec![0u8; 1 << 16]);
                loop {
                    let r = s.read(&mut buf).await.unwrap();
                    if r == 0 {
                        return (n, h);
                    }
                    fnv(&mut h, &buf[..r]);
                    n += r;
                }
            });
            let (paddr, mut done) = proxy(saddr, Duration::from_secs(10)).await;
            let mut c = TcpStream::connect(paddr).await.unwrap();
            let mut h = 0xcbf2_9ce4_8422_2325u64;
            let mut block = vec![0u8; 1 << 16];
            for i in 0..SIZE / block.len() {
                for (j, b) in block.iter_mut().enumerate() {
                    *b = (i * 31 + j * 7) as u8;
                }
                fnv(&mut h, &block);
                c.write_all(&block).await.unwrap();
            }
            c.shutdown().await.unwrap();
            let (n, sh) = sink.await.unwrap();
            assert_eq!((n, sh), (SIZE, h), "same length and checksum at both ends");
            assert_eq!(done.recv().await.unwrap().unwrap().up, SIZE as u64);
        });
    }

    #[test]
    fn messages_around_the_copy_size_arrive_intact_both_ways() {
        rt().block_on(async {
            let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let saddr = server.local_addr().unwrap();
            // Echoes each message back (told its length first).
            tokio::spawn(async move {
                let (mut s, _) = server.accept().await.unwrap();
                let mut len = [0u8; 4];
                while s.read_exact(&mut len).await.is_ok() {
                    let mut m = vec![0u8; u32::from_be_bytes(len) as usize];
                    s.read_exact(&mut m).await.unwrap();
                    s.write_all(&m).await.unwrap();
                }
            });
            let (paddr, mut done) = proxy(saddr, Duration::from_secs(5)).await;
            let mut c = TcpStream::connect(paddr).await.unwrap();
            let mut sent = 0u64;
            // Below, at and above the buffer: both directions start copied
            // and switch to splice mid-connection.
            for size in [1, 100, COPY - 5, COPY - 4, COPY, COPY + 1, 3 * COPY, 10, 70_000, 7] {
                let m: Vec<u8> = (0..size).map(|i| (i * 13 + size) as u8).collect();
                c.write_all(&(size as u32).to_be_bytes()).await.unwrap();
                c.write_all(&m).await.unwrap();
                let mut back = vec![0u8; size];
                c.read_exact(&mut back).await.unwrap();
                assert_eq!(back, m, "message of {size} bytes");
                sent += 4 + size as u64;
            }
            drop(c);
            let moved = done.recv().await.unwrap().unwrap();
            assert_eq!(moved.up, sent);
        });
    }

    #[test]
    fn an_idle_connection_times_out() {
        rt().block_on(async {
            let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let saddr = server.local_addr().unwrap();
            tokio::spawn(async move {
                let (_s, _) = server.accept().await.unwrap();
                tokio::time::sleep(Duration::from_secs(5)).await;
            });
            let (paddr, mut done) = proxy(saddr, Duration::from_millis(100)).await;
            let _c = TcpStream::connect(paddr).await.unwrap();
            let err = done.recv().await.unwrap().unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        });
    }
}
