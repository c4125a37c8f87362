"""hw2lib.nets.hooks: a layer found by name (or a clear error), its output or input captured, the forward
pass stopped after it, and the hook always removed."""

import pytest
import torch
from nets import Tiny

from hw2lib.nets import hooks as H


def _no_hooks(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_capture_gives_output_and_removes_hook():
    model = Tiny()
    x = torch.randn(2, 3, 5, 5)
    with H.capture(model, "conv") as cap:
        assert model.conv._forward_hooks  # installed while inside
        model(x)
    assert cap.output.shape == (2, 4, 5, 5)
    torch.testing.assert_close(cap.output, model.conv(x))
    assert cap.output.requires_grad  # keeps the graph (needed for activation maximization)
    assert _no_hooks(model)


def test_capture_removes_hook_on_exception():
    model = Tiny()
    with pytest.raises(RuntimeError, match="boom"):
        with H.capture(model, "head.1"):
            model(torch.randn(1, 3, 5, 5))
            raise RuntimeError("boom")
    assert not model.head[1]._forward_hooks
    assert _no_hooks(model)


def test_capture_unknown_layer_names_near_matches():
    with pytest.raises(ValueError, match="no layer 'conv1'.*Did you mean: conv"):
        with H.capture(Tiny(), "conv1"):
            pass


def test_capture_unknown_layer_without_near_names_lists_conv_layers():
    with pytest.raises(ValueError, match=r"no layer 'zzz'.*Conv layers: conv\."):
        H.get_module(Tiny(), "zzz")
    with pytest.raises(ValueError, match="module name"):
        H.get_module(Tiny(), "")


def test_capture_stop_runs_only_up_to_the_layer():
    model = Tiny()
    calls = []
    model.head.register_forward_hook(lambda *_: calls.append("head"))
    x = torch.randn(2, 3, 5, 5)
    with H.capture(model, "conv", stop=True) as cap:
        out = cap.run(x)
    torch.testing.assert_close(out, model.conv(x))
    assert calls == []  # the forward pass stopped before the head
    model.head._forward_hooks.clear()
    assert _no_hooks(model)


def test_capture_run_names_a_layer_the_forward_pass_never_calls():
    model = Tiny()
    model.unused = torch.nn.Linear(2, 2)
    with pytest.raises(RuntimeError, match="'unused' was not called"):
        with H.capture(model, "unused") as cap:
            cap.run(torch.randn(1, 3, 5, 5))
    assert _no_hooks(model)


def test_capture_detach_and_input_with_stop():
    model = Tiny()
    x = torch.randn(2, 3, 5, 5)
    with H.capture(model, "conv", detach=True) as cap:
        model(x)
    assert not cap.output.requires_grad
    torch.testing.assert_close(cap.output, model.conv(x).detach())
    # what="input": the input of head.3 (the last Linear) = the ReLU's output; stop skips head.3
    calls = []
    model.head[3].register_forward_hook(lambda *_: calls.append("head.3"))
    with H.capture(model, "head.3", what="input", stop=True) as cap:
        out = cap.run(x)
    expected = model.head[2](model.head[1](model.head[0](model.pool(torch.relu(model.conv(x))))))
    torch.testing.assert_close(out, expected)
    assert out.shape == (2, 6) and calls == []
    model.head[3]._forward_hooks.clear()
    assert _no_hooks(model)
    with pytest.raises(ValueError, match="'output' or 'input', got 'grad'"):
        with H.capture(model, "conv", what="grad"):
            pass
    assert _no_hooks(model)
