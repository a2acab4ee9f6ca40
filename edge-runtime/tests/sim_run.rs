//! The board loop end to end against the simulator: `lapa-edge run --sim` completes a task, its
//! cycle log replays, and the control socket stops the arm mid-run.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn edge() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lapa-edge"))
}

fn stdout_of(out: &std::process::Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn a_sim_run_completes_its_task_and_its_log_replays() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("run.cyclelog");
    // Seed 1 is a push task the expert solves in a few seconds of sim time.
    let out = edge()
        .args(["run", "--sim", "--seed", "1", "--family", "push_to_side", "--rate", "50", "--quiet", "--max-seconds", "30", "--log"])
        .arg(&log)
        .output()
        .expect("runs");
    let text = stdout_of(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("task: succeeded at"), "{text}");
    assert!(text.contains("end: Done"), "{text}");
    let replay = edge().arg("replay").arg(&log).arg("--plot").arg(dir.path().join("run.png")).output().expect("replays");
    let rtext = stdout_of(&replay);
    assert!(replay.status.success(), "{rtext}");
    assert!(rtext.contains("event: start") && rtext.contains("chunks:") && rtext.contains("cycles:"), "{rtext}");
    assert!(Path::new(&dir.path().join("run.png")).exists());
    // The log holds every tick the summary counted.
    let parsed = lapa_edge::cyclelog::read(&log).expect("log");
    let ticks = parsed.cycles().count();
    assert!(text.contains(&format!("after {ticks} ticks")), "{ticks} cycles logged\n{text}");
    assert!(parsed.chunks().all(|c| c.actions.len() == 10));
}

#[test]
fn the_control_socket_engages_the_estop_and_the_arm_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("edge.sock");
    let log = dir.path().join("stop.cyclelog");
    let child = edge()
        .args(["run", "--sim", "--seed", "4", "--rate", "50", "--quiet", "--max-seconds", "60", "--settle-seconds", "0", "--socket"])
        .arg(&sock)
        .arg("--log")
        .arg(&log)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let start = Instant::now();
    let mut stream = loop {
        if let Ok(s) = UnixStream::connect(&sock) {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no control socket");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut ask = |line: &str| {
        stream.write_all(line.as_bytes()).expect("write");
        let mut reply = String::new();
        reader.read_line(&mut reply).expect("reply");
        reply
    };
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ask("stop\n"), "ok e-stop engaged\n");
    std::thread::sleep(Duration::from_millis(500));
    assert!(ask("quit\n").starts_with("ok"));
    let out = child.wait_with_output().expect("exits");
    let text = stdout_of(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("end: Quit") && text.contains("e-stop"), "{text}");
    // From the e-stop on, every cycle held one and the same command.
    let parsed = lapa_edge::cyclelog::read(&log).expect("log");
    let stopped: Vec<_> = parsed.cycles().filter(|c| c.flags & lapa_edge::safety::flag::ESTOP != 0).collect();
    assert!(stopped.len() > 5, "{} e-stopped cycles", stopped.len());
    assert!(stopped.iter().all(|c| c.command == stopped[0].command && c.proposal.is_none()));
}

#[test]
fn bad_command_lines_are_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let junk = dir.path().join("junk.cyclelog");
    std::fs::write(&junk, b"not a log").expect("write");
    let cases: [(&[&str], &str); 15] = [
        (&["run"], "give --board PROFILE (a real arm) or --sim"),
        (&["run", "--board", "raspberry_pi_5"], "--bundle DIR"),
        (&["run", "--board", "raspberry_pi_5", "--remote", "ws://127.0.0.1:9"], "--instruction"),
        (&["run", "--board", "pi_zero", "--remote", "ws://127.0.0.1:9", "--instruction", "x"], "pi_zero"),
        (&["run", "--sim", "--rate", "101"], "1..=100 Hz"),
        (&["run", "--sim", "--family", "juggle"], "--family \"juggle\""),
        (&["run", "--sim", "--split", "mars"], "--split \"mars\""),
        (&["run", "--sim", "--rate", "0"], "--rate"),
        (&["run", "--sim", "--max-seconds", "NaN"], "--max-seconds"),
        (&["run", "--sim", "--chunk", "0"], "chunk"),
        (&["run", "--sim", "--instruction", "   "], "--instruction"),
        (&["run", "--sim", "--api-key", "k"], "--api-key is for a remote policy"),
        (&["run", "--sim", "--remote-timeout-ms", "10"], "--remote-timeout-ms is for a remote policy"),
        (&["run", "--sim", "--threads", "0"], "--threads 0"),
        (&["run", "--sim", "--record", "/nonexistent-lapa/ds", "--record-max-episode-seconds", "NaN"], "--record-max-episode-seconds NaN"),
    ];
    for (args, want) in cases {
        let out = edge().args(args).output().expect("runs");
        let text = stdout_of(&out);
        assert!(!out.status.success() && text.contains(want), "{args:?}: {text}");
    }
    let out = edge().arg("replay").arg(&junk).output().expect("runs");
    let text = stdout_of(&out);
    assert!(!out.status.success() && text.contains("junk.cyclelog") && text.contains("not a lapa cycle log"), "{text}");
}

/// `run --board` opens the profile's hardware before it loads a policy, and a missing serial
/// port is named with the profile file it came from.
#[test]
fn a_board_run_names_the_missing_hardware_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let profile = dir.path().join("x86_64_dev.toml");
    let text = include_str!("../../boards/profiles/boards/x86_64_dev.toml").replacen("/dev/ttyACM0", "/dev/lapa-no-such-port", 1);
    std::fs::write(&profile, &text).expect("write profile");
    // The same board with a remote policy server in its profile: no --remote needed.
    std::fs::create_dir(dir.path().join("remote")).expect("mkdir");
    let remote_profile = dir.path().join("remote/x86_64_dev.toml");
    let remote_text = text.replacen("backend = \"flex\"", "backend = \"remote\"\nserver = \"127.0.0.1:9\"", 1);
    assert_ne!(remote_text, text, "the profile's backend line");
    std::fs::write(&remote_profile, remote_text).expect("write profile");
    let out = edge()
        .args(["run", "--board", profile.to_str().expect("utf-8"), "--remote", "ws://127.0.0.1:9", "--instruction", "pick up the red cube"])
        .output()
        .expect("runs");
    let text = stdout_of(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("x86_64_dev.toml") && text.contains("[serial]") && text.contains("/dev/lapa-no-such-port"), "{text}");
    let out = edge().args(["run", "--board", remote_profile.to_str().expect("utf-8"), "--instruction", "pick up the red cube"]).output().expect("runs");
    let text = stdout_of(&out);
    assert!(!out.status.success() && text.contains("remote/x86_64_dev.toml") && text.contains("/dev/lapa-no-such-port"), "{text}");
    // Without it, the policy is asked for before any hardware.
    let out = edge().args(["run", "--board", profile.to_str().expect("utf-8"), "--instruction", "pick up the red cube"]).output().expect("runs");
    let text = stdout_of(&out);
    assert!(!out.status.success() && text.contains("--bundle DIR") && text.contains("x86_64_dev.toml"), "{text}");
    // --sim and --board are one or the other.
    let out = edge().args(["run", "--sim", "--board", "x86_64_dev"]).output().expect("runs");
    assert!(!out.status.success() && stdout_of(&out).contains("cannot be used with"), "{}", stdout_of(&out));
}
