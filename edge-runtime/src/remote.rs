//! The remote policy: an openpi websocket client, so a small board can run its servo loop and
//! camera locally while a GPU workstation runs the model (`lapa serve`, or any server that speaks
//! openpi's protocol), as LeRobot users do with a Pi and a remote GPU.
//!
//! Protocol (openpi `serving/websocket_policy_server.py`, the same one `lapa serve` implements):
//! on connect the server sends one binary msgpack frame of metadata; then one binary request
//! (the observation) and one binary reply (`actions` `[chunk, dof]`) at a time. A server that
//! cannot answer sends a text frame with the reason and closes. The codec is
//! [`lapa_model::openpi`], shared with the server.
//!
//! Everything the server sends is outside input: the metadata's action spec and every reply are
//! checked field by field (shape, dtype, finiteness) before a single value reaches the control
//! loop. A reply that does not arrive within the timeout drops the connection (a late reply must
//! never be taken as the answer to a later request); the next request reconnects, and the
//! reconnected server must describe the same actions as the first one.

use std::collections::BTreeMap;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use lapa_model::openpi::{self, NdArray, ObservationKeys, Value};
use lapa_model::policy::{ActionSpec, Policy, PolicyError, PolicyInput, check_chunk};
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

/// How to reach the server and what to assume when its metadata is silent.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// Sent as `Authorization: Api-Key <key>` (openpi-client's `api_key`; `lapa serve --token`).
    pub api_key: Option<String>,
    /// Connecting (TCP and the websocket handshake) must finish within this.
    pub connect_timeout: Duration,
    /// A reply must arrive within this after the request is sent.
    pub reply_timeout: Duration,
    /// Where the observation's parts go when the server's metadata has no `observation_keys`.
    pub keys: ObservationKeys,
    /// The action spec when the server's metadata does not describe its actions (a server other
    /// than `lapa serve`): the arm's joints, the policy's fps and the actions used per reply.
    /// Longer replies are cut to its chunk (openpi clients replan from the chunk's start).
    pub fallback_spec: Option<ActionSpec>,
    /// Largest reply accepted, bytes.
    pub max_message: usize,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        Self {
            api_key: None,
            connect_timeout: Duration::from_secs(5),
            reply_timeout: Duration::from_secs(2),
            keys: ObservationKeys::default(),
            fallback_spec: None,
            max_message: 16 << 20,
        }
    }
}

/// What the server said about itself on connect.
#[derive(Debug, Clone, PartialEq)]
struct ServerInfo {
    spec: ActionSpec,
    /// `true` when the spec came from the metadata (replies longer than it are an error), `false`
    /// when it is the caller's fallback (longer replies are cut).
    spec_from_server: bool,
    keys: ObservationKeys,
    name: String,
}

/// An openpi-protocol client implementing [`Policy`].
pub struct RemotePolicy {
    url: String,
    opts: RemoteOptions,
    info: ServerInfo,
    ws: Option<WebSocket<TcpStream>>,
    last_server_ms: Option<f64>,
    reconnects: u64,
}

impl std::fmt::Debug for RemotePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemotePolicy").field("url", &self.url).field("info", &self.info).field("connected", &self.ws.is_some()).finish()
    }
}

fn remote(msg: impl Into<String>) -> PolicyError {
    PolicyError::Remote(msg.into())
}

impl RemotePolicy {
    /// Connects to `url` (`ws://host:port`), reads and checks the server's metadata.
    pub fn connect(url: &str, opts: RemoteOptions) -> Result<Self, PolicyError> {
        if opts.reply_timeout.is_zero() || opts.connect_timeout.is_zero() {
            return Err(remote("the connect and reply timeouts must be positive"));
        }
        let (ws, info) = handshake(url, &opts)?;
        Ok(Self { url: url.to_string(), opts, info, ws: Some(ws), last_server_ms: None, reconnects: 0 })
    }

    /// The server's own inference time of the last reply (`server_timing.infer_ms`), if it sent one.
    pub fn last_server_ms(&self) -> Option<f64> {
        self.last_server_ms
    }

