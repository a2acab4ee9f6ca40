#!/usr/bin/env python3
"""ONNX Runtime on the ONNX models `lapa bench compress --onnx-dir DIR` wrote (f32, and int8
through MatMulInteger), on the same bench input: step latency p50/p99 and, as a sanity line, how
often the int8 model picks the f32 model's bin. (The Rust tests check the graph itself against
our engine, on rten.)

Usage: python bench/onnx_ort.py --dir DIR --threads 1 --steps 100 --rounds 3 --json out.json
"""
import argparse, json, statistics, time

import numpy as np
import onnxruntime as ort


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    inp = json.load(open(f"{a.dir}/input.json"))
    side = inp["side"]
    feeds = {"image": np.array(inp["image"], dtype=np.uint8).reshape(side, side, 3)}
    text = inp["text"]
    if "text_embedding" in text:
        feeds["text_embedding"] = np.array(text["text_embedding"], dtype=np.float32)
    else:
        feeds["text_ids"] = np.array(text["text_ids"], dtype=np.int32)
        feeds["text_weights"] = np.array(text["text_weights"], dtype=np.float32)
    sessions = {}
    for name in ("f32", "int8"):
        so = ort.SessionOptions()
        so.intra_op_num_threads = a.threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        s = ort.InferenceSession(f"{a.dir}/policy-{name}.onnx", so, providers=["CPUExecutionProvider"])
        f = dict(feeds)
        for i in s.get_inputs():
            if i.name == "state":
                f["state"] = np.zeros(i.shape, dtype=np.float32)
        sessions[name] = (s, f)
    outs = {n: s.run(["logits", "actions"], f) for n, (s, f) in sessions.items()}
    same = float(np.mean(np.argmax(outs["f32"][0], -1) == np.argmax(outs["int8"][0], -1)))
    rows = {n: {"samples": [], "p50_per_round": []} for n in sessions}
    for _ in range(a.rounds):
        for n, (s, f) in sessions.items():
            for _ in range(5):
                s.run(["actions"], f)
            r = []
            for _ in range(a.steps):
                t0 = time.perf_counter()
                s.run(["actions"], f)
                r.append((time.perf_counter() - t0) * 1e3)
            rows[n]["samples"] += r
            rows[n]["p50_per_round"].append(statistics.median(r))
    res = {"runtime": f"onnxruntime {ort.__version__}", "threads": a.threads, "steps": a.steps, "rounds": a.rounds,
           "same_bin_int8_vs_f32": same, "variants": []}
    for n, r in rows.items():
        s = sorted(r["samples"])
        res["variants"].append({"variant": f"onnxruntime {n}" + (" (MatMulInteger)" if n == "int8" else ""),
                                "p50_ms": statistics.median(r["p50_per_round"]),
                                "p99_ms": s[round((len(s) - 1) * 0.99)], "p50_ms_per_round": r["p50_per_round"]})
        print(f"onnxruntime {n}: p50 {res['variants'][-1]['p50_ms']:.2f} ms, p99 {res['variants'][-1]['p99_ms']:.2f} ms ({a.threads} thread(s))")
    print(f"int8 vs f32 same bin: {100 * same:.1f}%")
    json.dump(res, open(a.json, "w"), indent=2)


if __name__ == "__main__":
    main()
