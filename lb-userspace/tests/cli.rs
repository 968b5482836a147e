//! The `lb` binary itself: exit codes and what a person sees.

use std::{path::Path, process::Command};

fn lb(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lb")).args(args).output().expect("run lb");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn check_prints_the_summary_of_a_valid_config() {
    let example = root().join("config/example.toml");
    let (code, out, _) = lb(&["check", "--config", example.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.contains("config OK: 3 services, 6 backends"), "{out}");
    assert!(out.contains("65537"), "the table size is shown: {out}");
    assert!(out.contains("16384 per service, connect 2s x3"), "the splice bounds: {out}");
}

#[test]
fn every_invalid_fixture_fails_with_one_error_naming_the_file() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("valid") {
            continue;
        }
        let (code, out, err) = lb(&["check", "--config", path.to_str().unwrap()]);
        assert_eq!(code, 1, "{name}: exit code");
        assert!(out.is_empty(), "{name}: nothing applied or printed as a summary: {out}");
        assert!(err.starts_with("error: "), "{name}: {err}");
        assert!(err.contains(&name), "{name}: the error names the file: {err}");
        checked += 1;
    }
    assert!(checked >= 25, "only {checked} invalid fixtures");
}

#[test]
fn a_missing_object_or_agent_is_explained() {
    let (code, _, err) = lb(&["status", "--control", "/nonexistent/lb.sock"]);
    assert_eq!(code, 1);
    assert!(err.contains("is `lb run` running"), "{err}");
    let example = root().join("config/example.toml");
    let (code, _, err) =
        // `--mode xdp`: in auto mode a missing object means "serve in splice
        // mode", which would not exit.
        lb(&["run", "--config", example.to_str().unwrap(), "--mode", "xdp", "--bpf-object", "/nonexistent/lb.o"]);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/lb.o"), "{err}");
}
