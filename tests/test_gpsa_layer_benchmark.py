"""benchmarks/gpsa_layer.py (the per-layer breakdown the GPU check runs) works end to end on CPU."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpsa_layer_benchmark_writes_every_stage(tmp_path):
    out = tmp_path / "gpsa.json"
    subprocess.run([sys.executable, "benchmarks/gpsa_layer.py", "--batch", "1", "--repeats", "1", "--device", "cpu",
                    "--output", str(out)], cwd=ROOT, check=True, capture_output=True, text=True)
    record = json.loads(out.read_text())
    assert [(s["channels"], s["size"]) for s in record["stages"]] == [(64, 32), (128, 16), (256, 8), (512, 4)]
    for stage in record["stages"]:
        assert stage["conv_ms"] > 0 and stage["attention_ms"] > 0
        assert stage["content_as_used_math_ms"] > 0  # the math backend accepts every shape
    assert record["device"] and record["versions"]["torch"]
