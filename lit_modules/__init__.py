"""LightningModules shared by every pruning method."""

from lit_modules.classifier import ResNet18Classifier
from lit_modules.resnet import ResNet18

__all__ = ["ResNet18", "ResNet18Classifier"]
