#!/usr/bin/env python3
"""Writes results/compress/distill/table.{md,json} from the evaluations bench/distill.sh made:
the teacher (its LAPA-table evaluations), the distilled student and the labels-only student, per
split and pooled, with Wilson 95% intervals (the eval reports' own), parameters and weight bytes."""
import json, os, sys

from stats import wilson

out, teacher = sys.argv[1], sys.argv[2]
splits = ["seen", "unseen-objects", "unseen-instructions", "unseen-env"]
rows = [
    ("teacher: small, lapa-arm, N = 40", teacher),
    ("student tiny, distilled (T = 2, 2,000 steps)", f"{out}/runs/distilled"),
    ("student tiny, labels only (2,000 steps)", f"{out}/runs/labels-only"),
]
# Levers tried after the first table (bench/distill.sh's header says how they were made).
for name, label in [("distilled-6k", "student tiny, distilled (T = 2, 6,000 steps)"), ("distilled-t1", "student tiny, distilled (T = 1, 2,000 steps)"),
                    ("kd-labeled", "student tiny, distilled on the labeled frames only (T = 2, 2,000 steps)")]:
    if os.path.isdir(f"{out}/runs/{name}"):
        rows.append((label, f"{out}/runs/{name}"))


def weights(run):
    path = f"{run}/model/model.bpk"
    if not os.path.exists(path) and run == teacher:
        # The teacher's weights stay local; the same command's remake is committed.
        path = "results/compress/success/teacher/model/model.bpk"
    return os.path.getsize(path) if os.path.exists(path) else None


table = []
for name, run in rows:
    cells = {}
    for s in splits:
        p = f"{run}/eval/{s}.json"
        if os.path.exists(p):
            t = json.load(open(p))["total"]
            cells[s] = {"successes": t["successes"], "rollouts": t["rollouts"], "rate": t["rate"], "ci95": t["ci95"]}
    k = sum(c["successes"] for c in cells.values())
    n = sum(c["rollouts"] for c in cells.values())
    table.append({"row": name, "run": run, "weight_bytes": weights(run), "splits": cells,
                  "pooled": {"successes": k, "rollouts": n, "rate": k / n if n else None, "ci95": wilson(k, n)}})

md = ["| row | weights | " + " | ".join(splits) + " | pooled |", "|---" * (len(splits) + 3) + "|"]
for r in table:
    cell = lambda c: f"{c['successes']}/{c['rollouts']} [{100*c['ci95'][0]:.0f}, {100*c['ci95'][1]:.0f}]" if c and c["rollouts"] else "…"
    wb = f"{r['weight_bytes']/1e6:.2f} MB" if r["weight_bytes"] else "?"
    md.append(f"| {r['row']} | {wb} | " + " | ".join(cell(r["splits"].get(s)) for s in splits) + f" | {cell(r['pooled'])} |")
open(f"{out}/table.md", "w").write("\n".join(md) + "\n")
json.dump(table, open(f"{out}/table.json", "w"), indent=2)
print("\n".join(md))
