"""The reference columns of README's IDM-label table: on the arm episodes the IDM did not train on
(index >= N), the mean absolute error of the IDM's pseudo-actions, of predicting the training
episodes' mean action, and of the next frame's joint state, per joint.

    python3 -m venv /tmp/pa && /tmp/pa/bin/pip install pyarrow numpy
    /tmp/pa/bin/python results/lapa-table/idm_check.py [N]
"""
import csv
import glob
import sys

import numpy as np
import pyarrow.parquet as pq

n = int(sys.argv[1]) if len(sys.argv) > 1 else 40
t = pq.read_table(sorted(glob.glob("data/sim-arm/data/*/*.parquet"))).to_pydict()
a = np.array(t["action"])
ep = np.array(t["episode_index"])
st = np.array(t["observation.state"])
fi = np.array(t["frame_index"])
tr, ho = ep < n, ep >= n
rows = {}
for r in csv.DictReader(open("results/lapa-table/runs/vpt-labels/pseudo_actions.csv")):
    rows[(int(r["episode"]), int(r["frame_index"]))] = [float(r[k]) for k in list(r)[2:]]
p = np.array([rows[(e, f)] for e, f in zip(ep, fi)])
nxt = np.array([st[i + 1] if i + 1 < len(st) and ep[i + 1] == ep[i] else st[i] for i in range(len(st))])
print(f"{tr.sum()} training frames, {ho.sum()} held-out frames")
print("IDM, its own episodes ", np.round(np.abs(p[tr] - a[tr]).mean(0), 2))
print("IDM, held-out         ", np.round(np.abs(p[ho] - a[ho]).mean(0), 2))
print("training mean, held-out", np.round(np.abs(a[ho] - a[tr].mean(0)).mean(0), 2))
print("next state, held-out   ", np.round(np.abs(nxt[ho] - a[ho]).mean(0), 2))
