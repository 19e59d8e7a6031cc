"""The experiment configs: they load, declare valid stages, hold their launch command,
and a config naming missing files fails at start with each file and how to get it."""

import os
import subprocess
import sys

import pytest

from gshead_jax.train import inputs, stages

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "train"))
import train_testing as tt  # noqa: E402

CONFIGS = {
    "tiny_synthetic": (None, "smoke"),
    "gagavatar_vfhq": (None, "noperceptual", "bf16"),
    "rar_vfhq": (None, "1b"),
    "gpu_synthetic": (None, "dinov2", "bf16,long"),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_configs_load_and_document_their_command(name):
    path = os.path.join(ROOT, "experiments", "configs", f"{name}.py")
    with open(path) as f:
        source = f.read()
    assert f"python experiments/train.py --config=experiments/configs/{name}.py" in source
    for arg in CONFIGS[name]:
        c = tt.load_config(name, arg)
        ss = stages.stages_from_config(c)
        assert ss and all(s.steps > 0 for s in ss)
        for s in ss:
            assert set(s.sources) <= set(c.data.sources)
        assert c.data.batch_size % 2 == 0 and c.eval.batch_size % 2 == 0


def test_rar_stages_follow_the_paper_structure():
    c = tt.load_config("rar_vfhq")
    one, two = stages.stages_from_config(c)
    assert one.model_stage == 1 and two.model_stage == 2
    w1, w2 = one.loss_weights, two.loss_weights
    assert w1["ssim"] > 0 and w1["perceptual"] == 0  # pixel + SSIM
    assert w2["perceptual"] > 0 and w2["ssim"] == 0  # perceptual on synthetic data
    assert all(c.data.sources[s].kind == "synthetic" for s in two.sources)
    assert {c.data.sources[s].kind for s in one.sources} == {"tracked", "synthetic"}


def test_missing_files_fail_at_start_naming_them(tmp_path):
    """The paper config on a machine without its data / assets: the script stops before
    any work with every missing file and where to get it."""
    script = os.path.join(ROOT, "experiments", "train.py")
    config = os.path.join(ROOT, "experiments", "configs", "gagavatar_vfhq.py")
    proc = subprocess.run(
        [sys.executable, script, f"--config={config}", f"--workdir={tmp_path / 'run'}"],
        cwd=tmp_path,  # the config's relative paths do not exist here
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    err = proc.stderr
    assert "FileNotFoundError" in err and "nothing was started" in err
    for missing, how in (
        ("data/VFHQ_CENTERED/optim.pkl", "GAGAvatar_track"),
        ("data/VFHQ_CENTERED/img_lmdb", "GAGAvatar_track"),
        ("third_party/assets/flame/generic_model.pkl", "flame.is.tue.mpg.de"),
        ("third_party/assets/dinov2/dinov2-base", "huggingface-cli download facebook/dinov2-base"),
        ("perceptual/alexnet-owt-7be5be79.pth", "download.pytorch.org"),
    ):
        assert missing in err, missing
        assert how in err, how
    assert not os.path.exists(tmp_path / "run" / "checkpoints")  # nothing was started


def test_missing_arrayrecord_and_synthetic_cache(tmp_path):
    c = tt.load_config("tiny_synthetic", "smoke")
    c.data.sources.synth_train.generate = False
    c.data.sources.synth_heldout = dict(kind="arrayrecord", path=str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError) as e:
        inputs.check_inputs(c, str(tmp_path))
    msg = str(e.value)
    assert str(tmp_path / "data" / "synth_train" / "manifest.json") in msg
    assert "python -m gshead_jax.data.synthetic --out" in msg
    assert str(tmp_path / "nope" / "manifest.json") in msg
    assert "python -m gshead_jax.data.tracked convert" in msg
