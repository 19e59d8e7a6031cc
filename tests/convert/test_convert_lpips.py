"""LPIPS / face-perceptual trunks and heads against torch re-implementations written here.

torchvision is not installed, so the reference trunks are torch ``nn.Sequential``s built
by hand with torchvision's layer indices (state-dict names ``features.<i>.weight`` match
the real files); random weights are saved to files and imported with
``gshead_jax.convert.lpips``. LPIPS follows the ``lpips`` package v0.1 forward;
FacePerceptual follows GAGAvatar's ``FacePerceptualLoss.forward``. Tolerance 1e-5.
"""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from gshead_jax import metrics
from gshead_jax.convert import lpips as convert
from gshead_jax.convert.mapping import CheckpointMismatchError
from gshead_jax.nn.lpips import FacePerceptual
from gshead_jax.train import losses

# ----------------------------------------------------------------------------- torch side


def _tv_vgg16_features() -> nn.Sequential:
    """torchvision vgg16().features (make_layers of cfg "D", no batch norm)."""
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M"]
    cfg += [512, 512, 512, "M"]
    layers, c_in = [], 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(c_in, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            c_in = v
    return nn.Sequential(*layers)


def _tv_alexnet_features() -> nn.Sequential:
    """torchvision alexnet().features."""
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )


class _TvModel(nn.Module):
    """Holds ``features`` (and a stand-in classifier) so state-dict keys match torchvision."""

    def __init__(self, features: nn.Sequential):
        super().__init__()
        self.features = features
        self.classifier = nn.Sequential(nn.Dropout(), nn.Linear(8, 4))


class _Lin(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(c, 1, 1, bias=False))


class _Heads(nn.Module):
    def __init__(self, chns):
        super().__init__()
        for k, c in enumerate(chns):
            setattr(self, f"lin{k}", _Lin(c))


def _randomize(module: nn.Module, seed: int, positive: bool = False) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.weight[0].numel()
            w = torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5
            m.weight.data = w.abs() if positive else w
            if m.bias is not None:
                m.bias.data = torch.randn(m.bias.shape, generator=g) * 0.05
    module.eval()


def _torch_taps(features: nn.Sequential, x: torch.Tensor, taps) -> list:
    outs = []
    for i, layer in enumerate(features[: max(taps) + 1]):
        x = layer(x)
        if i in taps:
            outs.append(x)
    return outs


def _norm(f: torch.Tensor) -> torch.Tensor:
    return f / (torch.sqrt(torch.sum(f**2, dim=1, keepdim=True)) + 1e-10)


def _torch_lpips(features, taps, heads, x0, x1) -> torch.Tensor:
    """lpips.LPIPS(version='0.1').forward(in0, in1, normalize=True), NCHW, per image."""
    shift = torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None]
    scale = torch.tensor([0.458, 0.448, 0.450])[None, :, None, None]
    f0 = _torch_taps(features, ((2 * x0 - 1) - shift) / scale, taps)
    f1 = _torch_taps(features, ((2 * x1 - 1) - shift) / scale, taps)
    val = 0
    for k, (a, b) in enumerate(zip(f0, f1)):
        diff = (_norm(a) - _norm(b)) ** 2
        val = val + getattr(heads, f"lin{k}").model(diff).mean([2, 3], keepdim=True)
    return val[:, 0, 0, 0]


NETS = {
    "vgg": (_tv_vgg16_features, (3, 8, 15, 22, 29), (64, 128, 256, 512, 512), 32),
    "alex": (_tv_alexnet_features, (1, 4, 7, 9, 11), (64, 192, 384, 256, 256), 64),
}


@pytest.fixture(scope="module")
def torch_nets():
    out = {}
    for i, (net, (make, _, chns, _)) in enumerate(NETS.items()):
        trunk, heads = _TvModel(make()), _Heads(chns)
        _randomize(trunk, seed=10 + i)
        _randomize(heads, seed=20 + i, positive=True)  # released heads are non-negative
        out[net] = (trunk, heads)
    return out


