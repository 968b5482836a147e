//! Connections open across the proxy, so shutdown can stop accepting and
//! then wait for them to finish.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use tokio::sync::Notify;

/// A count of open connections that can be awaited to reach zero.
#[derive(Debug, Default)]
pub struct Inflight {
    count: AtomicUsize,
    idle: Notify,
}

/// One open connection; dropping it ends it.
#[derive(Debug)]
pub struct Open(Arc<Inflight>);

impl Inflight {
    /// Counts one more open connection until the returned guard drops.
    pub fn enter(self: &Arc<Self>) -> Open {
        self.count.fetch_add(1, Ordering::AcqRel);
        Open(Arc::clone(self))
    }

    /// Connections open now.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Completes once no connection is open.
    pub async fn idle(&self) {
        loop {
            let woken = self.idle.notified();
            tokio::pin!(woken);
            // Registered before the check, so a last close in between is
            // not missed.
            woken.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            woken.await;
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn idle_completes_when_the_last_connection_ends() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let inflight = Arc::new(Inflight::default());
            inflight.idle().await; // nothing open: at once
            let (a, b) = (inflight.enter(), inflight.enter());
            assert_eq!(inflight.count(), 2);
            let waiter = tokio::spawn({
                let i = Arc::clone(&inflight);
                async move { i.idle().await }
            });
            drop(a);
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(!waiter.is_finished(), "one is still open");
            drop(b);
            tokio::time::timeout(Duration::from_secs(1), waiter).await.unwrap().unwrap();
            assert_eq!(inflight.count(), 0);
        });
    }
}
