//! Which agent a command talks to: one set of flags for every subcommand
//! that reaches the agent, one precedence, one error when nobody answers.

use std::{
    ffi::OsString,
    fmt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, anyhow};
use lb_userspace::{
    config::{self, Agent},
    control::{Request, Response, client},
};

/// The config file `lb run` reads when given none.
pub const DEFAULT_CONFIG: &str = "/etc/lb/lb.toml";

/// The order in which the socket is looked for, as a literal for clap's
/// `concat!` (the help of `--control` and of `lb` itself).
#[macro_export]
macro_rules! precedence {
    () => {
        "The control socket is the first of: --control PATH; agent.control_socket of \
         --config FILE; $LB_CONTROL; agent.control_socket of $LB_CONFIG; \
         agent.control_socket of /etc/lb/lb.toml if that file exists; /run/lb/control.sock."
    };
}

/// How to point a command at another agent (ends every "cannot reach" error).
const HOW_TO_POINT: &str = "point at another agent with --control PATH, --config FILE (its \
    agent.control_socket), or LB_CONTROL / LB_CONFIG in the environment";

/// The flags every agent-talking subcommand takes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AgentArgs {
    /// The agent's control socket; wins over everything else.
    #[arg(long, value_name = "PATH", global = true,
          long_help = concat!("The agent's control socket. ", precedence!()))]
    pub control: Option<PathBuf>,
    /// The agent's config file: its agent.control_socket is the socket (and
    /// `lb stop` also uses its agent.pin_dir).
    #[arg(short, long, value_name = "FILE", global = true, conflicts_with = "control")]
    pub config: Option<PathBuf>,
}

/// Where the socket path came from, said in errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// `--control`.
    ControlFlag,
    /// `--config FILE`.
    ConfigFlag(PathBuf),
    /// `LB_CONTROL`.
    ControlEnv,
    /// `LB_CONFIG`.
    ConfigEnv(PathBuf),
    /// `/etc/lb/lb.toml`, present and given by nobody.
    DefaultConfig(PathBuf),
    /// Nothing given and no default config file.
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ControlFlag => write!(f, "from --control"),
            Self::ConfigFlag(p) => write!(f, "agent.control_socket of {} (--config)", p.display()),
            Self::ControlEnv => write!(f, "from LB_CONTROL"),
            Self::ConfigEnv(p) => write!(f, "agent.control_socket of {} (LB_CONFIG)", p.display()),
            Self::DefaultConfig(p) => {
                write!(f, "agent.control_socket of {}, the default config", p.display())
            }
            Self::Default => write!(
                f,
                "the default: no --control, --config, LB_CONTROL or LB_CONFIG, and no {DEFAULT_CONFIG}"
            ),
        }
    }
}

/// What the precedence picked, before any file is read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Choice {
    /// A socket path.
    Socket(PathBuf, Origin),
    /// A config file whose agent table names the socket.
    Config(PathBuf, Origin),
}

/// The precedence [`precedence!`] states, decided from the flags, the
/// environment (`env`) and whether the default config file exists. Flags
/// before the environment; within each, a socket before a config file.
fn choose(
    args: &AgentArgs,
    env: impl Fn(&str) -> Option<OsString>,
    default_config_exists: bool,
) -> Choice {
    // An empty variable counts as unset, as clap treats its own.
    let env = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(p) = &args.control {
        return Choice::Socket(p.clone(), Origin::ControlFlag);
    }
    if let Some(p) = &args.config {
        return Choice::Config(p.clone(), Origin::ConfigFlag(p.clone()));
    }
    if let Some(p) = env("LB_CONTROL") {
        return Choice::Socket(p, Origin::ControlEnv);
    }
    if let Some(p) = env("LB_CONFIG") {
        return Choice::Config(p.clone(), Origin::ConfigEnv(p));
    }
    if default_config_exists {
        let p = PathBuf::from(DEFAULT_CONFIG);
        return Choice::Config(p.clone(), Origin::DefaultConfig(p));
    }
    Choice::Socket(PathBuf::from(config::defaults::CONTROL_SOCKET), Origin::Default)
}

