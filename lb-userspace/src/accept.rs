//! The accept loop every listener of the agent runs (control socket,
//! metrics, splice VIPs): one place that stops on shutdown and backs off
//! after a failed accept, which otherwise repeats at once (out of
//! descriptors, say) and spins a core.

use std::{future::Future, io, time::Duration};

use crate::throttle::{self, Throttle};

/// Pause after a failed accept.
const BACKOFF: Duration = Duration::from_millis(10);

/// Accepts with `accept` until `shutdown` completes, passing each
/// connection to `handle`; failures are logged as `what`.
pub async fn each<C, A: Future<Output = io::Result<C>>>(
    what: &str,
    mut accept: impl FnMut() -> A,
    shutdown: impl Future<Output = ()>,
    mut handle: impl FnMut(C),
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = accept() => match accepted {
                Ok(conn) => handle(conn),
                Err(e) => {
                    // Once a second at most, for all listeners together:
                    // out of descriptors, every retry of every thread
                    // fails alike.
                    static EVERY: Throttle = Throttle::new(Duration::from_secs(1));
                    if let Some(skipped) = EVERY.allow() {
                        tracing::warn!(
                            error = %e,
                            "{what}: accept failed{}",
                            throttle::more(skipped)
                        );
                    }
                    tokio::time::sleep(BACKOFF).await;
                }
            },
        }
    }
}
