//! TCP servers a test runs itself, on threads inside a backend namespace.
//! For cases where the test must see what a backend received and when (a
//! half-close, a digest, bytes written into a stalled connection), which a
//! separate server process would have to report back somehow.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::netns::NetNs;

/// A listener in a namespace, each connection handed to `handle` on its own
/// thread. Dropping it stops accepting and closes the listener; handlers
/// end on their own (they should set socket timeouts, so none can hang).
#[derive(Debug)]
pub struct Server {
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    /// Listens on `addr` inside `ns` (bound before this returns).
    pub fn start(
        ns: &NetNs,
        addr: SocketAddr,
        handle: impl Fn(TcpStream) + Send + Sync + 'static,
    ) -> Self {
        // Sockets belong to the namespace of the thread that creates them;
        // accepted ones to their listener's.
        let listener = {
            let _inside = ns.enter();
            TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr} in {}: {e}", ns.name()))
        };
        // Polled, so a drop can stop it without a connection to wake it.
        listener.set_nonblocking(true).expect("nonblocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let handle = Arc::new(handle);
        let stopping = stop.clone();
        let accept = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).expect("blocking stream");
                        let handle = handle.clone();
                        std::thread::spawn(move || handle(s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Self { stop, accept: Some(accept) }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}
