#!/usr/bin/env python3
"""Writes results/compress/success/table.{md,json} from bench/compress_success.sh's evaluations:
per bundle and split the successes with Wilson 95% intervals (the eval reports' own), pooled over
the splits, the pooled difference from f32 in points, and how many episodes (same seeds) ended the
same way as under f32 — the paired view, tighter than comparing two rates."""
import json, os, sys

from stats import wilson

out = sys.argv[1]
splits = ["seen", "unseen-objects", "unseen-instructions", "unseen-env"]
# (label, bundle, the f32 bundle of the same policy it is compared with)
rows = [("f32 (burn)", "f32", "f32"), ("int8 dynamic", "int8-dynamic", "f32"), ("int8 static (min-max, 256 frames)", "int8-static", "f32"),
        ("int4 weights (blocks of 32)", "int4", "f32"), ("student tiny f32 (burn)", "student-f32", "student-f32"),
        ("student tiny int8 dynamic", "student-int8-dynamic", "student-f32")]


def report(name, split):
    p = f"{out}/eval/{name}/{split}.json"
    return json.load(open(p)) if os.path.exists(p) else None


def bundle_bytes(name):
    root = f"{out}/bundles/{name}"
    if not os.path.isdir(root):
        return None
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs)


table = []
for label, name, ref_name in rows:
    cells, same, paired = {}, 0, 0
    for s in splits:
        r = report(name, s)
        if r is None:
            continue
        t = r["total"]
        cells[s] = {"successes": t["successes"], "rollouts": t["rollouts"], "rate": t["rate"], "ci95": t["ci95"], "seconds": r["seconds"]}
        ref = report(ref_name, s)
        if ref is not None:
            a = {e["seed"]: e["success"] for e in ref["episodes"]}
            for e in r["episodes"]:
                if e["seed"] in a:
                    paired += 1
                    same += a[e["seed"]] == e["success"]
    k = sum(c["successes"] for c in cells.values())
    n = sum(c["rollouts"] for c in cells.values())
    if not cells:
        continue
    table.append({"row": label, "bundle": name, "ref": ref_name, "bundle_bytes": bundle_bytes(name), "splits": cells,
                  "pooled": {"successes": k, "rollouts": n, "rate": k / n if n else None, "ci95": wilson(k, n)},
                  "same_outcome_as_f32": {"episodes": same, "of": paired}})
by_bundle = {r["bundle"]: r for r in table}
for r in table:
    p = r["pooled"]
    f32 = by_bundle.get(r["ref"], {}).get("pooled", {"rollouts": 0})
    r["pooled_minus_f32_points"] = 100 * (p["rate"] - f32["rate"]) if p["rollouts"] and f32["rollouts"] and p["rollouts"] == f32["rollouts"] else None
    t = by_bundle.get("f32", {}).get("pooled", {"rollouts": 0})
    r["pooled_minus_teacher_f32_points"] = 100 * (p["rate"] - t["rate"]) if p["rollouts"] and t["rollouts"] and p["rollouts"] == t["rollouts"] else None

cell = lambda c: f"{c['successes']}/{c['rollouts']} [{100*c['ci95'][0]:.0f}, {100*c['ci95'][1]:.0f}]" if c and c["rollouts"] else "…"
md = ["| bundle | " + " | ".join(splits) + " | pooled | vs its f32 | vs teacher f32 | same outcome as its f32 |", "|---" * (len(splits) + 5) + "|"]
for r in table:
    d = r["pooled_minus_f32_points"]
    so = r["same_outcome_as_f32"]
    md.append(f"| {r['row']} | " + " | ".join(cell(r["splits"].get(s)) for s in splits) + f" | {cell(r['pooled'])} | "
              + (f"{d:+.1f} pts" if d is not None else "…") + " | "
              + (f"{r['pooled_minus_teacher_f32_points']:+.1f} pts" if r["pooled_minus_teacher_f32_points"] is not None else "…") + " | "
              + (f"{so['episodes']}/{so['of']}" if so["of"] else "…") + " |")
open(f"{out}/table.md", "w").write("\n".join(md) + "\n")
json.dump(table, open(f"{out}/table.json", "w"), indent=2)
print("\n".join(md))
