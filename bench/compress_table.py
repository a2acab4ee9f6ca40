#!/usr/bin/env python3
"""results/compress/{table.md,table.json} from the raw outputs bench/compress.sh wrote under
results/compress/raw/ (lapa-*thread.json: `lapa bench compress` on the teacher; student-*: on the
student; ort-*: ONNX Runtime; torch-*: the PyTorch twin; bundle-bytes.txt: `lapa export`'s bundles).

Usage: python3 bench/compress_table.py results/compress
"""
import datetime, json, os, platform, sys

out = sys.argv[1]
raw = f"{out}/raw"


def j(n):
    p = f"{raw}/{n}.json"
    return json.load(open(p)) if os.path.exists(p) else None


f = lambda x: "–" if x is None else f"{x:.2f}"
l1, l2 = j("lapa-1thread"), j("lapa-2thread")
s1, s2 = j("student-1thread"), j("student-2thread")
o1, o2 = j("ort-1thread"), j("ort-2thread")
args = dict(kv.split("=", 1) for kv in open(f"{raw}/args.txt").read().split()) if os.path.exists(f"{raw}/args.txt") else {}
sizes = {}
if os.path.exists(f"{raw}/bundle-bytes.txt"):
    for line in open(f"{raw}/bundle-bytes.txt"):
        who, v, total, policy = line.split()
        sizes[(who, v)] = (int(total), int(policy))
bundle_of = {
    "lapa f32 (burn flex)": "f32", "lapa f32 (compress engine)": "f32", "lapa int8 dynamic": "int8-dynamic",
    "lapa int4 weights (blocks of 32)": "int4",
}
base = l1["variants"][0]["p50_ms"]
rows, md = [], []
md.append("# Compressed policies — `bench/compress.sh`\n")
md.append(f"Machine: {os.cpu_count()} cores, {platform.machine()}, release build; {datetime.date.today()}. One run; raw outputs in [`raw/`](raw/).")
md.append(f"Teacher: `{args.get('RUN', l1['policy'])}` ({l1['policy']}), {l1['parameters']:,} parameters (the frozen MiniLM encoder not counted), {l1['mflop_per_step']:.1f} MFLOP per step.")
if s1:
    md.append(f"Student: `{args.get('STUDENT', s1['policy'])}` ({s1['policy']}), {s1['parameters']:,} parameters, {s1['mflop_per_step']:.1f} MFLOP per step.")
md.append(f"int8 kernel picked by rten-gemm here: `{l1['int8_kernel']}`. Static ranges: min-max over {l1['calib_frames']} simulator frames; divergence from the same policy's f32 on {l1['eval_frames']} other frames.\n")
md.append("| policy | variant | p50, 1 thread | p99, 1 thread | p50, 2 threads | speed-up over the teacher's burn f32 (1 thread) | weights in memory | bundle on disk (policy part) | KL from f32 (nats) | same bin as f32 |")
md.append("|---|---|---|---|---|---|---|---|---|---|")


def bundle_cell(who, variant):
    b = sizes.get((who, bundle_of.get(variant, "")))
    return "–" if b is None else f"{b[0] / 1e6:.1f} MB ({b[1] / 1e6:.2f} MB)"


def lapa_rows(who, r1, r2):
    by2 = {v["variant"]: v for v in (r2 or {}).get("variants", [])}
    for v in r1["variants"]:
        w = by2.get(v["variant"], {})
        wb = "–" if v["weight_bytes"] is None else "%.2f MB" % (v["weight_bytes"] / 1e6)
        kl = "–" if v["kl_vs_f32_nats"] is None else "%.1e" % v["kl_vs_f32_nats"]
        sb = "–" if v["same_bin_vs_f32"] is None else "%.1f%%" % (100 * v["same_bin_vs_f32"])
        bc = bundle_cell(who, v["variant"]) if v["runtime"] in ("burn", "lapa-compress") else "–"
        md.append(f"| {who} | {v['variant']} | {f(v['p50_ms'])} ms | {f(v['p99_ms'])} ms | {f(w.get('p50_ms'))} ms | {base / v['p50_ms']:.2f}× | {wb} | {bc} | {kl} | {sb} |")
        b = sizes.get((who, bundle_of.get(v["variant"], "")))
        rows.append({**v, "policy": who, "p50_ms_2_threads": w.get("p50_ms"), "p99_ms_2_threads": w.get("p99_ms"),
                     "bundle_bytes": None if b is None or v["runtime"] not in ("burn", "lapa-compress") else b[0],
                     "bundle_policy_part_bytes": None if b is None or v["runtime"] not in ("burn", "lapa-compress") else b[1]})


