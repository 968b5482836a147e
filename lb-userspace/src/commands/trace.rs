//! `lb trace`: follow matching packets through the running datapath.
//!
//! The agent sets the filter and streams the records back over the control
//! socket; this side prints them, and ends the session (count reached or
//! Ctrl-C) by closing its half of the connection. The agent clears the
//! filter when the connection ends, so a client killed outright leaves no
//! filter behind either.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use lb_userspace::{
    control::{Response, client::ClientError},
    trace::TraceSpec,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::UnixStream,
    signal::unix::{SignalKind, signal},
};

use super::target::Target;

/// How long the agent may take to confirm the end of a session.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

pub fn run(target: &Target, spec: TraceSpec, count: Option<u64>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(session(target, spec, count))
}

async fn session(target: &Target, spec: TraceSpec, count: Option<u64>) -> Result<()> {
    // Before anything else: a Ctrl-C from now on ends the session cleanly
    // (registered at creation, unlike `ctrl_c()`, which waits for a poll).
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let path = &target.socket;
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| target.explain(ClientError::Connect { path: path.clone(), source }))?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut req = serde_json::to_string(&lb_userspace::control::Request::Trace(spec))?;
    req.push('\n');
    write.write_all(req.as_bytes()).await.context("sending the trace request")?;
    match next(&mut lines).await? {
        Some(Response::Done { message }) => eprintln!("{message}; Ctrl-C stops"),
        Some(Response::Error { message }) => bail!("{message}"),
        _ => bail!("the agent answered something else than a trace"),
    }
    let mut seen = 0u64;
    let interrupted = loop {
        if count.is_some_and(|n| seen >= n) {
            break false;
        }
        tokio::select! {
            r = next(&mut lines) => match r? {
                Some(Response::Trace { line }) => {
                    println!("{line}");
                    seen += 1;
                }
                Some(Response::Done { message }) => {
                    eprintln!("{message}");
                    return Ok(());
                }
                Some(Response::Error { message }) => bail!("{message}"),
                Some(_) => {}
                None => bail!("the agent closed the trace (did it stop?)"),
            },
            _ = interrupt.recv() => break true,
        }
    };
    // Our half closed: the agent clears the filter and confirms.
    write.shutdown().await.context("ending the trace")?;
    let confirmed = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(r) = next(&mut lines).await? {
            if let Response::Done { message } = r {
                return Ok::<_, anyhow::Error>(Some(message));
            }
        }
        Ok(None)
    })
    .await;
    match confirmed {
        Ok(Ok(Some(message))) => eprintln!(
            "{seen} records{}; {message}",
            if interrupted { " (interrupted)" } else { "" }
        ),
        _ => bail!(
            "the agent did not confirm the end of the trace within {CLOSE_WAIT:?}; `lb status` shows whether a trace still runs"
        ),
    }
    Ok(())
}

/// The next response, or `None` at the end of the stream.
async fn next(
    lines: &mut tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
) -> Result<Option<Response>> {
    let Some(line) = lines.next_line().await.context("reading from the agent")? else {
        return Ok(None);
    };
    Ok(Some(serde_json::from_str(&line).context("the agent sent an invalid answer")?))
}
