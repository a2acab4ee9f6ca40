//! The finetuned policy as an ONNX model (opset 17), for ONNX Runtime (f32 and int8) or TensorRT
//! (f32: TensorRT runs int8 as QuantizeLinear/DequantizeLinear pairs, not MatMulInteger) on a
//! Jetson, and for benchmarking other runtimes on exactly our weights.
//!
//! The graph is the engine's forward pass ([`crate::engine`]) written as ONNX nodes, for one
//! observation (batch 1, static shapes):
//!
//! - inputs: `image` uint8 `[S, S, 3]` (RGB, already cropped and resized to the model's size, as
//!   the bundle's camera spec says); the instruction as `text_ids` int32 `[k]` + `text_weights`
//!   float `[k]` (the hashed-words encoder: `lapa_model::text::TextConfig::tokenize`) or as
//!   `text_embedding` float `[dim]` (the frozen sentence encoder's mean-pooled, normalised
//!   embedding); `state` float `[s]` in the arm's units, when the policy takes a state token or
//!   predicts deltas;
//! - outputs: `logits` `[chunk, dims, bins]` and `actions` `[chunk, dims]` (each dimension decoded
//!   at the midpoint of its most likely bin — the first maximum — plus the state for deltas).
//!
//! Layer norms are `LayerNormalization`, GELU is exact (through `Erf`), softmax and residuals
//! f32. A linear layer is `MatMul` (+ `Add`) in f32; an int8 one is `MatMulInteger` on uint8
//! activations (quantized per row at run time, or with the calibrated static range) and int8
//! weights (symmetric per output channel), the activation zero point subtracted through the
//! weights' column sums and both scales applied after — the same arithmetic as our kernels, so
//! a runtime with int8 kernels computes it in int8. (Halves round to even in both, as ONNX's
//! `Round` does.)
//!
//! The message types are declared here with `prost` derives (the few ONNX needs; field numbers
//! from onnx.proto), so no protoc is needed.

use crate::CompressError;
use crate::engine::Params;
use crate::kernel::{Scheme, quantize_weights};
use lapa_model::artifact::NamedTensor;
use lapa_model::text::TextConfig;
use lapa_model::vla::{ActionTarget, HeadConfig, VlaConfig};