def _images(size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    a = rng.random((2, size, size, 3), dtype=np.float32)
    b = np.clip(a + rng.normal(0, 0.15, a.shape), 0, 1).astype(np.float32)
    return a, b


def _nchw(x: np.ndarray) -> torch.Tensor:
    return torch.tensor(x).permute(0, 3, 1, 2)


def _save_lpips_files(net, torch_nets, folder):
    trunk, heads = torch_nets[net]
    torch.save(trunk.state_dict(), folder / convert.TORCHVISION_FILES[net])
    torch.save(heads.state_dict(), folder / convert.HEAD_FILES[net])


def test_lpips_vgg_metric_matches_torch(torch_nets, tmp_path):
    _save_lpips_files("vgg", torch_nets, tmp_path)
    params = convert.load_lpips("vgg", weights_dir=tmp_path)
    x0, x1 = _images(32)
    # One compiled call: pairs (x0, x1) and (x0, x0), the latter at distance 0.
    fn = jax.jit(lambda p, a, b: metrics.lpips(a, b, p, net="vgg"))
    got = np.asarray(fn(params, np.concatenate([x0, x0]), np.concatenate([x1, x0])))
    trunk, heads = torch_nets["vgg"]
    with torch.no_grad():
        ref = _torch_lpips(trunk.features, NETS["vgg"][1], heads, _nchw(x0), _nchw(x1))
    np.testing.assert_allclose(got[:2], ref.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(got[2:], 0.0, atol=1e-7)


def test_lpips_alex_loss_and_grad_match_torch(torch_nets, tmp_path):
    _save_lpips_files("alex", torch_nets, tmp_path)
    loss = losses.build_perceptual_loss("lpips_alex", weights_dir=tmp_path)
    x0, x1 = _images(64)

    def fn(loss, a, b):
        d = loss.distances(a, b)
        return jnp.mean(d), d

    (val, dist), grad = jax.jit(jax.value_and_grad(fn, argnums=1, has_aux=True))(loss, x0, x1)
    trunk, heads = torch_nets["alex"]
    t0 = _nchw(x0).requires_grad_(True)
    ref = _torch_lpips(trunk.features, NETS["alex"][1], heads, t0, _nchw(x1))
    np.testing.assert_allclose(dist, ref.detach().numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(val, ref.mean().item(), atol=1e-5, rtol=0)
    ref.mean().backward()
    ref_grad = t0.grad.permute(0, 2, 3, 1).numpy()
    scale = np.abs(ref_grad).max()  # gradient compared relative to its largest entry
    np.testing.assert_allclose(np.asarray(grad) / scale, ref_grad / scale, atol=1e-5)


def test_lpips_safetensors_and_npz_files(torch_nets, tmp_path):
    trunk, heads = torch_nets["alex"]
    save_file(
        {k: v.contiguous() for k, v in trunk.state_dict().items()}, tmp_path / "t.safetensors"
    )
    np.savez(tmp_path / "h.npz", **{k: v.numpy() for k, v in heads.state_dict().items()})
    params = convert.load_lpips(
        "alex", trunk_path=tmp_path / "t.safetensors", heads_path=tmp_path / "h.npz"
    )
    w = trunk.features[3].weight.detach().numpy()
    np.testing.assert_array_equal(params["trunk"]["features_3"]["kernel"], w.transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(
        params["lin2"]["kernel"][:, 0], heads.lin2.model[1].weight.detach().numpy().ravel()
    )


def test_face_perceptual_matches_official(torch_nets, tmp_path):
    """GAGAvatar FacePerceptualLoss(loss_type='l1', weighted=True).forward, random weights."""
    alex = torch_nets["alex"][0]
    vggface = _tv_vgg16_features()
    _randomize(vggface, seed=30)
    conv_idx = [i for i, m in enumerate(vggface) if isinstance(m, nn.Conv2d)]
    names = [f"conv{b}_{n}" for b, k in zip(range(1, 6), (2, 2, 3, 3, 3)) for n in range(1, k + 1)]
    sd = {}
    for i, name in zip(conv_idx, names):
        sd[f"{name}.weight"] = vggface[i].weight.detach()
        sd[f"{name}.bias"] = vggface[i].bias.detach()
    sd["fc8.weight"] = torch.zeros(3, 2)  # classifier keys are ignored
    torch.save(alex.state_dict(), tmp_path / "alexnet-owt-7be5be79.pth")
    torch.save(sd, tmp_path / "vgg_face_dag.pth")
    params = convert.load_face_perceptual(weights_dir=tmp_path)

    x0, x1 = _images(32, seed=5)  # AlexNet relu5 is 1x1 there, VGG relu_5_1 2x2
    t0, t1 = _nchw(x0), _nchw(x1)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    vf_mean = torch.tensor([129.186279296875, 104.76238250732422, 93.59396362304688])
    a0 = _torch_taps(alex.features, (t0 - mean) / std, (1, 4, 7, 9, 11))
    a1 = _torch_taps(alex.features, (t1 - mean) / std, (1, 4, 7, 9, 11))
    v0 = _torch_taps(vggface, t0 * 255 - vf_mean.view(1, 3, 1, 1), (1, 6, 11, 18, 25))
    v1 = _torch_taps(vggface, t1 * 255 - vf_mean.view(1, 3, 1, 1), (1, 6, 11, 18, 25))
    ref = 0
    for lid, w in enumerate([0.1, 0.1, 1.0, 1.0, 1.0]):
        l1 = torch.nn.functional.l1_loss
        ra = l1(_norm(a0[lid]), _norm(a1[lid]), reduction="none").sum(dim=1, keepdim=True)
        rv = l1(_norm(v0[lid]), _norm(v1[lid]), reduction="none").sum(dim=1, keepdim=True)
        ref = ref + ra.mean() * w + rv.mean() * w * 0.5
    got = jax.jit(FacePerceptual().apply)({"params": params}, x0, x1)
    assert got.shape == (2,)
    np.testing.assert_allclose(jnp.mean(got), ref.item(), atol=1e-5, rtol=0)
    # The loss object carries the same imported params (its forward is tested on LPIPS).
    loss = losses.build_perceptual_loss("face", weights_dir=tmp_path)
    assert loss.kind == "face"
    jax.tree.map(np.testing.assert_array_equal, loss.params, params)


# ----------------------------------------------------------------------------- errors


def test_missing_weights_fail_with_instructions(tmp_path, caplog):
    with pytest.raises(FileNotFoundError, match=r"vgg16-397923af\.pth.*download\.pytorch\.org"):
        convert.load_lpips("vgg", weights_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"alex\.pth.*PerceptualSimilarity"):
        torch.save({}, tmp_path / "alexnet-owt-7be5be79.pth")
        convert.load_lpips("alex", weights_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"vgg_face_dag\.pth.*robots\.ox\.ac\.uk"):
        losses.build_perceptual_loss("face", weights_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="no path given for vgg16-397923af.pth"):
        losses.build_perceptual_loss("lpips_vgg")
    with caplog.at_level(logging.INFO, logger="gshead_jax.train.losses"):
        assert losses.build_perceptual_loss("none") is None
    assert "perceptual loss OFF" in caplog.text
    with pytest.raises(ValueError, match="perceptual kind must be one of"):
        losses.build_perceptual_loss("vggface")


def test_wrong_files_fail_clearly(torch_nets, tmp_path):
    trunk, heads = torch_nets["alex"]
    sd = {k: v.numpy() for k, v in trunk.state_dict().items()}
    with pytest.raises(CheckpointMismatchError, match=r"features\.0\.weight is \(64, 3, 3, 3\)"):
        convert.convert_trunk({**sd, "features.0.weight": np.zeros((64, 3, 3, 3))}, "alex")
    with pytest.raises(CheckpointMismatchError, match=r"missing tensors \(2\): features\.10\."):
        convert.convert_trunk({k: v for k, v in sd.items() if "10" not in k}, "alex")
    with pytest.raises(CheckpointMismatchError, match=r"unexpected.*features\.1\.running_mean"):
        convert.convert_trunk({**sd, "features.1.running_mean": np.zeros(64)}, "alex")
    hd = {k: v.numpy() for k, v in heads.state_dict().items()}
    with pytest.raises(CheckpointMismatchError, match=r"lin1\.model\.1\.weight is \(1, 192"):
        convert.convert_lpips_heads(hd, "vgg")
