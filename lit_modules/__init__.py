"""LightningModules shared by every pruning method, and the test-time metrics callback."""

from lit_modules.classifier import ResNet18Classifier
from lit_modules.resnet import ResNet18
from lit_modules.robustness import RobustnessMetrics

__all__ = ["ResNet18", "ResNet18Classifier", "RobustnessMetrics"]
