//! Process limits `lb run` needs.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Raises the soft open-file limit to the hard one. Splice mode holds six
/// descriptors per connection (two sockets, two pipes), so the soft limit
/// of 1024 a service manager usually gives would cap it near 170
/// connections; raising up to the hard limit needs no privilege (nginx and
/// HAProxy do the same).
pub fn raise_open_files() {
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!(from = soft, to = hard, "raised the open-file limit"),
            Err(e) => tracing::warn!(soft, hard, "cannot raise the open-file limit: {e}"),
        },
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot read the open-file limit: {e}"),
    }
}
