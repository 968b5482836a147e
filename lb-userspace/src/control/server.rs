//! Serving the control socket until shutdown.

use std::{
    fs,
    future::Future,
    io,
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Arc,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
};

use super::protocol::{Request, Response};
use crate::trace::{Session, TraceSpec};

/// Answers requests; implemented by the agent.
pub trait Handler: Send + Sync + 'static {
    /// The response to one request.
    fn handle(&self, req: Request) -> Response;

    /// Starts a trace session (`Request::Trace`), or says why not.
    fn trace(&self, _spec: TraceSpec) -> Result<Session, String> {
        Err("this agent does not trace".into())
    }
}

/// A bound control socket, removed from the file system on drop.
#[derive(Debug)]
pub struct ControlSocket {
    /// A std listener: binding needs no async runtime, so the socket can be
    /// claimed before the agent knows which runtime its mode wants.
    listener: std::os::unix::net::UnixListener,
    path: PathBuf,
}

/// Why the socket could not be bound.
#[derive(Debug, thiserror::Error)]
// `reason`, not `source`: the message carries it, and a source would
// print it twice in a `{:#}` chain.
#[error("cannot create the control socket {path}: {reason}")]
pub struct BindError {
    path: PathBuf,
    reason: io::Error,
}

impl ControlSocket {
    /// Binds `path` (mode 0600; its directory is created mode 0700). A stale
    /// socket left by a killed agent is replaced; a live one is an error, so
    /// two agents never fight over one socket.
    pub fn bind(path: &Path) -> Result<Self, BindError> {
        let err = |reason| BindError { path: path.into(), reason };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(err)?;
        }
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another lb agent is listening on it",
                )));
            }
            fs::remove_file(path).map_err(err)?;
        }
        let listener = std::os::unix::net::UnixListener::bind(path).map_err(err)?;
        listener.set_nonblocking(true).map_err(err)?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(err)?;
        Ok(Self { listener, path: path.into() })
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(self, handler: Arc<dyn Handler>, shutdown: impl Future<Output = ()>) {
        let listener = match self.listener.try_clone().and_then(UnixListener::from_std) {
            Ok(l) => l,
            Err(e) => return tracing::error!("the control socket cannot be served: {e}"),
        };
        let handle = |(stream, _)| {
            let handler = Arc::clone(&handler);
            tokio::spawn(async move {
                if let Err(e) = answer(stream, handler).await {
                    tracing::debug!(error = %e, "control connection failed");
                }
            });
        };
        crate::accept::each("control socket", || listener.accept(), shutdown, handle).await;
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

async fn answer(stream: UnixStream, handler: Arc<dyn Handler>) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    // A request is one short line; a client sending more is cut off.
    let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(read, 64 * 1024));
    reader.read_line(&mut line).await?;
    let response = match serde_json::from_str::<Request>(&line) {
        Ok(Request::Trace(spec)) => return trace(&*handler, spec, reader, write).await,
        Ok(req) => handler.handle(req),
        Err(e) => Response::Error { message: format!("invalid request: {e}") },
    };
    send(&mut write, &response).await
}

/// Writes `response` as one line.
async fn send(write: &mut (impl AsyncWriteExt + Unpin), response: &Response) -> io::Result<()> {
    let mut out = serde_json::to_string(response).map_err(io::Error::other)?;
    out.push('\n');
    write.write_all(out.as_bytes()).await
}

/// Streams a trace session's records until the client closes its side or
/// goes away; the session's end clears the filter (also when writing to a
/// client that died fails, through the session's drop).
async fn trace(
    handler: &dyn Handler,
    spec: TraceSpec,
    mut reader: impl AsyncBufReadExt + Unpin,
    mut write: impl AsyncWriteExt + Unpin,
) -> io::Result<()> {
    let what = spec.to_string();
    let mut session = match handler.trace(spec) {
        Ok(s) => s,
        Err(message) => return send(&mut write, &Response::Error { message }).await,
    };
    send(&mut write, &Response::Done { message: format!("tracing {what}") }).await?;
    let mut rest = String::new();
    loop {
        tokio::select! {
            line = session.rx.recv() => match line {
                Some(line) => send(&mut write, &Response::Trace { line }).await?,
                None => break,
            },
            // End of file (the client stopped) or anything it sends.
            _ = reader.read_line(&mut rest) => break,
        }
    }
    let dropped = session.finish();
    let message = match dropped {
        0 => "trace stopped; filter cleared".to_owned(),
        n => format!(
            "trace stopped; filter cleared ({n} records dropped: the client read too slowly)"
        ),
    };
    send(&mut write, &Response::Done { message }).await
}
