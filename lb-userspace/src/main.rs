//! `lb`: a Layer-4 TCP/UDP load balancer whose fast path runs in XDP.
//!
//! This binary only parses the command line, sets up logging and hands each
//! command to its module in `commands/`.

mod commands;

use std::{path::PathBuf, process::ExitCode};

use clap::{ArgAction, Parser, Subcommand, ValueEnum};
use commands::target::{AgentArgs, Target};
use lb_userspace::control::Request;
use tracing_subscriber::EnvFilter;

/// A Layer-4 TCP/UDP load balancer: XDP fast path with Maglev hashing, or a
/// splice(2) proxy where XDP cannot run. Both serve the same TOML config.
#[derive(Debug, Parser)]
#[command(name = "lb", version, propagate_version = true)]
#[command(long_version = concat!(env!("CARGO_PKG_VERSION"), "\n", env!("LB_OBJECT_STATUS")))]
#[command(after_help = concat!("Start with `lb check --config config/example.toml`; every \
    field is documented in config/example.toml.\n\nstatus, flow, backend, reload, trace and stop \
    talk to the running agent, each taking --control PATH or --config FILE. ", precedence!()))]
struct Cli {
    /// More log output (-v debug, -vv trace). RUST_LOG, when set, wins.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the balancer in the foreground until SIGINT, SIGTERM or `lb stop`
    /// (after a signal the datapath keeps forwarding; the next `lb run`
    /// takes it over without interruption).
    Run {
        /// The config file.
        #[arg(short, long, env = "LB_CONFIG", default_value = "/etc/lb/lb.toml")]
        config: PathBuf,
        /// Datapath: `xdp` (kernel fast path), `splice` (userspace proxy) or
        /// `auto` (XDP where possible). Overrides `agent.mode` of the config.
        #[arg(long, value_enum)]
        mode: Option<ModeArg>,
        /// The hook: `tc` (tc ingress; veth and virtual interfaces),
        /// `native` (driver XDP), `generic` (skb XDP, any interface, slowest)
        /// or `auto` (tc on veth and netkit, native XDP elsewhere, tc where
        /// the driver has no native XDP). Overrides `agent.attach`.
        #[arg(long, value_enum, alias = "xdp-mode")]
        attach: Option<AttachArg>,
        /// Load the eBPF object from this file instead of the embedded one.
        #[arg(long, value_name = "PATH")]
        bpf_object: Option<PathBuf>,
    },
    /// Drain, disable, enable or re-weight one backend of the running balancer.
    Backend {
        #[command(flatten)]
        agent: AgentArgs,
        #[command(subcommand)]
        action: BackendCmd,
    },
    /// Make the running balancer re-read its config file (as SIGHUP): added
    /// or removed backends and weights apply at once; an invalid file is
    /// refused and the running config stays.
    Reload {
        #[command(flatten)]
        agent: AgentArgs,
    },
    /// Which backend a flow gets, and why: its flow-table entry, or the
    /// Maglev slot its hash picks (e.g. `lb flow 10.0.0.2:40000 10.0.0.100:80 tcp`).
    Flow {
        /// Client address, ip:port.
        #[arg(value_parser = socket_addr)]
        src: String,
        /// VIP, ip:port.
        #[arg(value_parser = socket_addr)]
        dst: String,
        /// tcp or udp.
        #[arg(value_parser = ["tcp", "udp"])]
        protocol: String,
        #[command(flatten)]
        agent: AgentArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove the datapath everywhere (XDP program, pins, saved state) and
    /// stop the agent if one runs. A plain SIGTERM leaves the datapath
    /// forwarding for the next `lb run` to take over.
    Stop {
        #[command(flatten)]
        agent: AgentArgs,
    },
    /// Follow matching packets through the running datapath: one line per
    /// decision (the parsed tuple, the service, the flow pinned or new and
    /// its backend and why, the action or exception). Runs until Ctrl-C or
    /// --count records; either way the agent clears the filter. Costs one
    /// branch per packet while no trace runs (XDP/tc modes only).
    Trace {
        /// Source prefix (an address, or e.g. 10.0.0.0/24).
        #[arg(long, value_name = "PREFIX")]
        src: Option<String>,
        /// Destination prefix (a VIP, or a prefix).
        #[arg(long, value_name = "PREFIX")]
        dst: Option<String>,
        /// A port on either side (a client's port follows its flow both ways).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
        port: Option<u16>,
        /// tcp or udp.
        #[arg(long, value_enum)]
        proto: Option<ProtoArg>,
        /// Stop after this many records.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
        #[command(flatten)]
        agent: AgentArgs,
    },
    /// Show the running balancer: services, backends, counters.
    Status {
        #[command(flatten)]
        agent: AgentArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Also show per-second rates (samples twice, a second apart).
        #[arg(long, conflicts_with = "json")]
        rates: bool,
    },
    /// The backend side of direct server return: strip the outer header
    /// of IP-in-IP packets addressed to this host on the given interfaces
    /// and hand the inner packet (to a VIP held on `lo`) to the stack. Runs
    /// in the foreground; SIGINT, SIGTERM or `lb decap --stop` detaches.
    Decap {
        /// An interface the balancer's encapsulated packets arrive on
        /// (repeat for more).
        #[arg(long = "interface", value_name = "IF", required_unless_present_any = ["stop", "status", "config"])]
        interfaces: Vec<String>,
        /// Take the interfaces, addresses, hook and pin directory from the
        /// `[decap]` table of this config file instead of the flags.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["interfaces", "addresses", "attach", "pin_dir"])]
        config: Option<PathBuf>,
        /// An outer destination to decapsulate for (repeat for more);
        /// default: every address of the host, followed as they change.
        #[arg(long = "address", value_name = "ADDR")]
        addresses: Vec<std::net::IpAddr>,
        /// The hook, as for `lb run` (default auto).
        #[arg(long, value_enum, default_value = "auto")]
        attach: AttachArg,
        /// The bpffs directory it pins under (apart from `lb run`'s).
        #[arg(long, value_name = "DIR", default_value = lb_userspace::decap::DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        /// Load the eBPF object from this file instead of the embedded one.
        #[arg(long, value_name = "PATH")]
        bpf_object: Option<PathBuf>,
        /// Detach the decap running at --pin-dir (its process exits).
        #[arg(long, conflicts_with_all = ["status", "interfaces", "addresses"])]
        stop: bool,
        /// Print the counters of the decap running at --pin-dir.
        #[arg(long, conflicts_with_all = ["interfaces", "addresses"])]
        status: bool,
    },
    /// Validate a config file and print what it would run; changes nothing.
    Check {
        /// The config file.
        #[arg(short, long, env = "LB_CONFIG", default_value = "/etc/lb/lb.toml")]
        config: PathBuf,
    },
}

/// What `lb backend` does.
#[derive(Debug, Subcommand)]
enum BackendCmd {
    /// Keep its established flows, send new flows to the other backends.
    Drain {
        /// Service name.
        service: String,
        /// Backend address, as in the config ("10.0.1.1:80").
        backend: String,
        /// Then wait until the backend has no active flows (at most this
        /// long, e.g. "10m"; 5m if no time is given). Exits non-zero, saying
        /// how many remain, if time runs out.
        #[arg(long, num_args = 0..=1, default_missing_value = "5m", value_name = "TIMEOUT",
              value_parser = lb_userspace::config::parse_duration_arg)]
        wait: Option<std::time::Duration>,
    },
    /// Send it nothing; its flows are re-hashed to the other backends.
    Disable {
        /// Service name.
        service: String,
        /// Backend address.
        backend: String,
    },
    /// Undo drain/disable: the backend follows its health checks again.
    Enable {
        /// Service name.
        service: String,
        /// Backend address.
        backend: String,
    },
    /// Set its weight (1-65535) until the next reload.
    Weight {
        /// Service name.
        service: String,
        /// Backend address.
        backend: String,
        /// The new weight, 1-65535 (to stop new flows, `lb backend drain`).
        #[arg(value_parser = clap::value_parser!(u32).range(1..=65535))]
        weight: u32,
    },
}

