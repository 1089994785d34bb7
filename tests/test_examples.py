"""The seed examples and the digits example run and print what they promise."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("script", "shape"),
    [("basic_usage.py", "torch.Size([1, 256])"), ("bitnet_model.py", "torch.Size([32, 10])")],
)
def test_seed_examples(script, shape):
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    assert out.strip().splitlines()[-1] == shape


def test_digits_ternary_within_two_points_of_float():
    from bitnet_export.zoo.digits import DigitsMLP, accuracy, load_digits, train

    data = load_digits(seed=0)
    accs = {}
    for bitnet in (False, True):
        torch.manual_seed(0)
        model = train(DigitsMLP(bitnet=bitnet), data, seed=0)
        accs[bitnet] = accuracy(model, data.x_test, data.y_test)
    print(f"digits float {accs[False]:.4f} ternary {accs[True]:.4f}")
    assert accs[False] > 0.95  # a working float baseline, not a degenerate one
    assert accs[False] - accs[True] <= 0.02


def test_digits_script_prints_both_accuracies():
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "digits" / "train_digits.py"), "--epochs", "5"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    assert re.search(r"float MLP\s+test accuracy\s+\d+\.\d+%", out)
    assert re.search(r"BitNet ternary MLP\s+test accuracy\s+\d+\.\d+%", out)
