"""``graphc calibrate``: run the latency micro-benchmark once and cache it for this machine."""
from __future__ import annotations

import json
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("calibrate", help="calibrate the latency model on this machine (cached)",
                              description=__doc__)
    p.add_argument("--force", action="store_true", help="re-run even when a cached calibration exists")
    p.add_argument("--quick", action="store_true", help="shorter benchmark (noisier)")
    p.add_argument("--show", action="store_true", help="print the cached calibration without running")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: its own choice)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall: elapsed time (default); cpu: CPU time of one thread (needs --threads 1), "
                        "steady on a busy machine")
    p.set_defaults(func=run)


def run(args) -> int:
    from graphc.backends.calibration import calibrate, calibration_path, load_calibration, machine_key
    from graphc.backends.latency import check_clock
    from graphc.errors import InputError

    check_clock(args.clock, args.threads)
    path = calibration_path(machine_key(args.threads, args.clock))
    if args.show:
        calib = load_calibration(path)
        if calib is None:
            raise InputError(f"no calibration cached at {path}; run `graphc calibrate`")
    else:
        cached = None if args.force else load_calibration(path)
        calib = cached or calibrate(force=True, quick=args.quick, path=path, threads=args.threads, clock=args.clock)
        if cached is not None:
            print("using the cached calibration (--force re-runs it)", file=sys.stderr)
    if args.json:
        json.dump(dict(calib.as_dict(), path=str(path)), sys.stdout, indent=2)
        print()
        return 0
    k = calib.key
    print(f"calibration for {k.get('machine')} / {k.get('cpu')} / {k.get('cores')} cores / onnxruntime {k.get('onnxruntime')}"
          f" / threads {k.get('threads', 'default')} / {k.get('clock', 'wall')} clock")
    print(f"  cache file        {path}")
    print(f"  per-node overhead {calib.overhead_s * 1e6:.2f} us")
    print(f"  bandwidth         {calib.bandwidth / 1e9:.1f} GB/s (activations, in cache)")
    print(f"  weight bandwidth  {(calib.weight_bandwidth or calib.bandwidth) / 1e9:.1f} GB/s (weights, cold)")
    for kind, rate in sorted(calib.rates.items()):
        print(f"  {kind + ' rate':<17} {rate / 1e9:.1f} GFLOP/s")
    return 0
