//! `lapa serve` driven by openpi-client itself (PyPI `openpi-client`, in the test venv that
//! scripts/test.sh creates): metadata, actions, other image sizes, every bad request answered
//! with a clear message while the server keeps serving, the token, /healthz.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn lapa(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_lapa")).args(args).output().expect("run lapa");
    assert!(out.status.success(), "lapa {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn venv_python() -> PathBuf {
    let venv =
        std::env::var_os("LAPA_VENV").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/lapa-venv"));
    venv.join("bin/python")
}

#[test]
fn openpi_client_drives_the_server_and_bad_requests_do_not_kill_it() {
    let python = venv_python();
    let probe = Command::new(&python).args(["-c", "from openpi_client import websocket_client_policy"]).output();
    assert!(
        probe.as_ref().is_ok_and(|o| o.status.success()),
        "{} cannot import openpi_client: run scripts/test.sh (it installs openpi-client into the test venv) or set LAPA_VENV",
        python.display()
    );
    let dir = tempfile::tempdir().expect("tmp");
    let p = |name: &str| dir.path().join(name).display().to_string();
    lapa(&["sim", "record", "--embodiment", "arm", "--episodes", "2", "--out", &p("arm"), "--codec", "h264", "--seed", "3"]);
    lapa(&[
        "train",
        "finetune",
        "--init",
        "none",
        "--data",
        &p("arm"),
        "--config",
        "tiny",
        "--steps",
        "3",
        "--chunk",
        "2",
        "--bins",
        "8",
        "--state",
        "--out",
        &p("run"),
        "--cache",
        &p("cache"),
        "--quiet",
    ]);
    let token = "0123456789abcdef-test";
    let mut server = Command::new(env!("CARGO_BIN_EXE_lapa"))
        .args(["serve", "--run", &p("run"), "--listen", "127.0.0.1:0", "--token", token, "--max-message-mib", "1", "--quiet"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start lapa serve");
    let mut line = String::new();
    BufReader::new(server.stdout.take().expect("stdout")).read_line(&mut line).expect("serve prints its address");
    let addr = line.split("ws://").nth(1).and_then(|s| s.split_whitespace().next()).unwrap_or_else(|| panic!("no address in {line:?}"));
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/openpi_client_check.py");
    let out = Command::new(&python).args([script, host, port, token]).output().expect("run the client");
    let _ = server.kill();
    let _ = server.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("all checks passed"), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
}
