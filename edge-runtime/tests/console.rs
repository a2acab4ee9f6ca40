//! The web console against a `--sim` run, over HTTP: the page, the status, the camera frame, the
//! instruction box's endpoint, the stop button's endpoint (the arm holds), the token rules.
//! And the same page in a real browser: headless Chromium, driven over the DevTools protocol.
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
    let child = Command::new(env!("CARGO_BIN_EXE_lapa-edge"))
        // The run outlives the test's waits: no early end when the scene's task succeeds.
        .args(["run", "--sim", "--seed", "0", "--quiet", "--max-seconds", "120", "--settle-seconds", "0"])
        .args(extra)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut run = Run(child);
    let mut err = BufReader::new(run.0.stderr.take().unwrap());
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
    (run, addr)
}

/// One request; (status code, body).
fn http(addr: &str, method: &str, path: &str, body: &[u8], auth: Option<&str>) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    let auth = auth.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    // What the page's own requests carry.
    let mark = if method == "POST" { "X-Lapa: 1\r\n" } else { "" };
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}{mark}Content-Length: {}\r\n\r\n", body.len()).unwrap();
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

/// A raw request, headers as given.
fn raw(addr: &str, request: &str) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[test]
fn other_web_pages_cannot_drive_the_arm_and_slow_clients_cannot_hold_it() {
    let (_run, addr) = start(&["--ui", "127.0.0.1:0"]);
    // A cross-origin form or no-cors fetch cannot add X-Lapa: refused, nothing released.
    assert_eq!(raw(&addr, &format!("POST /stop HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n")), 403);
    assert_eq!(status(&addr)["estop"], false);
    // A DNS-rebinding page names its own host.
    assert_eq!(raw(&addr, "GET /status HTTP/1.1\r\nHost: evil.example:8080\r\n\r\n"), 421);
    assert_eq!(raw(&addr, &format!("GET /status HTTP/1.1\r\nHost: localhost:{}\r\n\r\n", addr.rsplit(':').next().unwrap())), 200);
    // Four idle connections from one address take its share; the fifth is turned away, and
    // after the 2 s request time the idle ones are closed and the slots free again.
    let idle: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(raw(&addr, &format!("GET /status HTTP/1.1\r\nHost: {addr}\r\n\r\n")), 503);
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(http(&addr, "POST", "/stop", b"", None).0, 200, "the stop gets through once the idle clients time out");
    drop(idle);
}

