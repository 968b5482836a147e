//! One module per `lb` subcommand.
pub mod check;
pub mod run;
pub mod status;
