"""Channel slimming and L1-norm filter pruning: the filter rule by hand, exact logits after slimming, the export."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything

from analysis import slim
from analysis.export_command import main as export_main
from analysis.onnx_export import export_onnx
from datamodules import CIFAR10DataModule
from lit_modules import ResNet18Classifier
from lit_modules.resnet import ResNet18, ResNet18Channels, SlimResNet18, resnet18_from_state_dict
from pruning_callbacks import FilterPruning
from pruning_callbacks.engine.channels import (
    channel_groups,
    filter_l1_norms,
    layer_channel_masks,
    residual_streams,
    stream_channel_masks,
)
from pruning_callbacks.engine.masks import Masks
from tests.helpers import quiet_trainer

# ----------------------------------------------------------------------------------------------------------------------
# The filter rule of Li et al. 2017, by hand.


def test_filter_l1_norms_sum_the_absolute_weights_of_each_filter():
    model = ResNet18(width=2)
    weight = model.layer1[0].conv1.weight
    with torch.no_grad():
        weight.copy_(torch.arange(weight.numel(), dtype=torch.float32).view_as(weight) - 10)
    groups = [group for group in channel_groups(model) if group.bn == "layer1.0.bn1"]
    norms = filter_l1_norms(model, groups)
    per_filter = weight.numel() // 2  # 18 weights per filter: values -10..7 and 8..25
    assert norms["layer1.0.bn1.weight"].tolist() == [
        float(sum(abs(v - 10) for v in range(per_filter))),
        float(sum(abs(v - 10) for v in range(per_filter, 2 * per_filter))),
    ]


def test_layer_rule_keeps_int_channels_times_one_minus_share_with_ties_by_position():
    scores = {"a": torch.tensor([3.0, 1.0, 2.0, 0.0]), "b": torch.tensor([5.0, 5.0, 5.0])}
    current = Masks.dense(scores)
    masks = layer_channel_masks(scores, current, 0.5)
    # a: int(4 * 0.5) = 2 kept, the two largest; b: int(3 * 0.5) = 1 kept, the first of a three-way tie.
    assert masks["a"].tolist() == [True, False, True, False] and masks["b"].tolist() == [True, False, False]
    # 64 * (1 - 0.7) is 19.199999999999996 in floating point: the reference code's int() keeps 19.
    wide = {"c": torch.arange(64, dtype=torch.float32)}
    assert int(layer_channel_masks(wide, Masks.dense(wide), 0.7)["c"].sum()) == 19
    # Every layer keeps a channel, and what is pruned stays pruned.
    assert int(layer_channel_masks(scores, current, 0.9)["b"].sum()) == 1
    again = layer_channel_masks({"a": torch.tensor([0.0, 9.0, 9.0, 9.0]), "b": scores["b"]}, masks, 0.5)
    assert again.is_subset_of(masks) and again["a"].tolist() == [True, False, True, False]
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        layer_channel_masks(scores, current, 1.0)


# ----------------------------------------------------------------------------------------------------------------------
# Slimming: the logits of the slimmed network are the masked network's.


def _randomized(width: int, seed: int = 0) -> ResNet18:
    """A ResNet18 in eval mode with random BatchNorm statistics and affine parameters (none zero by chance)."""
    torch.manual_seed(seed)
    model = ResNet18(width=width)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
    return model.eval()


def _kill(model: torch.nn.Module, bn: str, channels: list[int]) -> None:
    module = model.get_submodule(bn)
    with torch.no_grad():
        module.weight[channels] = 0
        module.bias[channels] = 0


def test_slimming_removes_inner_and_whole_stream_channels_and_keeps_the_logits():
    model = _randomized(width=4)
    _kill(model, "layer1.0.bn1", [0, 2])
    _kill(model, "layer3.1.bn1", [1, 2, 3, 4, 5])
    for bn in ("bn1", "layer1.0.bn2", "layer1.1.bn2"):  # stage 1's stream channel 3: dead in every writer
        _kill(model, bn, [3])
    for bn in ("layer2.0.shortcut.1", "layer2.0.bn2"):  # stage 2's channel 5: layer2.1.bn2 still writes it
        _kill(model, bn, [5])
    _kill(model, "layer4.0.bn1", list(range(32)))  # a block with every inner channel dead keeps one
    result = slim.slim_state_dict(model.state_dict())

    assert result.before == ResNet18Channels.full(4)
    assert result.after.streams == (3, 8, 16, 32)
    assert result.after.inner == ((2, 4), (8, 8), (16, 11), (1, 32))
    network = SlimResNet18.from_state_dict(result.state_dict).eval()
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(network(x), model(x), rtol=1e-5, atol=1e-5)
    difference, scale = slim.logit_difference(model.state_dict(), result.state_dict)
    assert difference <= 1e-5 * max(1.0, scale)


def test_slimmed_parameter_count_matches_the_formula():
    model = _randomized(width=4)
    _kill(model, "layer2.1.bn1", [0, 1, 2])
    for bn in ("layer4.0.shortcut.1", "layer4.0.bn2", "layer4.1.bn2"):
        _kill(model, bn, [0, 7])
    result = slim.slim_state_dict(model.state_dict())
    network = SlimResNet18.from_state_dict(result.state_dict)
    counted = sum(p.numel() for p in network.parameters())
    # By hand: the full width-4 network (its own count) minus what the removed channels owned.
    full = sum(p.numel() for p in ResNet18(width=4).parameters())
    inner = 3 * (8 * 9 + 2 + 8 * 9)  # layer2.1: conv1 rows (8 inputs), bn1, conv2 columns (8 outputs)
    stream = 2 * (  # each of the two stage-4 stream channels owns:
        32 * 9
        + 2  # its layer4.0.conv2 filter (32 inputs) and layer4.0.bn2 entry
        + 16
        + 2  # its layer4.0.shortcut.0 filter (16 inputs, 1x1) and shortcut BatchNorm entry
        + 32 * 9
        + 2  # its layer4.1.conv2 filter and layer4.1.bn2 entry
        + 32 * 9  # its input kernels in layer4.1.conv1 (32 filters)
        + 10  # its column of the classifier
    )
    assert counted == result.parameters_after == result.after.parameter_count() == full - inner - stream
    assert ResNet18Channels.full(64).parameter_count() == 11_173_962


def test_the_full_network_is_rebuilt_as_a_plain_resnet18():
    state = ResNet18(width=4).state_dict()
    assert type(resnet18_from_state_dict(state)) is ResNet18
    assert slim.slim_state_dict(state).after == ResNet18Channels.full(4)
    with pytest.raises(ValueError, match="not a CIFAR ResNet18 state dict"):
        ResNet18Channels.from_state_dict({"fc.weight": torch.zeros(2, 2)})


# ----------------------------------------------------------------------------------------------------------------------
# FilterPruning end to end: train, prune the filters, fine-tune, export --slim, load, ONNX.


def _fit_filters(cifar_dir, tmp_path, **kwargs) -> tuple[Trainer, FilterPruning, ResNet18Classifier]:
    seed_everything(0)
    data = CIFAR10DataModule(str(cifar_dir), batch_size=16, val_size=32, train_subset=64, num_workers=0, download=False)
    pruner = FilterPruning(channel_sparsity=0.5, evaluate_test=False, log_chart=False, **kwargs)
    trainer = quiet_trainer(tmp_path, [pruner], max_epochs=2, enable_checkpointing=True)
    model = ResNet18Classifier(width=4)
    trainer.fit(model, datamodule=data)
    return trainer, pruner, model


@pytest.mark.parametrize("layers", ["inner", "stage"])
def test_filter_pruning_halves_the_channels_and_slims_exactly(cifar_dir, tmp_path, capsys, layers):
    trainer, pruner, model = _fit_filters(cifar_dir, tmp_path, layers=layers)
    inner = [f"layer{s}.{b}.bn1" for s in range(1, 5) for b in range(2)]
    assert [group.bn for group in pruner._groups if group.inner] == inner
    assert len(pruner._groups) == (8 if layers == "inner" else 20)
    assert pruner.channel_sparsity() == 0.5 and pruner.summary_info()["channel_sparsity"] == 0.5
    assert pruner.summary_info()["score"] == pruner.summary_info()["criterion"] == "l1"  # the old key, one release
    for stream in pruner._streams:  # every writer of a stream loses the same channels
        assert all(torch.equal(pruner.masks[g.key], pruner.masks[stream[0].key]) for g in stream)
    for bn in inner:
        keep = pruner.masks[f"{bn}.weight"]
        assert int(keep.sum()) == keep.numel() // 2
        conv1, conv2 = model.get_submodule(bn.replace("bn1", "conv1")), model.get_submodule(bn.replace("bn1", "conv2"))
        # After fine-tuning with momentum, what the pruned channels own is still exactly zero.
        assert not conv1.weight[~keep].any() and not conv2.weight[:, ~keep].any()
        assert not model.get_submodule(bn).weight[~keep].any() and not model.get_submodule(bn).bias[~keep].any()

    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    trainer.save_checkpoint(ckpt)
    capsys.readouterr()
    arguments = [str(ckpt), "--slim", str(tmp_path / "model.slim.pt")]
    with_onnx = all(importlib.util.find_spec(name) for name in ("onnx", "onnxscript", "onnxruntime"))
    if with_onnx:
        arguments += ["--onnx", str(tmp_path / "model.onnx")]
    assert export_main(arguments) == 0
    printed = capsys.readouterr().out
    assert "slimmed ResNet18" in printed and "logits on 8 random images match" in printed
    assert not (tmp_path / "checkpoints" / "last.sparse.pt").exists()  # --slim alone writes no sparse file

    payload = torch.load(tmp_path / "model.slim.pt", weights_only=True)
    assert payload["format"] == slim.FORMAT and payload["channels"]["inner"] == [[2, 2], [4, 4], [8, 8], [16, 16]]
    assert payload["channels"]["streams"] == ([4, 8, 16, 32] if layers == "inner" else [2, 4, 8, 16])
    network = SlimResNet18.from_state_dict(payload["state_dict"]).eval()
    assert payload["metadata"]["parameters_after"] == sum(p.numel() for p in network.parameters())
    model.eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(network(x), model(x), rtol=1e-5, atol=1e-5)
    if with_onnx:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
        (logits,) = session.run(None, {"images": x.numpy()})
        torch.testing.assert_close(torch.from_numpy(logits), model(x).detach(), rtol=1e-4, atol=1e-4)


def test_residual_streams_of_a_resnet18_are_its_four_stages():
    model = ResNet18(width=2)
    streams = residual_streams(model, [g for g in channel_groups(model) if not g.inner])
    assert [[group.bn for group in stream] for stream in streams] == [
        ["bn1", "layer1.0.bn2", "layer1.1.bn2"],
        *[[f"layer{s}.0.bn2", f"layer{s}.0.shortcut.1", f"layer{s}.1.bn2"] for s in (2, 3, 4)],
    ]


def test_stream_rule_prunes_the_same_channels_from_every_writer_by_summed_scores():
    model = ResNet18(width=2)
    stream = residual_streams(model, [g for g in channel_groups(model) if not g.inner])[0]
    keys = [group.key for group in stream]  # bn1, layer1.0.bn2, layer1.1.bn2: 2 channels each
    scores = {keys[0]: torch.tensor([5.0, 0.0]), keys[1]: torch.tensor([0.0, 2.0]), keys[2]: torch.tensor([0.0, 2.0])}
    current = Masks.dense(scores)
    masks = stream_channel_masks(scores, current, [stream], 0.5)
    # Summed: [5, 4]: channel 0 stays in all three, though two of the writers alone would keep channel 1.
    assert all(masks[key].tolist() == [True, False] for key in keys)


def test_filter_pruning_random_score_and_all_layers(cifar_dir, tmp_path):
    _, pruner, _ = _fit_filters(cifar_dir, tmp_path, score="random", layers="all", seed=3)
    assert len(pruner._groups) == 20  # every BatchNorm of a ResNet18 has its own producing convolution
    assert pruner.channel_sparsity() == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"score": "magnitude"}, "score must be one of l1, random"),
        ({"layers": "first"}, "layers must be one of inner, stage, all"),
        ({"channel_sparsity": 1.0}, r"channel_sparsity must be in \(0, 1\), got 1.0"),
    ],
)
def test_filter_pruning_bad_options_fail_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FilterPruning(**{"channel_sparsity": 0.5, **kwargs})


def test_slim_refuses_a_checkpoint_without_channel_masks(tmp_path, capsys):
    ckpt = tmp_path / "dense.ckpt"
    torch.save({"state_dict": ResNet18(width=4).state_dict(), "callbacks": {}}, ckpt)
    assert export_main([str(ckpt), "--slim", str(tmp_path / "out.pt")]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "has no channel to remove" in error and error.count("\n") == 1
    assert not (tmp_path / "out.pt").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="ONNX export is tested on Linux")
def test_onnx_export_of_a_slimmed_state_dict(tmp_path):
    if not all(importlib.util.find_spec(name) for name in ("onnx", "onnxscript", "onnxruntime")):
        pytest.skip("needs onnx, onnxscript and onnxruntime")
    import onnxruntime

    model = _randomized(width=2)
    _kill(model, "layer1.1.bn1", [1])
    result = slim.slim_state_dict(model.state_dict())
    path = export_onnx(result.state_dict, tmp_path / "slim.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 32, 32)
    (logits,) = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(logits), model(x), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------------------------------------
# The latency benchmark's CI mode (structure and the models it compares; the timings are not tested).


def test_latency_benchmark_ci_mode_compares_every_model_in_every_cell():
    from benchmarks.latency import CI_SETTINGS, PRECISIONS
    from benchmarks.latency import main as latency_main

    result = latency_main(["--ci", "--no-save"])
    models = ["dense", "unstructured_90", "inner_30", "inner_50", "inner_70", "stage_30", "stage_50", "stage_70"]
    assert result["models"] == models
    assert len(result["cells"]) == len(models) * len(CI_SETTINGS["batch_sizes"]) * len(PRECISIONS)
    by_model = {cell["model"]: cell for cell in result["cells"]}
    dense = by_model["dense"]["parameters"]
    assert dense == ResNet18Channels.full(CI_SETTINGS["width"]).parameter_count()
    # Unstructured keeps the dense shapes with 90% of the Conv/Linear weights zero; slimming removes parameters.
    assert by_model["unstructured_90"]["parameters"] == dense
    assert by_model["unstructured_90"]["nonzero_parameters"] < 0.2 * dense
    inner = [by_model[f"inner_{share}"]["parameters"] for share in (30, 50, 70)]
    stage = [by_model[f"stage_{share}"]["parameters"] for share in (30, 50, 70)]
    assert dense > inner[0] > inner[1] > inner[2] and all(s < i for s, i in zip(stage, inner, strict=True))
    assert all(cell["median_s"] > 0 and cell["speedup_over_dense"] > 0 for cell in result["cells"])
    assert all(cell["speedup_over_dense"] == 1.0 for cell in result["cells"] if cell["model"] == "dense")
    # Zeros still cost FLOPs on dense kernels; removed channels do not.
    assert by_model["unstructured_90"]["flops_reduction"] == 1.0 and by_model["stage_70"]["flops_reduction"] > 2


def test_an_early_bird_ticket_slims_with_equal_logits(cifar_dir, tmp_path):
    from pruning_callbacks.callbacks.early_bird import EarlyBird

    seed_everything(0)
    data = CIFAR10DataModule(str(cifar_dir), batch_size=16, val_size=32, train_subset=64, num_workers=0, download=False)
    bird = EarlyBird(target_sparsity=0.5, window=2, threshold=1.0, log_chart=False)  # drawn after one epoch
    trainer = Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                      callbacks=[bird])  # fmt: skip
    model = ResNet18Classifier(width=4)
    trainer.fit(model, datamodule=data)
    assert bird.found and bird.masks is not None
    result = slim.slim_state_dict(model.state_dict())
    assert result.parameters_after < result.parameters_before
    assert sum(map(sum, result.after.inner)) < sum(map(sum, result.before.inner))  # inner channels went
    model.eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            SlimResNet18.from_state_dict(result.state_dict).eval()(x), model(x), rtol=1e-5, atol=1e-5
        )
