//! Batched UDP I/O: many datagrams per recvmmsg(2) / sendmmsg(2) call, so
//! small-packet rates are not bound by one syscall per datagram.
//!
//! Both are non-blocking; callers wait for readiness through tokio and call
//! these inside `try_io`/`async_io`, which retry on `WouldBlock`.

use std::{
    io::{self, IoSlice, IoSliceMut},
    net::SocketAddr,
    os::fd::{AsRawFd, BorrowedFd},
};

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};

/// Largest UDP payload (IPv6 without jumbograms); buffers this size never
/// truncate a datagram.
pub const MAX_DATAGRAM: usize = 65535;

/// Receive buffers for up to `capacity` datagrams, and what the last call
/// received.
#[derive(Debug)]
pub struct RecvBatch {
    bufs: Vec<Vec<u8>>,
    got: Vec<(usize, Option<SocketAddr>)>,
}

impl RecvBatch {
    /// Buffers for `capacity` datagrams of up to [`MAX_DATAGRAM`] bytes.
    pub fn new(capacity: usize) -> Self {
        Self { bufs: vec![vec![0; MAX_DATAGRAM]; capacity.max(1)], got: Vec::new() }
    }

    /// Receives what is queued on `fd`, up to the capacity, without
    /// blocking (`WouldBlock` when nothing is). Returns how many.
    pub fn recv(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        self.got.clear();
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(self.bufs.len(), None);
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> =
            self.bufs.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
        let results =
            recvmmsg(fd.as_raw_fd(), &mut headers, iovs.iter_mut(), MsgFlags::MSG_DONTWAIT, None)?;
        for msg in results {
            self.got.push((msg.bytes, msg.address.and_then(to_std)));
        }
        Ok(self.got.len())
    }

    /// Datagram `i` of the last call and its sender.
    pub fn get(&self, i: usize) -> Option<(&[u8], Option<SocketAddr>)> {
        let &(len, from) = self.got.get(i)?;
        Some((self.bufs.get(i)?.get(..len)?, from))
    }

    /// Datagrams the last call received.
    pub fn len(&self) -> usize {
        self.got.len()
    }

    /// True when the last call received nothing.
    pub fn is_empty(&self) -> bool {
        self.got.is_empty()
    }
}

/// Sends `datagrams` on `fd` in one call, to `to` (or the connected peer),
/// without blocking. Returns how many went (`WouldBlock` if none could).
pub fn send(fd: BorrowedFd<'_>, datagrams: &[&[u8]], to: Option<SocketAddr>) -> io::Result<usize> {
    if datagrams.is_empty() {
        return Ok(0);
    }
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(datagrams.len(), None);
    let iovs: Vec<[IoSlice<'_>; 1]> = datagrams.iter().map(|d| [IoSlice::new(d)]).collect();
    let addrs: Vec<Option<SockaddrStorage>> = vec![to.map(SockaddrStorage::from); datagrams.len()];
    let sent = sendmmsg(fd.as_raw_fd(), &mut headers, &iovs, addrs, [], MsgFlags::MSG_DONTWAIT)?;
    Ok(sent.count())
}

fn to_std(a: SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{net::UdpSocket, os::fd::AsFd};

    #[test]
    fn a_batch_goes_out_and_comes_back_in_one_call_each() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let payloads: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; usize::from(i) * 100 + 1]).collect();
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        let sent = send(tx.as_fd(), &refs, Some(rx.local_addr().unwrap())).unwrap();
        assert_eq!(sent, 20);
        let mut batch = RecvBatch::new(32);
        assert_eq!(batch.recv(rx.as_fd()).unwrap(), 20);
        for (i, want) in payloads.iter().enumerate() {
            let (data, from) = batch.get(i).unwrap();
            assert_eq!(data, want.as_slice(), "datagram {i}");
            assert_eq!(from, Some(tx.local_addr().unwrap()));
        }
        assert!(batch.get(20).is_none());
        let err = batch.recv(rx.as_fd()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "nothing left, and it did not block");
    }

    #[test]
    fn a_connected_socket_sends_without_an_address() {
        let rx = UdpSocket::bind("[::1]:0").unwrap();
        let tx = UdpSocket::bind("[::1]:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        assert_eq!(send(tx.as_fd(), &[b"a", b"bc"], None).unwrap(), 2);
        let mut batch = RecvBatch::new(1);
        assert_eq!(batch.recv(rx.as_fd()).unwrap(), 1, "capacity bounds each call");
        assert_eq!(batch.get(0).unwrap().0, b"a");
        assert_eq!(batch.recv(rx.as_fd()).unwrap(), 1);
        assert_eq!(batch.get(0).unwrap().0, b"bc");
        assert_eq!(send(tx.as_fd(), &[], None).unwrap(), 0);
    }
}
