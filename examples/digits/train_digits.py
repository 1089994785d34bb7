"""Train a float MLP and a BitNet-ternary MLP (QAT) on the bundled 8x8 digits; print both accuracies."""

from __future__ import annotations

import argparse
import time

import torch

from bitnet_export import format_statistics, layer_statistics
from bitnet_export.zoo.digits import DigitsMLP, accuracy, load_digits, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    data = load_digits(seed=args.seed)
    print(f"digits: {len(data.y_train)} train / {len(data.y_test)} test samples, 64 features")
    results = {}
    for name, bitnet in (("float MLP", False), ("BitNet ternary MLP", True)):
        torch.manual_seed(args.seed)
        t0 = time.perf_counter()
        model = train(DigitsMLP(bitnet=bitnet), data, epochs=args.epochs, seed=args.seed)
        acc = accuracy(model, data.x_test, data.y_test)
        results[name] = acc
        print(f"{name:<20} test accuracy {acc * 100:6.2f}%  ({time.perf_counter() - t0:.1f} s)")
        if bitnet:
            print(format_statistics(layer_statistics(model)))
    gap = (results["float MLP"] - results["BitNet ternary MLP"]) * 100
    print(f"gap float - ternary: {gap:+.2f} points")


if __name__ == "__main__":
    main()
