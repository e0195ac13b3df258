import pytest
import torch

from lit_modules import ResNet18, ResNet18Classifier


def test_parameter_count_of_the_standard_network():
    assert sum(p.numel() for p in ResNet18().parameters()) == 11_173_962
    assert sum(p.numel() for p in ResNet18Classifier().parameters()) == 11_173_962


def test_architecture_cifar_variant():
    net = ResNet18(width=8)
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in net.modules())
    assert [len(getattr(net, f"layer{i}")) for i in range(1, 5)] == [2, 2, 2, 2]
    assert net.layer2[0].shortcut[0].kernel_size == (1, 1)
    assert net.linear.in_features == 64
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_lightning_state_dict_is_a_plain_resnet18_state_dict():
    module = ResNet18Classifier(width=4)
    plain = ResNet18(width=4)
    assert list(module.state_dict()) == list(plain.state_dict())
    plain.load_state_dict(module.state_dict(), strict=True)
    x = torch.randn(3, 3, 32, 32)
    module.eval()
    plain.eval()
    torch.testing.assert_close(module(x), plain(x))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width": 0}, "width must be a positive integer, got 0"),
        ({"optimizer": "rmsprop"}, "optimizer must be one of sgd, adamw, got 'rmsprop'"),
        ({"lr_scheduler": "step"}, "lr_scheduler must be one of multistep, cosine, constant, got 'step'"),
        ({"lr": -1.0}, "lr must be a positive number, got -1.0"),
        ({"milestones": [100, 50]}, "milestones must be increasing positive epochs, got [100, 50]"),
    ],
)
def test_bad_options_raise_one_line_errors(kwargs, message):
    with pytest.raises(ValueError) as error:
        ResNet18Classifier(**kwargs)
    assert str(error.value) == message


def test_optimizer_and_schedule_defaults():
    module = ResNet18Classifier(width=4)
    config = module.configure_optimizers()
    optimizer = config["optimizer"]
    assert isinstance(optimizer, torch.optim.SGD)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.1, 0.9, 5e-4)
    scheduler = config["lr_scheduler"]["scheduler"]
    assert isinstance(scheduler, torch.optim.lr_scheduler.MultiStepLR)
    assert dict(scheduler.milestones) == {60: 1, 120: 1, 160: 1} and scheduler.gamma == 0.2


def test_channels_last_defaults_to_on_for_cuda_and_bf16_cpu_trainers_only():
    from types import SimpleNamespace

    import torch

    from lit_modules import ResNet18Classifier

    def resolved(option, device, precision="32-true"):
        model = ResNet18Classifier(width=4, channels_last=option)
        model._trainer = SimpleNamespace(
            strategy=SimpleNamespace(root_device=torch.device(device)), precision=precision
        )
        return model._resolve_channels_last()

    assert resolved(None, "cuda") and not resolved(None, "cpu")
    assert resolved(None, "cpu", "bf16-mixed") and not resolved(False, "cpu", "bf16-mixed")
    assert resolved(True, "cpu") and not resolved(False, "cuda")
    assert not ResNet18Classifier(width=4)._resolve_channels_last()  # no trainer: plain module, contiguous
