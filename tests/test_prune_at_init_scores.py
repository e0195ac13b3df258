"""SNIP, GraSP and SynFlow scores against hand-written references; the scores leave the model as it was."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pruning_callbacks.engine.masks import Masks
from pruning_callbacks.engine.scores import ScoreContext, compute_scores, get_score, needs_batches

TEMPERATURE = 200.0


def two_layer_net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).double()


def batches(seed: int = 1, sizes: tuple[int, ...] = (3, 5)) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(n, 4, generator=generator, dtype=torch.float64), torch.randint(0, 3, (n,), generator=generator))
        for n in sizes
    ]


def context(net: nn.Module, data=None, masks: Masks | None = None, **options) -> ScoreContext:
    params = {"0.weight": net[0].weight, "2.weight": net[2].weight}
    return ScoreContext(
        params=params, masks=masks or Masks.dense(params), seed=0, module=net, batches=data, options=options
    )


# ----------------------------------------------------------------------------------------------------------------------
# Hand-written references: backpropagation and its directional derivative, written out for
# logits = W2 relu(W1 x + b1) + b2 and L = mean cross-entropy of logits / T over all samples.


def reference_gradient(net, x, y, temperature=1.0):
    w1, b1, w2, b2 = (t.detach() for t in (net[0].weight, net[0].bias, net[2].weight, net[2].bias))
    pre = x @ w1.T + b1
    active = (pre > 0).double()
    hidden = pre * active
    logits = hidden @ w2.T + b2
    probs = torch.softmax(logits / temperature, dim=1)
    d_logits = (probs - F.one_hot(y, 3).double()) / (len(y) * temperature)
    d_hidden = d_logits @ w2
    d_pre = d_hidden * active
    return {"0.weight": d_pre.T @ x, "2.weight": d_logits.T @ hidden}, (x, active, hidden, probs, d_logits, d_pre)


def reference_hessian_product(net, x, y, direction, temperature):
    """d/de of the hand-written gradient at W + e * direction (ReLU pattern fixed), in closed form."""
    _, (x, active, hidden, probs, d_logits, _) = reference_gradient(net, x, y, temperature)
    w2 = net[2].weight.detach()
    v1, v2 = direction["0.weight"], direction["2.weight"]
    dd_pre_in = x @ v1.T
    dd_hidden = dd_pre_in * active
    dd_logits_value = hidden @ v2.T + dd_hidden @ w2.T
    scaled = dd_logits_value / temperature
    dd_probs = probs * (scaled - (probs * scaled).sum(dim=1, keepdim=True))
    dd_logits = dd_probs / (len(y) * temperature)
    dd_w2 = dd_logits.T @ hidden + d_logits.T @ dd_hidden
    dd_hidden_grad = dd_logits @ w2 + d_logits @ v2
    dd_pre = dd_hidden_grad * active
    dd_w1 = dd_pre.T @ x
    return {"0.weight": dd_w1, "2.weight": dd_w2}


def all_samples(data):
    return torch.cat([x for x, _ in data]), torch.cat([y for _, y in data])


def test_snip_matches_the_hand_written_connection_sensitivity():
    net, data = two_layer_net(), batches()
    x, y = all_samples(data)
    grads, _ = reference_gradient(net, x, y)
    expected = {name: (grads[name] * net.get_parameter(name).detach()).abs() for name in grads}
    scores = get_score("snip")(context(net, data))
    for name in expected:
        torch.testing.assert_close(scores[name], expected[name], rtol=1e-10, atol=1e-14)


def test_grasp_matches_the_hand_written_hessian_gradient_product_with_the_papers_sign():
    net, data = two_layer_net(), batches()
    x, y = all_samples(data)
    grads, _ = reference_gradient(net, x, y, TEMPERATURE)
    hessian_gradient = reference_hessian_product(net, x, y, grads, TEMPERATURE)
    grasp_paper = {name: -net.get_parameter(name).detach() * hessian_gradient[name] for name in grads}  # S(-theta)
    scores = get_score("grasp")(context(net, data, temperature=TEMPERATURE))
    for name in grasp_paper:
        torch.testing.assert_close(scores[name], -grasp_paper[name], rtol=1e-8, atol=1e-20)
    # Keeping our highest scores removes the paper's highest S(-theta): the kept weights have the lowest S(-theta).
    flat_paper = torch.cat([grasp_paper[name].reshape(-1) for name in grasp_paper])
    flat_ours = torch.cat([scores[name].reshape(-1) for name in grasp_paper])
    kept = torch.topk(flat_ours, 10).indices
    removed_by_paper = torch.topk(flat_paper, flat_paper.numel() - 10).indices
    assert set(kept.tolist()).isdisjoint(removed_by_paper.tolist())


def test_grasp_temperature_changes_the_scores():
    net, data = two_layer_net(), batches()
    hot = get_score("grasp")(context(net, data, temperature=1.0))
    cold = get_score("grasp")(context(net, data))  # default 200
    x, y = all_samples(data)
    grads, _ = reference_gradient(net, x, y, 1.0)
    expected = reference_hessian_product(net, x, y, grads, 1.0)
    torch.testing.assert_close(hot["0.weight"], net[0].weight.detach() * expected["0.weight"], rtol=1e-8, atol=1e-20)
    assert not torch.allclose(hot["0.weight"], cold["0.weight"])


def test_synflow_matches_the_hand_written_flow_on_a_masked_net():
    net = two_layer_net()
    with torch.no_grad():
        net[0].bias.uniform_(-1, 1)
        net[2].bias.uniform_(-1, 1)
    mask1 = torch.rand(6, 4, generator=torch.Generator().manual_seed(3)) > 0.3
    masks = Masks({"0.weight": mask1, "2.weight": torch.ones(3, 6, dtype=torch.bool)})
    scores = get_score("synflow")(context(net, masks=masks, input_shape=(4,)))
    w1 = net[0].weight.detach().abs() * mask1
    w2, b1 = net[2].weight.detach().abs(), net[0].bias.detach().abs()
    # R = 1^T (|W2| (|W1 ⊙ M1| 1 + |b1|) + |b2|): dR/dW1_ij = sum_k |W2|_ki, dR/dW2_ki = (|W1 ⊙ M1| 1 + |b1|)_i.
    expected = {
        "0.weight": w2.sum(dim=0)[:, None] * w1,
        "2.weight": (w1.sum(dim=1) + b1)[None, :] * w2,
    }
    peak = max(float(score.max()) for score in expected.values())
    for name in expected:
        torch.testing.assert_close(scores[name], expected[name] / peak, rtol=1e-12, atol=0)
    assert bool((scores["0.weight"][~mask1] == 0).all())


def test_synflow_is_data_independent_and_needs_an_input_shape():
    net = two_layer_net()
    with_data = get_score("synflow")(context(net, batches(seed=1)))
    other_data = get_score("synflow")(context(net, [(torch.full((7, 4), 9.0, dtype=torch.float64), torch.zeros(7))]))
    shape_only = get_score("synflow")(context(net, input_shape=[4]))
    for name in with_data:
        assert torch.equal(with_data[name], other_data[name]) and torch.equal(with_data[name], shape_only[name])
    with pytest.raises(ValueError, match="score 'synflow' needs the shape of one input: set input_shape"):
        get_score("synflow")(context(net))


def deep_net(depth: int = 40, width: int = 32, gain: float = 4.0) -> nn.Sequential:
    torch.manual_seed(0)
    layers = []
    for _ in range(depth):
        layer = nn.Linear(width, width, bias=False)
        nn.init.normal_(layer.weight, std=gain / width**0.5)
        layers += [layer, nn.ReLU()]
    return nn.Sequential(*layers)


def test_synflow_is_finite_where_float32_overflows():
    net = deep_net()
    flow32 = torch.ones(1, 32)
    with torch.no_grad():
        for module in net:
            if isinstance(module, nn.Linear):
                flow32 = flow32 @ module.weight.abs().T
    assert not torch.isfinite(flow32.sum())  # a float32 SynFlow would see inf, then NaN scores
    params = {name: p for name, p in net.named_parameters()}
    scores = compute_scores(
        "synflow", ScoreContext(params, Masks.dense(params), 0, module=net, options={"input_shape": [32]})
    )
    flat = torch.cat([score.reshape(-1) for score in scores.values()])
    assert bool(torch.isfinite(flat).all()) and float(flat.max()) == 1.0 and scores["0.weight"].dtype == torch.float32
    assert all(bool((score > 0).any()) for score in scores.values())


class Probe(nn.Module):
    """A small conv net with BatchNorm, to check that scoring leaves every bit of the model as it was."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))


