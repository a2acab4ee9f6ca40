//! The web console against a `--sim` run, over HTTP: the page, the status, the camera frame, the
//! instruction box's endpoint, the stop button's endpoint (the arm holds), the token rules.
//! (The same page in a real browser is the next step: headless Chromium.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

struct Run(Child);

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a sim run with the console; its address from the run's own announcement.
fn start(extra: &[&str]) -> (Run, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lapa-edge"))
        .args(["run", "--sim", "--seed", "0", "--quiet", "--max-seconds", "60"])
        .args(extra)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "the run ended before serving the console");
        if let Some(rest) = line.strip_prefix("web console: http://") {
            break rest.split('/').next().unwrap().to_string();
        }
    };
    // Keep draining the run's stderr so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in err.lines() {});
    (Run(child), addr)
}

/// One request; (status code, body).
fn http(addr: &str, method: &str, path: &str, body: &[u8], auth: Option<&str>) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    let auth = auth.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: {}\r\n\r\n", body.len()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head");
    let head = String::from_utf8_lossy(&out[..split]).to_string();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, out[split + 4..].to_vec())
}

fn status(addr: &str) -> serde_json::Value {
    let (code, body) = http(addr, "GET", "/status", b"", None);
    assert_eq!(code, 200);
    serde_json::from_slice(&body).unwrap()
}

#[test]
fn the_console_shows_the_run_changes_the_instruction_and_stops_the_arm() {
    let (_run, addr) = start(&["--ui", "127.0.0.1:0"]);
    let (code, page) = http(&addr, "GET", "/", b"", None);
    let page = String::from_utf8(page).unwrap();
    assert_eq!(code, 200);
    assert!(
        page.contains("id=\"stop\"") && page.contains("/frame.jpg") && !page.contains("http://") && !page.contains("https://"),
        "one page, no external assets"
    );

    // The loop publishes: ticks advance, the instruction is the scene's task.
    let s0 = status(&addr);
    std::thread::sleep(std::time::Duration::from_millis(400));
    let s1 = status(&addr);
    assert!(s1["loop"]["tick"].as_u64() > s0["loop"]["tick"].as_u64(), "{s0} → {s1}");
    assert!(s1["instruction"].as_str().unwrap().starts_with("separate"), "{s1}");
    assert!(s1["loop"]["timing"].as_str().unwrap().contains("period p50"), "{s1}");

    // The camera: a JPEG of the policy's own 64×64 frame.
    let (code, jpg) = http(&addr, "GET", "/frame.jpg", b"", None);
    assert_eq!(code, 200);
    let mut dec = zune_jpeg::JpegDecoder::new(zune_jpeg::zune_core::bytestream::ZCursor::new(&jpg));
    let pixels = dec.decode().unwrap();
    assert_eq!(pixels.len(), 64 * 64 * 3);
    assert!(pixels.iter().map(|&p| u32::from(p)).sum::<u32>() > 0, "an image, not a black frame");

    // The instruction box: validated like every other source.
    let (code, reply) = http(&addr, "POST", "/instruction", b"point at the red square", None);
    assert_eq!((code, String::from_utf8_lossy(&reply).to_string()), (200, "ok instruction \"point at the red square\"".to_string()));
    assert_eq!(status(&addr)["instruction"], "point at the red square");
    let (code, reply) = http(&addr, "POST", "/instruction", b"   ", None);
    assert_eq!(code, 400, "{}", String::from_utf8_lossy(&reply));
    let (code, _) = http(&addr, "POST", "/instruction", &[0xff, 0xfe], None);
    assert_eq!(code, 400);
    let (code, _) = http(&addr, "POST", "/instruction", &vec![b'x'; 2000], None);
    assert_eq!(code, 413);

    // The stop button: the e-stop engages and the arm holds where it is.
    http(&addr, "POST", "/instruction", s1["instruction"].as_str().unwrap().as_bytes(), None);
    std::thread::sleep(std::time::Duration::from_millis(600));
    let (code, _) = http(&addr, "POST", "/stop", b"", None);
    assert_eq!(code, 200);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let a = status(&addr);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let b = status(&addr);
    assert_eq!(a["estop"], true);
    assert!(b["loop"]["tick"].as_u64() > a["loop"]["tick"].as_u64());
    assert_eq!(a["loop"]["joints"], b["loop"]["joints"], "held still under the e-stop");
    assert!(b["loop"]["safety"].as_array().unwrap().iter().any(|f| f == "e-stop"), "{b}");
    let (code, _) = http(&addr, "GET", "/nothing", b"", None);
    assert_eq!(code, 404);
}

#[test]
fn beyond_loopback_the_console_needs_a_token() {
    let out = Command::new(env!("CARGO_BIN_EXE_lapa-edge")).args(["run", "--sim", "--quiet", "--max-seconds", "1", "--ui", "0.0.0.0:0"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a token"), "{}", String::from_utf8_lossy(&out.stderr));
    let token = "s3cret-token-of-some-length";
    let (_run, addr) = start(&["--ui", "127.0.0.1:0", "--ui-token", token]);
    assert_eq!(http(&addr, "GET", "/status", b"", None).0, 401);
    assert_eq!(http(&addr, "POST", "/stop", b"", Some("wrong-token-of-the-same-len")).0, 401);
    assert_eq!(http(&addr, "GET", "/status", b"", Some(token)).0, 200);
    assert_eq!(http(&addr, "GET", &format!("/status?token={token}"), b"", None).0, 200);
}