#[test]
fn beyond_loopback_the_console_needs_a_token() {
    for (args, want) in [
        (&["--ui", "0.0.0.0:0"][..], "needs a token"),
        (&["--ui", "localhost"][..], "not an address:port"),
        (&["--ui", "127.0.0.1:0", "--ui-token", "short"][..], "16 or more"),
        (&["--ui", "127.0.0.1:0", "--ui-token", "has spaces in it, more than sixteen"][..], "16 or more"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_lapa-edge")).args(["run", "--sim", "--quiet", "--max-seconds", "1"]).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(want), "{args:?}: {err}");
    }
    let token = "s3cret-token-of-some-length";
    let (_run, addr) = start(&["--ui", "127.0.0.1:0", "--ui-token", token]);
    assert_eq!(http(&addr, "GET", "/status", b"", None).0, 401);
    assert_eq!(http(&addr, "POST", "/stop", b"", Some("wrong-token-of-the-same-len")).0, 401);
    assert_eq!(http(&addr, "GET", "/status", b"", Some(token)).0, 200);
    assert_eq!(http(&addr, "GET", &format!("/status?token={token}"), b"", None).0, 200);
}

/// A headless Chromium driven over the DevTools protocol (websocket, JSON).
struct Browser {
    ws: tungstenite::WebSocket<TcpStream>,
    next: u64,
    // Field order: the browser is closed, then killed, then its profile removed.
    _chrome: Run,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.ws.send(tungstenite::Message::text(serde_json::json!({ "id": 0, "method": "Browser.close" }).to_string()));
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

impl Browser {
    /// Chromium, or None (with a message) where it is not installed; CI installs it and sets
    /// LAPA_REQUIRE_BROWSER so this never skips there.
    fn start() -> Option<Self> {
        let exe =
            ["chromium", "chromium-browser", "google-chrome"].into_iter().find(|e| Command::new(e).arg("--version").output().is_ok_and(|o| o.status.success()));
        let Some(exe) = exe else {
            assert!(std::env::var_os("LAPA_REQUIRE_BROWSER").is_none(), "chromium is missing and LAPA_REQUIRE_BROWSER is set");
            eprintln!("skipping: no chromium (Debian: apt install chromium)");
            return None;
        };
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(exe)
            .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage", "--disable-background-timer-throttling"])
            .args(["--window-size=1000,800", "--remote-debugging-port=0"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Killed however the start below ends.
        let guard = Run(child);
        let port_file = profile.path().join("DevToolsActivePort");
        let t = std::time::Instant::now();
        let text = loop {
            if let Ok(s) = std::fs::read_to_string(&port_file)
                && s.lines().count() >= 2
            {
                break s;
            }
            assert!(t.elapsed().as_secs() < 30, "chromium did not start its DevTools server");
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        let mut lines = text.lines();
        let (port, path) = (lines.next().unwrap().trim().to_string(), lines.next().unwrap().trim().to_string());
        let stream = TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
        stream.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
        let (ws, _) = tungstenite::client::client(format!("ws://127.0.0.1:{port}{path}"), stream).unwrap();
        Some(Self { ws, next: 0, _chrome: guard, _profile: profile })
    }

    /// One DevTools call (events in between are skipped); its result.
    fn call(&mut self, session: Option<&str>, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.next += 1;
        let mut msg = serde_json::json!({ "id": self.next, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = s.into();
        }
        self.ws.send(tungstenite::Message::text(msg.to_string())).unwrap();
        loop {
            if let tungstenite::Message::Text(t) = self.ws.read().unwrap() {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                if v["id"] == self.next {
                    assert!(v.get("error").is_none(), "{method}: {v}");
                    return v["result"].clone();
                }
            }
        }
    }

    fn eval(&mut self, session: &str, js: &str) -> serde_json::Value {
        self.call(Some(session), "Runtime.evaluate", serde_json::json!({ "expression": js, "returnByValue": true }))["result"]["value"].clone()
    }

    /// Waits until `js` evaluates to `want`.
    fn wait_for(&mut self, session: &str, js: &str, want: serde_json::Value) {
        let t = std::time::Instant::now();
        loop {
            let got = self.eval(session, js);
            if got == want {
                return;
            }
            assert!(t.elapsed().as_secs() < 15, "{js}: {got}, waiting for {want}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// A real mouse click at the middle of the element with `id`.
    fn click(&mut self, session: &str, id: &str) {
        let r = self.eval(
            session,
            &format!("(() => {{ const r = document.getElementById('{id}').getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()"),
        );
        let (x, y) = (r[0].as_f64().unwrap(), r[1].as_f64().unwrap());
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(Some(session), "Input.dispatchMouseEvent", serde_json::json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }));
        }
    }
}

fn base64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let b: Vec<u8> = s.bytes().filter(|&c| c != b'=' && !c.is_ascii_whitespace()).map(val).collect();
    b.chunks(4)
        .flat_map(|c| {
            let n = c.iter().enumerate().fold(0u32, |a, (i, &v)| a | u32::from(v) << (18 - 6 * i));
            let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            bytes.into_iter().take(c.len() - 1)
        })
        .collect()
}

#[test]
fn in_a_real_browser_the_page_shows_the_camera_and_status_and_its_controls_drive_the_arm() {
    let Some(mut b) = Browser::start() else { return };
    let (_run, addr) = start(&["--ui", "127.0.0.1:0"]);
    let target = b.call(None, "Target.createTarget", serde_json::json!({ "url": format!("http://{addr}/") }))["targetId"].as_str().unwrap().to_string();
    let session = b.call(None, "Target.attachToTarget", serde_json::json!({ "targetId": target, "flatten": true }))["sessionId"].as_str().unwrap().to_string();
    b.wait_for(&session, "document.getElementById('state').textContent", "running".into());
    b.wait_for(&session, "document.getElementById('cam').naturalWidth", 64.into());

    // The screenshot shows the camera image (not a blank box) and the green "running" state.
    let shot = b.call(Some(&session), "Page.captureScreenshot", serde_json::json!({ "format": "png" }))["data"].as_str().unwrap().to_string();
    let png = base64(&shot);
    std::fs::write(std::env::temp_dir().join("lapa-console-screenshot.png"), &png).unwrap();
    let mut dec = png::Decoder::new(std::io::Cursor::new(png)).read_info().unwrap();
    let mut buf = vec![0; dec.output_buffer_size().unwrap()];
    let info = dec.next_frame(&mut buf).unwrap();
    let ch = info.color_type.samples();
    let scale = b.eval(&session, "window.devicePixelRatio").as_f64().unwrap();
    let rect = |b: &mut Browser, id: &str| {
        let r = b.eval(
            &session,
            &format!("(() => {{ const r = document.getElementById('{id}').getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; }})()"),
        );
        r.as_array().unwrap().iter().map(|v| (v.as_f64().unwrap() * scale) as usize).collect::<Vec<_>>()
    };
    let pixels = |r: &[usize]| -> Vec<[u8; 3]> {
        let mut v = Vec::new();
        for y in r[1]..(r[1] + r[3]).min(info.height as usize) {
            for x in r[0]..(r[0] + r[2]).min(info.width as usize) {
                let i = (y * info.width as usize + x) * ch;
                v.push([buf[i], buf[i + 1], buf[i + 2]]);
            }
        }
        v
    };
    let cam = pixels(&rect(&mut b, "cam"));
    let distinct: std::collections::HashSet<[u8; 3]> = cam.iter().copied().collect();
    assert!(cam.len() > 10_000 && distinct.len() > 20, "the camera image is on the page: {} pixels, {} colours", cam.len(), distinct.len());
    let green = pixels(&rect(&mut b, "state")).iter().filter(|p| p[1] > 90 && p[0] < 60 && p[2] < 60).count();
    assert!(green > 10, "the status reads \"running\" in green on the screenshot");

    // The instruction box changes the running instruction.
    b.eval(&session, "document.getElementById('text').focus()");
    b.call(Some(&session), "Input.insertText", serde_json::json!({ "text": "point at the blue square" }));
    b.click(&session, "set");
    b.wait_for(&session, "document.getElementById('instruction').textContent", "point at the blue square".into());
    assert_eq!(status(&addr)["instruction"], "point at the blue square");

    // The stop button stops the arm.
    b.click(&session, "stop");
    b.wait_for(&session, "document.getElementById('state').textContent", "E-STOP".into());
    let a = status(&addr);
    assert_eq!(a["estop"], true);
    std::thread::sleep(std::time::Duration::from_millis(400));
    assert_eq!(status(&addr)["loop"]["joints"], a["loop"]["joints"], "the arm holds");
}
