//! The web console (`lapa-edge run --ui 127.0.0.1:8080`): one page, no build step, no external
//! assets — the camera, the instruction with a box to change it, the last command and what the
//! safety filter did, the loop's timing, what speech heard, and a stop button on the e-stop path.
//!
//! The server has its own threads and never blocks the control loop: the loop and the camera
//! publish into [`ConsoleState`] with `try_lock` (a busy lock skips one update), frames are
//! JPEG-encoded on the server's side, each client gets the newest frame (a slow client simply
//! sees fewer), at most [`MAX_CLIENTS`] connections are served at once, requests are capped in
//! size and time (2 s for a request's head, at most [`MAX_PER_PEER`] connections from one
//! address). Commands go through the same [`crate::instruction::apply`] as the terminal and the
//! control socket. Loopback by default; binding anywhere else requires a token, sent as
//! `Authorization: Bearer …` or `?token=…` (the page keeps the one it was opened with; plain
//! HTTP: the token crosses the network in clear).
//!
//! Other web pages in the user's browser must not drive the arm: every request must name this
//! server in `Host` (a DNS-rebinding page names its own), and every command (POST) must carry
//! the header `X-Lapa: 1`, which a cross-origin page cannot send without a preflight this server
//! never grants.

use crate::camera::{Camera, CameraError, CapturedFrame};
use crate::instruction::{Command, apply};
use crate::runtime::{Controls, Cycle};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Connections served at once; more are answered 503.
pub const MAX_CLIENTS: usize = 16;
/// Connections served at once from one address.
pub const MAX_PER_PEER: usize = 4;
/// Time a client has to send a request's head and body.
const REQUEST_TIME: Duration = Duration::from_secs(2);
/// Longest request head and body accepted, bytes.
const MAX_HEAD: u64 = 8 << 10;
const MAX_BODY: usize = 1024;

/// What the page shows, as the loop last published it.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Snapshot {
    pub tick: u64,
    pub timing: String,
    pub joints: Vec<f32>,
    pub command: Vec<f32>,
    /// The safety filter's flags on the last tick (`hold`, `max_step`, …).
    pub safety: Vec<&'static str>,
    /// Ticks each flag was raised so far.
    pub safety_totals: String,
}

/// Shared between the loop (publishes), the camera (publishes frames) and the server (reads).
#[derive(Debug, Default)]
pub struct ConsoleState {
    snapshot: Mutex<Snapshot>,
    frame: Mutex<Option<Arc<CapturedFrame>>>,
    /// The newest frame as JPEG, by its sequence number (encoded once however many clients ask).
    jpeg: Mutex<Option<(u64, Arc<Vec<u8>>)>>,
}

impl ConsoleState {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// From the loop's per-cycle callback: never waits (a busy lock skips this tick's update).
    pub fn publish_cycle(&self, c: &Cycle<'_>) {
        if let Ok(mut s) = self.snapshot.try_lock() {
            s.tick = c.tick;
            if c.tick.is_multiple_of(5) || s.timing.is_empty() {
                s.timing = c.stats.line();
                s.safety_totals = c.stats.flags.line();
            }
            s.joints.clear();
            s.joints.extend_from_slice(&c.reading.joints);
            s.command.clear();
            s.command.extend_from_slice(&c.filtered.command);
            s.safety = crate::safety::flag::names(c.filtered.flags);
        }
    }

    fn publish_frame(&self, f: &CapturedFrame) {
        // Copied before the lock is tried, dropped after it is let go: the camera's thread holds
        // it for a pointer swap only.
        let new = Some(Arc::new(f.clone()));
        let old = match self.frame.try_lock() {
            Ok(mut slot) => std::mem::replace(&mut *slot, new),
            Err(_) => None,
        };
        drop(old);
    }

    /// The newest frame as JPEG, encoded at most once per frame.
    fn jpeg(&self) -> Option<Result<Arc<Vec<u8>>, String>> {
        let f = self.frame()?;
        let mut cache = self.jpeg.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((seq, bytes)) = cache.as_ref()
            && *seq == f.seq
        {
            return Some(Ok(bytes.clone()));
        }
        Some(jpeg(&f).map(|b| {
            let b = Arc::new(b);
            *cache = Some((f.seq, b.clone()));
            b
        }))
    }

