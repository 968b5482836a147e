//! Errors that are this host's shortage, not a peer's fault: out of
//! descriptors (the process's or the system's) or of kernel memory for a
//! socket. They pass as connections close, and must never be blamed on a
//! backend: a probe or a connect that meets one says nothing of it.

use std::io;

use nix::libc;

/// Whether `e` is this host's shortage (see the module).
pub fn ours(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortages_are_told_from_peers_faults() {
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            assert!(ours(&io::Error::from_raw_os_error(errno)), "errno {errno}");
        }
        for errno in [libc::ECONNREFUSED, libc::EHOSTUNREACH, libc::ETIMEDOUT, libc::EADDRNOTAVAIL]
        {
            assert!(!ours(&io::Error::from_raw_os_error(errno)), "errno {errno}");
        }
        assert!(!ours(&io::Error::other("no errno")));
    }
}
