//! `lb backend drain|disable|enable|weight`: operator control of one backend.

use std::path::Path;

use anyhow::{Result, bail};
use lb_userspace::control::{Request, Response, client, protocol::BackendAction};

pub fn run(control: &Path, service: &str, backend: &str, action: BackendAction) -> Result<()> {
    let req = Request::Backend { service: service.to_owned(), backend: backend.to_owned(), action };
    match client::request(control, &req)? {
        Response::Done { message } => {
            println!("{message}");
            Ok(())
        }
        Response::Error { message } => bail!("{message}"),
        Response::Status(_) => bail!("the agent answered a status instead"),
    }
}