    /// Times the connection was re-opened after a failure.
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// The policy name the server gave (`policy` in its metadata), or `""`.
    pub fn server_policy(&self) -> &str {
        &self.info.name
    }

    fn reconnect(&mut self) -> Result<(), PolicyError> {
        let (ws, info) = handshake(&self.url, &self.opts)?;
        if info.spec != self.info.spec || info.keys != self.info.keys {
            return Err(remote(format!(
                "{}: after reconnecting the server describes different actions or keys ({:?}) than when the run started ({:?}); restart the run",
                self.url, info.spec, self.info.spec
            )));
        }
        self.reconnects += 1;
        self.ws = Some(ws);
        Ok(())
    }

    fn request(&self, input: &PolicyInput<'_>) -> Result<Vec<u8>, PolicyError> {
        let f = input.frame;
        if f.width == 0 || f.height == 0 || f.rgb.len() != f.width * f.height * 3 {
            return Err(PolicyError::Input(format!("frame {}×{} with {} bytes is not packed RGB", f.width, f.height, f.rgb.len())));
        }
        if let Some(v) = input.state.iter().find(|v| !v.is_finite()) {
            return Err(PolicyError::Input(format!("state value {v} is not finite")));
        }
        let keys = &self.info.keys;
        let obs = openpi::map(BTreeMap::from([
            (keys.image.as_str(), Value::NdArray(NdArray { dtype: "|u1".into(), shape: vec![f.height, f.width, 3], data: f.rgb.to_vec() })),
            (keys.state.as_str(), Value::NdArray(NdArray::from_f32(vec![input.state.len()], input.state))),
            (keys.prompt.as_str(), Value::Str(input.instruction.to_string())),
        ]));
        let mut out = Vec::new();
        openpi::encode(&obs, &mut out);
        Ok(out)
    }

    /// One request and its reply on the open connection.
    fn exchange(&mut self, request: Vec<u8>) -> Result<Vec<Vec<f32>>, PolicyError> {
        let url = self.url.clone();
        let timeout = self.opts.reply_timeout;
        let ws = self.ws.as_mut().ok_or_else(|| remote("not connected"))?;
        ws.send(Message::binary(request)).map_err(|e| remote(format!("{url}: sending the observation: {e}")))?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(remote(format!("{url}: no reply within {} ms", timeout.as_millis())));
            }
            ws.get_mut().set_read_timeout(Some(left)).map_err(|e| remote(format!("{url}: {e}")))?;
            match ws.read() {
                Ok(Message::Binary(b)) => return self.parse_reply(&b),
                Ok(Message::Text(t)) => return Err(remote(format!("{url}: the server refused the request: {}", truncate(t.as_str(), 500)))),
                Ok(Message::Close(c)) => {
                    let why = c.map_or_else(|| "no reason".to_string(), |c| format!("code {}, {:?}", u16::from(c.code), truncate(&c.reason, 200)));
                    return Err(remote(format!("{url}: the server closed the connection ({why})")));
                }
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                Err(tungstenite::Error::Io(e)) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    return Err(remote(format!("{url}: no reply within {} ms", timeout.as_millis())));
                }
                Err(e) => return Err(remote(format!("{url}: reading the reply: {e}"))),
            }
        }
    }

    fn parse_reply(&mut self, bytes: &[u8]) -> Result<Vec<Vec<f32>>, PolicyError> {
        let v = openpi::decode(bytes).map_err(|e| remote(format!("{}: the reply is not openpi msgpack: {e}", self.url)))?;
        let bad = |m: String| remote(format!("{}: the reply's {m}", self.url));
        let actions = match v.get("actions") {
            Some(Value::NdArray(a)) => a,
            Some(other) => return Err(bad(format!("actions: expected an array, got a {}", other.kind()))),
            None => return Err(bad("actions are missing".into())),
        };
        let dims = self.info.spec.names.len();
        let rows = match actions.shape.as_slice() {
            &[k, d] if d == dims => k,
            &[d] if d == dims => 1,
            s => return Err(bad(format!("actions have shape {s:?}; expected [chunk, {dims}]"))),
        };
        let flat = actions.to_f32().map_err(|e| bad(format!("actions: {e}")))?;
        let keep = if self.info.spec_from_server { rows } else { rows.min(self.info.spec.chunk) };
        let chunk: Vec<Vec<f32>> = flat.chunks_exact(dims).take(keep).map(<[f32]>::to_vec).collect();
        check_chunk(&self.info.spec, &chunk).map_err(|e| bad(e.to_string()))?;
        self.last_server_ms = match v.get("server_timing").and_then(|t| t.get("infer_ms")) {
            Some(Value::Float(ms)) if ms.is_finite() => Some(*ms),
            _ => None,
        };
        Ok(chunk)
    }
}

