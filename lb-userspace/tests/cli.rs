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

#[test]
fn check_notes_an_interface_this_host_does_not_have_but_passes() {
    let dir = std::env::temp_dir().join(format!("lb-cli-iface-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("lb.toml");
    std::fs::write(
        &file,
        "[agent]\ninterfaces = [\"lo\", \"lbnope9\"]\n[[service]]\nname = \"w\"\n\
         vip = \"10.0.0.1:80\"\n[[service.backend]]\naddr = \"10.0.1.1:80\"\n",
    )
    .expect("write config");
    let (code, out, _) = lb(&["check", "--config", file.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, 0, "a note, not an error: {out}");
    assert!(out.contains("no interface \"lbnope9\""), "{out}");
    assert!(!out.contains("\"lo\""), "lo exists: {out}");
}
