//! The remote policy against scripted openpi servers that answer well, badly, late or not at all.
//! (The real `lapa serve` is exercised from `train/tests/serve.rs`: the same weights give the
//! same chunk remotely and locally.) Every server here is a real websocket server on loopback;
//! each connection runs one script of replies.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lapa_edge::remote::{RemoteOptions, RemotePolicy};
use lapa_model::openpi::{self, NdArray, Value};
use lapa_model::policy::{ActionSpec, Frame, Policy, PolicyInput};
use tungstenite::Message;
use tungstenite::handshake::server::{ErrorResponse, Request, Response};

/// What a connection does with each request, in order.
#[derive(Clone)]
enum Reply {
    Actions(Vec<usize>, Vec<f32>),
    Raw(Vec<u8>),
    Text(&'static str),
    Close,
    Silent(Duration),
}

fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    openpi::encode(v, &mut out);
    out
}

fn lapa_meta(chunk: i64) -> Value {
    let strs = |v: &[&str]| Value::Array(v.iter().map(|s| Value::Str((*s).into())).collect());
    openpi::map(BTreeMap::from([
        ("policy", Value::Str("scripted".into())),
        ("action_names", strs(&["a", "b"])),
        ("action_units", strs(&["deg", "%"])),
        ("action_chunk", Value::Int(chunk)),
        ("action_fps", Value::Float(10.0)),
        (
            "observation_keys",
            openpi::map(BTreeMap::from([("image", Value::Str("cam".into())), ("state", Value::Str("joints".into())), ("prompt", Value::Str("task".into()))])),
        ),
    ]))
}

/// Serves `scripts.len()` connections, each sending `meta` then answering per its script; every
/// request is checked to carry the image, state and prompt under the metadata's keys. Returns
/// the address and a handle yielding the number of requests that were well formed.
fn server(meta: Value, token: Option<&'static str>, scripts: Vec<Vec<Reply>>) -> (String, JoinHandle<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let keys = match meta.get("observation_keys") {
        Some(k) => ["image", "state", "prompt"].map(|f| k.get(f).and_then(Value::as_str).unwrap_or_default().to_string()),
        None => ["observation/image", "observation/state", "prompt"].map(String::from),
    };
    let h = std::thread::spawn(move || {
        let mut good = 0;
        for script in scripts {
            let (stream, _) = listener.accept().expect("accept");
            #[allow(clippy::result_large_err)] // tungstenite's callback type
            let check = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
                let got = req.headers().get("Authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
                match token {
                    Some(t) if got.as_deref() != Some(&format!("Api-Key {t}")) => {
                        let mut e = ErrorResponse::new(Some("bad token".into()));
                        *e.status_mut() = tungstenite::http::StatusCode::UNAUTHORIZED;
                        Err(e)
                    }
                    _ => Ok(resp),
                }
            };
            let Ok(mut ws) = tungstenite::accept_hdr(stream, check) else { continue };
            ws.send(Message::binary(encode(&meta))).expect("send metadata");
            for reply in script {
                let Ok(Message::Binary(req)) = ws.read() else { break };
                let obs = openpi::decode(&req).expect("the client sends msgpack");
                let image_ok = matches!(obs.get(&keys[0]), Some(Value::NdArray(a)) if a.dtype == "|u1" && a.shape == [4, 6, 3]);
                let state_ok = matches!(obs.get(&keys[1]), Some(Value::NdArray(a)) if a.to_f32() == Ok(vec![1.0, 2.0]));
                let prompt_ok = obs.get(&keys[2]).and_then(Value::as_str) == Some("pick it up");
                good += usize::from(image_ok && state_ok && prompt_ok);
                match reply {
                    Reply::Actions(shape, v) => {
                        let r = openpi::map(BTreeMap::from([
                            ("actions", Value::NdArray(NdArray::from_f32(shape, &v))),
                            ("server_timing", openpi::map(BTreeMap::from([("infer_ms", Value::Float(1.5))]))),
                        ]));
                        ws.send(Message::binary(encode(&r))).expect("send");
                    }
                    Reply::Raw(b) => ws.send(Message::binary(b)).expect("send"),
                    Reply::Text(t) => ws.send(Message::text(t)).expect("send"),
                    Reply::Close => {
                        let _ = ws.close(None);
                        let _ = ws.flush();
                        break;
                    }
                    Reply::Silent(d) => std::thread::sleep(d),
                }
            }
            let _ = ws.close(None);
            let _ = ws.flush();
        }
        good
    });
    (format!("ws://{addr}"), h)
}

