"""`prs bench` runs both loops and records them (speed targets live in benchmarks/, not here)."""

import json

import pytest

from prs import bench
from prs.errors import UserError


def test_bench_records_both_loops(tmp_path, synthetic_root):
    out = tmp_path / "bench.json"
    kw = dict(dataset="synthetic", root=str(synthetic_root), batch_size=16, steps=2, warmup=1, rounds=1,
              device="cpu", output=out)
    first = bench.bench("resnet_tiny", **kw)
    bench.bench("hybrid_tiny", switched=True, **{**kw, "warmup": 0})  # no warm-up steps: once a ZeroDivisionError
    records = json.loads(out.read_text())
    assert [r["model"] for r in records] == ["resnet_tiny", "hybrid_tiny"]
    assert first["usual_img_s"] > 0 and first["engine_img_s"] > 0
    assert first["speedup"] == pytest.approx(first["engine_img_s"] / first["usual_img_s"])
    assert first["train_flops_per_image"] > 1e6 and first["engine_mfu"] is None  # no peak known for a CPU
    assert "resnet_tiny" in bench.format_record(first)


@pytest.mark.parametrize("kw,match", [
    ({"model_name": "nope"}, "unknown model"),
    ({"steps": 0}, "--steps"),
    ({"model_name": "resnet_tiny", "switched": True}, "no switchable layers"),
])
def test_bench_bad_input(tmp_path, kw, match):
    out = tmp_path / "bench.json"
    with pytest.raises(UserError, match=match):
        bench.bench(**{"model_name": "resnet_tiny", "device": "cpu", "output": out, **kw})
    assert not out.exists()


@pytest.mark.parametrize("content", ["{", "{}", "null", "\x00\xff"])
def test_bench_refuses_an_output_it_cannot_append_to_before_measuring(tmp_path, monkeypatch, content):
    out = tmp_path / "bench.json"
    out.write_text(content)
    monkeypatch.setattr(bench, "usual_loop", lambda *a, **k: pytest.fail("measured before checking --output"))
    with pytest.raises(UserError, match="--output"):
        bench.bench("resnet_tiny", device="cpu", output=out)
    assert out.read_text() == content


def test_bench_record_is_kept_when_the_output_breaks_while_measuring(tmp_path):
    from prs.errors import RunFailure

    out = tmp_path / "bench.json"
    out.write_text("[{")  # e.g. another process left it half-written meanwhile
    with pytest.raises(RunFailure, match="bench.new.json") as e:
        bench.append_record(out, {"model": "resnet_tiny", "engine_img_s": 1.0})
    assert "\n" not in str(e.value) and out.read_text() == "[{"
    assert json.loads((tmp_path / "bench.new.json").read_text()) == [{"model": "resnet_tiny", "engine_img_s": 1.0}]
