//! Active health checking: probes per backend (`probe`), consecutive-result
//! state per backend (`tracker`), and the loops that run probes concurrently
//! with jitter (`scheduler`).

pub mod probe;
pub mod scheduler;
pub mod tracker;
pub mod tunnel;
pub mod unanswered;

pub use tracker::{Health, Tracker, Transition};
