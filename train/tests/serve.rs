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
    let text = String::from_utf8_lossy(&out.stdout);
    let python_ok = out.status.success() && text.contains("all checks passed");
    // The edge runtime's own client, against the same server after openpi-client's bad requests.
    let remote = std::panic::catch_unwind(|| edge_remote_matches_the_local_policy(&format!("ws://{addr}"), token, &dir.path().join("run")));
    let _ = server.kill();
    let _ = server.wait();
    assert!(python_ok, "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    if let Err(e) = remote {
        std::panic::resume_unwind(e);
    }
}

/// `lapa-edge`'s [`RemotePolicy`] reads the server's spec and gets, frame for frame, the chunk
/// the same weights give locally; a wrong key is refused at the handshake.
fn edge_remote_matches_the_local_policy(url: &str, token: &str, run: &std::path::Path) {
    use lapa_edge::remote::{RemoteOptions, RemotePolicy};
    use lapa_model::policy::{Frame, Policy, PolicyInput};
    let wrong = RemotePolicy::connect(url, RemoteOptions { api_key: Some("not-the-token".into()), ..RemoteOptions::default() });
    assert!(wrong.as_ref().is_err_and(|e| e.to_string().contains("401")), "{wrong:?}");
    let mut remote = RemotePolicy::connect(url, RemoteOptions { api_key: Some(token.into()), ..RemoteOptions::default() }).expect("connect");
    let device = lapa_model::device("cpu").expect("cpu");
    let (cfg, model) = lapa_model::load_vla(&run.join("model"), &device).expect("load the run");
    let state_dim = cfg.state_dim();
    let mut local = lapa_model::vla::VlaPolicy::new(cfg, model, device, "local").expect("policy");
    assert_eq!(remote.action_spec(), local.action_spec());
    assert!(remote.describe().starts_with(&format!("remote {url}")), "{}", remote.describe());
    for (k, (w, h)) in [(64usize, 64usize), (96, 72), (64, 64)].into_iter().enumerate() {
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| ((i * 31 + k * 7) % 251) as u8).collect();
        let state: Vec<f32> = (0..state_dim).map(|i| (i as f32 - 2.0) * 10.0 + k as f32).collect();
        let input = PolicyInput { frame: Frame { width: w, height: h, rgb: &rgb }, state: &state, instruction: "push the red block to the left", time_s: 0.0 };
        let got = remote.infer(&input).expect("remote infer");
        assert_eq!(got, local.infer(&input).expect("local infer"), "frame {k} ({w}×{h})");
        assert!(remote.last_server_ms().is_some_and(|ms| ms >= 0.0));
    }
    // A request the server refuses (a state of the wrong length) is a clear error, and the next
    // good one reconnects.
    let rgb = vec![0u8; 64 * 64 * 3];
    let short = vec![0.0f32; state_dim.saturating_sub(1)];
    let bad = PolicyInput { frame: Frame { width: 64, height: 64, rgb: &rgb }, state: &short, instruction: "x", time_s: 0.0 };
    let e = remote.infer(&bad).expect_err("the server refuses a short state");
    assert!(e.to_string().contains("refused the request") && e.to_string().contains("values"), "{e}");
    let state = vec![0.0f32; state_dim];
    let good = PolicyInput { state: &state, ..bad };
    assert!(remote.infer(&good).is_ok());
    assert_eq!(remote.reconnects(), 1);
}