    fn snapshot(&self) -> Snapshot {
        self.snapshot.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn frame(&self) -> Option<Arc<CapturedFrame>> {
        self.frame.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// A camera that also shows its frames on the console (the policy's own frames: nothing extra
/// is captured).
pub struct ConsoleCamera {
    inner: Box<dyn Camera>,
    state: Arc<ConsoleState>,
}

impl std::fmt::Debug for ConsoleCamera {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConsoleCamera({})", self.inner.describe())
    }
}

impl ConsoleCamera {
    pub fn new(inner: Box<dyn Camera>, state: Arc<ConsoleState>) -> Self {
        Self { inner, state }
    }
}

impl Camera for ConsoleCamera {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn capture(&mut self) -> Result<CapturedFrame, CameraError> {
        let f = self.inner.capture()?;
        self.state.publish_frame(&f);
        Ok(f)
    }
    fn latest(&mut self) -> Result<CapturedFrame, CameraError> {
        self.inner.latest()
    }
}

/// A running console; dropping it stops accepting (connections being served finish on their own).
#[derive(Debug)]
pub struct Console {
    pub addr: SocketAddr,
    _worker: crate::worker::Worker,
}

impl Console {
    /// Serves the page at `addr`. A non-loopback address needs a `token` of 16 characters or more.
    pub fn bind(addr: &str, token: Option<String>, controls: Arc<Controls>, state: Arc<ConsoleState>) -> Result<Self, String> {
        let sock: SocketAddr = addr.parse().map_err(|e| format!("{addr:?}: not an address:port ({e})"))?;
        match &token {
            Some(t) if t.len() < 16 || !t.chars().all(|c| c.is_ascii_alphanumeric() || "-_.~".contains(c)) => {
                return Err("the token must be 16 or more letters, digits or -_.~".into());
            }
            None if !sock.ip().is_loopback() => {
                return Err(format!("{sock}: binding beyond this machine needs a token (--ui-token or LAPA_UI_TOKEN)"));
            }
            _ => {}
        }
        let listener = TcpListener::bind(sock).map_err(|e| format!("{sock}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let token: Option<Arc<str>> = token.map(Arc::from);
        let busy = Arc::new(AtomicUsize::new(0));
        let peers: Arc<Mutex<std::collections::HashMap<std::net::IpAddr, usize>>> = Arc::default();
        let host = Arc::new(addr);
        let worker = crate::worker::Worker::spawn("web console", move |stop| {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.set_write_timeout(Some(REQUEST_TIME));
                        let Some(slot) = Slot::take(&busy, &peers, peer.ip()) else {
                            let _ = respond(&stream, "503 Service Unavailable", "text/plain", b"busy");
                            continue;
                        };
                        let (controls, state, token, host) = (controls.clone(), state.clone(), token.clone(), host.clone());
                        let _ = std::thread::Builder::new().name("console client".into()).spawn(move || {
                            let _slot = slot;
                            let _ = serve(stream, &controls, &state, token.as_deref(), &host);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        })?;
        Ok(Self { addr, _worker: worker })
    }
}

/// One connection's place among those served; given back when dropped (a client thread that
/// panics gives it back too).
struct Slot {
    busy: Arc<AtomicUsize>,
    peers: Arc<Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    ip: std::net::IpAddr,
}

impl Slot {
    fn take(busy: &Arc<AtomicUsize>, peers: &Arc<Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>, ip: std::net::IpAddr) -> Option<Self> {
        let mut p = peers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = p.entry(ip).or_default();
        if *n >= MAX_PER_PEER || busy.load(Ordering::SeqCst) >= MAX_CLIENTS {
            return None;
        }
        *n += 1;
        busy.fetch_add(1, Ordering::SeqCst);
        Some(Self { busy: busy.clone(), peers: peers.clone(), ip })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.busy.fetch_sub(1, Ordering::SeqCst);
        let mut p = self.peers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = p.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                p.remove(&self.ip);
            }
        }
    }
}

/// Reads with what is left of the request's time as the timeout.
struct Deadline<'a> {
    stream: &'a TcpStream,
    until: std::time::Instant,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        (&mut &*self.stream).read(buf)
    }
}

fn respond(mut stream: &TcpStream, status: &str, content_type: &str, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

/// Constant-time comparison (the token must not leak through timing).
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// One request: parsed and checked field by field, answered, closed.
fn serve(stream: TcpStream, controls: &Controls, state: &ConsoleState, token: Option<&str>, bound: &SocketAddr) -> std::io::Result<()> {
    let deadline = Deadline { stream: &stream, until: std::time::Instant::now() + REQUEST_TIME };
    let mut reader = BufReader::new(deadline.take(MAX_HEAD + MAX_BODY as u64));
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || !line.ends_with('\n') {
        return respond(&stream, "400 Bad Request", "text/plain", b"bad request line");
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut length = 0usize;
    let mut auth = None;
    let mut host = None;
    let mut marked = false;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || !h.ends_with('\n') {
            return respond(&stream, "400 Bad Request", "text/plain", b"headers too long or cut off");
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => match v.trim().parse::<usize>() {
                    Ok(n) if n <= MAX_BODY => length = n,
                    _ => return respond(&stream, "413 Payload Too Large", "text/plain", b"body: at most 1024 bytes"),
                },
                "authorization" => auth = v.trim().strip_prefix("Bearer ").map(str::to_string),
                "host" => host = Some(v.trim().to_ascii_lowercase()),
                "x-lapa" => marked = v.trim() == "1",
                _ => {}
            }
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    // Only requests addressed to this server: a page that rebinds its own name to this address
    // still sends its own name.
    let host_ok = host.as_deref().is_some_and(|h| {
        let name = h.rsplit_once(':').filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit())).map_or(h, |(n, _)| n);
        name == "localhost" || name.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok() || *h == bound.to_string()
    });
    // (With a token, the token is the check: the board may be reached by any name.)
    if token.is_none() && !host_ok {
        return respond(&stream, "421 Misdirected Request", "text/plain", b"Host must name this server (an address, or localhost)");
    }
    if method == "POST" && !marked {
        return respond(&stream, "403 Forbidden", "text/plain", b"commands need the header X-Lapa: 1 (the console page sends it)");
    }
    if let Some(t) = token {
        let given = auth.or_else(|| query.split('&').find_map(|kv| kv.strip_prefix("token=").map(str::to_string)));
        if !given.is_some_and(|g| same(&g, t)) {
            return respond(&stream, "401 Unauthorized", "text/plain", b"token required");
        }
    }
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return respond(&stream, "400 Bad Request", "text/plain", b"body cut off");
    }
    let command = |c: Command| {
        let reply = apply(controls, &c);
        let status = if reply.starts_with("ok") { "200 OK" } else { "400 Bad Request" };
        respond(&stream, status, "text/plain; charset=utf-8", reply.as_bytes())
    };
    match (method, path) {
        ("GET", "/") => respond(&stream, "200 OK", "text/html; charset=utf-8", PAGE.as_bytes()),
        ("GET", "/status") => {
            let (version, instruction) = controls.instruction();
            let v = serde_json::json!({
                "instruction": instruction, "instruction_version": version, "estop": controls.estopped(), "paused": controls.paused(),
                "heard": controls.heard(), "loop": state.snapshot(),
            });
            respond(&stream, "200 OK", "application/json", v.to_string().as_bytes())
        }
        ("GET", "/frame.jpg") => match state.jpeg() {
            Some(Ok(bytes)) => respond(&stream, "200 OK", "image/jpeg", &bytes),
            Some(Err(e)) => respond(&stream, "500 Internal Server Error", "text/plain", e.as_bytes()),
            None => respond(&stream, "503 Service Unavailable", "text/plain", b"no frame yet"),
        },
        ("POST", "/instruction") => match std::str::from_utf8(&body) {
            Ok(text) => command(Command::Instruction(text.to_string())),
            Err(_) => respond(&stream, "400 Bad Request", "text/plain", b"the instruction is not UTF-8"),
        },
        ("POST", "/stop") => command(Command::Stop),
        ("POST", "/release") => command(Command::Release),
        ("POST", "/pause") => command(Command::Pause),
        ("POST", "/resume") => command(Command::Resume),
        ("GET" | "POST", _) => respond(&stream, "404 Not Found", "text/plain", b"not found"),
        _ => respond(&stream, "405 Method Not Allowed", "text/plain", b"GET or POST"),
    }
}

fn jpeg(f: &CapturedFrame) -> Result<Vec<u8>, String> {
    let (w, h) = (u16::try_from(f.width).map_err(|_| "frame too wide")?, u16::try_from(f.height).map_err(|_| "frame too tall")?);
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, 85).encode(&f.rgb, w, h, jpeg_encoder::ColorType::Rgb).map_err(|e| e.to_string())?;
    Ok(out)
}

