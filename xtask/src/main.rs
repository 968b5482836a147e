//! Developer commands for the lb workspace: `cargo xtask <command>`.
//!
//! - `build-ebpf`: builds the XDP program, installing its toolchain if needed.
//! - `test`: everything CI checks (fmt, clippy, eBPF build and lint, tests).
//! - `bench`: benchmarks.
//! - `demo`: the balancer's main job once, in namespaces (root).
//! - `deps`: installs the eBPF toolchain prerequisites only.
//! - `deb`: the Debian package (`--check`: installed and removed in a
//!   throwaway copy of the host).

mod bench;
mod cmd;
mod deb;
mod deb_check;
mod demo;
mod ebpf;
mod prereqs;
mod test;
mod toolchain;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "Developer commands for the lb workspace")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the XDP program (lb-ebpf) into target/bpf/lb-ebpf.o.
    ///
    /// Uses a rustup nightly with rust-src and bpf-linker when the host has
    /// them; otherwise Debian's Rust with bpf-linker in .tools/, installing
    /// whatever is missing (as root on Debian) or printing how to.
    BuildEbpf {
        /// Build with the release profile (optimised, what `lb` ships with).
        #[arg(long)]
        release: bool,
    },
    /// Run every check CI runs: fmt, clippy, eBPF build + lint, all tests.
    Test,
    /// Run benchmarks and print their figures.
    Bench {
        /// Which benchmark to run.
        #[arg(value_enum, default_value = "all")]
        which: bench::Which,
        /// Fewer repetitions of shorter runs (also LB_BENCH_QUICK=1).
        #[arg(long, env = "LB_BENCH_QUICK")]
        quick: bool,
    },
    /// Install the eBPF toolchain prerequisites and nothing else.
    Deps,
    /// Namespaces + 3 backends + lb in XDP mode + traffic: the main job, once.
    Demo,
    /// Build the Debian package target/deb/lb_<version>_<arch>.deb: lb
    /// (release, eBPF object embedded), the systemd unit, the example config
    /// as /etc/lb/lb.toml, the Grafana dashboard.
    Deb {
        /// Then install it, check it, and remove and purge it again, in a
        /// throwaway overlay copy of this host (root; the host is untouched).
        #[arg(long)]
        check: bool,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = cmd::workspace_root()?;
    match cli.command {
        Command::BuildEbpf { release } => {
            let tc = toolchain::ensure(&root)?;
            let obj = ebpf::build(&root, &tc, ebpf::Profile::from_release(release))?;
            println!("eBPF object: {}", obj.display());
            Ok(())
        }
        Command::Test => test::run(&root),
        Command::Bench { which, quick } => bench::run(&root, which, quick),
        Command::Demo => demo::run(&root),
        Command::Deps => toolchain::ensure(&root).map(|tc| println!("{tc}")),
        Command::Deb { check } => deb::run(&root, check),
    }
}
