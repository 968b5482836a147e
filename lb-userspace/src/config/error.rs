//! Why a configuration was refused, worded for the person editing the file.
//!
//! Every message names the file and, where it applies, the service and
//! backend, says what is wrong and how to fix it, on one line: one line per
//! problem greps well and reads well in journald.

use std::fmt;
use std::path::{Path, PathBuf};

/// Why a configuration could not be loaded. Nothing from a refused file is
/// applied: the caller gets this instead of a [`Config`](super::Config).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read; the cause is the error's `source()`.
    #[error("{}: cannot read the config file", path.display())]
    Io {
        /// The file that was being read.
        path: PathBuf,
        /// What the operating system reported.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or has a key or value type the config does
    /// not allow.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Parse {
        /// The file being parsed.
        path: PathBuf,
        /// 1-based line of the offending text.
        line: usize,
        /// 1-based column (in characters) of the offending text.
        column: usize,
        /// What is wrong, with a hint on fixing it.
        message: String,
    },
    /// The file parsed but breaks one or more rules; all of them are listed
    /// so they can be fixed in one pass.
    #[error("{}", invalid_message(path, problems))]
    Invalid {
        /// The file being validated.
        path: PathBuf,
        /// Every rule the file breaks, in file order where possible.
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            ConfigError::Io { path, .. }
            | ConfigError::Parse { path, .. }
            | ConfigError::Invalid { path, .. } => path,
        }
    }
}

fn invalid_message(path: &Path, problems: &[Problem]) -> String {
    let count = match problems.len() {
        1 => "1 problem".to_owned(),
        n => format!("{n} problems"),
    };
    let mut message = format!("{}: {count}; the configuration was not loaded", path.display());
    for problem in problems {
        message.push('\n');
        message.push_str(&problem.to_string());
    }
    message
}

/// One broken rule, rendered as
/// `<file>: service "<name>" backend "<addr>": <what is wrong>; <how to fix>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The config file.
    pub file: PathBuf,
    /// The service the problem is in, if any.
    pub service: Option<Subject>,
    /// The backend the problem is in, if any (always within `service`).
    pub backend: Option<Subject>,
    /// What is wrong.
    pub what: String,
    /// How to fix it.
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file.display())?;
        if let Some(service) = &self.service {
            write!(f, "service {service}")?;
            if let Some(backend) = &self.backend {
                write!(f, " backend {backend}")?;
            }
            f.write_str(": ")?;
        }
        write!(f, "{}; {}", self.what, self.fix)
    }
}

/// How a service or backend is referred to in a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// By its (valid) service name or (parsed) backend address.
    Named(String),
    /// By its 1-based position in the file, when it has no usable name.
    Index(usize),
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Named(name) => write!(f, "\"{name}\""),
            Subject::Index(index) => write!(f, "#{index}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    fn problem(service: Option<Subject>, backend: Option<Subject>) -> Problem {
        Problem {
            file: PathBuf::from("lb.toml"),
            service,
            backend,
            what: "weight 0 is below 1".into(),
            fix: "set weight = 1 or more".into(),
        }
    }

    #[test]
    fn problem_names_only_the_relevant_subjects() {
        assert_eq!(
            problem(None, None).to_string(),
            "lb.toml: weight 0 is below 1; set weight = 1 or more"
        );
        assert_eq!(
            problem(Some(Subject::Named("web".into())), None).to_string(),
            "lb.toml: service \"web\": weight 0 is below 1; set weight = 1 or more"
        );
        assert_eq!(
            problem(Some(Subject::Index(2)), Some(Subject::Index(3))).to_string(),
            "lb.toml: service #2 backend #3: weight 0 is below 1; set weight = 1 or more"
        );
        assert_eq!(
            problem(Some(Subject::Named("web".into())), Some(Subject::Named("10.0.1.1:80".into())))
                .to_string(),
            "lb.toml: service \"web\" backend \"10.0.1.1:80\": weight 0 is below 1; \
             set weight = 1 or more"
        );
    }

    // Formats every variant, so a refactor cannot leave a message empty or
    // drop the file name.
    #[test]
    fn every_variant_renders_a_message_naming_the_file() {
        let errors = [
            ConfigError::Io {
                path: "lb.toml".into(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            },
            ConfigError::Parse {
                path: "lb.toml".into(),
                line: 3,
                column: 1,
                message: "unknown field `wieght`".into(),
            },
            ConfigError::Invalid { path: "lb.toml".into(), problems: vec![problem(None, None)] },
            ConfigError::Invalid {
                path: "lb.toml".into(),
                problems: vec![problem(None, None), problem(Some(Subject::Index(1)), None)],
            },
        ];
        for error in &errors {
            let text = error.to_string();
            assert!(text.starts_with("lb.toml:"), "{text}");
            assert!(text.len() > "lb.toml:".len() + 5, "{text}");
            assert_eq!(error.path(), Path::new("lb.toml"));
        }
        assert!(errors[0].source().is_some());
        assert_eq!(errors[1].to_string(), "lb.toml:3:1: unknown field `wieght`");
        assert_eq!(errors[2].to_string().lines().count(), 2);
        assert!(errors[3].to_string().contains("2 problems"));
        for subject in [Subject::Named("x".into()), Subject::Index(1)] {
            assert!(!subject.to_string().is_empty());
        }
    }
}
