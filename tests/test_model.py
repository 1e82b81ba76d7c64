import pytest
import torch

from lrcn.config import ModelConfig
from lrcn.models.lrcn import LRCN, layer_shapes
from lrcn.models.base import count_trainable

# The seed's Keras model.summary(), output shapes per layer (batch dimension dropped).
KERAS_SHAPES = [
    ("conv2d", (20, 64, 64, 16)), ("max_pooling2d", (20, 16, 16, 16)), ("dropout", (20, 16, 16, 16)),
    ("conv2d", (20, 16, 16, 32)), ("max_pooling2d", (20, 4, 4, 32)), ("dropout", (20, 4, 4, 32)),
    ("conv2d", (20, 4, 4, 64)), ("max_pooling2d", (20, 2, 2, 64)), ("dropout", (20, 2, 2, 64)),
    ("conv2d", (20, 2, 2, 64)), ("max_pooling2d", (20, 1, 1, 64)),
    ("flatten", (20, 64)), ("lstm", (32,)), ("dense", (4,)),
]


def test_seed_model_matches_keras_shapes_and_parameter_count():
    model = LRCN(ModelConfig(num_classes=4))
    assert layer_shapes(model) == KERAS_SHAPES
    assert count_trainable(model) == 73_060
    # Keras's per-layer counts: conv 448, 4640, 18496, 36928; LSTM 12416; dense 132
    convs = [m for m in model.cnn if isinstance(m, torch.nn.Conv2d)]
    assert [sum(p.numel() for p in c.parameters()) for c in convs] == [448, 4640, 18496, 36928]
    assert sum(p.numel() for p in model.lstm.parameters() if p.requires_grad) == 12_416
    assert sum(p.numel() for p in model.head.parameters()) == 132


def test_forward_returns_logits_for_keras_layout():
    model = LRCN(ModelConfig(num_classes=4)).eval()
    clips = torch.rand(3, 20, 64, 64, 3)
    logits = model(clips)
    assert logits.shape == (3, 4)
    # Logits are what the head computes, nothing after it: softmax belongs to the loss and to
    # prediction. (A softmaxed output would differ from this and sum to one.)
    with torch.no_grad():
        features = model.frame_features(clips.flatten(0, 1)).view(3, 20, -1)
        _, (hidden, _) = model.lstm(features)
        expected = hidden[-1] @ model.head.weight.T + model.head.bias
    torch.testing.assert_close(logits, expected)
    assert (logits.detach().sum(1) - 1).abs().min() > 1e-3


def test_second_lstm_bias_stays_zero_through_training():
    torch.manual_seed(0)
    model = LRCN(ModelConfig(num_classes=3))
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad])
    before = model.lstm.weight_ih_l0.detach().clone()
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(torch.rand(2, 20, 64, 64, 3)),
                                                 torch.tensor([0, 2]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.count_nonzero(model.lstm.bias_hh_l0) == 0
    assert not torch.equal(before, model.lstm.weight_ih_l0)
    # Keras's unit_forget_bias: the forget gate's bias starts at one
    fresh = LRCN(ModelConfig(num_classes=3))
    assert torch.all(fresh.lstm.bias_ih_l0[32:64] == 1) and torch.all(fresh.lstm.bias_ih_l0[:32] == 0)


@pytest.mark.parametrize("options, expected", [
    ({"num_classes": 6}, 73_060 + 2 * 33),
    ({"lstm_units": 64}, 60_512 + 4 * (64 * (64 + 64) + 64) + 64 * 4 + 4),
    ({"batchnorm": True}, 73_060 + 2 * (16 + 32 + 64 + 64)),
])
def test_seed_suggestions_as_options(options, expected):
    assert count_trainable(LRCN(ModelConfig(**{"num_classes": 4, **options}))) == expected


# Keras's kernel_regularizer on the seed's model: the four Conv2D kernels (3x3, 3->16->32->64
# ->64) and the LSTM's kernel and recurrent kernel (64->4*32, 32->4*32); not the biases, not
# BatchNorm's scale, not the Dense layer (it has no regulariser in the seed).
KERNEL_WEIGHTS = 3 * 3 * (3 * 16 + 16 * 32 + 32 * 64 + 64 * 64) + 64 * 128 + 32 * 128


@pytest.mark.parametrize("batchnorm", [False, True])
def test_l2_regularisation_is_off_by_default_and_counts_conv_and_lstm_kernels(batchnorm):
    assert LRCN(ModelConfig(batchnorm=batchnorm)).regularization_loss().item() == 0
    model = LRCN(ModelConfig(num_classes=4, l2=0.01, batchnorm=batchnorm))
    # A value known by hand: every parameter 0.5, so the term is l2 * 0.25 * (kernel weights).
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.5)
    assert KERNEL_WEIGHTS == 72_624
    expected = 0.01 * 0.25 * KERNEL_WEIGHTS                        # 181.56
    assert model.regularization_loss().item() == pytest.approx(expected, rel=1e-6)
    # (with the Dense kernel it would be 0.01 * 0.25 * 128 = 0.32 more; with biases more still)
    # And on random weights, chosen by name and shape, not by the model's own list: conv
    # kernels are the 4-d weights, the LSTM's are weight_ih/weight_hh.
    torch.manual_seed(0)
    model = LRCN(ModelConfig(num_classes=4, l2=0.01, batchnorm=batchnorm))
    chosen = {name: p for name, p in model.named_parameters()
              if (name.endswith(".weight") and p.dim() == 4)
              or name in ("lstm.weight_ih_l0", "lstm.weight_hh_l0")}
    assert sum(p.numel() for p in chosen.values()) == KERNEL_WEIGHTS
    expected = 0.01 * sum(p.detach().double().pow(2).sum().item() for p in chosen.values())
    assert model.regularization_loss().item() == pytest.approx(expected, rel=1e-5)
    # the term trains the kernels: its gradient reaches them and nothing else
    model.zero_grad()
    model.regularization_loss().backward()
    touched = {name for name, p in model.named_parameters()
               if p.grad is not None and p.grad.abs().sum() > 0}
    assert touched == set(chosen)


def test_too_small_input_is_refused():
    with pytest.raises(ValueError, match="input 32x32 is too small for the pooling"):
        LRCN(ModelConfig(height=32, width=32))
