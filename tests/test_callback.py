"""Callback tests on a tiny ResNet18 with synthetic tensors: masks stay exact, state is saved, errors are clear."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset

from lit_modules import ResNet18, ResNet18Classifier
from pruning_callbacks import Masks, PruneAtInit
from pruning_callbacks.engine.apply import MaskApplier
from tests.helpers import EpochPruner, quiet_trainer


def loader(n: int = 64, batch_size: int = 16, seed: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 32, 32, generator=generator)
    y = torch.randint(0, 10, (n,), generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def trainer(tmp_path, **kwargs) -> Trainer:
    return quiet_trainer(tmp_path, **{"max_epochs": 1, **kwargs})


def pruned_positions_are_zero(module: torch.nn.Module, masks: Masks) -> bool:
    params = dict(module.named_parameters())
    return all(bool((params[name].detach()[~mask.cpu()] == 0).all()) for name, mask in masks.items())


# On CPU, Lightning runs "16-mixed" as bf16; the fp16 + GradScaler path is tested directly below.
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_pruned_weights_and_momentum_stay_exactly_zero(tmp_path, precision):
    model = ResNet18Classifier(width=4, lr=0.5, momentum=0.9, weight_decay=5e-4)
    callback = PruneAtInit(target_sparsity=0.7, score="random", scope="global")
    fit = trainer(tmp_path, precision=precision, max_epochs=3, callbacks=[callback])
    fit.fit(model, train_dataloaders=loader(n=96))
    assert fit.global_step == 18
    masks = callback.masks
    assert masks is not None and masks.remaining() == round(0.3 * masks.total)
    assert pruned_positions_are_zero(model, masks)
    # The kept weights did train.
    assert any(bool((p.detach() != 0).any()) for p in callback.parameters.values())
    optimizer = fit.optimizers[0]
    for name, param in callback.parameters.items():
        momentum = optimizer.state[param]["momentum_buffer"]
        assert bool((momentum[~masks[name]] == 0).all()), name


def test_gradient_accumulation_masks_after_each_real_step(tmp_path):
    model = ResNet18Classifier(width=4)
    callback = PruneAtInit(target_sparsity=0.5, score="magnitude", scope="layerwise", distribution="erk")
    fit = trainer(tmp_path, accumulate_grad_batches=2, callbacks=[callback])
    fit.fit(model, train_dataloaders=loader(n=64))
    assert fit.global_step == 2
    assert pruned_positions_are_zero(model, callback.masks)


def test_mask_applier_zeroes_weights_and_optimizer_state_in_place():
    layer = torch.nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
    masks = Masks({"weight": torch.tensor([[1, 0, 1], [0, 0, 1]])})
    applier = MaskApplier({"weight": layer.weight}, masks)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    handle = applier.attach(optimizer)
    applier.apply_()
    assert layer.weight.tolist() == [[1.0, 0.0, 3.0], [0.0, 0.0, 6.0]]
    for _ in range(5):
        optimizer.zero_grad()
        layer(torch.ones(4, 3)).pow(2).sum().backward()
        optimizer.step()
    momentum = optimizer.state[layer.weight]["momentum_buffer"]
    assert (layer.weight[~masks["weight"]] == 0).all() and (momentum[~masks["weight"]] == 0).all()
    assert (layer.weight[masks["weight"]] != torch.tensor([1.0, 3.0, 6.0])).all()
    handle.remove()
    optimizer.zero_grad()
    layer(torch.ones(4, 3)).pow(2).sum().backward()
    optimizer.step()
    assert (layer.weight[~masks["weight"]] != 0).any()  # detached: nothing keeps it sparse any more


def test_fp16_grad_scaler_steps_keep_masks_and_skipped_steps_change_nothing():
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 4, bias=False)
    masks = Masks({"weight": torch.rand(4, 8) > 0.5})
    applier = MaskApplier({"weight": layer.weight}, masks)
    applier.apply_()
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    applier.attach(optimizer)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    for step in range(6):
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            loss = layer(torch.randn(16, 8)).float().pow(2).mean()
        if step == 3:
            loss = loss * float("inf")  # an overflow: the scaler must skip this step
        before = layer.weight.detach().clone()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if step == 3:
            assert torch.equal(layer.weight, before)
        assert (layer.weight[~masks["weight"]] == 0).all()
        assert (optimizer.state[layer.weight]["momentum_buffer"][~masks["weight"]] == 0).all()


def test_checkpoint_holds_masks_and_a_plain_state_dict_with_zeros(tmp_path):
    model = ResNet18Classifier(width=4)
    callback = PruneAtInit(target_sparsity=0.8, score="magnitude", scope="global", exclude=["conv1", "linear"])
    fit = trainer(tmp_path, callbacks=[callback])
    fit.fit(model, train_dataloaders=loader())
    path = tmp_path / "pruned.ckpt"
    fit.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    plain = ResNet18(width=4)
    plain.load_state_dict(checkpoint["state_dict"], strict=True)
    state = checkpoint["callbacks"]["PruneAtInit"]
    restored = Masks.from_state_dict(state["masks"])
    assert set(restored) == set(callback.parameters) and "conv1.weight" not in restored
    assert restored.remaining() == callback.masks.remaining()
    assert state["mask_updates"] == 1 and state["seed"] == callback.seed
    assert pruned_positions_are_zero(plain, restored)
    assert bool((plain.conv1.weight != 0).all()) and bool((plain.linear.weight != 0).all())


def test_resume_restores_masks_instead_of_recomputing(tmp_path):
    model = ResNet18Classifier(width=4)
    first = EpochPruner(fraction=0.5)
    fit = trainer(tmp_path, max_epochs=2, callbacks=[first])
    fit.fit(model, train_dataloaders=loader())
    path = tmp_path / "two_epochs.ckpt"
    fit.save_checkpoint(path)
    second = EpochPruner(fraction=0.5)
    resumed = trainer(tmp_path, max_epochs=3, callbacks=[second])
    resumed.fit(ResNet18Classifier(width=4), train_dataloaders=loader(), ckpt_path=path)
    # 30% at init, then half of what remains at each of three epoch ends.
    assert second.mask_updates == 4
    assert second.masks.remaining() == first.masks.remaining() - round(first.masks.remaining() * 0.5)
    assert second.masks.is_subset_of(first.masks)


def test_checkpoint_masks_that_do_not_fit_the_model_are_a_clear_error(tmp_path):
    small = ResNet18Classifier(width=4)
    fit = trainer(tmp_path, callbacks=[PruneAtInit(target_sparsity=0.5)])
    fit.fit(small, train_dataloaders=loader())
    path = tmp_path / "width4.ckpt"
    fit.save_checkpoint(path)
    callback = PruneAtInit(target_sparsity=0.5)
    callback.setup(trainer(tmp_path), ResNet18Classifier(width=8), "fit")
    state = torch.load(path, weights_only=True)["callbacks"]["PruneAtInit"]
    with pytest.raises(ValueError, match="the checkpoint's masks do not fit the model") as error:
        callback.load_state_dict(state)
    assert "\n" not in str(error.value)


def test_pattern_that_matches_nothing_fails_at_setup(tmp_path):
    callback = PruneAtInit(target_sparsity=0.5, exclude=["classifier"])
    with pytest.raises(ValueError, match="'classifier' matches no prunable parameter"):
        trainer(tmp_path, callbacks=[callback]).fit(ResNet18Classifier(width=4), train_dataloaders=loader())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target_sparsity": 1.0}, r"target_sparsity must be in \[0, 1\), got 1.0"),
        ({"target_sparsity": -0.1}, r"target_sparsity must be in \[0, 1\), got -0.1"),
        ({"target_sparsity": 0.5, "score": "taylor"}, "unknown score 'taylor'; known scores: .*magnitude.*random"),
        ({"target_sparsity": 0.5, "distribution": "gaussian"}, "unknown distribution 'gaussian'; known"),
        ({"target_sparsity": 0.5, "scope": "per_layer"}, "scope must be one of global, layerwise"),
        ({"target_sparsity": 0.5, "scope": "global", "distribution": "erk"}, "applies only to scope 'layerwise'"),
    ],
)
def test_bad_callback_arguments_fail_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PruneAtInit(**kwargs)


def test_sparsity_is_logged_with_a_per_layer_chart(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path, name="", version="")
    callback = PruneAtInit(target_sparsity=0.9, score="random", distribution="erk")
    fit = trainer(tmp_path, logger=logger, callbacks=[callback], log_every_n_steps=1)
    fit.fit(ResNet18Classifier(width=4), train_dataloaders=loader())
    assert fit.callback_metrics["sparsity/global"] == pytest.approx(callback.masks.sparsity())
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0}).Reload()
    assert "sparsity/per_layer" in events.Tags()["images"]
    scalars = events.Tags()["scalars"]
    assert {"sparsity/global", "sparsity/conv1.weight", "sparsity/linear.weight"} <= set(scalars)
    logged = events.Scalars("sparsity/layer1.0.conv1.weight")[0].value
    assert logged == pytest.approx(callback.masks.layer_sparsity()["layer1.0.conv1.weight"])
