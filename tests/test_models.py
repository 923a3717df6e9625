"""cellblock.nets.models and .heads on CPU: shapes, heads, pretrained stems, config errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as nnf

from cellblock.errors import ConfigError
from cellblock.nets.heads import HEADS
from cellblock.nets.models import build_net, net_config_json, net_summary
from cellblock.nets.netconfig import HEAD_NAMES, NetConfig
from cellblock.nets.torchcompat import import_timm

timm = import_timm()
TINY = "test_byobnet"  # ~0.2 M parameters
SMALL = dict(num_classes=11, embedding_dim=16, input_size=64)


def _batch(n: int = 2, size: int = 64, classes: int = 11, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, size, size, generator=g), torch.randint(0, classes, (n,), generator=g)


@pytest.mark.parametrize("backbone", ["densenet121", "seresnext50_32x4d", "resnet18", TINY])
def test_six_channel_forward_shapes(backbone):
    net = build_net(NetConfig(backbone=backbone, **SMALL))
    x, _ = _batch()
    with torch.no_grad():
        out = net(x)
    assert out.logits.shape == (2, 11)
    assert out.embeddings.shape == (2, 16)
    assert net_config_json(net.cfg)["embedding_dim"] == 16


def test_no_embedding_layer_and_catavgmax_doubles_width():
    x, _ = _batch()
    widths = {}
    for pool in ("avg", "catavgmax"):
        cfg = NetConfig(backbone=TINY, pool=pool, num_classes=11, embedding_dim=0)
        net = build_net(cfg)
        with torch.no_grad():
            widths[pool] = net(x).embeddings.shape[1]
        assert net_config_json(cfg)["embedding_dim"] == widths[pool] == net.embedding_dim
    assert widths["catavgmax"] == 2 * widths["avg"] == 2 * net.backbone.num_features


@pytest.mark.parametrize("head", ["softmax", "cosface", "arcface", "ce+arcface"])
def test_every_head_trains(head):
    torch.manual_seed(0)
    net = build_net(NetConfig(backbone=TINY, head=head, num_classes=5, embedding_dim=16))
    x, y = _batch(n=8, size=32, classes=5)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(8):
        loss = net.loss(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize("head", ["cosface", "arcface"])
def test_margin_heads_predict_without_margin(head):
    torch.manual_seed(0)
    net = build_net(NetConfig(backbone=TINY, head=head, num_classes=5, embedding_dim=8)).eval()
    x, y = _batch(n=4, size=32, classes=5)
    with torch.no_grad():
        out = net(x)
    h = net.head
    cos = nnf.normalize(out.embeddings) @ nnf.normalize(h.weight).T
    torch.testing.assert_close(out.logits, h.scale * cos)  # no margin at prediction
    onehot = nnf.one_hot(y, 5).bool()
    if head == "cosface":
        margined = torch.where(onehot, cos - h.margin, cos)
    else:  # theta + m stays below pi for these random features
        margined = torch.where(onehot, torch.cos(torch.acos(cos.clamp(-1, 1)) + h.margin), cos)
    expected = nnf.cross_entropy(h.scale * margined, y)
    torch.testing.assert_close(net.loss(out, y), expected, rtol=1e-4, atol=1e-4)
    assert net.loss(out, y) > nnf.cross_entropy(out.logits, y)


def test_mixed_head_mixes_ce_and_arcface():
    cfg = NetConfig(backbone=TINY, head="ce+arcface", num_classes=5, embedding_dim=8)
    net = build_net(cfg).eval()
    x, y = _batch(n=4, size=32, classes=5)
    with torch.no_grad():
        out = net(x)
        h = net.head
        torch.testing.assert_close(out.logits, h.fc(out.embeddings))  # prediction: linear
        arc = h.arcface.loss(out.embeddings, h.arcface(out.embeddings), y)
        expected = 0.8 * nnf.cross_entropy(out.logits, y) + 0.2 * arc
        torch.testing.assert_close(net.loss(out, y), expected)


def _save_checkpoint(backbone: str, path, fmt: str) -> dict[str, torch.Tensor]:
    """A 3-channel, 1000-class timm checkpoint of ``backbone``; returns its state dict."""
    torch.manual_seed(1)
    sd = timm.create_model(backbone, in_chans=3).state_dict()
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(path))
    else:
        torch.save(sd, path)
    return sd


def _check_adapted(net, sd: dict[str, torch.Tensor], in_chans: int = 6) -> None:
    """The stem equals timm's adapt_input_conv of the file's; every other weight the file's."""
    stem = net.backbone.pretrained_cfg["first_conv"] + ".weight"
    adapted = timm.models.adapt_input_conv(in_chans, sd[stem])
    got = net.backbone.state_dict()
    assert got[stem].shape[1] == in_chans
    torch.testing.assert_close(got[stem], adapted, rtol=0, atol=0)
    for key, value in got.items():
        if key != stem:
            torch.testing.assert_close(value, sd[key], rtol=0, atol=0, msg=key)
    assert not any(k.startswith(("fc.", "head.fc.")) for k in got)  # classifier dropped


@pytest.mark.parametrize(("backbone", "fmt"), [("resnet18", "pth"), (TINY, "safetensors")])
def test_pretrained_local_file_adapts_the_stem(tmp_path, backbone, fmt):
    path = tmp_path / f"{backbone}.{fmt}"
    sd = _save_checkpoint(backbone, path, fmt)
    net = build_net(NetConfig(backbone=backbone, pretrained=str(path), **SMALL))
    _check_adapted(net, sd)
    x, _ = _batch()
    with torch.no_grad():
        assert net(x).logits.shape == (2, 11)


