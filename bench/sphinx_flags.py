#!/usr/bin/env python3
"""Which PocketSphinx search settings recognise the grammar's sentences best (issue 15).

The instruction utterances of the speech evaluation's runs (their `details.jsonl`: the text and
the espeak-ng voice, speed and pitch of every clean instruction) are rendered again, each alone
with 0.3 s of silence either side, resampled to 16 kHz by sox, and decoded by Debian's
`pocketsphinx_batch` (the same libpocketsphinx3 and en-us model `lapa-edge` loads) against the
grammar that `lapa-edge listen --grammar` prints, once per setting. Scored: the decoded sentence
is the reference word for word — the grammar search alone, without the fit check or the
detector, so it isolates what the search settings do. Each setting adds flags to the base that
`lapa-edge` used up to run 7 of results/speech (beam 1e-80, wbeam 1e-60, no bestpath, batch CMN).

    bench/sphinx_flags.py --edge $CARGO_TARGET_DIR/debug/lapa-edge \\
        --set calibration=results/speech/details.jsonl --set held-out=results/speech/heldout-voices/details.jsonl \\
        --set accents=results/speech/accent-voices/details.jsonl --out results/speech/sphinx-flags.md

Needs espeak-ng, sox and Debian's `pocketsphinx` (the command-line tools).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import defaultdict

MODEL = "/usr/share/pocketsphinx/model/en-us"
BASE = ["-beam", "1e-80", "-wbeam", "1e-60", "-bestpath", "no", "-logbase", "1.0001", "-cmn", "batch"]
WIDE = ["-pbeam", "1e-80"]  # the finite-state search reads -beam, -wbeam and -pbeam only
SETTINGS = [
    ("run 7 (base)", []),
    ("+ phone beam 1e-80", WIDE),
    ("+ top 8 Gaussians", WIDE + ["-topn", "8"]),
    ("+ frequency warp 1.1 (run 8)", WIDE + ["-topn", "8", "-warp_params", "1.1"]),
]


def norm(t):
    return " ".join(re.sub(r"[^a-z' ]", " ", t.lower()).split())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--edge", required=True, help="the lapa-edge binary (prints the grammar)")
    ap.add_argument("--set", action="append", required=True, metavar="NAME=DETAILS", help="an evaluation's details.jsonl")
    ap.add_argument("--out", help="write the table here (markdown) as well as to stdout")
    a = ap.parse_args()
    for tool in ("espeak-ng", "sox", "pocketsphinx_batch"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode != 0:
            sys.exit(f"sphinx_flags: {tool} is missing (apt install espeak-ng sox pocketsphinx)")
    work = tempfile.mkdtemp(prefix="sphinx-flags-")
    grammar = subprocess.run([a.edge, "listen", "--grammar"], capture_output=True, text=True, check=True).stdout
    gpath = os.path.join(work, "grammar.jsgf")
    with open(gpath, "w") as f:
        f.write(grammar)
    refs, sets = {}, []
    for spec in a.set:
        name, _, path = spec.partition("=")
        if not path or not os.path.isfile(path):
            sys.exit(f"sphinx_flags: --set {spec}: give NAME=PATH of a details.jsonl")
        sets.append(name)
        for line in open(path):
            r = json.loads(line)
            if r["condition"] != "clean" or r["kind"] != "instruction":
                continue
            m = re.fullmatch(r"(.+)/s(\d+)/p(\d+)", r["voice"])
            if not m:
                sys.exit(f"sphinx_flags: {path}: voice {r['voice']!r} is not VOICE/sSPEED/pPITCH")
            uid = f"{name}_{len(refs):04d}"
            raw, wav = os.path.join(work, uid + ".22k.wav"), os.path.join(work, uid + ".wav")
            subprocess.run(["espeak-ng", "-v", m[1], "-s", m[2], "-p", m[3], "-w", raw, r["text"]], check=True)
            subprocess.run(["sox", "-q", raw, "-r", "16000", "-c", "1", "-b", "16", wav, "pad", "0.3", "0.3"], check=True, stderr=subprocess.DEVNULL)
            os.remove(raw)
            refs[uid] = (name, norm(r["text"]))
    ctl = os.path.join(work, "ctl.txt")
    with open(ctl, "w") as f:
        f.write("".join(u + "\n" for u in refs))
    print(f"sphinx_flags: {len(refs)} utterances in {len(sets)} sets", file=sys.stderr)
    rows = []
    for label, flags in SETTINGS:
        hyp_path = os.path.join(work, "hyp.txt")
        cmd = ["pocketsphinx_batch", "-logfn", "/dev/null", "-hmm", f"{MODEL}/en-us", "-dict", f"{MODEL}/cmudict-en-us.dict", "-jsgf", gpath,
               *BASE, "-dither", "yes", "-seed", "1", "-ctl", ctl, "-cepdir", work, "-cepext", ".wav", "-adcin", "yes", "-adchdr", "44",
               "-hyp", hyp_path, *flags]
        cpu0 = os.times()
        subprocess.run(cmd, check=True)
        cpu1 = os.times()
        cpu = (cpu1.children_user + cpu1.children_system) - (cpu0.children_user + cpu0.children_system)
        hyp = {}
        for line in open(hyp_path):
            line = line.rstrip("\n")
            i = line.rfind(" (")
            hyp[line[i + 2:].split(" ")[0]] = norm(line[:i])
        right = defaultdict(int)
        count = defaultdict(int)
        for uid, (name, ref) in refs.items():
            count[name] += 1
            right[name] += hyp.get(uid, "") == ref
        rows.append((label, dict(right), dict(count), cpu))
        print(f"  {label}: " + ", ".join(f"{s} {right[s]}/{count[s]}" for s in sets) + f" ({cpu:.1f} s CPU)", file=sys.stderr)
    head = "| setting | " + " | ".join(f"{s} ({rows[0][2][s]})" for s in sets) + " | all | CPU (s) |\n|---|" + "---|" * (len(sets) + 2) + "\n"
    body = ""
    for label, right, count, cpu in rows:
        n, k = sum(count.values()), sum(right.values())
        body += f"| {label} | " + " | ".join(f"{100 * right.get(s, 0) / count[s]:.1f}%" for s in sets) + f" | {100 * k / n:.1f}% ({k}/{n}) | {cpu:.1f} |\n"
    audio = sum(os.path.getsize(os.path.join(work, u + ".wav")) - 44 for u in refs) / 2 / 16000
    table = head + body + f"\n{len(refs)} utterances, {audio:.0f} s of audio; CPU: the decoder process's user + system time for all of them (one core).\n"
    print(table)
    if a.out:
        with open(a.out, "w") as f:
            f.write(table)


if __name__ == "__main__":
    main()
