"""``graphc train-example NAME --data SPEC -o model.onnx``: train a built-in reference model
(lenet5, lenet300, small-vgg, small-resnet, inception-small) on a data spec and write it, a real model to
compress with ``graphc optimize``.

Invariants: arguments are validated before any training; the output is written only after
training finished and the written model matched the trained module on ``--check N`` random
inputs (default 3; a failing check writes nothing and exits 1), through a temporary file.
"""
from __future__ import annotations

from graphc.errors import InputError


def register(sub) -> None:
    from graphc.data import SPEC_HELP
    from graphc.models.examples import EXAMPLES

    p = sub.add_parser("train-example", help="train a built-in example model (LeNet-5, ...) and write it",
                       description="Train a reference model on --data (in seconds on digits) and write it "
                                   "as .onnx or .pt, e.g. graphc train-example lenet5 --data digits -o lenet5.onnx")
    p.add_argument("name", metavar="NAME", help=f"one of {', '.join(EXAMPLES)}")
    p.add_argument("--data", default="digits", metavar="SPEC", help=f"{SPEC_HELP} (default: digits)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="where to write the model (.onnx or .pt)")
    p.add_argument("--epochs", type=float, default=None, help="training epochs (default: 10 for the LeNets and inception-small, 8 for the BN models)")
    p.add_argument("--lr", type=float, default=None, help="SGD learning rate, momentum 0.9 (default: 0.02 for the LeNets, 0.05 for the BN models, 0.1 for inception-small)")
    p.add_argument("--seed", type=int, default=0, help="seed for initialisation and shuffling")
    p.add_argument("--check", type=int, metavar="N", default=None,
                   help="random inputs to compare the written model against the trained module (default: 3; 0 skips it)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from graphc.models import build

    out = Path(args.output)
    if out.suffix.lower() not in (".onnx", ".pt"):
        raise InputError(f"output {args.output} must end in .onnx or .pt")
    if not (out.parent if str(out.parent) else Path(".")).is_dir():
        raise InputError(f"output folder does not exist: {out.parent}")
    if args.epochs is not None and args.epochs <= 0:
        raise InputError(f"--epochs must be > 0, got {args.epochs}")
    if args.check is not None and args.check < 0:
        raise InputError(f"--check wants N >= 0, got {args.check}")
    build(args.name)  # an unknown name fails here, before any data is loaded

    import graphc
    from graphc.data import load_data
    from graphc.models.examples import train_example

    data = load_data(args.data)
    module, res = train_example(args.name, data, epochs=args.epochs, lr=args.lr, seed=args.seed, quiet=args.quiet)
    graph = graphc.load(module, example_inputs=data.sample(1))
    from graphc.cli.convert import write_checked
    from graphc.pipeline import DEFAULT_CHECK
    from graphc.source import TorchSource

    n = DEFAULT_CHECK if args.check is None else args.check
    check = write_checked(graph, TorchSource(module.eval()), out, n, args.seed)
    from graphc.backends.cost import totals

    t = totals(graph)
    print(f"{args.name}: {res.epochs} epochs, {res.steps} steps on {data}; val accuracy {res.val_acc:.2%}; "
          f"{t['params']:,} params, {t['macs']:,} MACs")
    if check is not None:
        print(check.line())
    print(f"wrote {args.output}")
    return 0