/// ONNX protobuf messages (onnx.proto, IR version 8). onnx.proto is proto2: repeated numbers
/// are written unpacked, as its readers expect.
pub mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelProto {
        #[prost(int64, tag = "1")]
        pub ir_version: i64,
        #[prost(string, tag = "2")]
        pub producer_name: String,
        #[prost(string, tag = "3")]
        pub producer_version: String,
        #[prost(string, tag = "4")]
        pub domain: String,
        #[prost(int64, tag = "5")]
        pub model_version: i64,
        #[prost(string, tag = "6")]
        pub doc_string: String,
        #[prost(message, optional, tag = "7")]
        pub graph: Option<GraphProto>,
        #[prost(message, repeated, tag = "8")]
        pub opset_import: Vec<OperatorSetIdProto>,
        #[prost(message, repeated, tag = "14")]
        pub metadata_props: Vec<StringStringEntryProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct OperatorSetIdProto {
        #[prost(string, tag = "1")]
        pub domain: String,
        #[prost(int64, tag = "2")]
        pub version: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StringStringEntryProto {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GraphProto {
        #[prost(message, repeated, tag = "1")]
        pub node: Vec<NodeProto>,
        #[prost(string, tag = "2")]
        pub name: String,
        #[prost(message, repeated, tag = "5")]
        pub initializer: Vec<TensorProto>,
        #[prost(string, tag = "10")]
        pub doc_string: String,
        #[prost(message, repeated, tag = "11")]
        pub input: Vec<ValueInfoProto>,
        #[prost(message, repeated, tag = "12")]
        pub output: Vec<ValueInfoProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NodeProto {
        #[prost(string, repeated, tag = "1")]
        pub input: Vec<String>,
        #[prost(string, repeated, tag = "2")]
        pub output: Vec<String>,
        #[prost(string, tag = "3")]
        pub name: String,
        #[prost(string, tag = "4")]
        pub op_type: String,
        #[prost(message, repeated, tag = "5")]
        pub attribute: Vec<AttributeProto>,
        #[prost(string, tag = "7")]
        pub domain: String,
    }

    /// `AttributeProto.AttributeType`.
    pub mod attr_type {
        pub const FLOAT: i32 = 1;
        pub const INT: i32 = 2;
        pub const INTS: i32 = 7;
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AttributeProto {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(float, tag = "2")]
        pub f: f32,
        #[prost(int64, tag = "3")]
        pub i: i64,
        #[prost(int64, repeated, packed = "false", tag = "8")]
        pub ints: Vec<i64>,
        #[prost(int32, tag = "20")]
        pub r#type: i32,
    }

    /// `TensorProto.DataType`.
    pub mod data_type {
        pub const FLOAT: i32 = 1;
        pub const UINT8: i32 = 2;
        pub const INT8: i32 = 3;
        pub const INT32: i32 = 6;
        pub const INT64: i32 = 7;
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorProto {
        #[prost(int64, repeated, packed = "false", tag = "1")]
        pub dims: Vec<i64>,
        #[prost(int32, tag = "2")]
        pub data_type: i32,
        #[prost(string, tag = "8")]
        pub name: String,
        /// Little-endian values, row-major.
        #[prost(bytes = "vec", tag = "9")]
        pub raw_data: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueInfoProto {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub r#type: Option<TypeProto>,
        #[prost(string, tag = "3")]
        pub doc_string: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TypeProto {
        #[prost(message, optional, tag = "1")]
        pub tensor_type: Option<TypeTensor>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TypeTensor {
        #[prost(int32, tag = "1")]
        pub elem_type: i32,
        #[prost(message, optional, tag = "2")]
        pub shape: Option<TensorShapeProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorShapeProto {
        #[prost(message, repeated, tag = "1")]
        pub dim: Vec<Dimension>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Dimension {
        #[prost(int64, optional, tag = "1")]
        pub dim_value: Option<i64>,
        #[prost(string, optional, tag = "2")]
        pub dim_param: Option<String>,
    }
}

use proto::{AttributeProto, NodeProto, TensorProto, ValueInfoProto, attr_type, data_type};

/// The ONNX opset the graph uses.
pub const OPSET: i64 = 17;

fn attr_i(name: &str, i: i64) -> AttributeProto {
    AttributeProto { name: name.into(), i, r#type: attr_type::INT, ..Default::default() }
}

fn attr_f(name: &str, f: f32) -> AttributeProto {
    AttributeProto { name: name.into(), f, r#type: attr_type::FLOAT, ..Default::default() }
}

fn attr_ints(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), ints: ints.to_vec(), r#type: attr_type::INTS, ..Default::default() }
}

fn dim(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A graph under construction: nodes in order, initializers, fresh names.
struct Builder {
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    next: usize,
}

impl Builder {
    fn fresh(&mut self, hint: &str) -> String {
        self.next += 1;
        format!("{hint}_{}", self.next)
    }

    fn tensor(&mut self, name: &str, dt: i32, dims: &[usize], raw: Vec<u8>) -> String {
        self.inits.push(TensorProto { dims: dims.iter().map(|&d| dim(d)).collect(), data_type: dt, name: name.into(), raw_data: raw });
        name.to_string()
    }

    fn f32s(&mut self, name: &str, dims: &[usize], v: &[f32]) -> String {
        self.tensor(name, data_type::FLOAT, dims, v.iter().flat_map(|x| x.to_le_bytes()).collect())
    }

    fn scalar(&mut self, hint: &str, v: f32) -> String {
        let n = self.fresh(hint);
        self.f32s(&n, &[], &[v])
    }

    fn i64s(&mut self, hint: &str, v: &[i64]) -> String {
        let n = self.fresh(hint);
        self.tensor(&n, data_type::INT64, &[v.len()], v.iter().flat_map(|x| x.to_le_bytes()).collect())
    }

    fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        let out = self.fresh(&op.to_ascii_lowercase());
        self.op_to(op, inputs, attrs, &out);
        out
    }

    fn op_to(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>, out: &str) {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.to_string()],
            name: format!("{op}_{}", self.nodes.len()),
            op_type: op.into(),
            attribute: attrs,
            domain: String::new(),
        });
    }

    /// `x[start..end]` along `axis`.
    fn slice(&mut self, x: &str, start: usize, end: usize, axis: i64) -> String {
        let starts = self.i64s("starts", &[dim(start)]);
        let ends = self.i64s("ends", &[dim(end)]);
        let axes = self.i64s("axes", &[axis]);
        self.op("Slice", &[x, &starts, &ends, &axes], vec![])
    }

    fn reshape(&mut self, x: &str, shape: &[i64]) -> String {
        let s = self.i64s("shape", shape);
        self.op("Reshape", &[x, &s], vec![])
    }

    fn layer_norm(&mut self, p: &mut Params, name: &str, x: &str, d: usize) -> Result<String, CompressError> {
        let n = p.norm(name, d)?;
        let g = self.f32s(&format!("{name}.gamma"), &[d], &n.gamma);
        let b = self.f32s(&format!("{name}.beta"), &[d], &n.beta);
        Ok(self.op("LayerNormalization", &[x, &g, &b], vec![attr_i("axis", -1), attr_f("epsilon", crate::engine::LN_EPS)]))
    }

    /// A linear layer `x` [rows, i] → [rows, o] under `scheme`.
    #[allow(clippy::too_many_arguments)]
    fn linear(&mut self, p: &mut Params, name: &str, x: &str, i: usize, o: usize, bias: bool, scheme: Scheme, qmax: i8) -> Result<String, CompressError> {
        let w = p.take(&format!("{name}.weight"), &[i, o])?;
        let b = if bias { Some(p.take(&format!("{name}.bias"), &[o])?) } else { None };
        if w.iter().any(|v| !v.is_finite()) {
            return Err(CompressError::Model(format!("{name}: a weight is not finite")));
        }
        let y = match scheme {
            Scheme::F32 => {
                let wn = self.f32s(&format!("{name}.weight"), &[i, o], &w);
                self.op("MatMul", &[x, &wn], vec![])
            }
            // Opset 17 has no 4-bit type: the weights go in as the f32 values they stand for
            // (what the engine multiplies by), so the file is f32-sized.
            Scheme::Int4Weights => {
                let (nibbles, scales) = crate::kernel::quantize_int4(&w, i, o);
                let mut wd = vec![0f32; i * o];
                crate::kernel::dequantize_int4(&nibbles, &scales, i, o, &mut wd);
                let wn = self.f32s(&format!("{name}.weight_int4_values"), &[i, o], &wd);
                self.op("MatMul", &[x, &wn], vec![])
            }
            Scheme::Int8Dynamic | Scheme::Int8Static { .. } => {
                let (q, scales) = quantize_weights(&w, i, o, qmax);
                let mut col_sums = vec![0i32; o];
                for row in q.chunks_exact(o) {
                    col_sums.iter_mut().zip(row).for_each(|(s, &v)| *s += i32::from(v));
                }
                let wq = self.tensor(&format!("{name}.weight_int8"), data_type::INT8, &[i, o], q.iter().map(|&v| v.to_le_bytes()[0]).collect());
                let ws = self.f32s(&format!("{name}.weight_scale"), &[o], &scales);
                let cs = self.tensor(&format!("{name}.weight_col_sums"), data_type::INT32, &[1, o], col_sums.iter().flat_map(|v| v.to_le_bytes()).collect());
                let zero = self.scalar("zero", 0.0);
                // The activation range [lo, hi] ∋ 0: per row (dynamic) or the calibrated one.
                let (lo, hi) = match scheme {
                    Scheme::Int8Static { lo, hi } => {
                        if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
                            return Err(CompressError::Model(format!("{name}: activation range [{lo}, {hi}] is not a finite interval")));
                        }
                        (self.scalar("lo", lo.min(0.0)), self.scalar("hi", hi.max(0.0)))
                    }
                    _ => {
                        let lo = self.op("ReduceMin", &[x], vec![attr_ints("axes", &[1]), attr_i("keepdims", 1)]); // [rows, 1]
                        let hi = self.op("ReduceMax", &[x], vec![attr_ints("axes", &[1]), attr_i("keepdims", 1)]);
                        (self.op("Min", &[&lo, &zero], vec![]), self.op("Max", &[&hi, &zero], vec![]))
                    }
                };
                let span = self.op("Sub", &[&hi, &lo], vec![]);
                let c255 = self.scalar("c255", 255.0);
                let scale = self.op("Div", &[&span, &c255], vec![]);
                // A range of width 0 (an all-zero row) gets scale 1, as the kernel does.
                let pos = self.op("Greater", &[&scale, &zero], vec![]);
                let one = self.scalar("one", 1.0);
                let scale = self.op("Where", &[&pos, &scale, &one], vec![]);
                let neg_lo = self.op("Neg", &[&lo], vec![]);
                let zp = self.op("Div", &[&neg_lo, &scale], vec![]);
                let zp = self.op("Round", &[&zp], vec![]);
                let zp = self.op("Clip", &[&zp, &zero, &c255], vec![]);
                let xs = self.op("Div", &[x, &scale], vec![]);
                let xs = self.op("Round", &[&xs], vec![]);
                let xs = self.op("Add", &[&xs, &zp], vec![]);
                let xs = self.op("Clip", &[&xs, &zero, &c255], vec![]);
                let xq = self.op("Cast", &[&xs], vec![attr_i("to", i64::from(data_type::UINT8))]); // [rows, i] u8
                let acc = self.op("MatMulInteger", &[&xq, &wq], vec![]); // [rows, o] i32
                let zi = self.op("Cast", &[&zp], vec![attr_i("to", i64::from(data_type::INT32))]);
                let corr = self.op("Mul", &[&zi, &cs], vec![]);
                let acc = self.op("Sub", &[&acc, &corr], vec![]);
                let accf = self.op("Cast", &[&acc], vec![attr_i("to", i64::from(data_type::FLOAT))]);
                let y = self.op("Mul", &[&accf, &scale], vec![]);
                self.op("Mul", &[&y, &ws], vec![])
            }
        };
        Ok(match b {
            Some(b) => {
                let bn = self.f32s(&format!("{name}.bias"), &[o], &b);
                self.op("Add", &[&y, &bn], vec![])
            }
            None => y,
        })
    }
}

/// `m` [n, h·dh] → [h, n, dh]; with a scale, each head's vector scaled to unit length (at least
/// `eps`) and then by the learned per-dimension scale.
fn heads(g: &mut Builder, m: &str, scale: Option<(&str, &str)>, [n, h, dh]: [usize; 3]) -> String {
    let m = g.reshape(m, &[dim(n), dim(h), dim(dh)]);
    let m = match scale {
        Some((sname, eps)) => {
            let sq = g.op("Mul", &[&m, &m], vec![]);
            let axes = g.i64s("axes", &[2]);
            let ss = g.op("ReduceSum", &[&sq, &axes], vec![attr_i("keepdims", 1)]);
            let norm = g.op("Sqrt", &[&ss], vec![]);
            let norm = g.op("Max", &[&norm, eps], vec![]);
            let u = g.op("Div", &[&m, &norm], vec![]);
            g.op("Mul", &[&u, sname], vec![])
        }
        None => m,
    };
    g.op("Transpose", &[&m], vec![attr_ints("perm", &[1, 0, 2])])
}

fn value_info(name: &str, elem: i32, dims: &[usize], doc: &str) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(proto::TypeProto {
            tensor_type: Some(proto::TypeTensor {
                elem_type: elem,
                shape: Some(proto::TensorShapeProto { dim: dims.iter().map(|&d| proto::Dimension { dim_value: Some(dim(d)), dim_param: None }).collect() }),
            }),
        }),
        doc_string: doc.into(),
    }
}

/// The text inputs of a policy's ONNX graph.
pub fn text_inputs(cfg: &VlaConfig) -> Vec<(&'static str, Vec<usize>)> {
    match cfg.text {
        TextConfig::Hashed { .. } => vec![("text_ids", vec![cfg.text.max_ids()]), ("text_weights", vec![cfg.text.max_ids()])],
        TextConfig::MiniLm { dim, .. } => vec![("text_embedding", vec![dim])],
    }
}

/// The policy (config + burn parameters by name) as a serialized ONNX model. `plan` gives each
/// linear layer's scheme by name (all [`Scheme::F32`] for the f32 model); int8 weights use
/// ±`qmax` (127; 63 reproduces our AVX2 kernels). The hashed encoder's `text_ids` have its fixed
/// length (`TextConfig::max_ids`, padded with weight 0, as `tokenize` returns them).
pub fn export(cfg: &VlaConfig, params: Vec<NamedTensor>, plan: &dyn Fn(&str) -> Scheme, qmax: i8, doc: &str) -> Result<Vec<u8>, CompressError> {
    cfg.validate().map_err(|e| CompressError::Model(e.to_string()))?;
    let HeadConfig::Action(head) = &cfg.head else {
        return Err(CompressError::Model("a latent-action policy cannot drive an arm; export a finetuned run".into()));
    };
    if cfg.frames != 1 {
        return Err(CompressError::Model(format!("{} frames per observation: an inverse-dynamics model, not a policy", cfg.frames)));
    }
    if !(1..=127).contains(&qmax) {
        return Err(CompressError::Model(format!("qmax {qmax}: expected 1..=127")));
    }
    let text_tokens = cfg.text.max_ids();
    let mut p = Params::new(params);
    let mut g = Builder { nodes: Vec::new(), inits: Vec::new(), next: 0 };
    let (d, np, pd) = (cfg.dim, cfg.n_patches(), cfg.patch_dim());
    let (side, patch, grid) = (cfg.image_size, cfg.patch_size, cfg.grid());
    let (h, dh) = (cfg.heads, cfg.dim_head);
    let inner = h * dh;
    let ff = (cfg.ff_mult * d * 2).div_ceil(3);
    let (dims, bins, chunk) = (head.spec.names.len(), head.bins, head.spec.chunk);
    let state_dim = cfg.state_dim();
    let needs_state = state_dim > 0 || head.target == ActionTarget::Delta;
    let state_len = state_dim.max(if head.target == ActionTarget::Delta { dims } else { 0 });
    let (s, ga, gi) = (dim(side), dim(grid), dim(patch));

    // The image: [S, S, 3] u8 → [patches, patch²·3] in [0, 1], as `laq::patchify` lays it out.
    let img = g.op("Cast", &["image"], vec![attr_i("to", i64::from(data_type::FLOAT))]);
    let c255 = g.scalar("c255", 255.0);
    let img = g.op("Div", &[&img, &c255], vec![]);
    debug_assert_eq!(s, ga * gi);
    let img = g.reshape(&img, &[ga, gi, ga, gi, 3]); // [gy, py, gx, px, c]
    let img = g.op("Transpose", &[&img], vec![attr_ints("perm", &[0, 2, 1, 3, 4])]); // [gy, gx, py, px, c]
    let x = g.reshape(&img, &[dim(np), dim(pd)]);
    let x = g.layer_norm(&mut p, "patch_norm", &x, pd)?;
    let x = g.linear(&mut p, "patch_proj", &x, pd, d, true, plan("patch_proj"), qmax)?; // [np, d]
    let x = g.layer_norm(&mut p, "embed_norm", &x, d)?;
    let pos = p.take("pos", &[np, d])?;
    let pos = g.f32s("pos", &[np, d], &pos);
    let img_tok = g.op("Add", &[&x, &pos], vec![]);
    let kinds = p.take("kinds", &[3, d])?;
    let kind = |k: usize| kinds[k * d..(k + 1) * d].to_vec();

    // The instruction token [1, d].
    let text_tok = match cfg.text {
        TextConfig::Hashed { buckets, .. } => {
            let table = p.take("text.Hashed.weight", &[buckets, d])?;
            let t = g.f32s("text.Hashed.weight", &[buckets, d], &table);
            let rows = g.op("Gather", &[&t, "text_ids"], vec![attr_i("axis", 0)]); // [k, d]
            let w = g.reshape("text_weights", &[1, dim(text_tokens)]);
            g.op("MatMul", &[&w, &rows], vec![]) // [1, d]
        }
        TextConfig::MiniLm { dim: e, .. } => {
            let emb = g.reshape("text_embedding", &[1, dim(e)]);
            g.linear(&mut p, "text.Frozen", &emb, e, d, true, plan("text.Frozen"), qmax)?
        }
    };
    let k0 = g.f32s("kinds.text", &[1, d], &kind(0));
    let text_tok = g.op("Add", &[&text_tok, &k0], vec![]);
    let mut parts = vec![text_tok, img_tok];
    if let Some(st) = &cfg.state {
        // Standardised as the policy does, (s − mean) / std.
        let sv = if state_len > state_dim { g.slice("state", 0, state_dim, 0) } else { "state".to_string() };
        let m = g.f32s("state.mean", &[state_dim], &st.mean);
        let sd = g.f32s("state.std", &[state_dim], &st.std);
        let z = g.op("Sub", &[&sv, &m], vec![]);
        let z = g.op("Div", &[&z, &sd], vec![]);
        let z = g.reshape(&z, &[1, dim(state_dim)]);
        let t = g.linear(&mut p, "state_proj", &z, state_dim, d, true, plan("state_proj"), qmax)?;
        let k1 = g.f32s("kinds.state", &[1, d], &kind(1));
        parts.push(g.op("Add", &[&t, &k1], vec![]));
    }
    let queries = p.take("head.Action.queries", &[chunk, d])?;
    let k2 = kind(2);
    let q_tok: Vec<f32> = queries.chunks_exact(d).flat_map(|r| r.iter().zip(&k2).map(|(a, b)| a + b)).collect();
    parts.push(g.f32s("queries", &[chunk, d], &q_tok));
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    let mut seq = g.op("Concat", &refs, vec![attr_i("axis", 0)]); // [n, d]
    let n = 1 + np + usize::from(cfg.state.is_some()) + chunk;

    let eps = g.scalar("eps", 1e-6);
    let temp = g.scalar("temperature", lapa_model::blocks::QK_TEMPERATURE);
    for i in 0..cfg.depth {
        let a = format!("trunk.layers.{i}.attn");
        let xn = g.layer_norm(&mut p, &format!("{a}.norm"), &seq, d)?;
        let qm = g.linear(&mut p, &format!("{a}.to_q"), &xn, d, inner, false, plan(&format!("{a}.to_q")), qmax)?;
        let km = g.linear(&mut p, &format!("{a}.to_k"), &xn, d, inner, false, plan(&format!("{a}.to_k")), qmax)?;
        let vm = g.linear(&mut p, &format!("{a}.to_v"), &xn, d, inner, false, plan(&format!("{a}.to_v")), qmax)?;
        let qs = p.take(&format!("{a}.q_scale"), &[dh])?;
        let ks = p.take(&format!("{a}.k_scale"), &[dh])?;
        let qs = g.f32s(&format!("{a}.q_scale"), &[dh], &qs);
        let ks = g.f32s(&format!("{a}.k_scale"), &[dh], &ks);
        let qh = heads(&mut g, &qm, Some((&qs, &eps)), [n, h, dh]);
        let kh = heads(&mut g, &km, Some((&ks, &eps)), [n, h, dh]);
        let vh = heads(&mut g, &vm, None, [n, h, dh]);
        let kt = g.op("Transpose", &[&kh], vec![attr_ints("perm", &[0, 2, 1])]); // [h, dh, n]
        let sim = g.op("MatMul", &[&qh, &kt], vec![]); // [h, n, n]
        let sim = g.op("Mul", &[&sim, &temp], vec![]);
        let att = g.op("Softmax", &[&sim], vec![attr_i("axis", -1)]);
        let out = g.op("MatMul", &[&att, &vh], vec![]); // [h, n, dh]
        let out = g.op("Transpose", &[&out], vec![attr_ints("perm", &[1, 0, 2])]); // [n, h, dh]
        let out = g.reshape(&out, &[dim(n), dim(inner)]);
        let upd = g.linear(&mut p, &format!("{a}.to_out"), &out, inner, d, false, plan(&format!("{a}.to_out")), qmax)?;
        seq = g.op("Add", &[&seq, &upd], vec![]);
        // GEGLU feed-forward: value · gelu(gate), the halves of proj_in.
        let f = format!("trunk.layers.{i}.ff");
        let xn = g.layer_norm(&mut p, &format!("{f}.norm"), &seq, d)?;
        let hid = g.linear(&mut p, &format!("{f}.proj_in"), &xn, d, 2 * ff, false, plan(&format!("{f}.proj_in")), qmax)?; // [n, 2ff]
        let split = g.i64s("split", &[dim(ff), dim(ff)]);
        let (val, gate) = (g.fresh("value"), g.fresh("gate"));
        g.nodes.push(NodeProto {
            input: vec![hid, split],
            output: vec![val.clone(), gate.clone()],
            name: format!("Split_{}", g.nodes.len()),
            op_type: "Split".into(),
            attribute: vec![attr_i("axis", 1)],
            domain: String::new(),
        });
        let r2 = g.scalar("inv_sqrt2", std::f32::consts::FRAC_1_SQRT_2);
        let e = g.op("Mul", &[&gate, &r2], vec![]);
        let e = g.op("Erf", &[&e], vec![]);
        let one = g.scalar("one", 1.0);
        let e = g.op("Add", &[&e, &one], vec![]);
        let half = g.scalar("half", 0.5);
        let gl = g.op("Mul", &[&gate, &e], vec![]);
        let gl = g.op("Mul", &[&gl, &half], vec![]);
        let gated = g.op("Mul", &[&val, &gl], vec![]);
        let upd = g.linear(&mut p, &format!("{f}.proj_out"), &gated, ff, d, false, plan(&format!("{f}.proj_out")), qmax)?;
        seq = g.op("Add", &[&seq, &upd], vec![]);
    }
    let seq = g.layer_norm(&mut p, "trunk.norm_out", &seq, d)?;
    let out = g.slice(&seq, n - chunk, n, 0); // [chunk, d]
    let lg = g.linear(&mut p, "head.Action.out", &out, d, dims * bins, true, plan("head.Action.out"), qmax)?;
    let shape = g.i64s("shape", &[dim(chunk), dim(dims), dim(bins)]);
    g.op_to("Reshape", &[&lg, &shape], vec![], "logits");
    // Decoded: the first most likely bin of each dimension, at its midpoint.
    let best = g.op("ArgMax", &["logits"], vec![attr_i("axis", 2), attr_i("keepdims", 0), attr_i("select_last_index", 0)]); // [chunk, dims]
    let offsets: Vec<i64> = (0..dims).map(|i| dim(i * bins)).collect();
    let offsets = g.i64s("offsets", &offsets);
    let idx = g.op("Add", &[&best, &offsets], vec![]);
    let mids: Vec<f32> = head.edges.iter().flat_map(|e| (0..bins).map(|k| e.decode(k))).collect();
    let mids = g.f32s("bin_midpoints", &[dims * bins], &mids);
    if head.target == ActionTarget::Delta {
        let a = g.op("Gather", &[&mids, &idx], vec![attr_i("axis", 0)]);
        let cur = g.slice("state", 0, dims, 0);
        g.op_to("Add", &[&a, &cur], vec![], "actions");
    } else {
        g.op_to("Gather", &[&mids, &idx], vec![attr_i("axis", 0)], "actions");
    }
    if let Some(extra) = p.map.keys().next() {
        return Err(CompressError::Model(format!("the model has a parameter the ONNX export does not use: {extra:?} (a newer model layout?)")));
    }

    let mut inputs =
        vec![value_info("image", data_type::UINT8, &[side, side, 3], "RGB, HWC, the model's size (crop and resize as the bundle's camera spec says)")];
    for (name, shape) in text_inputs(cfg) {
        let (elem, doc) = match name {
            "text_ids" => (data_type::INT32, "hashed word ids (TextConfig::tokenize), padded with weight 0"),
            "text_weights" => (data_type::FLOAT, "each id's weight"),
            _ => (data_type::FLOAT, "the sentence encoder's mean-pooled, L2-normalised embedding"),
        };
        inputs.push(value_info(name, elem, &shape, doc));
    }
    if needs_state {
        inputs.push(value_info("state", data_type::FLOAT, &[state_len], "the arm's joints in its units (the action spec's order)"));
    }
    let graph = proto::GraphProto {
        node: g.nodes,
        name: "lapa_policy".into(),
        initializer: g.inits,
        doc_string: doc.into(),
        input: inputs,
        output: vec![
            value_info("logits", data_type::FLOAT, &[chunk, dims, bins], "per action, per dimension, logits over the quantile bins"),
            value_info("actions", data_type::FLOAT, &[chunk, dims], "each dimension at its most likely bin's midpoint (plus the state for deltas)"),
        ],
    };
    let names: Vec<String> = head.spec.names.clone();
    let model = proto::ModelProto {
        ir_version: 8,
        producer_name: "lapa".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        domain: "rs.lapa".into(),
        model_version: 1,
        doc_string: doc.into(),
        graph: Some(graph),
        opset_import: vec![proto::OperatorSetIdProto { domain: String::new(), version: OPSET }],
        metadata_props: vec![
            proto::StringStringEntryProto { key: "lapa.action_names".into(), value: names.join(",") },
            proto::StringStringEntryProto { key: "lapa.action_units".into(), value: head.spec.units.join(",") },
            proto::StringStringEntryProto { key: "lapa.fps".into(), value: head.spec.fps.to_string() },
            proto::StringStringEntryProto {
                key: "lapa.config".into(),
                value: serde_json::to_string(cfg).map_err(|e| CompressError::Model(format!("config: {e}")))?,
            },
        ],
    };
    Ok(prost::Message::encode_to_vec(&model))
}