/// The page: inline HTML, CSS and script; it polls `/status` and `/frame.jpg`.
pub const PAGE: &str = r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>lapa-edge</title>
<style>
body{font:15px system-ui,sans-serif;margin:1em;background:#f4f4f2;color:#222}
main{display:grid;grid-template-columns:minmax(240px,480px) 1fr;gap:1em}
img{width:100%;image-rendering:pixelated;background:#000;border-radius:6px}
#stop{font-size:1.6em;padding:.6em 1.2em;background:#c00;color:#fff;border:0;border-radius:8px;cursor:pointer}
#state{font-weight:bold} .estop{color:#c00} .paused{color:#b60} .running{color:#080}
code,pre{font-size:13px} pre{white-space:pre-wrap;background:#fff;padding:.5em;border-radius:6px}
input[type=text]{width:70%;font-size:1em;padding:.3em}
</style></head><body>
<h1>lapa-edge</h1>
<main>
<div><img id="cam" alt="camera"><p><button id="stop">STOP</button> <button id="release">release</button>
<button id="pause">pause</button> <button id="resume">resume</button></p></div>
<div>
<p>State: <span id="state">…</span></p>
<p>Instruction: <b id="instruction">…</b></p>
<form id="form"><input type="text" id="text" placeholder="new instruction" maxlength="512"> <button id="set">set</button></form>
<p id="reply"></p>
<p>Speech heard: <span id="heard">—</span></p>
<p>Safety filter: <span id="safety">—</span></p>
<pre id="timing"></pre>
<pre id="joints"></pre>
</div></main>
<script>
const token = new URLSearchParams(location.search).get("token");
const q = token ? "?token=" + encodeURIComponent(token) : "";
const $ = id => document.getElementById(id);
async function post(path, body) {
  try {
    const r = await fetch(path + q, {method: "POST", body: body || "", headers: {"X-Lapa": "1"}, signal: AbortSignal.timeout(3000)});
    $("reply").textContent = await r.text();
    $("reply").style.color = r.ok ? "" : "#c00";
  } catch (e) {
    $("reply").textContent = path.slice(1).toUpperCase() + " FAILED: " + e;
    $("reply").style.color = "#c00";
  }
}
$("stop").onclick = () => post("/stop");
$("release").onclick = () => post("/release");
$("pause").onclick = () => post("/pause");
$("resume").onclick = () => post("/resume");
$("form").onsubmit = e => { e.preventDefault(); post("/instruction", $("text").value); };
const fmt = v => (v || []).map(x => x.toFixed(1)).join("  ");
async function tick() {
  try {
    const s = await (await fetch("/status" + q, {signal: AbortSignal.timeout(2000)})).json();
    $("state").textContent = s.estop ? "E-STOP" : s.paused ? "paused" : "running";
    $("state").className = s.estop ? "estop" : s.paused ? "paused" : "running";
    $("instruction").textContent = s.instruction;
    $("heard").textContent = s.heard || "—";
    $("safety").textContent = (s.loop.safety.join(", ") || "passing") + " (totals: " + (s.loop.safety_totals || "—") + ")";
    $("timing").textContent = s.loop.timing;
    $("joints").textContent = "measured  " + fmt(s.loop.joints) + "\ncommanded " + fmt(s.loop.command);
  } catch (e) { $("state").textContent = "disconnected"; }
  $("cam").src = "/frame.jpg" + (q ? q + "&" : "?") + "t=" + Date.now();
  setTimeout(tick, 300);  // the next poll only after this one: polls never pile up ahead of STOP
}
tick();
</script></body></html>
"##;