impl Policy for RemotePolicy {
    fn action_spec(&self) -> &ActionSpec {
        &self.info.spec
    }

    fn describe(&self) -> String {
        let name = if self.info.name.is_empty() { String::new() } else { format!(" ({})", self.info.name) };
        format!("remote {}{name}", self.url)
    }

    fn infer(&mut self, input: &PolicyInput<'_>) -> Result<Vec<Vec<f32>>, PolicyError> {
        let request = self.request(input)?;
        if self.ws.is_none() {
            self.reconnect()?;
        }
        let r = self.exchange(request);
        if r.is_err() {
            // Whatever the failure, the connection's state is unknown (a reply may still be on its
            // way): drop it so the next request starts clean.
            self.ws = None;
        }
        r
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Connects and reads what the server says about itself.
fn handshake(url: &str, opts: &RemoteOptions) -> Result<(WebSocket<TcpStream>, ServerInfo), PolicyError> {
    let (ws, meta) = open(url, opts)?;
    let info = server_info(&meta, opts).map_err(|e| remote(format!("{url}: the server's metadata: {e}")))?;
    Ok((ws, info))
}

/// Opens the websocket and reads the metadata frame.
fn open(url: &str, opts: &RemoteOptions) -> Result<(WebSocket<TcpStream>, Value), PolicyError> {
    if url.starts_with("wss://") {
        return Err(remote(format!(
            "{url}: TLS (wss://) is not built in; use ws:// on a trusted network with an API key, or tunnel it (ssh -L 8000:localhost:8000 …)"
        )));
    }
    if !url.starts_with("ws://") {
        return Err(remote(format!("{url}: expected a ws://host:port address")));
    }
    let mut req = url.into_client_request().map_err(|e| remote(format!("{url}: {e}")))?;
    let host = req.uri().host().ok_or_else(|| remote(format!("{url}: no host")))?.trim_matches(['[', ']']).to_string();
    let port = req.uri().port_u16().unwrap_or(80);
    if let Some(key) = &opts.api_key {
        let value = format!("Api-Key {key}").parse().map_err(|_| remote("the API key holds characters a header cannot carry"))?;
        req.headers_mut().insert("Authorization", value);
    }
    let addrs: Vec<_> = (host.as_str(), port).to_socket_addrs().map_err(|e| remote(format!("{url}: cannot resolve {host}: {e}")))?.collect();
    let mut last = None;
    let mut stream = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, opts.connect_timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(format!("{a}: {e}")),
        }
    }
    let stream = stream.ok_or_else(|| remote(format!("{url}: cannot connect ({})", last.unwrap_or_else(|| "no address".into()))))?;
    let _ = stream.set_nodelay(true);
    let io = |e: std::io::Error| remote(format!("{url}: {e}"));
    stream.set_read_timeout(Some(opts.connect_timeout)).map_err(io)?;
    stream.set_write_timeout(Some(opts.connect_timeout.max(opts.reply_timeout))).map_err(io)?;
    let config = WebSocketConfig::default().max_message_size(Some(opts.max_message)).max_frame_size(Some(opts.max_message));
    let (mut ws, _) = tungstenite::client::client_with_config(req, stream, Some(config)).map_err(|e| match e {
        tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r)) => {
            let body = r.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
            remote(format!("{url}: the server refused the connection: HTTP {} {}", r.status(), truncate(body.trim(), 200)))
        }
        e => remote(format!("{url}: websocket handshake: {e}")),
    })?;
    let deadline = Instant::now() + opts.connect_timeout;
    loop {
        match ws.read() {
            Ok(Message::Binary(b)) => {
                let meta = openpi::decode(&b).map_err(|e| remote(format!("{url}: the metadata frame is not msgpack: {e}")))?;
                return Ok((ws, meta));
            }
            Ok(Message::Text(t)) => return Err(remote(format!("{url}: the server sent {:?} instead of its metadata", truncate(t.as_str(), 200)))),
            Ok(Message::Close(_)) => return Err(remote(format!("{url}: the server closed the connection before sending its metadata"))),
            Ok(_) if Instant::now() < deadline => {}
            Ok(_) => return Err(remote(format!("{url}: no metadata within {} ms", opts.connect_timeout.as_millis()))),
            Err(tungstenite::Error::Io(e)) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err(remote(format!("{url}: no metadata within {} ms", opts.connect_timeout.as_millis())));
            }
            Err(e) => return Err(remote(format!("{url}: reading the metadata: {e}"))),
        }
    }
}

