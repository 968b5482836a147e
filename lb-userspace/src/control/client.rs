//! Asking a running agent.

use std::{
    io::{self, BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use super::protocol::{Request, Response};

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket.
    #[error(
        "cannot reach the agent at {path}: {source}; is `lb run` running with this control_socket?"
    )]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The exchange failed midway.
    #[error("talking to the agent at {path}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The answer was not a valid response.
    #[error("the agent at {path} sent an invalid answer: {source}")]
    Decode {
        /// The socket.
        path: PathBuf,
        /// The error.
        source: serde_json::Error,
    },
}

/// Sends `req` and waits (at most 5 s) for the answer.
pub fn request(path: &Path, req: &Request) -> Result<Response, ClientError> {
    let io_err = |source| ClientError::Io { path: path.into(), source };
    let mut stream = UnixStream::connect(path)
        .map_err(|source| ClientError::Connect { path: path.into(), source })?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(io_err)?;
    let mut line = serde_json::to_string(req).expect("requests always serialise");
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io_err)?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).map_err(io_err)?;
    serde_json::from_str(&answer)
        .map_err(|source| ClientError::Decode { path: path.into(), source })
}
