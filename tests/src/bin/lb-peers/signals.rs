//! SIGINT/SIGTERM: the first asks the run to stop at the next check (every
//! wait polls it), so guards drop and remove namespaces and daemons; a
//! second one removes this run's namespaces and processes at once and exits.

use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};

static STOP: AtomicBool = AtomicBool::new(false);

/// Blocks the signals in this (the main) thread, before any other thread is
/// made, and waits for them in a thread of their own. Children get an empty
/// mask (std resets it on spawn), so they still die of a terminal's Ctrl-C.
pub fn install() -> anyhow::Result<()> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
    std::thread::spawn(move || {
        let mut seen = 0;
        while let Ok(sig) = set.wait() {
            seen += 1;
            if seen == 1 {
                eprintln!("lb-peers: {sig}: stopping after the current step, cleaning up");
                STOP.store(true, Ordering::SeqCst);
            } else {
                eprintln!("lb-peers: {sig} again: removing everything now");
                emergency_cleanup();
                std::process::exit(130);
            }
        }
    });
    Ok(())
}

/// Whether a signal asked the run to stop.
pub fn stopped() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Fails if a signal asked the run to stop.
pub fn check() -> anyhow::Result<()> {
    if stopped() {
        anyhow::bail!("interrupted by a signal");
    }
    Ok(())
}

/// Kills every process in this run's namespaces and deletes them.
fn emergency_cleanup() {
    let prefix = format!("{}{}-", lb_tests::netns::PREFIX, std::process::id());
    let Ok(entries) = std::fs::read_dir("/run/netns") else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) {
            lb_tests::netns::kill_and_delete(&name);
        }
    }
}
