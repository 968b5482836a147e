//! Bulk TCP transfers checked end to end: the client sends a length and
//! that many bytes, the backend answers with their digest and then sends
//! blocks of its own, and the client checks both ([`crate::stream`]).
//! Transfers run against a deadline and, when they fail, say how far they
//! got, so a stalled path (a PMTU black hole) reads as a number of bytes.

use std::{
    io::{Read, Write},
    net::TcpStream,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use crate::stream::{BLOCK, Blocks, Digest};

/// How long a backend waits for each read before it gives a connection up.
const SERVER_WAIT: Duration = Duration::from_secs(40);

/// A connection handler for [`crate::inproc::Server`]: reads the length and
/// the upload (adding every byte to `received` as it arrives), answers with
/// the upload's digest, then sends `download` blocks.
pub fn server(
    download: u64,
    received: Arc<AtomicU64>,
) -> impl Fn(TcpStream) + Clone + Send + Sync + 'static {
    move |mut c: TcpStream| {
        let _ = c.set_read_timeout(Some(SERVER_WAIT));
        let _ = c.set_write_timeout(Some(SERVER_WAIT));
        let mut len = [0u8; 8];
        if c.read_exact(&mut len).is_err() {
            return;
        }
        let mut digest = Digest::default();
        let mut left = u64::from_be_bytes(len);
        let mut buf = vec![0u8; 256 * 1024];
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            match c.read(&mut buf[..want]) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    digest.update(&buf[..n]);
                    received.fetch_add(n as u64, Relaxed);
                    left -= n as u64;
                }
            }
        }
        let _ = c.write_all(&digest.value().to_be_bytes());
        let mut blocks = Blocks::default();
        for _ in 0..download {
            if c.write_all(blocks.next_block()).is_err() {
                return;
            }
        }
    }
}

/// Over `c` to a [`server`], sends `up` blocks and receives `down`, both
/// checked by digest, all within `limit`; or says how far it got.
pub fn transfer(c: &mut TcpStream, up: u64, down: u64, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    // Socket timeouts of what is left (never zero, which means none).
    let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    let up_bytes = up * BLOCK as u64;
    // Bytes of the upload (after the length) the socket took so far.
    let mut written = 0u64;
    let mut write = |c: &mut TcpStream, data: &[u8], count: bool| -> std::io::Result<()> {
        for chunk in data.chunks(64 * 1024) {
            c.set_write_timeout(Some(left()))?;
            c.write_all(chunk)?;
            written += if count { chunk.len() as u64 } else { 0 };
        }
        Ok(())
    };
    write(c, &up_bytes.to_be_bytes(), false).map_err(|e| format!("sending the length: {e}"))?;
    let mut sent = Digest::default();
    let mut blocks = Blocks::default();
    for _ in 0..up {
        let block = blocks.next_block();
        sent.update(block);
        if let Err(e) = write(c, block, true) {
            return Err(format!(
                "upload stalled: the socket took {written} of {up_bytes} bytes within {limit:?} \
                 (what it took may still sit in its send buffer): {e}"
            ));
        }
    }
    let mut theirs = [0u8; 8];
    c.set_read_timeout(Some(left())).map_err(|e| e.to_string())?;
    c.read_exact(&mut theirs).map_err(|e| {
        format!("no digest from the backend within {limit:?} of a {up_bytes}-byte upload: {e}")
    })?;
    if u64::from_be_bytes(theirs) != sent.value() {
        return Err(format!("the {up_bytes}-byte upload arrived altered (digest differs)"));
    }
    let down_bytes = down * BLOCK as u64;
    let mut got = Digest::default();
    let mut buf = vec![0u8; 256 * 1024];
    while got.len < down_bytes {
        c.set_read_timeout(Some(left())).map_err(|e| e.to_string())?;
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.update(&buf[..n]),
            Err(e) => {
                return Err(format!(
                    "download stalled: {} of {down_bytes} bytes arrived within {limit:?}: {e}",
                    got.len
                ));
            }
        }
    }
    let mut want = Digest::default();
    let mut blocks = Blocks::default();
    for _ in 0..down {
        want.update(blocks.next_block());
    }
    if got.len != down_bytes {
        return Err(format!("download closed after {} of {down_bytes} bytes", got.len));
    }
    if got.value() != want.value() {
        return Err(format!("the {down_bytes}-byte download arrived altered (digest differs)"));
    }
    Ok(())
}
