"""Networks: the encode/decode contract, equality with MONAI's BasicUNet, encoder weights, the discriminator."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from monai.networks.nets import BasicUNet

from medsemiseg.networks import DeepLabV3Plus, FeatureDiscriminator, UNet, get_network

SIZES = [(64, 64), (96, 96), (100, 100), (64, 100)]


@pytest.mark.parametrize("size", SIZES)
def test_unet_shapes_and_roundtrip(size):
    net = UNet(in_channels=1, out_channels=3).eval()
    x = torch.randn(1, 1, *size)
    with torch.no_grad():
        y = net(x)
        feats = net.encode(x)
        y2 = net.decode(feats, x.shape[2:])
    assert y.shape == (1, 3, *size)
    assert len(feats) == 5
    assert [f.shape[1] for f in feats] == [16, 32, 64, 128, 256]
    assert feats[-1].shape[1] == net.feature_channels == 256
    assert feats[0].shape[2:] == x.shape[2:]
    torch.testing.assert_close(y, y2)


@pytest.mark.parametrize("size", [(64, 64), (100, 100), (101, 98)])
def test_unet_equals_basicunet_forward(size):
    kw = dict(spatial_dims=2, in_channels=3, out_channels=2, features=(8, 8, 16, 16, 32, 8))
    ours = UNet(**kw)
    ref = BasicUNet(**kw, act=("LeakyReLU", {"negative_slope": 0.01, "inplace": True}), norm=("batch", {"affine": True}))
    ref.load_state_dict(ours.state_dict())  # same parameter names: the subclass keeps BasicUNet's layers
    ours.eval(), ref.eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x))
        torch.testing.assert_close(BasicUNet.forward(ours, x), ours(x))


def test_unet_feature_perturbation_decode_trains():
    net = UNet(in_channels=1, out_channels=2, features=(4, 8, 8, 16, 16, 4))
    x = torch.randn(2, 1, 32, 32)
    feats = net.encode(x)
    y = net.decode([F.dropout2d(f, 0.5, training=True) for f in feats], x.shape[2:])
    assert y.shape == (2, 2, 32, 32)
    assert not torch.allclose(y, net.decode(feats, x.shape[2:]))
    y.mean().backward()
    assert net.conv_0.conv_0.conv.weight.grad is not None


def test_unet_decode_resizes_when_asked():
    net = UNet(in_channels=1, out_channels=2, features=(4, 4, 8, 8, 8, 4)).eval()
    x = torch.randn(1, 1, 32, 32)
    assert net.decode(net.encode(x), (40, 24)).shape == (1, 2, 40, 24)


def test_unet_bad_features():
    with pytest.raises(ValueError, match="six channel counts"):
        UNet(features=(16, 32, 64))


@pytest.mark.parametrize("size", SIZES)
def test_deeplab_shapes_and_roundtrip(size):
    net = DeepLabV3Plus(in_channels=3, num_classes=4, backbone="resnet18", aspp_channels=16, decoder_channels=32).eval()
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        y = net(x)
        feats = net.encode(x)
        y2 = net.decode(feats, x.shape[2:])
    assert y.shape == (1, 4, *size)
    assert len(feats) == 2
    assert feats[0].shape[1] == 64 and feats[-1].shape[1] == net.feature_channels == 512
    # layer1 at 1/4, layer4 at 1/16 (output_stride 16)
    assert feats[0].shape[2] == -(-size[0] // 4)
    assert feats[-1].shape[2] == -(-size[0] // 16)
    torch.testing.assert_close(y, y2)


@pytest.mark.parametrize("output_stride,backbone,channels", [(8, "resnet18", 512), (32, "resnet34", 512), (16, "resnet50", 2048)])
def test_deeplab_output_strides_and_backbones(output_stride, backbone, channels):
    net = DeepLabV3Plus(in_channels=1, num_classes=2, backbone=backbone, output_stride=output_stride, aspp_channels=8, decoder_channels=16).eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        feats = net.encode(x)
        y = net(x)
    assert feats[-1].shape[1] == net.feature_channels == channels
    assert feats[-1].shape[2:] == (32 // output_stride, 32 // output_stride)
    assert y.shape == (1, 2, 32, 32)


def test_deeplab_dropout_decode_and_backward():
    net = DeepLabV3Plus(in_channels=1, num_classes=3, aspp_channels=8, decoder_channels=16)
    x = torch.randn(2, 1, 32, 32)
    feats = net.encode(x)
    y = net.decode([F.dropout2d(f, 0.5) for f in feats], (32, 32))
    assert y.shape == (2, 3, 32, 32)
    y.sum().backward()
    assert net.encoder.conv1.weight.grad is not None


def test_deeplab_bad_arguments():
    with pytest.raises(ValueError, match="backbone"):
        DeepLabV3Plus(backbone="vgg16")
    with pytest.raises(ValueError, match="output_stride"):
        DeepLabV3Plus(output_stride=4)


def _small_deeplab(**kw):
    return DeepLabV3Plus(in_channels=3, num_classes=2, aspp_channels=8, decoder_channels=16, **kw)


def test_encoder_weights_roundtrip(tmp_path):
    src = _small_deeplab()
    path = tmp_path / "encoder.pt"
    # a wrapped, prefixed checkpoint as DataParallel / other code bases write it, with an ImageNet head
    sd = {f"module.encoder.{k}": v for k, v in src.encoder.state_dict().items()}
    sd["module.encoder.fc.weight"] = torch.zeros(1000, 512)
    torch.save({"state_dict": sd}, path)
    dst = _small_deeplab(encoder_weights=str(path))
    for k, v in src.encoder.state_dict().items():
        torch.testing.assert_close(dst.encoder.state_dict()[k], v, msg=k)
    rep = dst.encoder_load_report
    assert rep is not None and not rep.missing and not rep.unexpected and not rep.mismatched
    assert rep.ignored == ["fc.weight"]
    # the rest of the network is not touched by the encoder checkpoint
    assert not torch.equal(dst.classifier.weight, src.classifier.weight)


def test_encoder_weights_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="encoder_weights=.*no such file"):
        _small_deeplab(encoder_weights=str(tmp_path / "nope.pt"))


def test_encoder_weights_mismatching_keys_reported(tmp_path, caplog):
    src = _small_deeplab()
    sd = dict(src.encoder.state_dict())
    removed = "layer4.1.conv2.weight"
    del sd[removed]
    sd["layer9.weight"] = torch.zeros(3)
    sd["layer1.0.conv1.weight"] = torch.zeros(7, 7, 3, 3)  # wrong shape
    path = tmp_path / "partial.pth"
    torch.save(sd, path)
    with caplog.at_level(logging.WARNING):
        dst = _small_deeplab(encoder_weights=path)
    rep = dst.encoder_load_report
    assert removed in rep.missing
    assert rep.unexpected == ["layer9.weight"]
    assert len(rep.mismatched) == 1 and rep.mismatched[0].startswith("layer1.0.conv1.weight")
    assert "layer9.weight" in caplog.text and removed in caplog.text
    torch.testing.assert_close(dst.encoder.layer2[0].conv1.weight, src.encoder.layer2[0].conv1.weight)
    with pytest.raises(ValueError, match="strict=True"):
        _small_deeplab(encoder_weights=path, encoder_weights_strict=True)


def test_encoder_weights_nothing_matches(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"foo.weight": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="none of its 1 tensors"):
        _small_deeplab(encoder_weights=path)
    torch.save([1, 2, 3], path)
    with pytest.raises(ValueError, match="does not hold a state dict"):
        _small_deeplab(encoder_weights=path)


def test_encoder_weights_rgb_stem_adapted_to_grey(tmp_path):
    rgb = _small_deeplab()
    path = tmp_path / "rgb.pt"
    torch.save(rgb.encoder.state_dict(), path)
    grey = DeepLabV3Plus(in_channels=1, num_classes=2, aspp_channels=8, decoder_channels=16, encoder_weights=path)
    assert grey.encoder_load_report.adapted == ["conv1.weight"]
    torch.testing.assert_close(grey.encoder.conv1.weight, rgb.encoder.conv1.weight.sum(1, keepdim=True))


@pytest.mark.parametrize("hw", [(8, 8), (4, 4), (1, 1), (16, 12)])
def test_discriminator_shapes(hw):
    d = FeatureDiscriminator(in_channels=32, base_channels=8, num_layers=3)
    out = d(torch.randn(3, 32, *hw))
    assert out.ndim == 4 and out.shape[:2] == (3, 1)
    assert out.shape[2] >= 1 and out.shape[3] >= 1


def test_discriminator_on_unet_features_and_grad():
    net = UNet(in_channels=1, out_channels=2, features=(4, 8, 8, 16, 16, 4))
    d = FeatureDiscriminator(net.feature_channels, base_channels=8, spectral_norm=True)
    f = net.encode(torch.randn(2, 1, 128, 128))[-1]
    assert f.shape[2:] == (8, 8)
    logits = d(f)
    assert logits.shape == (2, 1, 2, 2)
    F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits)).backward()
    assert net.down_4.convs.conv_0.conv.weight.grad is not None
    with pytest.raises(ValueError, match="in_channels=net.feature_channels"):
        d(torch.randn(2, 3, 8, 8))


def test_get_network():
    unet = get_network("unet", in_channels=1, num_classes=4)
    assert isinstance(unet, UNet) and unet.out_channels == 4 and unet.feature_channels == 256
    dl = get_network("DeepLabV3Plus", 3, 2, backbone="resnet18", aspp_channels=8)
    assert isinstance(dl, DeepLabV3Plus) and dl.num_classes == 2
    with pytest.raises(ValueError, match="unknown network; use one of 'unet', 'deeplabv3plus'"):
        get_network("segformer", 1, 2)
    assert isinstance(get_network("DeepLabV3+", 1, 2, backbone="resnet18", aspp_channels=8), DeepLabV3Plus)
    assert isinstance(get_network("basic_unet", 1, 2), UNet)


def test_a_network_registered_by_name_is_built_like_the_shipped_ones():
    from medsemiseg.networks import network_names, register_network
    from medsemiseg.networks import registry

    def tiny(in_channels, num_classes, **kwargs):
        return UNet(spatial_dims=2, in_channels=in_channels, out_channels=num_classes,
                    features=(4, 4, 8, 8, 16, 4), **kwargs)

    before = dict(registry._SPECS), dict(registry._KEYS)
    try:
        register_network("tiny_unet", tiny, aliases=("tiny",))
        assert network_names() == ["unet", "deeplabv3plus", "tiny_unet"]
        net = get_network("Tiny", 1, 3)
        assert isinstance(net, UNet) and net.out_channels == 3 and net.feature_channels == 16
        with pytest.raises(ValueError, match="the name 'unet' already names network 'unet'"):
            register_network("other", tiny, aliases=("unet",))
    finally:
        registry._SPECS.clear(), registry._SPECS.update(before[0])
        registry._KEYS.clear(), registry._KEYS.update(before[1])


@pytest.mark.parametrize("name", ["unet", "deeplabv3plus"])
def test_networks_script_to_torchscript(name):
    """``torch.jit.script`` (what MONAI's ckpt_export does by default) keeps ``forward``; encode/decode stay eager."""
    torch.manual_seed(0)
    net = (UNet(in_channels=3, out_channels=2, features=(4, 4, 8, 8, 16, 4)) if name == "unet"
           else _small_deeplab()).eval()
    scripted = torch.jit.script(net)
    for shape in ((1, 3, 32, 32), (2, 3, 33, 41)):  # odd sizes too: no tracing-style fixed shapes
        x = torch.rand(*shape)
        with torch.no_grad():
            assert torch.allclose(scripted(x), net(x), atol=1e-5)
            assert torch.equal(net.decode(net.encode(x), x.shape[2:]), net(x))