/// The agent a command talks to.
#[derive(Debug)]
pub struct Target {
    /// Its control socket.
    pub socket: PathBuf,
    /// Where that path came from.
    pub origin: Origin,
    /// The config the socket was read from, if it came from one.
    pub agent: Option<Agent>,
}

impl Target {
    /// Resolves `args` against the process environment and the default
    /// config file.
    pub fn resolve(args: &AgentArgs) -> Result<Self> {
        let choice =
            choose(args, |name| std::env::var_os(name), Path::new(DEFAULT_CONFIG).exists());
        Self::from_choice(choice)
    }

    fn from_choice(choice: Choice) -> Result<Self> {
        match choice {
            Choice::Socket(socket, origin) => Ok(Self { socket, origin, agent: None }),
            Choice::Config(path, origin) => {
                // A file being edited still names the agent's socket: only
                // its [agent] table must be valid (the rest is `lb check`'s
                // and the agent's to judge, at reload), or the CLI would be
                // lost exactly while the operator needs it.
                let agent = match config::load(&path) {
                    Ok(cfg) => Ok(cfg.agent),
                    Err(whole) => match config::load_agent(&path) {
                        Ok(agent) => {
                            eprintln!(
                                "warning: {} is not a valid config (`lb check --config {}` \
                                 lists why); its [agent] table still names the agent",
                                path.display(),
                                path.display()
                            );
                            Ok(agent)
                        }
                        Err(_) => Err(whole),
                    },
                };
                let agent = agent.with_context(|| {
                    format!(
                        "reading the control socket from {} ({}); or name the socket with \
                         --control PATH",
                        path.display(),
                        match origin {
                            Origin::DefaultConfig(_) => "the default config",
                            Origin::ConfigEnv(_) => "LB_CONFIG",
                            _ => "--config",
                        }
                    )
                })?;
                Ok(Self { socket: agent.control_socket.clone(), origin, agent: Some(agent) })
            }
        }
    }

