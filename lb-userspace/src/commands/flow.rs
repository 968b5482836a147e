//! `lb flow`: which backend a flow gets, and why.

use anyhow::{Result, bail};
use lb_userspace::control::{Request, Response};

use super::target::Target;

pub fn run(target: &Target, src: &str, dst: &str, protocol: &str, json: bool) -> Result<()> {
    let req =
        Request::Flow { src: src.to_owned(), dst: dst.to_owned(), protocol: protocol.to_owned() };
    match target.request(&req)? {
        Response::Flow(r) if json => println!("{}", serde_json::to_string_pretty(&r)?),
        Response::Flow(r) => println!("{} -> {} ({}): {}", src, dst, r.service, r.why),
        Response::Error { message } => bail!("{message}"),
        _ => bail!("the agent answered something else"),
    }
    Ok(())
}
