"""Drives `lapa serve` with the unmodified PyPI openpi-client (WebsocketClientPolicy).

Usage: openpi_client_check.py HOST PORT TOKEN
Prints one line per check and exits non-zero on the first failure.
"""

import sys
import urllib.request

import numpy as np
from openpi_client import websocket_client_policy as wcp

host, port, token = sys.argv[1], int(sys.argv[2]), sys.argv[3]


def check(name, cond, detail=""):
    if not cond:
        print(f"FAIL {name}: {detail}")
        sys.exit(1)
    print(f"ok   {name}")


def client():
    return wcp.WebsocketClientPolicy(host=host, port=port, api_key=token)


def obs(image=None, state=None, prompt="push the red cube to the left"):
    o = {
        "observation/image": np.full((64, 64, 3), 120, dtype=np.uint8) if image is None else image,
        "observation/state": np.zeros(6, dtype=np.float32) if state is None else state,
    }
    if prompt is not None:
        o["prompt"] = prompt
    return o


def refused(o, needle):
    c = client()
    try:
        c.infer(o)
    except RuntimeError as e:  # openpi-client raises this when the server answers with text
        return needle in str(e), str(e)
    except Exception as e:  # noqa: BLE001 - e.g. the close frame (code 1011, the same reason) arrived first
        return needle in str(e) and "1011" in str(e), f"{type(e).__name__}: {e}"
    return False, "the server answered"


# Without the token the handshake is refused.
try:
    wcp.WebsocketClientPolicy(host=host, port=port)
    check("token required", False, "connected without a token")
except Exception as e:  # noqa: BLE001
    check("token required", "401" in str(e), str(e))

c = client()
meta = c.get_server_metadata()
check("metadata", meta["image_size"] == [64, 64] and meta["state_dim"] == 6 and len(meta["action_names"]) == 6 and meta["action_chunk"] == 2, meta)
r = c.infer(obs())
a = r["actions"]
check("actions", isinstance(a, np.ndarray) and a.dtype == np.float32 and a.shape == (2, 6) and np.isfinite(a).all(), repr(a))
check("timing", r["server_timing"]["infer_ms"] > 0, r)
# Another image size is cropped and resized like the training frames; channels-first works too.
r2 = c.infer(obs(image=np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)))
check("other image size", r2["actions"].shape == (2, 6))
img = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
hwc = c.infer(obs(image=img))["actions"]
chw = c.infer(obs(image=np.ascontiguousarray(img.transpose(2, 0, 1))))["actions"]
check("channels first", np.array_equal(chw, hwc), (chw, hwc))
flipped = c.infer(obs(image=np.ascontiguousarray(img[::-1])))["actions"]
check("the image reaches the policy", not np.array_equal(flipped, hwc) or not np.array_equal(hwc, a), (flipped, hwc))
# Strict request/response: many in a row on one connection.
for _ in range(5):
    c.infer(obs())
check("repeated requests", True)

for name, o, needle in [
    ("float image", obs(image=np.zeros((64, 64, 3), dtype=np.float32)), "uint8"),
    ("wrong rank", obs(image=np.zeros((64, 64), dtype=np.uint8)), "shape"),
    ("wrong channels", obs(image=np.zeros((64, 64, 4), dtype=np.uint8)), "shape"),
    ("missing prompt", obs(prompt=None), "missing key \"prompt\""),
    ("prompt not a string", obs(prompt=5), "expected a string"),
    ("state of the wrong length", obs(state=np.zeros(4, dtype=np.float32)), "4 values, the policy takes 6"),
    ("non-finite state", obs(state=np.full(6, np.nan, dtype=np.float32)), "not finite"),
    ("oversized message", obs(image=np.zeros((1200, 1200, 3), dtype=np.uint8)), "too large"),
    ("long instruction", obs(prompt="push " * 300), "at most"),
    ("huge instruction", obs(prompt="x" * 100_000), "at most 4096"),
]:
    ok, detail = refused(o, needle)
    check(f"refused: {name}", ok, detail)

# Malformed frames straight onto the socket (what openpi-client never sends): each is answered
# with a text frame naming what is wrong, then close code 1011.
import msgpack  # noqa: E402 - openpi-client's own dependency
from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.sync.client import connect  # noqa: E402


def raw(frame, needle):
    with connect(f"ws://{host}:{port}", compression=None, max_size=None, additional_headers={"Authorization": f"Api-Key {token}"}) as ws:
        ws.recv()  # the metadata
        ws.send(frame)
        got = []
        try:
            while True:
                got.append(ws.recv(timeout=10))
        except ConnectionClosed as e:
            code = e.rcvd.code if e.rcvd else None
        except TimeoutError:
            return False, f"no close after {got!r}"
        return len(got) == 1 and isinstance(got[0], str) and needle in got[0] and code == 1011, f"{got!r}, close {code}"


def nd(data, shape, dtype="|u1"):
    return {b"__ndarray__": True, b"data": data, b"dtype": dtype, b"shape": shape}


good = {"observation/image": nd(bytes(64 * 64 * 3), [64, 64, 3]), "observation/state": nd(bytes(24), [6], "<f4"), "prompt": "push the red cube to the left"}
for name, frame, needle in [
    ("not msgpack", b"\xc1\x00garbage", "0xc1 is not a msgpack type"),
    ("not a map", msgpack.packb([1, 2, 3]), "must be a map"),
    ("truncated", msgpack.packb(good)[:-10], "bytes announced"),
    ("trailing bytes", msgpack.packb(good) + b"\x00", "bytes after the message"),
    ("array data shorter than its shape", msgpack.packb({**good, "observation/image": nd(bytes(10), [64, 64, 3])}), "needs 12288 bytes, has 10"),
    ("unsupported dtype", msgpack.packb({**good, "observation/image": nd(bytes(64 * 64 * 3), [64, 64, 3], "<c8")}), "dtype \"<c8\""),
    ("nesting bomb", b"\x91" * 100_000 + b"\x00", "nested deeper than"),
    ("text frame", "hello", "requests are binary msgpack frames"),
]:
    ok, detail = raw(frame, needle)
    check(f"refused on the wire: {name}", ok, detail)

# The server survived every bad request and still answers a new client.
r4 = client().infer(obs())
check("still serving", np.array_equal(r4["actions"], a))
with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=5) as resp:
    check("healthz", resp.status == 200 and resp.read().strip() == b"OK")
print("all checks passed")