@pytest.mark.parametrize("name", ["snip", "grasp", "synflow"])
def test_scores_leave_weights_buffers_gradients_and_modes_unchanged(name):
    torch.manual_seed(0)
    probe = Probe()
    with torch.no_grad():
        probe.bn.running_mean.uniform_(-1, 1)
        probe.conv.weight[0] *= -1
    probe.train()
    probe.bn.eval()  # a mixed state must come back mixed
    before = {key: value.clone() for key, value in probe.state_dict().items()}
    modes = {key: module.training for key, module in probe.named_modules()}
    params = {"conv.weight": probe.conv.weight, "head.weight": probe.head.weight}
    data = [(torch.randn(8, 3, 6, 6), torch.randint(0, 3, (8,)))]
    scores = compute_scores(name, ScoreContext(params, Masks.dense(params), 0, module=probe, batches=data))
    assert all(bool(torch.isfinite(score).all()) and bool((score != 0).any()) for score in scores.values())
    for key, value in probe.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(param.grad is None for param in probe.parameters())
    assert {key: module.training for key, module in probe.named_modules()} == modes


def test_data_dependent_scores_say_what_they_need():
    net = two_layer_net()
    assert needs_batches("snip") and needs_batches("grasp") and not needs_batches("synflow")
    with pytest.raises(ValueError, match="score 'snip' is data-dependent and needs training batches"):
        get_score("snip")(context(net))
    with pytest.raises(ValueError, match="score 'grasp' needs the model"):
        get_score("grasp")(ScoreContext({"w": torch.ones(2)}, Masks.dense({"w": torch.ones(2)}), 0, batches=batches()))
    with pytest.raises(ValueError, match=r"GraSP temperature must be positive, got 0\.0"):
        get_score("grasp")(context(net, batches(), temperature=0.0))