    /// The config file the operator named (`--config` or `LB_CONFIG`), absolute
    /// (the agent compares it with its own, from another working
    /// directory). Not the default file, which only told where the socket
    /// is: a plain `lb reload` must reload whatever file the agent runs.
    pub fn config_file(&self) -> Option<PathBuf> {
        match &self.origin {
            Origin::ConfigFlag(p) | Origin::ConfigEnv(p) => {
                Some(std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
            }
            _ => None,
        }
    }

    /// Where the agent's datapath is pinned, when known: its config's
    /// agent.pin_dir, or the default when nothing was named at all (a
    /// socket given alone says nothing of it).
    pub fn pin_dir(&self) -> Option<PathBuf> {
        match (&self.agent, &self.origin) {
            (Some(agent), _) => Some(agent.pin_dir.clone()),
            (None, Origin::Default) => Some(PathBuf::from(config::defaults::PIN_DIR)),
            (None, _) => None,
        }
    }

    /// The config's `[agent.announce]`, when a config was read: where a
    /// stopped agent's announced routes are.
    pub fn announce(&self) -> Option<config::Announce> {
        self.agent.as_ref().and_then(|a| a.announce)
    }

    /// Sends `req`: the answer, or a typed error (for callers that act on
    /// a missing agent).
    pub fn try_request(&self, req: &Request) -> Result<Response, client::ClientError> {
        client::request(&self.socket, req)
    }

    /// Sends `req`; a missing agent is explained with [`Target::explain`].
    pub fn request(&self, req: &Request) -> Result<Response> {
        self.try_request(req).map_err(|e| self.explain(e))
    }

    /// The error for `e`: a missing agent names the socket, where its path
    /// came from, and how to point at another.
    pub fn explain(&self, e: client::ClientError) -> anyhow::Error {
        match e {
            client::ClientError::Connect { path, source } => anyhow!(
                "cannot reach the agent at {} ({}): {source}; is `lb run` running? Or {HOW_TO_POINT}",
                path.display(),
                self.origin
            ),
            other => other.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(control: Option<&str>, config: Option<&str>) -> AgentArgs {
        AgentArgs { control: control.map(PathBuf::from), config: config.map(PathBuf::from) }
    }

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| OsString::from(v))
    }

    const BOTH_ENV: &[(&str, &str)] = &[("LB_CONTROL", "/env.sock"), ("LB_CONFIG", "/env.toml")];

    #[test]
    fn the_control_flag_wins_over_everything() {
        let c = choose(&args(Some("/flag.sock"), Some("/flag.toml")), env(BOTH_ENV), true);
        assert_eq!(c, Choice::Socket("/flag.sock".into(), Origin::ControlFlag));
    }

    #[test]
    fn the_config_flag_wins_over_the_environment() {
        let c = choose(&args(None, Some("/flag.toml")), env(BOTH_ENV), true);
        assert_eq!(c, Choice::Config("/flag.toml".into(), Origin::ConfigFlag("/flag.toml".into())));
    }

    #[test]
    fn lb_control_wins_over_lb_config_and_the_default_file() {
        let c = choose(&args(None, None), env(BOTH_ENV), true);
        assert_eq!(c, Choice::Socket("/env.sock".into(), Origin::ControlEnv));
    }

    #[test]
    fn lb_config_wins_over_the_default_file() {
        let c = choose(&args(None, None), env(&[("LB_CONFIG", "/env.toml")]), true);
        assert_eq!(c, Choice::Config("/env.toml".into(), Origin::ConfigEnv("/env.toml".into())));
    }

    #[test]
    fn the_default_config_is_read_only_when_it_exists() {
        let c = choose(&args(None, None), env(&[]), true);
        let default = PathBuf::from(DEFAULT_CONFIG);
        assert_eq!(c, Choice::Config(default.clone(), Origin::DefaultConfig(default)));
        let c = choose(&args(None, None), env(&[]), false);
        assert_eq!(c, Choice::Socket(config::defaults::CONTROL_SOCKET.into(), Origin::Default));
    }

    #[test]
    fn empty_variables_count_as_unset() {
        let c = choose(&args(None, None), env(&[("LB_CONTROL", ""), ("LB_CONFIG", "")]), false);
        assert_eq!(c, Choice::Socket(config::defaults::CONTROL_SOCKET.into(), Origin::Default));
    }

    #[test]
    fn the_help_states_the_precedence_the_code_follows() {
        const PRECEDENCE: &str = precedence!();
        for (i, step) in ["--control", "--config", "$LB_CONTROL", "$LB_CONFIG", DEFAULT_CONFIG]
            .windows(2)
            .enumerate()
        {
            let (a, b) = (PRECEDENCE.find(step[0]), PRECEDENCE.find(step[1]));
            assert!(a < b, "step {i}: {} before {} in {PRECEDENCE}", step[0], step[1]);
        }
        assert!(PRECEDENCE.ends_with(&format!("{}.", config::defaults::CONTROL_SOCKET)));
    }

    /// A directory of its own under the system temp dir, removed on drop.
    struct Dir(PathBuf);
    impl Dir {
        fn new(tag: &str) -> Self {
            let d = std::env::temp_dir().join(format!("lb-target-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&d).expect("temp dir");
            Self(d)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_config_file_gives_its_control_socket() {
        let dir = Dir::new("cfg");
        let socket = dir.0.join("agent.sock");
        let file = dir.0.join("lb.toml");
        std::fs::write(
            &file,
            format!(
                "[agent]\ncontrol_socket = \"{}\"\n[[service]]\nname = \"web\"\n\
                 vip = \"10.0.0.1:80\"\n[[service.backend]]\naddr = \"10.0.1.1:80\"\n",
                socket.display()
            ),
        )
        .expect("write config");
        let t =
            Target::from_choice(choose(&args(None, Some(file.to_str().unwrap())), env(&[]), false))
                .expect("valid config");
        assert_eq!(t.socket, socket);
        assert_eq!(t.pin_dir(), Some(PathBuf::from(config::defaults::PIN_DIR)));
    }

    #[test]
    fn an_unreadable_config_names_the_file_and_the_way_around_it() {
        let t = Target::from_choice(Choice::Config(
            "/nonexistent/lb.toml".into(),
            Origin::ConfigEnv("/nonexistent/lb.toml".into()),
        ));
        let text = format!("{:#}", t.expect_err("no such file"));
        for word in ["/nonexistent/lb.toml", "LB_CONFIG", "--control PATH"] {
            assert!(text.contains(word), "{word:?} missing in {text}");
        }
    }

    #[test]
    fn a_file_being_edited_still_names_its_agent_but_not_with_a_broken_agent_table() {
        let dir = Dir::new("editing");
        let socket = dir.0.join("agent.sock");
        let file = dir.0.join("lb.toml");
        let resolve = |text: String| {
            std::fs::write(&file, text).expect("write config");
            Target::from_choice(choose(&args(None, Some(file.to_str().unwrap())), env(&[]), false))
        };
        let agent = format!("[agent]\ncontrol_socket = \"{}\"\n", socket.display());
        // Mid-edit: a backend's weight 0 and an unknown key in a service.
        let services = "[[service]]\nname = \"web\"\nvip = \"10.0.0.1:80\"\nwieght = 2\n\
                        [[service.backend]]\naddr = \"10.0.1.1:80\"\nweight = 0\n";
        let t = resolve(format!("{agent}{services}")).expect("the agent is still found");
        assert_eq!(t.socket, socket);
        assert!(t.pin_dir().is_some(), "and its pins, for lb stop");
        // A broken [agent] table names no socket: the whole file's errors.
        let err = resolve(format!("[agent]\ncontrol_socket = 7\n{services}"))
            .expect_err("no socket to find");
        assert!(format!("{err:#}").contains("lb.toml"), "{err:#}");
    }

    #[test]
    fn a_missing_agent_is_named_with_its_origin_and_the_ways_to_point_elsewhere() {
        let dir = Dir::new("missing");
        let socket = dir.0.join("nobody.sock");
        let t = Target {
            socket: socket.clone(),
            origin: Origin::ConfigFlag("/etc/lb/other.toml".into()),
            agent: None,
        };
        let text = format!("{:#}", t.request(&Request::Status).expect_err("nobody listens"));
        let expected = [
            socket.to_str().unwrap(),
            "agent.control_socket of /etc/lb/other.toml (--config)",
            "is `lb run` running?",
            "--control PATH",
            "--config FILE",
            "LB_CONTROL",
            "LB_CONFIG",
        ];
        for word in expected {
            assert!(text.contains(word), "{word:?} missing in {text}");
        }
        let default = Target { origin: Origin::Default, ..t };
        let text = format!("{:#}", default.request(&Request::Status).expect_err("nobody"));
        assert!(text.contains("the default: no --control, --config"), "{text}");
    }

    #[test]
    fn only_a_named_config_file_is_sent_with_a_reload() {
        let with = |origin| Target { socket: PathBuf::from("/run/lb.sock"), origin, agent: None };
        let file = PathBuf::from("/nonexistent/lb.toml");
        assert_eq!(with(Origin::ConfigFlag(file.clone())).config_file(), Some(file.clone()));
        assert_eq!(with(Origin::ConfigEnv(file.clone())).config_file(), Some(file.clone()));
        assert_eq!(with(Origin::DefaultConfig(file)).config_file(), None);
        assert_eq!(with(Origin::Default).config_file(), None);
    }
}
