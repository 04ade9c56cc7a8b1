#!/usr/bin/env bash
# Seeds the fuzz corpora (gitignored) from the official messages.json vectors.
# Usage: fuzz/seed-corpus.sh [path/to/messages.json]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
vectors="${1:-$here/../crates/test-vectors/vectors/messages.json}"
python3 - "$vectors" "$here/corpus" <<'PY'
import hashlib, json, os, sys
cases = json.load(open(sys.argv[1]))
out = sys.argv[2]
def put(target, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)
n = 0
for c in cases:
    for k in ("mls_welcome", "mls_group_info", "mls_key_package",
              "public_message_application", "public_message_proposal",
              "public_message_commit", "private_message"):
        put("mls_message", bytes.fromhex(c[k])); n += 1
    put("wire_structs", b"\x00" + bytes.fromhex(c["ratchet_tree"]))
    put("wire_structs", b"\x01" + bytes.fromhex(c["group_secrets"]))
    n += 2
ks = os.path.join(os.path.dirname(sys.argv[1]), "key-schedule.json")
for c in json.load(open(ks)):
    for e in c["epochs"]:
        put("wire_structs", b"\x02" + bytes.fromhex(e["group_context"])); n += 1
print(f"wrote {n} seeds to {out}")
PY
