"""Tests for fedlr/rates/degree.py: degree-aware per-node scales, row hooks and loss weights."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fedlr.rates.degree
from fedlr.rates.degree import (
    degree_loss_weights,
    degree_rule,
    degree_scales,
    row_scaled_updates,
    scale_row_grads,
    weighted_node_loss,
)

# A star on 4 nodes: centre 0, leaves 1, 2, 3; each undirected edge stored both ways (as PyG does).
STAR_EDGE_INDEX = torch.tensor([[0, 1, 0, 2, 0, 3], [1, 0, 2, 0, 3, 0]])


def star_degrees() -> torch.Tensor:
    # In-degree = number of edges pointing at the node, what torch_geometric.utils.degree counts.
    return torch.bincount(STAR_EDGE_INDEX[1], minlength=4).to(torch.float64)


# ---------------------------------------------------------------------------------------------
# degree_rule / degree_scales: worked by hand
# ---------------------------------------------------------------------------------------------


def test_star_degrees():
    assert star_degrees().tolist() == [3.0, 1.0, 1.0, 1.0]  # mean_d = 6 / 4 = 1.5


def test_star_gamma_one():
    # (d + 1) / (mean_d + 1): centre 4 / 2.5 = 8/5, leaves 2 / 2.5 = 4/5; to the power -1.
    scales = degree_scales(star_degrees(), gamma=1.0)
    np.testing.assert_allclose(scales.numpy(), [5 / 8, 5 / 4, 5 / 4, 5 / 4], rtol=1e-15)


def test_star_gamma_half():
    # sqrt(5/8) = 0.790569..., sqrt(5/4) = sqrt(5)/2 = 1.118033...
    scales = degree_scales(star_degrees(), gamma=0.5)
    expected = [math.sqrt(5 / 8), math.sqrt(5) / 2, math.sqrt(5) / 2, math.sqrt(5) / 2]
    np.testing.assert_allclose(scales.numpy(), expected, rtol=1e-15)


def test_star_gamma_two():
    # (5/8)^2 = 25/64, (5/4)^2 = 25/16
    scales = degree_scales(np.array([3, 1, 1, 1]), gamma=2.0)
    np.testing.assert_allclose(scales, [25 / 64, 25 / 16, 25 / 16, 25 / 16], rtol=1e-15)


def test_bounds_clip_both_ends():
    # mean_d = 100, reference 101: leaves 101 / 1 = 101 -> high 2; hub 101 / 401 = 0.252 -> low 0.5.
    scales = degree_scales(np.array([0, 0, 0, 400]), gamma=1.0, low=0.5, high=2.0)
    assert scales.tolist() == [2.0, 2.0, 2.0, 0.5]


def test_bounds_clip_only_high():
    # mean_d = 4, reference 5: isolated node 5 / 1 = 5 -> 4; others 5/3, 5/9 stay.
    scales = degree_scales(np.array([0, 2, 8, 6]), gamma=1.0, low=0.25, high=4.0)
    np.testing.assert_allclose(scales, [4.0, 5 / 3, 5 / 9, 5 / 7], rtol=1e-15)


def test_node_of_mean_degree_gets_exactly_one():
    # mean_d = 1: node 1 has (1 + 1) / (1 + 1) = 1, and 1 ** -gamma = 1 exactly.
    for gamma in (0.5, 1.0, 3.0):
        assert degree_scales(np.array([0, 1, 2]), gamma=gamma)[1] == 1.0


def test_mean_is_over_the_nodes_given():
    # The same node (degree 3) gets a different scale among different nodes:
    # with the star's leaves 5/8; alone it is the mean itself, so 1.
    assert degree_scales(np.array([3, 1, 1, 1]), gamma=1.0)[0] == pytest.approx(5 / 8)
    assert degree_scales(np.array([3]), gamma=1.0).tolist() == [1.0]


def test_defaults():
    # gamma = 0.5, low = 0.1, high = 10: sqrt(5/8) for the star's centre.
    assert degree_scales(np.array([3, 1, 1, 1]))[0] == pytest.approx(math.sqrt(5 / 8))
    # (1 / 100)^-0.5 = 10 -> exactly high; (199 / 100)^-0.5 = 0.709
    np.testing.assert_allclose(degree_scales(np.array([0, 198])), [10.0, 1 / math.sqrt(1.99)])


@pytest.mark.parametrize(
    "degrees",
    [np.array([3, 1, 1, 1]), np.array([0.0, 7.5, 1e6]), torch.tensor([0, 5, 5, 100])],
)
def test_gamma_zero_is_exactly_one(degrees):
    scales = degree_scales(degrees, gamma=0.0)
    assert np.asarray(scales).tolist() == [1.0] * len(degrees)


def test_empty():
    assert degree_scales(np.array([], dtype=int)).shape == (0,)
    assert degree_scales(torch.zeros(0)).shape == (0,)


# ---------------------------------------------------------------------------------------------
# types: numpy in, numpy out; tensor in, tensor out (same dtype and device)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        (torch.float32, torch.float32),
        (torch.float64, torch.float64),
        (torch.float16, torch.float16),
        (torch.int64, torch.get_default_dtype()),
        (torch.int32, torch.get_default_dtype()),
    ],
)
def test_tensor_in_tensor_out(dtype, expected):
    degrees = torch.tensor([3, 1, 1, 1], dtype=dtype)
    scales = degree_scales(degrees, gamma=1.0)
    assert isinstance(scales, torch.Tensor)
    assert scales.dtype == expected and scales.device == degrees.device
    torch.testing.assert_close(scales, torch.tensor([0.625, 1.25, 1.25, 1.25], dtype=expected))


@pytest.mark.parametrize(
    ("degrees", "expected"),
    [
        (np.array([3, 1, 1, 1]), np.float64),
        (np.array([3, 1, 1, 1], dtype=np.int32), np.float64),
        (np.array([3.0, 1.0, 1.0, 1.0], dtype=np.float32), np.float32),
        ([3, 1, 1, 1], np.float64),
    ],
)
def test_numpy_in_numpy_out(degrees, expected):
    scales = degree_scales(degrees, gamma=1.0)
    assert isinstance(scales, np.ndarray) and scales.dtype == expected
    np.testing.assert_allclose(scales, [0.625, 1.25, 1.25, 1.25])


def test_tensor_input_with_grad_is_fine():
    scales = degree_scales(torch.tensor([3.0, 1.0], requires_grad=True), gamma=1.0)
    assert not scales.requires_grad


# ---------------------------------------------------------------------------------------------
# argument and input errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gamma": -0.5}, r"gamma: expected a finite number >= 0, got -0\.5"),
        ({"gamma": math.nan}, r"gamma: expected a finite number >= 0, got nan"),
        ({"gamma": math.inf}, r"gamma: expected a finite number >= 0, got inf"),
        ({"gamma": True}, r"gamma: expected a finite number >= 0, got True"),
        ({"gamma": "0.5"}, r"gamma: expected a finite number >= 0, got '0\.5'"),
        ({"low": 0.0}, r"low: expected a number in \(0, 1\], got 0\.0"),
        ({"low": -0.1}, r"low: expected a number in \(0, 1\], got -0\.1"),
        ({"low": 1.5}, r"low: expected a number in \(0, 1\], got 1\.5"),
        ({"low": math.nan}, r"low: expected a number in \(0, 1\], got nan"),
        ({"high": 0.5}, r"high: expected a finite number >= 1, got 0\.5"),
        ({"high": math.inf}, r"high: expected a finite number >= 1, got inf"),
        ({"high": math.nan}, r"high: expected a finite number >= 1, got nan"),
    ],
)
def test_rule_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=rf"^{message}$"):
        degree_rule(**kwargs)
    with pytest.raises(ValueError, match=rf"^{message}$"):
        degree_scales(np.array([1, 2]), **kwargs)


def test_numpy_integer_and_float_arguments_are_fine():
    rule = degree_rule(gamma=np.float32(1.0), low=np.float64(0.5), high=np.int64(2))
    assert rule(np.array([3, 1, 1, 1])).tolist() == [0.625, 1.25, 1.25, 1.25]


@pytest.mark.parametrize(
    "degrees",
    [
        [1.0, -1.0],
        [1.0, math.nan],
        [1.0, math.inf],
        [[1.0, 2.0]],
        [True, False],
        3.0,
    ],
)
@pytest.mark.parametrize("as_tensor", [False, True])
def test_bad_degrees_raise(degrees, as_tensor):
    data = torch.tensor(degrees) if as_tensor else np.array(degrees)
    with pytest.raises(ValueError, match=r"^degrees\b"):
        degree_scales(data)


# ---------------------------------------------------------------------------------------------
# scale_row_grads: the gradient hook on an embedding table
# ---------------------------------------------------------------------------------------------

NODES = torch.tensor([0, 3, 3, 1, 0, 0])  # row 2 is never looked up


def embedding_pair(sparse: bool = False) -> tuple[torch.nn.Embedding, torch.nn.Embedding]:
    generator = torch.Generator().manual_seed(0)
    plain = torch.nn.Embedding(4, 3, sparse=sparse)
    with torch.no_grad():
        plain.weight.copy_(torch.randn(4, 3, generator=generator))
    hooked = torch.nn.Embedding(4, 3, sparse=sparse)
    hooked.load_state_dict(plain.state_dict())
    return plain, hooked


def embedding_loss(embedding: torch.nn.Embedding) -> torch.Tensor:
    # Non-linear, so that rows get different, non-trivial gradients.
    return (embedding(NODES).tanh() ** 2).sum()


def test_hook_scales_each_row_exactly():
    plain, hooked = embedding_pair()
    scales = degree_scales(star_degrees(), gamma=1.0)  # (5/8, 5/4, 5/4, 5/4)
    scale_row_grads(hooked.weight, scales)
    embedding_loss(plain).backward()
    embedding_loss(hooked).backward()
    expected = plain.weight.grad * scales.to(torch.float32)[:, None]
    assert torch.equal(hooked.weight.grad, expected)
    # and written out for row 0 and the untouched row 2
    assert torch.equal(hooked.weight.grad[0], plain.weight.grad[0] * 0.625)
    assert torch.equal(hooked.weight.grad[2], torch.zeros(3))


def test_hook_with_gamma_zero_is_bit_identical_to_no_hook():
    plain, hooked = embedding_pair()
    scale_row_grads(hooked.weight, degree_scales(star_degrees(), gamma=0.0))
    embedding_loss(plain).backward()
    embedding_loss(hooked).backward()
    assert torch.equal(hooked.weight.grad, plain.weight.grad)


def test_removing_the_handle_restores_plain_gradients():
    plain, hooked = embedding_pair()
    handle = scale_row_grads(hooked.weight, torch.tensor([0.5, 2.0, 3.0, 4.0]))
    handle.remove()
    embedding_loss(plain).backward()
    embedding_loss(hooked).backward()
    assert torch.equal(hooked.weight.grad, plain.weight.grad)


def test_hook_keeps_a_copy_of_the_scales():
    plain, hooked = embedding_pair()
    scales = torch.tensor([0.5, 2.0, 3.0, 4.0])
    scale_row_grads(hooked.weight, scales)
    scales.fill_(100.0)  # too late: the hook holds its own copy
    embedding_loss(plain).backward()
    embedding_loss(hooked).backward()
    expected = plain.weight.grad * torch.tensor([0.5, 2.0, 3.0, 4.0])[:, None]
    assert torch.equal(hooked.weight.grad, expected)


def test_hook_on_a_plain_parameter_with_numpy_scales():
    weight = torch.nn.Parameter(torch.ones(3, 2, dtype=torch.float64))
    scale_row_grads(weight, np.array([0.5, 1.0, 2.0], dtype=np.float32))
    (weight * torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.float64)).sum().backward()
    # d/dw = (1, 2, 3) per row, times (0.5, 1, 2): (0.5, 2, 6)
    assert weight.grad.tolist() == [[0.5, 0.5], [2.0, 2.0], [6.0, 6.0]]


def test_hook_on_sparse_embedding_gradients():
    dense_plain, dense = embedding_pair(sparse=False)
    _, sparse = embedding_pair(sparse=True)
    scales = torch.tensor([0.5, 2.0, 3.0, 4.0])
    scale_row_grads(dense.weight, scales)
    scale_row_grads(sparse.weight, scales)
    embedding_loss(dense).backward()
    embedding_loss(sparse).backward()
    assert sparse.weight.grad.is_sparse
    torch.testing.assert_close(sparse.weight.grad.to_dense(), dense.weight.grad)
    # and a sparse-gradient optimizer steps on it
    before = sparse.weight.detach().clone()
    torch.optim.SGD(sparse.parameters(), lr=0.1).step()
    torch.testing.assert_close(sparse.weight.detach(), before - 0.1 * dense.weight.grad)


def per_row_reference(
    weight: torch.Tensor, optimizer_class, lr: float, scales: torch.Tensor, steps: int, **kwargs
) -> torch.Tensor:
    """Train each row as its own parameter, in its own param group at rate lr * s_v."""
    rows = [torch.nn.Parameter(weight[v : v + 1].detach().clone()) for v in range(len(weight))]
    groups = [{"params": [row], "lr": lr * float(s)} for row, s in zip(rows, scales, strict=True)]
    optimizer = optimizer_class(groups, lr=lr, **kwargs)
    for _ in range(steps):
        optimizer.zero_grad()
        table_loss(torch.cat(rows)).backward()
        optimizer.step()
    return torch.cat(rows).detach()


def table_loss(weight: torch.Tensor) -> torch.Tensor:
    return (weight[NODES].tanh() ** 2).sum() + (weight**2).sum() * 0.01


def start_weight() -> torch.Tensor:
    return torch.randn(4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


SCALES = torch.tensor([0.625, 1.25, 1.25, 2.5], dtype=torch.float64)


def test_hook_with_sgd_momentum_is_a_per_row_learning_rate():
    weight = torch.nn.Parameter(start_weight())
    scale_row_grads(weight, SCALES)
    optimizer = torch.optim.SGD([weight], lr=0.1, momentum=0.9)
    for _ in range(5):
        optimizer.zero_grad()
        table_loss(weight).backward()
        optimizer.step()
    expected = per_row_reference(start_weight(), torch.optim.SGD, 0.1, SCALES, 5, momentum=0.9)
    torch.testing.assert_close(weight.detach(), expected, rtol=1e-12, atol=1e-12)


def test_hook_with_adam_almost_cancels():
    # Adam divides by the running RMS of each element's gradient: a fixed row scale cancels,
    # up to eps, so hooked Adam is plain Adam, and not the per-row-rate Adam.
    def train(hooked: bool) -> torch.Tensor:
        weight = torch.nn.Parameter(start_weight())
        if hooked:
            scale_row_grads(weight, SCALES)
        optimizer = torch.optim.Adam([weight], lr=0.05)
        for _ in range(5):
            optimizer.zero_grad()
            table_loss(weight).backward()
            optimizer.step()
        return weight.detach()

    torch.testing.assert_close(train(hooked=True), train(hooked=False), rtol=0, atol=1e-6)
    per_row = per_row_reference(start_weight(), torch.optim.Adam, 0.05, SCALES, 5)
    assert (train(hooked=True) - per_row).abs().max() > 0.01


# ---------------------------------------------------------------------------------------------
# row_scaled_updates: per-row rates for any optimizer
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("optimizer_class", "kwargs"),
    [
        (torch.optim.SGD, {}),
        (torch.optim.SGD, {"momentum": 0.9, "weight_decay": 0.1}),
        (torch.optim.Adam, {}),
        (torch.optim.AdamW, {"weight_decay": 0.1}),
        (torch.optim.Adagrad, {}),
        (torch.optim.RMSprop, {"momentum": 0.5}),
    ],
)
def test_row_scaled_updates_is_a_per_row_learning_rate(optimizer_class, kwargs):
    weight = torch.nn.Parameter(start_weight())
    optimizer = optimizer_class([weight], lr=0.05, **kwargs)
    for _ in range(5):
        optimizer.zero_grad()
        table_loss(weight).backward()
        with row_scaled_updates(weight, SCALES):
            optimizer.step()
    expected = per_row_reference(start_weight(), optimizer_class, 0.05, SCALES, 5, **kwargs)
    torch.testing.assert_close(weight.detach(), expected, rtol=1e-10, atol=1e-12)


def test_row_scaled_updates_with_gamma_zero_is_bit_identical():
    plain = torch.nn.Parameter(start_weight())
    scaled = torch.nn.Parameter(start_weight())
    ones = degree_scales(torch.tensor([3, 1, 1, 1]), gamma=0.0)
    plain_opt = torch.optim.Adam([plain], lr=0.05)
    scaled_opt = torch.optim.Adam([scaled], lr=0.05)
    for _ in range(3):
        for weight, optimizer in ((plain, plain_opt), (scaled, scaled_opt)):
            optimizer.zero_grad()
            table_loss(weight).backward()
        plain_opt.step()
        with row_scaled_updates(scaled, ones):
            scaled_opt.step()
        assert torch.equal(scaled, plain)


def test_row_scaled_updates_hand_worked_sgd():
    weight = torch.nn.Parameter(torch.tensor([[1.0], [1.0]]))
    (weight * torch.tensor([[2.0], [4.0]])).sum().backward()  # grads 2 and 4
    with row_scaled_updates(weight, [0.5, 2.0]):
        torch.optim.SGD([weight], lr=0.1).step()
    # 1 - 0.1 * 0.5 * 2 = 0.9; 1 - 0.1 * 2 * 4 = 0.2
    torch.testing.assert_close(weight.detach(), torch.tensor([[0.9], [0.2]]))


@pytest.mark.parametrize(
    ("scales", "message"),
    [
        ([1.0, 1.0], r"^scales: expected shape \(4,\), one per row of param, got \(2,\)"),
        ([[1.0] * 4], r"^scales: expected shape \(4,\)"),
        ([1.0, -1.0, 1.0, 1.0], r"^scales: expected finite scales >= 0"),
        ([1.0, math.nan, 1.0, 1.0], r"^scales: expected finite scales >= 0"),
    ],
)
def test_bad_scales_raise(scales, message):
    weight = torch.nn.Parameter(torch.zeros(4, 2))
    with pytest.raises(ValueError, match=message):
        scale_row_grads(weight, torch.tensor(scales))
    with pytest.raises(ValueError, match=message), row_scaled_updates(weight, np.array(scales)):
        pass


def test_param_must_require_grad():
    with pytest.raises(ValueError, match=r"^param\b"):
        scale_row_grads(torch.zeros(4, 2), torch.ones(4))
    with pytest.raises(ValueError, match=r"^param\b"), row_scaled_updates(torch.tensor(1.0), [1]):
        pass


# ---------------------------------------------------------------------------------------------
# degree_loss_weights and weighted_node_loss: per-node weights for shared weights
# ---------------------------------------------------------------------------------------------


def test_star_loss_weights():
    # scales (5/8, 5/4, 5/4, 5/4), mean 35/32 -> (4/7, 8/7, 8/7, 8/7)
    weights = degree_loss_weights(star_degrees(), gamma=1.0)
    np.testing.assert_allclose(weights.numpy(), [4 / 7, 8 / 7, 8 / 7, 8 / 7], rtol=1e-15)
    assert float(weights.mean()) == pytest.approx(1.0)


def test_loss_weights_gamma_zero_are_exactly_one_and_loss_is_the_mean():
    weights = degree_loss_weights(torch.tensor([3.0, 1.0, 1.0, 1.0]), gamma=0.0)
    assert weights.tolist() == [1.0, 1.0, 1.0, 1.0]
    losses = torch.tensor([0.3, 1.7, 0.2, 2.9])
    assert weighted_node_loss(losses, weights) == pytest.approx(float(losses.mean()), rel=1e-7)


def test_weighted_node_loss_hand_worked():
    # (2 * 1 + 1 * 2 + 1 * 4) / (2 + 1 + 1) = 8 / 4 = 2
    assert weighted_node_loss(torch.tensor([1.0, 2.0, 4.0]), torch.tensor([2.0, 1.0, 1.0])) == 2.0
    # star, gamma = 1: (4/7 * 7 + 8/7 * (0 + 0 + 7)) / 4 = (4 + 8) / 4 = 3
    weights = degree_loss_weights(torch.tensor([3.0, 1.0, 1.0, 1.0]), gamma=1.0)
    loss = weighted_node_loss(torch.tensor([7.0, 0.0, 0.0, 7.0]), weights)
    assert float(loss) == pytest.approx(3.0)


def test_weighted_node_loss_gradient_is_weighted():
    per_node = torch.tensor([1.0, 1.0, 1.0, 1.0], requires_grad=True)
    weights = degree_loss_weights(torch.tensor([3.0, 1.0, 1.0, 1.0]), gamma=1.0)
    weighted_node_loss(per_node, weights).backward()
    # d/dl_v = w_v / sum(w) = w_v / 4: (1/7, 2/7, 2/7, 2/7)
    torch.testing.assert_close(per_node.grad, torch.tensor([1 / 7, 2 / 7, 2 / 7, 2 / 7]))


def test_weighted_node_loss_errors():
    with pytest.raises(ValueError, match=r"^weights: expected the shape of per_node_loss"):
        weighted_node_loss(torch.ones(3), torch.ones(4))
    with pytest.raises(ValueError, match=r"^per_node_loss: expected shape \(N,\)"):
        weighted_node_loss(torch.ones(2, 2), torch.ones(2, 2))


def test_loss_weights_empty():
    assert degree_loss_weights(np.array([], dtype=int)).shape == (0,)


# ---------------------------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------------------------

degree_lists = st.lists(st.integers(0, 10_000), min_size=1, max_size=30)
float_degree_lists = st.lists(
    st.floats(0.0, 1e6, allow_nan=False, allow_infinity=False), min_size=1, max_size=30
)
gammas = st.floats(0.0, 4.0)
positive_gammas = st.floats(0.01, 4.0)
lows = st.floats(0.01, 1.0)
highs = st.floats(1.0, 100.0)


@settings(max_examples=200, deadline=None)
@given(degrees=st.one_of(degree_lists, float_degree_lists), gamma=gammas, low=lows, high=highs)
def test_scales_stay_in_bounds(degrees, gamma, low, high):
    scales = degree_scales(np.array(degrees), gamma=gamma, low=low, high=high)
    assert scales.shape == (len(degrees),)
    assert np.all(scales >= low) and np.all(scales <= high)


@settings(max_examples=200, deadline=None)
@given(degrees=float_degree_lists, gamma=positive_gammas, low=lows, high=highs)
def test_scales_non_increasing_in_degree(degrees, gamma, low, high):
    scales = degree_scales(np.sort(np.array(degrees)), gamma=gamma, low=low, high=high)
    assert np.all(np.diff(scales) <= 1e-12 * scales[:-1])


@settings(max_examples=200, deadline=None)
@given(
    mean=st.integers(0, 1000),
    offsets=st.lists(st.integers(0, 1000), max_size=10),
    gamma=gammas,
    low=lows,
    high=highs,
)
def test_node_of_mean_degree_gets_one(mean, offsets, gamma, low, high):
    # Degrees mean +- a, paired, plus the mean itself: mean_d is exactly `mean`.
    offsets = [min(a, mean) for a in offsets]
    degrees = np.array([mean] + [mean - a for a in offsets] + [mean + a for a in offsets])
    assert degree_scales(degrees, gamma=gamma, low=low, high=high)[0] == 1.0


@settings(max_examples=100, deadline=None)
@given(degrees=st.one_of(degree_lists, float_degree_lists), low=lows, high=highs)
def test_gamma_zero_equals_no_rule(degrees, low, high):
    ones = [1.0] * len(degrees)
    assert degree_scales(np.array(degrees), gamma=0.0, low=low, high=high).tolist() == ones
    weights = degree_loss_weights(torch.tensor(degrees), gamma=0.0, low=low, high=high)
    assert weights.tolist() == ones


@settings(max_examples=100, deadline=None)
@given(degrees=st.one_of(degree_lists, float_degree_lists), gamma=gammas, low=lows, high=highs)
def test_numpy_and_torch_agree(degrees, gamma, low, high):
    from_numpy = degree_scales(np.array(degrees, dtype=np.float64), gamma=gamma, low=low, high=high)
    from_torch = degree_scales(
        torch.tensor(degrees, dtype=torch.float64), gamma=gamma, low=low, high=high
    )
    np.testing.assert_allclose(from_torch.numpy(), from_numpy, rtol=1e-12)
    from_float32 = degree_scales(torch.tensor(degrees, dtype=torch.float32), gamma=gamma)
    np.testing.assert_allclose(
        from_float32.numpy(),
        degree_scales(np.array(degrees, dtype=np.float32), gamma=gamma),
        rtol=1e-6,
    )


@settings(max_examples=100, deadline=None)
@given(
    degrees=st.one_of(degree_lists, float_degree_lists),
    gamma=gammas,
    random=st.randoms(use_true_random=False),
)
def test_node_order_does_not_matter(degrees, gamma, random):
    degrees = np.array(degrees, dtype=np.float64)
    perm = np.array(random.sample(range(len(degrees)), len(degrees)))
    np.testing.assert_allclose(
        degree_scales(degrees[perm], gamma=gamma), degree_scales(degrees, gamma=gamma)[perm]
    )


@settings(max_examples=100, deadline=None)
@given(degrees=degree_lists, gamma=st.floats(0.0, 1.0))
def test_loss_weights_unclipped_are_mean_one_powers(degrees, gamma):
    # Wide bounds, so nothing clips: w_v = (d_v + 1)^-gamma / mean_u (d_u + 1)^-gamma.
    weights = degree_loss_weights(np.array(degrees), gamma=gamma, low=1e-6, high=1e6)
    powers = (np.array(degrees, dtype=np.float64) + 1) ** -gamma
    np.testing.assert_allclose(weights, powers / powers.mean(), rtol=1e-10)
    assert weights.mean() == pytest.approx(1.0, rel=1e-12)


# ---------------------------------------------------------------------------------------------
# The docstring examples
# ---------------------------------------------------------------------------------------------


def test_doctests():
    result = doctest.testmod(fedlr.rates.degree)
    assert result.attempted > 0
    assert result.failed == 0
