"""Notebook 00's check (normalisation inside the model): the correct answer and its variants pass; each typical
wrong answer is rejected with a message that names that mistake."""
import pytest
import torch
import torch.nn as nn

from clead_lite.exercises import check_normalisation_inside_model as check
from clead_lite.exercises.nb00_setup import NormalizedModel
from clead_lite.models import Normalize


def verdict(fn, capsys):
    ok = check(fn)
    return ok, capsys.readouterr().out


class NormOk(nn.Module):
    def __init__(self, net, mean, std):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x):
        return self.net((x - self.mean) / self.std)


def wrong(expr):
    """A NormOk whose forward feeds net with `expr(x, mean, std)`."""
    class Wrong(NormOk):
        def forward(self, x):
            return self.net(expr(x, self.mean, self.std))
    return Wrong


class NormFlat(NormOk):
    def __init__(self, net, mean, std):
        nn.Module.__init__(self)
        self.net = net
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("std", torch.tensor(std))


class NormParam(NormOk):
    def __init__(self, net, mean, std):
        nn.Module.__init__(self)
        self.net = net
        self.mean = nn.Parameter(torch.tensor(mean).view(1, -1, 1, 1))
        self.std = nn.Parameter(torch.tensor(std).view(1, -1, 1, 1))


class NormPlain(NormOk):
    def __init__(self, net, mean, std):
        nn.Module.__init__(self)
        self.net = net
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)


class NormStub(NormOk):
    def forward(self, x):
        raise NotImplementedError("Exercise 0: normalise")


class NormLibrary(nn.Module):          # a variant: the library's Normalize module in front of net
    def __init__(self, net, mean, std):
        super().__init__()
        self.norm, self.net = Normalize(mean, std), net

    def forward(self, x):
        return self.net(self.norm(x))


WRONG = [
    ("raw pixels", wrong(lambda x, m, s: x), ["raw pixels"]),
    ("times std", wrong(lambda x, m, s: (x - m) * s), ["multiplied by std"]),
    ("divide first", wrong(lambda x, m, s: x / s - m), ["divided before subtracting"]),
    ("twice", wrong(lambda x, m, s: ((x - m) / s - m) / s), ["normalised twice"]),
    ("swapped", wrong(lambda x, m, s: (x - s) / m), ["swapped mean and std"]),
    ("variance", wrong(lambda x, m, s: (x - m) / s ** 2), ["variance"]),
    ("batch stats", wrong(lambda x, m, s: (x - x.mean()) / x.std()), ["batch's own mean and std"]),
    ("batch channel stats",
     wrong(lambda x, m, s: (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)),
     ["batch's own mean and std"]),
    ("flat buffers", NormFlat, ["(1, C, 1, 1)"]),
    ("parameters", NormParam, ["trainable parameters", "register_buffer"]),
    ("plain tensors", NormPlain, ["plain tensor attributes", "register_buffer"]),
]


@pytest.mark.parametrize("fn, phrases", [w[1:] for w in WRONG], ids=[w[0] for w in WRONG])
def test_rejects_each_mistake_by_name(fn, phrases, capsys):
    ok, out = verdict(fn, capsys)
    assert ok is False and "❌" in out and "✅" not in out, out
    for phrase in phrases:
        assert phrase in out, f"{phrase!r} not in:\n{out}"


RIGHT = [
    ("reference", NormOk),
    ("sub/div methods", wrong(lambda x, m, s: x.sub(m).div(s))),
    ("times reciprocal", wrong(lambda x, m, s: (x - m) * (1.0 / s))),
    ("library Normalize", NormLibrary),
    ("checks' reference", NormalizedModel),
]


@pytest.mark.parametrize("fn", [r[1] for r in RIGHT], ids=[r[0] for r in RIGHT])
def test_accepts_correct_variants(fn, capsys):
    ok, out = verdict(fn, capsys)
    assert ok and "pixel units" in out, out


def test_stub_gets_not_implemented_only(capsys):
    ok, out = verdict(NormStub, capsys)
    assert not ok and "not implemented yet" in out and "Exercise 0" in out and "(1, C, 1, 1)" not in out