fn input<'a>(rgb: &'a [u8], state: &'a [f32]) -> PolicyInput<'a> {
    PolicyInput { frame: Frame { width: 6, height: 4, rgb }, state, instruction: "pick it up", time_s: 0.0 }
}

fn opts() -> RemoteOptions {
    RemoteOptions { reply_timeout: Duration::from_millis(300), ..RemoteOptions::default() }
}

#[test]
fn the_spec_comes_from_the_metadata_and_good_replies_arrive_as_chunks() {
    let replies = vec![Reply::Actions(vec![3, 2], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), Reply::Actions(vec![2], vec![7.0, 8.0])];
    let (url, h) = server(lapa_meta(3), Some("k3y"), vec![replies]);
    let mut p = RemotePolicy::connect(&url, RemoteOptions { api_key: Some("k3y".into()), ..opts() }).expect("connect");
    assert_eq!(p.action_spec(), &ActionSpec { names: vec!["a".into(), "b".into()], units: vec!["deg".into(), "%".into()], fps: 10.0, chunk: 3 });
    assert_eq!(p.server_policy(), "scripted");
    let (rgb, state) = (vec![9u8; 4 * 6 * 3], [1.0f32, 2.0]);
    assert_eq!(p.infer(&input(&rgb, &state)).expect("infer"), vec![vec![1.0, 2.0], vec![3.0, 4.0], vec![5.0, 6.0]]);
    assert_eq!(p.last_server_ms(), Some(1.5));
    // A 1-D reply is one action.
    assert_eq!(p.infer(&input(&rgb, &state)).expect("infer"), vec![vec![7.0, 8.0]]);
    drop(p);
    assert_eq!(h.join().expect("server"), 2, "every request carried image, state and prompt under the metadata's keys");
}

#[test]
fn a_server_that_does_not_describe_its_actions_uses_the_fallback_and_long_replies_are_cut() {
    let meta = openpi::map(BTreeMap::new());
    let long: Vec<f32> = (0..20).map(|i| i as f32).collect();
    let (url, h) = server(meta.clone(), None, vec![vec![Reply::Actions(vec![10, 2], long)]]);
    let fallback = ActionSpec { names: vec!["a".into(), "b".into()], units: vec!["deg".into(), "%".into()], fps: 10.0, chunk: 4 };
    let mut p = RemotePolicy::connect(&url, RemoteOptions { fallback_spec: Some(fallback.clone()), ..opts() }).expect("connect");
    assert_eq!(p.action_spec(), &fallback);
    let (rgb, state) = (vec![0u8; 72], [1.0f32, 2.0]);
    let chunk = p.infer(&input(&rgb, &state)).expect("infer");
    assert_eq!(chunk, vec![vec![0.0, 1.0], vec![2.0, 3.0], vec![4.0, 5.0], vec![6.0, 7.0]]);
    drop(p);
    assert_eq!(h.join().expect("server"), 1, "openpi's default keys are used");
    // Without a fallback such a server is refused with the reason.
    let (url, h) = server(meta, None, vec![vec![]]);
    let e = RemotePolicy::connect(&url, opts()).expect_err("no spec anywhere");
    assert!(e.to_string().contains("action_names"), "{e}");
    h.join().expect("server");
}

