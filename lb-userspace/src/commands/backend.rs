//! `lb backend drain|disable|enable|weight` and `lb reload`: requests to the
//! running agent that are answered "done" or with an error.

use std::path::Path;

use anyhow::{Result, bail};
use lb_userspace::control::{Request, Response, client, protocol::BackendAction};

pub fn run(control: &Path, service: &str, backend: &str, action: BackendAction) -> Result<()> {
    request(
        control,
        Request::Backend { service: service.to_owned(), backend: backend.to_owned(), action },
    )
}

/// Sends a request that is answered "done" or an error, and prints the answer.
pub fn request(control: &Path, req: Request) -> Result<()> {
    match client::request(control, &req)? {
        Response::Done { message } => {
            println!("{message}");
            Ok(())
        }
        Response::Error { message } => bail!("{message}"),
        Response::Status(_) | Response::Flow(_) => bail!("the agent answered something else"),
    }
}