lapa_rows("teacher", l1, l2)
if o1:
    oby2 = {v["variant"]: v for v in (o2 or {}).get("variants", [])}
    for v in o1["variants"]:
        w = oby2.get(v["variant"], {})
        md.append(f"| teacher | {v['variant']} ({o1['runtime']}) | {f(v['p50_ms'])} ms | {f(v['p99_ms'])} ms | {f(w.get('p50_ms'))} ms | {base / v['p50_ms']:.2f}× | – | – | – | – |")
        rows.append({**v, "policy": "teacher", "runtime": o1["runtime"], "threads": 1, "p50_ms_2_threads": w.get("p50_ms"), "p99_ms_2_threads": w.get("p99_ms")})
for kind, label in (("f32", "PyTorch eager f32"), ("int8", "PyTorch eager int8 (quantize_dynamic, per channel)")):
    t1, t2 = j(f"torch-{kind}-1thread"), j(f"torch-{kind}-2thread")
    if not t1:
        continue
    sb = "–" if kind == "f32" else "%.1f%%*" % (100 * t1["same_bins"])
    md.append(f"| teacher | {label} (torch {t1['torch']}) | {f(t1['p50_ms'])} ms | {f(t1['p99_ms'])} ms | {f((t2 or {}).get('p50_ms'))} ms | {base / t1['p50_ms']:.2f}× | – | – | – | {sb} |")
    rows.append({"variant": label, "runtime": f"pytorch {t1['torch']}", "policy": "teacher", "threads": 1, "p50_ms": t1["p50_ms"], "p99_ms": t1["p99_ms"],
                 "p50_ms_per_round": t1.get("p50_ms_per_round"), "p50_ms_2_threads": (t2 or {}).get("p50_ms"), "p99_ms_2_threads": (t2 or {}).get("p99_ms"),
                 "max_abs_logit_diff_vs_burn_f32": t1["max_abs_logit_diff"], "same_bin_vs_burn_f32_bench_frame": t1["same_bins"]})
if s1:
    lapa_rows("student", s1, s2)
md.append("")
md.append("p50 is the median of the rounds' medians (the variants take turns in each round); p99 pools every timed step. A step is one camera")
md.append("frame (64×64) to a decoded action chunk, the instruction's embedding cached as at run time. rten and ONNX Runtime run the ONNX")
md.append("export of these same weights (`lapa export --onnx`), PyTorch the twin of them (`lapa bench compress --twin`, checked against burn's")
md.append("logits before it is timed); their steps start from the uint8 image too, so they are comparable. The ONNX Runtime and PyTorch rows")
md.append("come from separate processes run right after `lapa bench compress` (not interleaved with it); their speed-up is against that")
md.append("run's burn figure. *PyTorch int8's agreement is on the one bench frame, against burn f32. Bundles: `lapa export` of the run")
md.append("(unsigned), the frozen MiniLM's files included (about 91 MB, f32, in every bundle); the policy part is the manifest's weights: `policy.bpk`")
md.append("(burn's f32 record) in an f32 bundle, `policy.safetensors` in a compressed one (its quantized layers stored as they compute, int8")
md.append("with per-channel scales or packed int4 with block scales; norms, embeddings and layers kept f32 in f32). The int8 static bundle")
md.append("is not exported here (it needs a calibration dataset); it stores the same weights part as the dynamic one, its plan adding the ranges.")
json.dump({"machine": {"cores": os.cpu_count(), "arch": platform.machine()}, "teacher": args.get("RUN", l1["policy"]),
           "student": args.get("STUDENT", s1["policy"] if s1 else None), "parameters": l1["parameters"],
           "student_parameters": s1["parameters"] if s1 else None, "onnx_bytes": l1["onnx_bytes"], "int8_kernel": l1["int8_kernel"],
           "variants": rows}, open(f"{out}/table.json", "w"), indent=2)
open(f"{out}/table.md", "w").write("\n".join(md) + "\n")
print(f"wrote {out}/table.md and {out}/table.json")