# ----------------------------------------------------------------------------------------------------------------------
# BatchNorm mode while scoring: a conv + BatchNorm net against a hand-written forward pass whose normalization uses
# either the batch's statistics (train) or the running ones (eval). Without BatchNorm the mode would be invisible.


def conv_bn_net(seed: int = 0) -> Probe:
    torch.manual_seed(seed)
    net = Probe().double()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
        net.bn.weight.uniform_(0.5, 1.5)
        net.bn.bias.uniform_(-0.2, 0.2)
    return net


def conv_bn_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(3)
    return [
        (
            torch.randn(n, 3, 5, 5, generator=generator, dtype=torch.float64),
            torch.randint(0, 3, (n,), generator=generator),
        )
        for n in (4, 6)
    ]


def reference_conv_bn_loss(net: Probe, weights: dict, data, mode: str, temperature: float = 1.0) -> torch.Tensor:
    """Mean cross-entropy of ``logits / T`` over all samples, the forward pass written out by hand."""
    bn = net.bn
    total = sum(len(y) for _, y in data)
    loss = torch.zeros((), dtype=torch.float64)
    for x, y in data:
        z = F.conv2d(x, weights["conv.weight"], net.conv.bias.detach(), padding=1)
        if mode == "train":
            mean, var = z.mean(dim=(0, 2, 3)), z.var(dim=(0, 2, 3), unbiased=False)
        else:
            mean, var = bn.running_mean, bn.running_var
        normalized = (z - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + bn.eps)
        hidden = torch.relu(normalized * bn.weight.detach().view(1, -1, 1, 1) + bn.bias.detach().view(1, -1, 1, 1))
        logits = hidden.mean(dim=(2, 3)) @ weights["head.weight"].T + net.head.bias.detach()
        loss = loss + F.cross_entropy(logits / temperature, y, reduction="sum") / total
    return loss


def reference_conv_bn_scores(net: Probe, data, method: str, mode: str) -> dict[str, torch.Tensor]:
    weights = {
        name: net.get_parameter(name).detach().clone().requires_grad_() for name in ("conv.weight", "head.weight")
    }
    temperature = TEMPERATURE if method == "grasp" else 1.0
    loss = reference_conv_bn_loss(net, weights, data, mode, temperature)
    grads = torch.autograd.grad(loss, list(weights.values()), create_graph=method == "grasp")
    if method == "snip":
        return {name: (g * w).abs().detach() for (name, w), g in zip(weights.items(), grads, strict=True)}
    fixed = [g.detach() for g in grads]
    hessian_gradient = torch.autograd.grad(
        sum((f * g).sum() for f, g in zip(fixed, grads, strict=True)), list(weights.values())
    )
    return {name: (w * hg).detach() for (name, w), hg in zip(weights.items(), hessian_gradient, strict=True)}


@pytest.mark.parametrize("method", ["snip", "grasp"])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_scores_follow_the_bn_mode_on_a_conv_bn_net(method, mode):
    net, data = conv_bn_net(), conv_bn_batches()
    params = {"conv.weight": net.conv.weight, "head.weight": net.head.weight}
    options = {"bn_mode": mode, "temperature": TEMPERATURE}
    scores = compute_scores(
        method, ScoreContext(params, Masks.dense(params), 0, module=net, batches=data, options=options)
    )
    expected = reference_conv_bn_scores(net, data, method, mode)
    other = reference_conv_bn_scores(net, data, method, "train" if mode == "eval" else "eval")
    for name in expected:
        torch.testing.assert_close(scores[name].double(), expected[name], rtol=1e-5, atol=1e-12)
        assert not torch.allclose(expected[name], other[name], rtol=1e-3)  # the two modes really differ here


@pytest.mark.parametrize(("method", "default"), [("snip", "eval"), ("grasp", "train")])
def test_each_score_defaults_to_its_reference_bn_mode(method, default):
    net, data = conv_bn_net(), conv_bn_batches()
    params = {"conv.weight": net.conv.weight, "head.weight": net.head.weight}
    options = {"temperature": TEMPERATURE}
    scores = compute_scores(
        method, ScoreContext(params, Masks.dense(params), 0, module=net, batches=data, options=options)
    )
    expected = reference_conv_bn_scores(net, data, method, default)
    for name in expected:
        torch.testing.assert_close(scores[name].double(), expected[name], rtol=1e-5, atol=1e-12)
    with pytest.raises(ValueError, match="bn_mode must be one of eval, train, got 'inference'"):
        compute_scores(method, ScoreContext(params, Masks.dense(params), 0, module=net, batches=data,
                                            options={"bn_mode": "inference"}))  # fmt: skip
