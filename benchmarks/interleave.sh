#!/bin/bash
# Alternates tf_lti's benchmarks with the peers' (benchmarks/peers.py) for ROUNDS rounds on one
# host, one JSON line per run in OUT: the ratios in docs/benchmarks.md come from these lines.
#   PEER_PYTHON=/tmp/torchvenv/bin/python ROUNDS=3 OUT=/tmp/peers.jsonl benchmarks/interleave.sh
set -e
PEER_PYTHON=${PEER_PYTHON:-python3}
ROUNDS=${ROUNDS:-3}
OUT=${OUT:-peers.jsonl}
here=$(cd "$(dirname "$0")" && pwd)
for round in $(seq "$ROUNDS"); do
  tf-lti-benchmark --mode=train --encoder_connection=sequential --xla=on --timed_steps=300 >> "$OUT"
  "$PEER_PYTHON" "$here/peers.py" --mode=torch_step --timed_steps=300 >> "$OUT"
  TF_ENABLE_ONEDNN_OPTS=1 tf-lti-benchmark --mode=train --encoder_connection=sequential \
      --xla=off --precision=mixed_bfloat16 --timed_steps=300 >> "$OUT"
  tf-lti-benchmark --mode=iw_eval --encoder_connection=sequential --xla=off --timed_steps=100 >> "$OUT"
  "$PEER_PYTHON" "$here/peers.py" --mode=pyro_iw --num_samples=5000 --eval_points=5 >> "$OUT"
  "$PEER_PYTHON" "$here/peers.py" --mode=pyro_step --timed_steps=300 >> "$OUT"
done
