//! `lapa serve`: a policy run behind openpi's websocket policy protocol, so openpi-client's
//! unmodified `WebsocketClientPolicy` (and the edge runtime's remote policy) can drive it.
//!
//! Protocol (openpi `serving/websocket_policy_server.py`): on connect the server sends one binary
//! msgpack frame of metadata; then strict request/response, one binary msgpack frame each way
//! (numpy arrays as openpi-client's `msgpack_numpy` maps, see [`lapa_model::openpi`]). The reply
//! holds `actions` `[chunk, dof]` float32 and `server_timing.infer_ms`. A request the server
//! cannot answer gets a text frame with the reason, then close code 1011; other connections are
//! not affected. `GET /healthz` answers `OK`. Loopback by default; another address needs a
//! token, which clients send as `Authorization: Api-Key <token>` (openpi-client's `api_key`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lapa_model::Policy;
pub use lapa_model::openpi::ObservationKeys;
use lapa_model::openpi::{self, NdArray, Value};
use lapa_model::policy::{Frame, PolicyInput};
use lapa_model::vla::VlaPolicy;
use tungstenite::Message;
use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub keys: ObservationKeys,
    /// Required on connect when set (`Authorization: Api-Key <token>`).
    pub token: Option<String>,
    /// Largest request accepted, bytes.
    pub max_message: usize,
    /// Connections served at once; more are refused at the handshake.
    pub max_connections: usize,
    pub quiet: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self { keys: ObservationKeys::default(), token: None, max_message: 16 << 20, max_connections: 16, quiet: false }
    }
}

/// The policy and what the server tells clients about it.
#[derive(Debug)]
pub struct Served {
    policy: Mutex<VlaPolicy>,
    metadata: Vec<u8>,
    image_size: usize,
    needs_state: usize,
    dims: usize,
    chunk: usize,
}

impl Served {
    pub fn new(policy: VlaPolicy, name: &str, keys: &ObservationKeys) -> Self {
        let cfg = policy.config().clone();
        let spec = policy.action_spec().clone();
        let delta = matches!(&cfg.head, lapa_model::HeadConfig::Action(a) if a.target == lapa_model::vla::ActionTarget::Delta);
        let state_dim = cfg.state_dim();
        let needs_state = if delta { state_dim.max(spec.names.len()) } else { state_dim };
        let strs = |v: &[String]| Value::Array(v.iter().map(|s| Value::Str(s.clone())).collect());
        let mut m = BTreeMap::new();
        m.insert("server", Value::Str(format!("lapa {}", env!("CARGO_PKG_VERSION"))));
        m.insert("policy", Value::Str(name.to_string()));
        m.insert("image_size", Value::Array(vec![Value::Int(cfg.image_size as i64), Value::Int(cfg.image_size as i64)]));
        m.insert("state_dim", Value::Int(needs_state as i64));
        m.insert("action_names", strs(&spec.names));
        m.insert("action_units", strs(&spec.units));
        m.insert("action_chunk", Value::Int(spec.chunk as i64));
        m.insert("action_fps", Value::Float(f64::from(spec.fps)));
        m.insert(
            "observation_keys",
            openpi::map(BTreeMap::from([
                ("image", Value::Str(keys.image.clone())),
                ("state", Value::Str(keys.state.clone())),
                ("prompt", Value::Str(keys.prompt.clone())),
            ])),
        );
        let mut metadata = Vec::new();
        openpi::encode(&openpi::map(m), &mut metadata);
        Self { policy: Mutex::new(policy), metadata, image_size: cfg.image_size, needs_state, dims: spec.names.len(), chunk: spec.chunk }
    }

