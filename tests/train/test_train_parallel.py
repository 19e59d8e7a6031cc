"""Data parallelism: 4 devices == 1 device for one update; two processes agree on params.

Both run in subprocesses (``train_worker.py``): forced CPU devices and
``jax.distributed`` need a fresh JAX.
"""

import json
import os
import subprocess
import sys

import numpy as np
import portpicker
import pytest
import train_testing as tt

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_worker.py")


# Cheaper XLA:CPU compilation (the workers compile more than they run).
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def _env(xla_flags=""):
    env = dict(os.environ)
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=tt.ROOT, XLA_FLAGS=f"{FAST_COMPILE} {xla_flags}")
    return env


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tt.write_dataset(str(tmp_path_factory.mktemp("data") / "ar"))


def test_four_devices_equal_one_device(tmp_path, data_dir):
    out = tmp_path / "dp.json"
    subprocess.run(
        [sys.executable, WORKER, "dp", data_dir, str(out)],
        env=_env("--xla_force_host_platform_device_count=4"),
        check=True,
        timeout=600,
    )
    r = json.loads(out.read_text())
    assert r["max_update"] > 5e-5  # the step did move the parameters (lr 1e-4)
    assert r["max_diff"] <= 1e-5, r
    np.testing.assert_allclose(*r["loss"], rtol=1e-6)
    np.testing.assert_allclose(*r["grad_norm"], rtol=1e-4)


def test_two_processes_train_and_agree(tmp_path, data_dir):
    port = str(portpicker.pick_unused_port())
    workdir, out = tmp_path / "run", tmp_path / "out"
    out.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, WORKER, "multihost", data_dir, str(workdir), str(out), port, str(i)],
            env=_env(),
        )
        for i in range(2)
    ]
    try:
        codes = [p.wait(timeout=600) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert codes == [0, 0]
    a, b = (np.load(out / f"params_{i}.npz") for i in range(2))
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    results = [json.loads((out / f"result_{i}.json").read_text()) for i in range(2)]
    assert results[0] == results[1] and results[0]["step"] == 3
    assert results[0]["eval"]["count"] > 0  # the held-out evaluation ran (both agree)
    rows = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "eval"] == [0, 3]
    # One checkpoint directory, one metrics file (process 0), both processes' data state.
    data = os.listdir(workdir / "checkpoints" / "3" / "data")
    assert sorted(f.split("-")[0] for f in data if f.startswith("process")) == [
        "process_0",
        "process_1",
    ]
    assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2, 3]