/// The `--attach` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum AttachArg {
    Auto,
    Native,
    Generic,
    Tc,
}

impl From<AttachArg> for lb_userspace::config::Attach {
    fn from(m: AttachArg) -> Self {
        match m {
            AttachArg::Auto => Self::Auto,
            AttachArg::Native => Self::Native,
            AttachArg::Generic => Self::Generic,
            AttachArg::Tc => Self::Tc,
        }
    }
}

/// The `--proto` values of `lb trace`.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum ProtoArg {
    Tcp,
    Udp,
}

/// The `--mode` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    Auto,
    Xdp,
    Splice,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Check { config } => commands::check::run(&config),
        Command::Run { config, mode, attach, bpf_object } => commands::run::run(
            &config,
            mode.map(Into::into),
            attach.map(Into::into),
            bpf_object.as_deref(),
        ),
        Command::Decap {
            interfaces,
            addresses,
            attach,
            pin_dir,
            config,
            bpf_object,
            stop,
            status,
        } => commands::decap::role(config.as_deref()).and_then(|role| {
            let (interfaces, addresses, attach, pin_dir) = match role {
                Some(r) => (r.interfaces, r.addresses, r.attach, r.pin_dir),
                None => (interfaces, addresses, attach.into(), pin_dir),
            };
            if stop {
                commands::decap::stop(&pin_dir)
            } else if status {
                commands::decap::status(&pin_dir)
            } else {
                commands::decap::run(&commands::decap::Args {
                    interfaces: &interfaces,
                    addresses: &addresses,
                    attach,
                    pin_dir: &pin_dir,
                    bpf_object: bpf_object.as_deref(),
                })
            }
        }),
        Command::Status { agent, json, rates } => {
            Target::resolve(&agent).and_then(|t| commands::status::run(&t, json, rates))
        }
        Command::Flow { src, dst, protocol, agent, json } => Target::resolve(&agent)
            .and_then(|t| commands::flow::run(&t, &src, &dst, &protocol, json)),
        Command::Stop { agent } => Target::resolve(&agent).and_then(|t| commands::stop::run(&t)),
        Command::Trace { src, dst, port, proto, count, agent } => {
            let proto = proto.map(|p| match p {
                ProtoArg::Tcp => "tcp".to_owned(),
                ProtoArg::Udp => "udp".to_owned(),
            });
            let spec = lb_userspace::trace::TraceSpec { src, dst, port, proto };
            Target::resolve(&agent).and_then(|t| commands::trace::run(&t, spec, count))
        }
        Command::Reload { agent } => Target::resolve(&agent).and_then(|t| {
            let config = t.config_file();
            commands::backend::request(&t, Request::Reload { config })
        }),
        Command::Backend { agent, action } => {
            Target::resolve(&agent).and_then(|t| backend(&t, action))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole context chain on one line.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `lb backend <action>` against `target`.
fn backend(target: &Target, action: BackendCmd) -> anyhow::Result<()> {
    use lb_userspace::control::protocol::BackendAction as A;
    let (service, backend, action, wait) = match action {
        BackendCmd::Drain { service, backend, wait } => (service, backend, A::Drain, wait),
        BackendCmd::Disable { service, backend } => (service, backend, A::Disable, None),
        BackendCmd::Enable { service, backend } => (service, backend, A::Enable, None),
        BackendCmd::Weight { service, backend, weight } => {
            (service, backend, A::Weight { weight }, None)
        }
    };
    match wait {
        Some(limit) => commands::backend::drain_and_wait(target, &service, &backend, limit),
        None => commands::backend::run(target, &service, &backend, action),
    }
}

impl From<ModeArg> for lb_userspace::config::Mode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Auto => Self::Auto,
            ModeArg::Xdp => Self::Xdp,
            ModeArg::Splice => Self::Splice,
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Colour only on a terminal: journald and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

/// An `ip:port` argument, checked before any agent is asked: a bad one is
/// the argument's fault, not a missing agent's. Kept as the text given.
fn socket_addr(text: &str) -> Result<String, String> {
    text.parse::<std::net::SocketAddr>()
        .map(|_| text.to_owned())
        .map_err(|_| "expected ip:port, e.g. 10.0.0.2:40000 or [2001:db8::2]:40000".to_owned())
}