    /// Answers one request frame: the reply frame, or the reason it cannot be answered.
    pub fn answer(&self, request: &[u8], keys: &ObservationKeys) -> Result<Vec<u8>, String> {
        let t0 = Instant::now();
        let obs = openpi::decode(request).map_err(|e| format!("not an openpi msgpack message: {e}"))?;
        if !matches!(obs, Value::Map(_)) {
            return Err(format!("the observation must be a map, got a {}", obs.kind()));
        }
        let image = match obs.get(&keys.image) {
            Some(Value::NdArray(a)) => a,
            Some(other) => return Err(format!("{}: expected an image array, got a {}", keys.image, other.kind())),
            None => return Err(format!("missing key {:?} (the camera image, uint8 [H, W, 3])", keys.image)),
        };
        let (w, h, rgb) = hwc_rgb(image).map_err(|e| format!("{}: {e}", keys.image))?;
        let state: Vec<f32> = match obs.get(&keys.state) {
            Some(Value::NdArray(a)) => {
                if a.shape.len() != 1 {
                    return Err(format!("{}: expected a 1-D array, got shape {:?}", keys.state, a.shape));
                }
                a.to_f32().map_err(|e| format!("{}: {e}", keys.state))?
            }
            Some(other) => return Err(format!("{}: expected a state array, got a {}", keys.state, other.kind())),
            None if self.needs_state > 0 => return Err(format!("missing key {:?} (the joint state, {} values)", keys.state, self.needs_state)),
            None => Vec::new(),
        };
        if self.needs_state > 0 && state.len() != self.needs_state {
            return Err(format!("{}: {} values, the policy takes {}", keys.state, state.len(), self.needs_state));
        }
        if let Some(v) = state.iter().find(|v| !v.is_finite()) {
            return Err(format!("{}: {v} is not finite", keys.state));
        }
        let state = if self.needs_state == 0 { Vec::new() } else { state };
        let prompt = match obs.get(&keys.prompt) {
            Some(Value::Str(s)) if s.len() > MAX_PROMPT_BYTES => return Err(format!("{}: {} bytes; at most {MAX_PROMPT_BYTES}", keys.prompt, s.len())),
            Some(Value::Str(s)) => s.clone(),
            Some(other) => return Err(format!("{}: expected a string, got a {}", keys.prompt, other.kind())),
            None => return Err(format!("missing key {:?} (the instruction)", keys.prompt)),
        };
        let input = PolicyInput { frame: Frame { width: w, height: h, rgb: &rgb }, state: &state, instruction: &prompt, time_s: 0.0 };
        let chunk = {
            let mut p = self.policy.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            p.infer(&input).map_err(|e| e.to_string())?
        };
        let flat: Vec<f32> = chunk.iter().flatten().copied().collect();
        debug_assert_eq!(flat.len(), self.chunk * self.dims);
        let infer_ms = t0.elapsed().as_secs_f64() * 1e3;
        let reply = openpi::map(BTreeMap::from([
            ("actions", Value::NdArray(NdArray::from_f32(vec![chunk.len(), self.dims], &flat))),
            ("server_timing", openpi::map(BTreeMap::from([("infer_ms", Value::Float(infer_ms))]))),
        ]));
        let mut out = Vec::new();
        openpi::encode(&reply, &mut out);
        Ok(out)
    }

    pub fn image_size(&self) -> usize {
        self.image_size
    }
}

/// A uint8 image as packed RGB: `[H, W, 3]` or `[3, H, W]` (openpi's ALOHA clients send
/// channels first).
fn hwc_rgb(a: &NdArray) -> Result<(usize, usize, Vec<u8>), String> {
    if a.dtype != "|u1" {
        return Err(format!("dtype {} — images must be uint8 (|u1)", a.dtype));
    }
    match a.shape.as_slice() {
        &[h, w, 3] => Ok((w, h, a.data.clone())),
        &[3, h, w] => {
            let mut out = vec![0u8; h * w * 3];
            for c in 0..3 {
                for i in 0..h * w {
                    out[i * 3 + c] = a.data[c * h * w + i];
                }
            }
            Ok((w, h, out))
        }
        s => Err(format!("shape {s:?} — expected [H, W, 3] or [3, H, W]")),
    }
}

fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// Tokens compared in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// Answers `GET /healthz` (a plain HTTP request, not an upgrade); `true` if it did.
fn health_check(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = match stream.peek(&mut buf) {
            Ok(n) => n,
            Err(_) => return false,
        };
        let head = &buf[..n];
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
            let first = text.lines().next().unwrap_or("");
            if first.starts_with("get /healthz ") && !text.contains("upgrade: websocket") {
                let _ = stream.read(&mut buf[..end + 4]);
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nOK\n");
                return true;
            }
            return false;
        }
        if n == buf.len() || Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn close_with_error(ws: &mut tungstenite::WebSocket<TcpStream>, message: &str) {
    let _ = ws.send(Message::text(message.to_string()));
    // The close reason repeats the message's start (a close frame holds 123 bytes), for clients
    // that see the close before the text.
    let mut reason: String = message.chars().take(100).collect();
    while reason.len() > 123 {
        reason.pop();
    }
    let _ = ws.close(Some(CloseFrame { code: CloseCode::Error, reason: reason.into() }));
    let _ = ws.flush();
    // Read what the client still sends (the rest of an oversized request) until it closes, so
    // the socket is not reset with the error frames still unread on the client's side.
    let stream = ws.get_mut();
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0usize;
    while total < 256 << 20 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
}

/// Longest a client may take from connecting to finishing the websocket handshake.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);
/// A connected client that sends nothing for this long is disconnected (its slot freed).
const IDLE_LIMIT: Duration = Duration::from_secs(300);
/// Longest instruction accepted, in bytes (checked before any tokenizing).
pub const MAX_PROMPT_BYTES: usize = 4096;

