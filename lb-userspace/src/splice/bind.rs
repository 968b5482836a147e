//! Binding a VIP's sockets: one UDP socket, or one TCP listener that every
//! thread of [`super::cores`] accepts from (see [`listeners`]).

use std::{io, net::SocketAddr};

use socket2::{Domain, Socket, Type};

/// Listen backlog of every TCP listener.
const BACKLOG: i32 = 4096;

/// The UDP socket of `vip` (see [`socket`] for how it is bound).
pub fn udp(vip: SocketAddr) -> io::Result<Socket> {
    let s = socket(vip, Type::DGRAM, local(vip))?;
    s.bind(&vip.into())?;
    Ok(s)
}

/// The TCP listener of `vip`, as `n` descriptors of one socket: each
/// serving thread registers its own in its own epoll, and whichever thread
/// is awake first when a connection arrives accepts it.
///
/// Why one socket and not a SO_REUSEPORT group (one listener per thread,
/// connections spread by a hash of the 4-tuple), measured in issue 18 at 8
/// clients on 2 CPUs shared with the clients and backend: the hash spread
/// accepts evenly (4438 / 4347 accept4 calls per thread in 2 s), yet each
/// thread spent 740 ms of those 2 s runnable but waiting for a CPU
/// (/proc/PID/task/TID/schedstat), and a connection hashed to a thread that
/// waits, waits with it even when the other thread is idle. With one socket
/// the awake thread takes it (8327 / 5318 accepts), the way one shared
/// runtime did before; the rates of both designs were within this shared
/// machine's noise (bench-results/issue18/percore-evidence.md). No SO_REUSEPORT also keeps the VIP's port lb's alone: a
/// process that sets it can neither share the port before lb starts (lb's
/// bind fails with EADDRINUSE, naming the fix) nor after. The price: a new
/// connection wakes every thread idle in epoll_wait, and all but one find
/// nothing to accept (an EAGAIN each): nothing while threads are busy, at
/// most one wasted wakeup a connection per idle thread when they are not.
pub fn listeners(vip: SocketAddr, n: usize) -> io::Result<Vec<Socket>> {
    let s = socket(vip, Type::STREAM, local(vip))?;
    s.bind(&vip.into())?;
    // Accepted sockets inherit it: no setsockopt per connection.
    s.set_nodelay(true)?;
    s.listen(BACKLOG)?;
    let mut all = (1..n.max(1)).map(|_| s.try_clone()).collect::<io::Result<Vec<_>>>()?;
    all.push(s);
    Ok(all)
}

/// Whether `vip` is a local address (see [`socket`]); logs, once per VIP,
/// how one that is not must reach this host.
fn local(vip: SocketAddr) -> bool {
    let local = is_local(vip);
    if !local {
        tracing::info!(
            %vip,
            "the VIP is not a local address: listening with IP_TRANSPARENT (its traffic must reach \
             this host through a TPROXY rule or policy routing, e.g. `ip rule add to VIP lookup \
             100` + `ip route add local VIP dev lo table 100`)"
        );
    }
    local
}

/// A non-blocking socket for `vip`, not bound yet. A VIP that is a local
/// address (assigned, or `ip route add local VIP/32 dev lo`) is bound with
/// IP_FREEBIND, so it may appear after lb starts. One that is not (its
/// traffic steered here by a TPROXY rule or policy routing) is bound with
/// IP_TRANSPARENT, which accepts connections to a foreign address.
fn socket(vip: SocketAddr, ty: Type, local: bool) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(vip), ty, None)?;
    s.set_reuse_address(true)?;
    if vip.is_ipv6() {
        s.set_only_v6(true)?;
    }
    if local {
        s.set_freebind(true)?;
    } else {
        transparent(&s, vip)?;
    }
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Why a listen failed, with the fix for the usual causes.
pub fn listen_failure(e: &io::Error) -> String {
    let fix = match e.raw_os_error() {
        Some(nix::libc::EACCES) => {
            "; ports below 1024 need CAP_NET_BIND_SERVICE: run lb as root or grant it"
        }
        Some(nix::libc::EADDRINUSE) => {
            "; another process holds it (see `ss -ltnup`): stop it or move the VIP's port"
        }
        _ => "",
    };
    format!("{e}{fix}")
}

/// Whether `vip`'s address is local: a plain bind to it works.
fn is_local(vip: SocketAddr) -> bool {
    let Ok(s) = Socket::new(Domain::for_address(vip), Type::DGRAM, None) else { return true };
    match s.bind(&SocketAddr::new(vip.ip(), 0).into()) {
        Err(e) => e.raw_os_error() != Some(nix::libc::EADDRNOTAVAIL),
        Ok(()) => true,
    }
}

/// IP_TRANSPARENT (IPV6_TRANSPARENT for IPv6), which needs CAP_NET_ADMIN.
fn transparent(s: &Socket, vip: SocketAddr) -> io::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt::IpTransparent};
    let done = if vip.is_ipv4() {
        setsockopt(s, IpTransparent, &true)
    } else {
        setsockopt(s, Ipv6Transparent, &true)
    };
    done.map_err(|e| {
        io::Error::other(format!(
            "{vip} is not a local address and IP_TRANSPARENT failed ({e}): add it to an \
             interface or `ip route add local {}/{} dev lo`, or give lb CAP_NET_ADMIN",
            vip.ip(),
            if vip.is_ipv4() { 32 } else { 128 }
        ))
    })
}

/// IPV6_TRANSPARENT, which nix does not name.
#[derive(Debug, Clone, Copy)]
struct Ipv6Transparent;

impl nix::sys::socket::SetSockOpt for Ipv6Transparent {
    type Val = bool;

    fn set<F: std::os::fd::AsFd>(&self, fd: &F, val: &bool) -> nix::Result<()> {
        let on: nix::libc::c_int = (*val).into();
        // SAFETY: `on` outlives the call and its size is passed with it.
        let r = unsafe {
            nix::libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&fd.as_fd()),
                nix::libc::SOL_IPV6,
                nix::libc::IPV6_TRANSPARENT,
                (&raw const on).cast(),
                std::mem::size_of_val(&on) as nix::libc::socklen_t,
            )
        };
        nix::errno::Errno::result(r).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn every_thread_gets_a_descriptor_of_the_one_listener() {
        let all = listeners(loopback(0), 3).unwrap();
        let at: Vec<_> = all.iter().map(|s| s.local_addr().unwrap().as_socket()).collect();
        assert_eq!(at.len(), 3);
        assert!(at.iter().all(|a| *a == at[0] && a.is_some_and(|a| a.port() != 0)), "{at:?}");
        // One socket: a connection is queued once, for whichever accepts.
        let _c = std::net::TcpStream::connect(at[0].unwrap()).unwrap();
        let (_s, _) = all[2].accept().unwrap();
        assert!(all[0].accept().is_err(), "already taken through another descriptor");
    }

    #[test]
    fn a_port_another_process_holds_with_so_reuseport_is_refused_with_the_fix() {
        // What a second proxy on the host would do: SO_REUSEPORT, listening.
        let foreign = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        foreign.set_reuse_port(true).unwrap();
        foreign.bind(&loopback(0).into()).unwrap();
        foreign.listen(8).unwrap();
        let held = foreign.local_addr().unwrap().as_socket().unwrap();
        let e = listeners(held, 2).expect_err("the port is held");
        assert_eq!(e.raw_os_error(), Some(nix::libc::EADDRINUSE), "{e}");
        assert!(listen_failure(&e).contains("another process holds it"), "{}", listen_failure(&e));
    }
}
