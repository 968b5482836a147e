//! The agent's trace machinery: the filter map, the aya-log ring's reader,
//! and the one session the records go to.
//!
//! One session at a time: the datapath holds one filter. Records read while
//! no session runs (the last ones of a session just ended) go nowhere.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use aya::maps::{Array, MapData};
use aya_log::EbpfLogger;
use lb_common::abi::TraceFilter;
use tokio::{io::unix::AsyncFd, sync::mpsc};

use super::format::{self, Names};

/// Lines a session may have waiting for its client before more are
/// dropped (and counted): the datapath must never wait for a client.
const QUEUE: usize = 4096;

/// The session records go to, if one runs.
#[derive(Debug)]
struct Active {
    tx: mpsc::Sender<String>,
    names: Names,
    /// What the session traces, for `lb status`.
    what: String,
    /// Lines dropped because the client read too slowly.
    dropped: u64,
}

type Shared = Arc<Mutex<Option<Active>>>;

fn lock(s: &Mutex<Option<Active>>) -> MutexGuard<'_, Option<Active>> {
    s.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The sink aya-log writes the datapath's records to: the running session.
#[derive(Debug)]
pub struct Sink(Shared);

impl log::Log for Sink {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let mut active = lock(&self.0);
        if let Some(a) = active.as_mut() {
            let line = format::line(record.target(), &record.args().to_string(), &a.names);
            if a.tx.try_send(line).is_err() {
                a.dropped += 1;
            }
        }
    }

    fn flush(&self) {}
}

/// The filter map, the datapath's switch, and the session slot (XDP mode
/// only).
pub struct Tracer {
    maps: Mutex<Maps>,
    active: Shared,
}

/// The filter (`LB_TRACE`) and the switch (`LB_TRACE_ON`), written together.
struct Maps {
    filter: Array<MapData, TraceFilter>,
    switch: Array<MapData, u32>,
}

impl Maps {
    /// Sets the filter then turns tracing on, or turns it off then clears
    /// the filter (`None`): the datapath never reads a stale filter.
    fn write(&mut self, filter: Option<TraceFilter>) -> Result<(), aya::maps::MapError> {
        match filter {
            Some(f) => {
                self.filter.set(0, f, 0)?;
                self.switch.set(0, 1, 0)
            }
            None => {
                self.switch.set(0, 0, 0)?;
                self.filter.set(0, TraceFilter::default(), 0)
            }
        }
    }
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer").field("running", &self.running()).finish_non_exhaustive()
    }
}

/// The reader of the datapath's aya-log ring, run by [`read`].
pub type Reader = EbpfLogger<Sink>;

impl Tracer {
    /// A tracer over the filter map `filter` and the switch `switch`, and
    /// the sink its ring's reader must be built with. A filter left set (by
    /// an agent killed during a session: the map is pinned) is cleared.
    pub fn new(
        filter: Array<MapData, TraceFilter>,
        switch: Array<MapData, u32>,
    ) -> Result<(Self, Sink), aya::maps::MapError> {
        let mut maps = Maps { filter, switch };
        maps.write(None)?;
        let active: Shared = Arc::default();
        Ok((Self { maps: Mutex::new(maps), active: active.clone() }, Sink(active)))
    }

    /// Starts a session for `filter` (an enabled one), naming records with
    /// `names`; `what` says what it traces. Refused while another runs.
    pub fn start(
        self: &Arc<Self>,
        filter: TraceFilter,
        names: Names,
        what: String,
    ) -> Result<Session, String> {
        let mut active = lock(&self.active);
        if let Some(a) = active.as_ref().filter(|a| !a.tx.is_closed()) {
            return Err(format!(
                "another lb trace session is running ({}); the datapath holds one filter: \
                 stop that one first",
                a.what
            ));
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        *active = Some(Active { tx, names, what, dropped: 0 });
        let written = self.maps.lock().unwrap_or_else(PoisonError::into_inner).write(Some(filter));
        if let Err(e) = written {
            *active = None;
            return Err(format!("writing the trace filter (LB_TRACE, LB_TRACE_ON): {e}"));
        }
        Ok(Session { rx, tracer: Some(self.clone()) })
    }

    /// What the running session traces, if one runs.
    pub fn running(&self) -> Option<String> {
        lock(&self.active).as_ref().filter(|a| !a.tx.is_closed()).map(|a| a.what.clone())
    }

    /// Clears the filter, then ends the session: lines dropped.
    fn stop(&self) -> u64 {
        let cleared = self.maps.lock().unwrap_or_else(PoisonError::into_inner).write(None);
        if let Err(e) = cleared {
            // The datapath keeps tracing into a ring nobody reads: costly
            // only for the packets the filter takes.
            tracing::error!("clearing the trace filter (LB_TRACE_ON, LB_TRACE) failed: {e}");
        }
        lock(&self.active).take().map_or(0, |a| a.dropped)
    }
}

/// A running trace: its lines, until it is dropped or finished (which
/// clears the filter).
#[derive(Debug)]
pub struct Session {
    /// The lines, one per record.
    pub rx: mpsc::Receiver<String>,
    tracer: Option<Arc<Tracer>>,
}

impl Session {
    /// Ends the session: the filter is cleared. Returns the lines dropped
    /// because the client read too slowly.
    pub fn finish(mut self) -> u64 {
        self.tracer.take().map_or(0, |t| t.stop())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(t) = self.tracer.take() {
            t.stop();
        }
    }
}

/// Reads the datapath's aya-log ring for as long as the agent runs, handing
/// each record to the session (see [`Sink`]).
pub async fn read(reader: Reader) {
    // SAFETY: the reader owns the ring's map fd and keeps it open, unchanged,
    // for as long as it lives, and the AsyncFd owns the reader.
    let registered =
        unsafe { AsyncFd::register_with_interest(reader, tokio::io::Interest::READABLE) };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(e) => return tracing::error!("lb trace is off: cannot poll the AYA_LOGS ring: {e}"),
    };
    loop {
        let Ok(mut ready) = fd.readable_mut().await else { return };
        ready.get_inner_mut().flush();
        ready.clear_ready();
    }
}