fn serve_connection(mut stream: TcpStream, served: &Served, opts: &ServeOptions, peer: SocketAddr) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    // A client that trickles its request keeps no slot past the deadline: a watchdog shuts the
    // socket if the handshake has not finished by then.
    let handshaken = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Ok(watch) = stream.try_clone() {
        let done = handshaken.clone();
        std::thread::spawn(move || {
            let t0 = Instant::now();
            while t0.elapsed() < HANDSHAKE_DEADLINE {
                if done.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if !done.load(Ordering::SeqCst) {
                let _ = watch.shutdown(std::net::Shutdown::Both);
            }
        });
    }
    // However this function ends, the watchdog lets go of its copy of the socket (a refused
    // handshake's reply is read to the end of the stream, so the socket must close).
    struct Settle(Arc<std::sync::atomic::AtomicBool>);
    impl Drop for Settle {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let settle = Settle(handshaken.clone());
    if health_check(&mut stream) {
        return;
    }
    let token = opts.token.clone();
    // The signature is tungstenite's handshake callback; its error type is its HTTP response.
    #[allow(clippy::result_large_err)]
    let check = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        if let Some(t) = &token {
            let given = req.headers().get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Api-Key ")).unwrap_or("");
            if !same(given, t) {
                let mut e = ErrorResponse::new(Some("missing or wrong token (send Authorization: Api-Key <token>)".into()));
                *e.status_mut() = tungstenite::http::StatusCode::UNAUTHORIZED;
                return Err(e);
            }
        }
        Ok(resp)
    };
    let config = WebSocketConfig::default().max_message_size(Some(opts.max_message)).max_frame_size(Some(opts.max_message));
    let mut ws = match tungstenite::accept_hdr_with_config(stream, check, Some(config)) {
        Ok(ws) => ws,
        Err(e) => {
            drop(settle);
            if !opts.quiet {
                eprintln!("{peer}: handshake refused: {e}");
            }
            return;
        }
    };
    drop(settle);
    let _ = ws.get_mut().set_read_timeout(Some(IDLE_LIMIT));
    if ws.send(Message::binary(served.metadata.clone())).is_err() {
        return;
    }
    let mut latencies = Vec::new();
    loop {
        let msg = match ws.read() {
            Ok(m) => m,
            Err(tungstenite::Error::Capacity(e)) => {
                close_with_error(&mut ws, &format!("request too large: {e} (the server takes at most {} bytes)", opts.max_message));
                break;
            }
            Err(_) => break,
        };
        match msg {
            Message::Binary(b) => {
                let t0 = Instant::now();
                match served.answer(&b, &opts.keys) {
                    Ok(reply) => {
                        if ws.send(Message::binary(reply)).is_err() {
                            break;
                        }
                        latencies.push(t0.elapsed().as_secs_f64() * 1e3);
                    }
                    Err(e) => {
                        close_with_error(&mut ws, &e);
                        break;
                    }
                }
            }
            Message::Text(_) => {
                close_with_error(&mut ws, "requests are binary msgpack frames (openpi-client's msgpack_numpy), not text");
                break;
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    if !opts.quiet && !latencies.is_empty() {
        latencies.sort_by(f64::total_cmp);
        let q = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
        eprintln!("{peer}: {} requests, latency p50 {:.1} ms, p99 {:.1} ms", latencies.len(), q(0.5), q(0.99));
    }
}

/// Binds `listen` (refusing a non-loopback address without a token) and returns the listener.
pub fn bind(listen: &str, opts: &ServeOptions) -> Result<TcpListener> {
    let addr: SocketAddr = listen.parse().with_context(|| format!("--listen {listen:?}: expected HOST:PORT, e.g. 127.0.0.1:8000"))?;
    if !is_loopback(&addr) && opts.token.is_none() {
        bail!("--listen {addr}: binding beyond loopback needs --token (clients send it as api_key)");
    }
    if opts.token.as_deref().is_some_and(|t| t.len() < 16) {
        bail!("--token: use at least 16 characters");
    }
    TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))
}

/// Serves connections from `listener` until the process ends, one thread per connection.
pub fn run(listener: TcpListener, served: Arc<Served>, opts: ServeOptions) -> Result<()> {
    let active = Arc::new(AtomicUsize::new(0));
    let opts = Arc::new(opts);
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let peer = stream.peer_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        if active.load(Ordering::SeqCst) >= opts.max_connections {
            if !opts.quiet {
                eprintln!("{peer}: refused, {} connections already", opts.max_connections);
            }
            drop(stream);
            continue;
        }
        active.fetch_add(1, Ordering::SeqCst);
        let (served, opts, active) = (served.clone(), opts.clone(), active.clone());
        std::thread::spawn(move || {
            // The slot is freed however the connection ends, a panic included.
            struct Slot(Arc<AtomicUsize>);
            impl Drop for Slot {
                fn drop(&mut self) {
                    self.0.fetch_sub(1, Ordering::SeqCst);
                }
            }
            let _slot = Slot(active);
            serve_connection(stream, &served, &opts, peer);
        });
    }
    Ok(())
}