#[test]
fn bad_replies_are_errors_and_the_next_request_reconnects() {
    let meta = lapa_meta(2);
    let nan = Reply::Actions(vec![1, 2], vec![0.0, f32::NAN]);
    let scripts = vec![
        vec![Reply::Actions(vec![2, 3], vec![0.0; 6])],
        vec![nan],
        vec![Reply::Actions(vec![3, 2], vec![0.0; 6])],
        vec![Reply::Raw(vec![0xc1])],
        vec![Reply::Raw(encode(&openpi::map(BTreeMap::from([("actions", Value::Str("no".into()))]))))],
        vec![Reply::Text("state: 1 values, the policy takes 2")],
        vec![Reply::Close],
        vec![Reply::Silent(Duration::from_millis(900)), Reply::Actions(vec![1, 2], vec![5.0, 5.0])],
        vec![Reply::Actions(vec![1, 2], vec![1.0, 1.0])],
    ];
    let (url, h) = server(meta, None, scripts);
    let mut p = RemotePolicy::connect(&url, opts()).expect("connect");
    let (rgb, state) = (vec![0u8; 72], [1.0f32, 2.0]);
    let expect = [
        "shape [2, 3]",
        "b: NaN is not finite",
        "returned 3 actions",
        "not openpi msgpack",
        "actions: expected an array, got a str",
        "refused the request: state: 1 values",
        "closed the connection",
        "no reply within 300 ms",
    ];
    for want in expect {
        let t0 = Instant::now();
        let e = p.infer(&input(&rgb, &state)).expect_err(want);
        assert!(e.to_string().contains(want), "wanted {want:?} in {e}");
        assert!(t0.elapsed() < Duration::from_secs(2), "{want}: took {:?}", t0.elapsed());
    }
    // The late reply of the silent connection is never taken: the next request gets a fresh
    // connection and its own answer.
    assert_eq!(p.infer(&input(&rgb, &state)).expect("recovered"), vec![vec![1.0, 1.0]]);
    assert_eq!(p.reconnects(), 8);
    drop(p);
    h.join().expect("server");
}

#[test]
fn a_reconnect_to_a_server_with_other_actions_is_refused() {
    let listener_meta = [lapa_meta(2), lapa_meta(5)];
    // Two servers in turn on one address cannot be arranged portably; one server whose second
    // connection describes a chunk of 5 instead of 2 stands for a restarted, different server.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("ws://{}", listener.local_addr().expect("addr"));
    let h = std::thread::spawn(move || {
        for (k, meta) in listener_meta.into_iter().enumerate() {
            let (stream, _) = listener.accept().expect("accept");
            let mut ws = tungstenite::accept(stream).expect("handshake");
            ws.send(Message::binary(encode(&meta))).expect("meta");
            if k == 0 {
                let _ = ws.read();
                let _ = ws.close(None);
                let _ = ws.flush();
            }
        }
    });
    let mut p = RemotePolicy::connect(&url, opts()).expect("connect");
    let (rgb, state) = (vec![0u8; 72], [1.0f32, 2.0]);
    assert!(p.infer(&input(&rgb, &state)).is_err_and(|e| e.to_string().contains("closed")));
    let e = p.infer(&input(&rgb, &state)).expect_err("other actions");
    assert!(e.to_string().contains("different actions"), "{e}");
    h.join().expect("server");
}

#[test]
fn connecting_fails_clearly() {
    let (url, h) = server(lapa_meta(2), Some("right"), vec![vec![]]);
    let e = RemotePolicy::connect(&url, RemoteOptions { api_key: Some("wrong".into()), ..opts() }).expect_err("wrong key");
    assert!(e.to_string().contains("HTTP 401"), "{e}");
    h.join().expect("server");
    // Nothing listens on a port just freed.
    let free = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let e = RemotePolicy::connect(&format!("ws://{free}"), opts()).expect_err("nothing listens");
    assert!(e.to_string().contains("cannot connect"), "{e}");
    for (url, want) in [("wss://example:1", "TLS"), ("http://127.0.0.1:1", "ws://host:port")] {
        let e = RemotePolicy::connect(url, opts()).expect_err(url);
        assert!(e.to_string().contains(want), "{url}: {e}");
    }
    // Metadata that lies about its spec is refused field by field.
    let bad = openpi::map(BTreeMap::from([("action_names", Value::Array(vec![Value::Int(1)]))]));
    let (url, h) = server(bad, None, vec![vec![]]);
    let e = RemotePolicy::connect(&url, opts()).expect_err("bad metadata");
    assert!(e.to_string().contains("action_names: every entry must be a string"), "{e}");
    h.join().expect("server");
    let (url, h) = server(lapa_meta(0), None, vec![vec![]]);
    let e = RemotePolicy::connect(&url, opts()).expect_err("chunk 0");
    assert!(e.to_string().contains("action_chunk"), "{e}");
    h.join().expect("server");
}
