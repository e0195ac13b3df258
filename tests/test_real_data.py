"""A narrow ResNet18 trains briefly on the real CIFAR-10 (the shared JPEG copy) and beats chance clearly.

Skips when ``../shared/data/cifar10-jpeg.tar.gz`` is absent.
"""

from __future__ import annotations

from lightning.pytorch import Trainer, seed_everything

from datamodules import CIFAR10DataModule
from lit_modules import ResNet18Classifier, RobustnessMetrics


def test_narrow_resnet18_learns_real_cifar10(real_cifar_dir):
    seed_everything(0)
    data = CIFAR10DataModule(
        str(real_cifar_dir), batch_size=128, train_subset=5000, val_size=1000, num_workers=0, download=False
    )
    model = ResNet18Classifier(width=8, lr=0.05, lr_scheduler="cosine")
    trainer = Trainer(
        callbacks=[RobustnessMetrics(adv_samples=256)],
        accelerator="cpu",
        max_epochs=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=data)
    assert data.source == "image_folder" and len(data.test_split) == 10_000
    # Chance is 10%; three short epochs of a width-8 network reach well above it.
    val_acc = float(trainer.callback_metrics["val/acc"])
    results, ood = trainer.test(model, datamodule=data, verbose=False)  # CIFAR-10 test, then the OOD noise set
    assert val_acc > 0.25
    assert results["test/acc"] > 0.25
    # Three short epochs already tell CIFAR-10 images from Gaussian noise by their maximum softmax probability
    # better than chance, and robustness metrics are accuracies.
    assert ood["test/ood_auroc"] > 0.5
    assert 0 <= results["test/adv_pgd_acc"] <= results["test/adv_fgsm_acc"] + 0.05 and results["test/ece"] < 0.5
