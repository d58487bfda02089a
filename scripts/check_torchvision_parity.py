"""Check that our models are torchvision's, weight for weight and output for output.

For every model whose card names a ``torchvision_name``: build torchvision's (random weights,
with random BatchNorm statistics so BN is not the identity), load its ``state_dict`` into ours
with ``strict=True``, and compare eval-mode outputs on one random input. Needs a Python where
both torchvision and classicnets import; classicnets itself never depends on torchvision::

    PYTHONPATH=src /tmp/tvenv/bin/python scripts/check_torchvision_parity.py [names ...]

Exits non-zero if a model does not load or differs by more than ``--tol``.
"""

from __future__ import annotations

import argparse
import sys

import torch


def randomize_bn_stats(model: torch.nn.Module, gen: torch.Generator) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=gen) * 0.5 + 0.25)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)


def check(name: str, tv_name: str, size: int, gen: torch.Generator) -> tuple[int, float, float]:
    import torchvision.models as tvm

    import classicnets

    theirs = getattr(tvm, tv_name)(weights=None).eval()
    with torch.no_grad():
        randomize_bn_stats(theirs, gen)
    ours = classicnets.create_model(name).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 3, size, size, generator=gen)
    with torch.no_grad():
        a, b = theirs(x), ours(x)
    return len(theirs.state_dict()), (a - b).abs().max().item(), a.abs().max().item()


def main(argv: list[str] | None = None) -> int:
    import classicnets

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*",
                        help="classicnets model names (default: all with a torchvision twin)")
    parser.add_argument("--size", type=int, default=224, help="input height and width (default 224)")
    parser.add_argument("--tol", type=float, default=1e-4, help="largest allowed max abs difference")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)

    names = args.names or [n for n in classicnets.list_models() if classicnets.model_card(n).torchvision_name]
    # AlexNet is written separately; check it too when it is there.
    if not args.names and "alexnet" not in names:
        print("alexnet: not registered in classicnets yet, skipped")
    failed = 0
    print(f"{'model':<12} {'torchvision':<12} {'keys':>5} {'max |out|':>11} {'max abs diff':>13}  result")
    for name in names:
        tv_name = classicnets.model_card(name).torchvision_name
        try:
            n_keys, diff, scale = check(name, tv_name, args.size, gen)
        except Exception as exc:  # a load failure is a result to report, not a crash
            failed += 1
            print(f"{name:<12} {tv_name or '-':<12} {'':>5} {'':>11} {'':>13}  FAIL: {str(exc)[:200]}")
            continue
        ok = diff <= args.tol
        failed += not ok
        print(f"{name:<12} {tv_name:<12} {n_keys:>5} {scale:>11.4g} {diff:>13.3e}  {'ok' if ok else 'FAIL'}")
    print(f"{len(names) - failed}/{len(names)} match (tol {args.tol:g}, input 2x3x{args.size}x{args.size}, "
          f"torch {torch.__version__})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