def test_pretrained_from_s3(tmp_path, s3_server, s3_client, monkeypatch):
    path = tmp_path / "tiny.pth"
    sd = _save_checkpoint(TINY, path, "pth")
    key = "checkpoints/imagenet/tiny.pth"
    s3_client.upload_file(str(path), s3_server.public_bucket, key)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)  # anonymous read of the public bucket
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    cfg = NetConfig(backbone=TINY, pretrained=f"s3://{s3_server.public_bucket}/{key}", **SMALL)
    cache = tmp_path / "cache"
    _check_adapted(build_net(cfg, cache_dir=cache), sd)
    cached = cache / "checkpoints" / s3_server.public_bucket / key
    assert cached.read_bytes() == path.read_bytes()
    _check_adapted(build_net(cfg, cache_dir=cache), sd)  # second time: from the cache


def test_pretrained_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        build_net(NetConfig(backbone=TINY, pretrained=str(tmp_path / "missing.pth")))
    path = tmp_path / "r18.pth"
    _save_checkpoint("resnet18", path, "pth")
    with pytest.raises(ConfigError, match=r"r18\.pth"):  # wrong architecture
        build_net(NetConfig(backbone="resnet34", pretrained=str(path), **SMALL))
    with pytest.raises(ConfigError, match="s3://bucket/key"):
        build_net(NetConfig(backbone=TINY, pretrained="s3://only-a-bucket"))


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"unknown key 'embeding_dim'.*'embedding_dim'"):
        NetConfig.from_dict({"backbone": "resnet18", "embeding_dim": 64})
    with pytest.raises(ConfigError, match=r"config\.yaml: net: pool must be"):
        NetConfig.from_dict({"pool": "max"}, where="config.yaml: net")
    with pytest.raises(ConfigError, match=r"not a timm model.*densenet121"):
        NetConfig.from_dict({"backbone": "densenet12l"})
    with pytest.raises(ConfigError, match="num_classes"):
        NetConfig.from_dict({"num_classes": "1139"})
    with pytest.raises(ConfigError, match="no model hub"):
        NetConfig(backbone="hf-hub:timm/resnet18.a1_in1k")
    cfg = NetConfig.from_dict({"backbone": "resnet18", "head": "ce+arcface", "scale": 64})
    assert NetConfig.from_dict(cfg.to_dict()) == cfg
    assert tuple(HEADS) == HEAD_NAMES  # the light config names the heads the nets build


def test_summary_and_net_config_json():
    cfg = NetConfig(backbone="densenet121", **SMALL)
    net = build_net(cfg)
    text = net_summary(net, (6, 64, 64))
    n = sum(p.numel() for p in net.parameters())
    assert f"parameters: {n:,}" in text
    assert "backbone.features.denseblock4" in text and "1x1024x2x2" in text
    assert "embedding" in text and "1x11" in text
    assert net.training  # mode restored
    assert net_config_json(cfg) == {
        "backbone": "densenet121",
        "in_channels": 6,
        "input_size": 64,
        "num_classes": 11,
        "input_shape": [6, 64, 64],
        "embedding_dim": 16,
        "head": "softmax",
        "pool": "avg",
    }


@pytest.mark.parametrize("backbone", ["mobilenetv3_small_100", "efficientnet_b0"])
def test_backbones_with_a_conv_head_get_the_right_widths(backbone):
    """Their head conv still runs with global_pool="": width is head_hidden_size, not
    num_features (a regression: the embedding layer was sized 576 for 1024 inputs)."""
    for embedding_dim in (0, 16):
        cfg = NetConfig(backbone=backbone, num_classes=5, embedding_dim=embedding_dim,
                        pool="catavgmax", input_size=64)  # fmt: skip
        out = build_net(cfg).eval()(torch.zeros(2, 6, 64, 64))
        assert out.logits.shape == (2, 5)
        assert out.embeddings.shape[1] == (embedding_dim or net_config_json(cfg)["embedding_dim"])


def test_backbone_args_make_a_variant_by_configuration():
    base = build_net(NetConfig(backbone="test_resnet", **SMALL))
    wider = NetConfig.from_dict({"backbone": "test_resnet", "backbone_args":
                                 {"channels": [64, 96, 96, 192]}, **SMALL})  # fmt: skip
    net = build_net(wider)
    assert net.pooled_dim == 192 != base.pooled_dim == 96
    assert sum(p.numel() for p in net.parameters()) > 2 * sum(p.numel() for p in base.parameters())
    x, _ = _batch()
    with torch.no_grad():
        assert net(x).logits.shape == (2, 11)
    assert NetConfig.from_dict(wider.to_dict()) == wider  # travels with the checkpoint
    with pytest.raises(ConfigError, match=r"backbone_args .*'widht'.*unexpected keyword"):
        build_net(NetConfig(backbone="test_resnet", backbone_args={"widht": 2}, **SMALL))
    with pytest.raises(ConfigError, match=r"config\.yaml: net: backbone_args must be .*in_chans"):
        NetConfig.from_dict({"backbone_args": {"in_chans": 3}}, where="config.yaml: net")
