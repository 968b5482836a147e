//! Collects problems as validation walks the file, so every broken rule is
//! reported at once instead of one per run.

use std::path::Path;

use crate::config::error::{Problem, Subject};

/// What is wrong and how to fix it, before it is placed in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Issue {
    pub(super) what: String,
    pub(super) fix: String,
}

impl Issue {
    pub(super) fn new(what: impl Into<String>, fix: impl Into<String>) -> Self {
        Issue { what: what.into(), fix: fix.into() }
    }

    /// Adds advice specific to the caller to a generic fix.
    pub(super) fn also(mut self, advice: &str) -> Self {
        self.fix = format!("{} ({advice})", self.fix);
        self
    }
}

/// Where in the file an issue is: the whole file, a service, or a backend.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Scope {
    service: Option<Subject>,
    backend: Option<Subject>,
}

impl Scope {
    /// The file as a whole, including `[agent]`.
    pub(super) const FILE: Scope = Scope { service: None, backend: None };

    pub(super) fn service(subject: Subject) -> Self {
        Scope { service: Some(subject), backend: None }
    }

    pub(super) fn backend(&self, subject: Subject) -> Self {
        Scope { service: self.service.clone(), backend: Some(subject) }
    }
}

/// The problems found so far in one file.
#[derive(Debug)]
pub(super) struct Report<'a> {
    file: &'a Path,
    problems: Vec<Problem>,
}

impl<'a> Report<'a> {
    pub(super) fn new(file: &'a Path) -> Self {
        Report { file, problems: Vec::new() }
    }

    pub(super) fn add(&mut self, scope: &Scope, issue: Issue) {
        self.problems.push(Problem {
            file: self.file.to_owned(),
            service: scope.service.clone(),
            backend: scope.backend.clone(),
            what: issue.what,
            fix: issue.fix,
        });
    }

    /// The value if it is valid; otherwise records the issue and yields `None`
    /// so validation can carry on with the next field.
    pub(super) fn take<T>(&mut self, scope: &Scope, checked: Result<T, Issue>) -> Option<T> {
        checked.map_err(|issue| self.add(scope, issue)).ok()
    }

    pub(super) fn count(&self) -> usize {
        self.problems.len()
    }

    pub(super) fn into_problems(self) -> Vec<Problem> {
        self.problems
    }
}