/// The action spec and observation keys from the metadata (as `lapa serve` sends them), or the
/// caller's fallback when the server does not describe its actions.
fn server_info(meta: &Value, opts: &RemoteOptions) -> Result<ServerInfo, String> {
    if !matches!(meta, Value::Map(_)) {
        return Err(format!("expected a map, got a {}", meta.kind()));
    }
    let strings = |key: &str| -> Result<Option<Vec<String>>, String> {
        match meta.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(str::to_string).ok_or_else(|| format!("{key}: every entry must be a string")))
                .collect::<Result<_, _>>()
                .map(Some),
            Some(other) => Err(format!("{key}: expected a list of strings, got a {}", other.kind())),
        }
    };
    let name = match meta.get("policy") {
        Some(Value::Str(s)) => truncate(s, 200).to_string(),
        _ => String::new(),
    };
    let keys = match meta.get("observation_keys") {
        None => opts.keys.clone(),
        Some(k @ Value::Map(_)) => {
            let get = |f: &str, default: &str| match k.get(f) {
                None => Ok(default.to_string()),
                Some(Value::Str(s)) if !s.is_empty() && s.len() <= 256 => Ok(s.clone()),
                Some(_) => Err(format!("observation_keys.{f}: expected a non-empty string of at most 256 bytes")),
            };
            ObservationKeys { image: get("image", &opts.keys.image)?, state: get("state", &opts.keys.state)?, prompt: get("prompt", &opts.keys.prompt)? }
        }
        Some(other) => return Err(format!("observation_keys: expected a map, got a {}", other.kind())),
    };
    if keys.image == keys.state || keys.image == keys.prompt || keys.state == keys.prompt {
        return Err(format!("observation_keys: image, state and prompt must be three different keys, got {keys:?}"));
    }
    let Some(names) = strings("action_names")? else {
        let spec = opts.fallback_spec.clone().ok_or("it does not describe the actions (no action_names) and no fallback spec was given")?;
        spec.validate().map_err(|e| format!("the fallback spec: {e}"))?;
        return Ok(ServerInfo { spec, spec_from_server: false, keys, name });
    };
    let units = strings("action_units")?.ok_or("action_names without action_units")?;
    let chunk = match meta.get("action_chunk") {
        Some(Value::Int(c)) if (1..=4096).contains(c) => *c as usize,
        Some(v) => return Err(format!("action_chunk: expected an integer in 1..=4096, got {v:?}")),
        None => return Err("action_names without action_chunk".into()),
    };
    let fps = match meta.get("action_fps") {
        Some(Value::Float(f)) => *f as f32,
        Some(Value::Int(i)) if (1..=1000).contains(i) => *i as f32,
        Some(v) => return Err(format!("action_fps: expected a number, got {v:?}")),
        None => return Err("action_names without action_fps".into()),
    };
    let spec = ActionSpec { names, units, fps, chunk };
    spec.validate().map_err(|e| e.to_string())?;
    Ok(ServerInfo { spec, spec_from_server: true, keys, name })
}
