//! One module per `lb` subcommand.
pub mod backend;
pub mod check;
pub mod decap;
pub mod flow;
pub mod run;
pub mod status;
pub mod stop;
pub mod trace;
#[macro_use]
pub mod target;
