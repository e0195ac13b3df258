"""The names of the release before keep working for one release, with a DeprecationWarning, and old runs resume.

Moved modules (``pruning_callbacks.dynamic``, ``pruning_callbacks.iterative``, ...) and renamed arguments
(``criterion`` -> ``score``, ``delta_t`` -> ``update_every``, Han's ``iterations`` -> ``rounds``).
"""

from __future__ import annotations

import importlib
import sys
import warnings

import pytest

from analysis import resume
from cli import _is_method, main
from pruning_callbacks import SET, HanMagnitude, IterativePruning, RigL
from pruning_callbacks._moved import MOVED
from tests.helpers import tiny_overrides

OLD_CONFIG = """\
trainer:
  callbacks:
    - class_path: pruning_callbacks.dynamic.RigL
      init_args:
        target_sparsity: 0.5
        delta_t: 2
"""


@pytest.mark.parametrize("old", sorted(MOVED))
def test_every_old_module_path_imports_with_a_warning(old):
    sys.modules.pop(f"pruning_callbacks.{old}", None)
    with pytest.warns(DeprecationWarning, match=f"pruning_callbacks.{old} moved to pruning_callbacks."):
        module = importlib.import_module(f"pruning_callbacks.{old}")
    assert module.__doc__.startswith("Deprecated")
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        _ = module.no_such_name


def test_old_paths_give_the_same_objects():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from pruning_callbacks.dynamic import RigL as OldRigL
        from pruning_callbacks.init_pruning import MaskRecipe, training_batches
        from pruning_callbacks.iterative import ROUND_MASKS_DIR, LotteryTicket, reinitialize, rounds_csv
        from pruning_callbacks.masks import Masks
    import pruning_callbacks
    from pruning_callbacks.callbacks.batches import training_batches as new_training_batches

    assert OldRigL is RigL and LotteryTicket is pruning_callbacks.LotteryTicket and Masks is pruning_callbacks.Masks
    assert MaskRecipe is pruning_callbacks.MaskRecipe and training_batches is new_training_batches
    assert ROUND_MASKS_DIR == "round_masks" and callable(reinitialize) and callable(rounds_csv)


@pytest.mark.parametrize(
    ("make", "attribute", "value"),
    [
        (lambda: RigL(target_sparsity=0.5, delta_t=7), "update_every", 7),
        (lambda: SET(target_sparsity=0.5, delta_t=9), "update_every", 9),
        (lambda: IterativePruning(target_sparsity=0.5, criterion="random"), "score", "random"),
        (lambda: HanMagnitude(quality=1.0, iterations=3), "schedule", None),
    ],
)
def test_old_argument_names_still_work_with_a_warning(make, attribute, value):
    with pytest.warns(DeprecationWarning, match="is now called"):
        callback = make()
    if attribute == "schedule":
        assert callback.schedule.rounds == 3
    else:
        assert getattr(callback, attribute) == value


def test_giving_both_names_with_different_values_is_refused():
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match=r"give update_every .* not both"):
        RigL(target_sparsity=0.5, update_every=5, delta_t=7)


def test_an_old_config_still_loads_through_the_cli(cifar_dir, tmp_path):
    config = tmp_path / "old.yaml"
    config.write_text(OLD_CONFIG)
    with pytest.warns(DeprecationWarning):
        cli = main(["--config", str(config), *tiny_overrides(cifar_dir, tmp_path)], run=False)
    [rigl] = [callback for callback in cli.trainer.callbacks if isinstance(callback, RigL)]
    assert rigl.update_every == 2


def test_a_run_saved_with_the_old_names_is_the_same_experiment():
    old_args = {"target_sparsity": 0.5, "delta_t": 2}
    new_args = {"target_sparsity": 0.5, "update_every": 2, "delta_t": None}
    old = {"trainer": {"callbacks": [{"class_path": "pruning_callbacks.dynamic.RigL", "init_args": old_args}]}}
    new = {"trainer": {"callbacks": [{"class_path": "pruning_callbacks.RigL", "init_args": new_args}]}}
    assert resume.config_differences(old, new, _is_method) == []
    new["trainer"]["callbacks"][0]["init_args"]["update_every"] = 3
    assert resume.config_differences(old, new, _is_method) == ["RigL.update_every 2 -> 3"]
