"""``python -m fastloss bench [options]``, ``python -m fastloss info`` and ``python -m fastloss
api``: the command line (the benchmark itself is the subpackage ``fastloss.bench``)."""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from ._registry import LOSSES

_BENCH_EPILOG = """\
examples:
  python -m fastloss bench --quick                  the headline cases, 1-2.5 minutes
  python -m fastloss bench                          everything (several minutes)
  python -m fastloss bench --losses mse_loss,cross_entropy --sizes 1e5,1e7 --threads 1
  python -m fastloss bench --quick --json bench.json --plot bench.png

The table goes to stdout, progress to stderr. Baselines that are not installed are
skipped with a note. --quick: sizes 1e3,1e5,1e7 in float32, all cores, against numpy,
numpy_backend and torch, fewer samples; options given explicitly override these.
"""


def _comma_list(text):
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list, got an empty one")
    return items


def _chosen(text, allowed, what):
    """The comma-separated names in ``text``, each one of ``allowed``, without repeats."""
    chosen = _comma_list(text)
    unknown = [s for s in chosen if s not in allowed]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(map(repr, unknown))}; choose from: {', '.join(allowed)}")
    return tuple(dict.fromkeys(chosen))


def _load(text):
    try:
        n = int(text)
    except ValueError:
        n = -1
    if not 0 <= n <= 256:
        raise argparse.ArgumentTypeError(f"--load takes a number of busy processes from 0 to 256, got {text!r}")
    return n


def _simd(text):
    """--simd: levels this CPU runs (lowest first), or all of them."""
    from .bench.core import simd_levels_available

    available = simd_levels_available()
    if not available:
        raise argparse.ArgumentTypeError("--simd needs the compiled backend (fastloss.kernels), "
                                         "which is not in use")
    chosen = available if text == "all" else _chosen(text, list(available), "SIMD level (on this CPU)")
    return tuple(lv for lv in available if lv in chosen)


def _losses(text):
    return _chosen(text, [loss.name for loss in LOSSES], "loss")


def _sizes(text):
    sizes = []
    for s in _comma_list(text):
        try:
            v = float(s)
        except ValueError:
            v = float("nan")
        if not (1 <= v <= 1e10 and v == int(v)):
            raise argparse.ArgumentTypeError(
                f"sizes must be whole numbers of elements >= 1 such as 1e3 or 100000, got {s!r}")
        sizes.append(int(v))
    return tuple(dict.fromkeys(sizes))


_DTYPE_ALIASES = {"float32": "float32", "f32": "float32", "float64": "float64", "f64": "float64"}


def _dtypes(text):
    out = []
    for s in _comma_list(text):
        if s not in _DTYPE_ALIASES:
            raise argparse.ArgumentTypeError(f"dtypes are float32 and float64, got {s!r}")
        out.append(_DTYPE_ALIASES[s])
    return tuple(dict.fromkeys(out))


def _threads(text):
    out = []
    for s in _comma_list(text):
        if not s.isdigit() or int(s) < 1:
            raise argparse.ArgumentTypeError(f"threads must be positive integers, got {s!r}")
        out.append(int(s))
    return tuple(dict.fromkeys(out))


def _against(text):
    from .bench.runners import BASELINES

    return _chosen(text, list(BASELINES), "baseline")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fastloss",
        description="fastloss command line: benchmark the fused loss + gradient kernels on "
                    "this machine, or show how fastloss is built and configured.")
    sub = parser.add_subparsers(dest="command", metavar="{bench,info,api}", required=True)
    bench = sub.add_parser(
        "bench", help="time every loss against NumPy, PyTorch, scikit-learn, JAX",
        description="Time every loss's fused NAME_grad (and NAME) against the plain NumPy "
                    "code, fastloss's NumPy backend, and PyTorch, scikit-learn's _loss and JAX "
                    "when installed; report time, GB/s, the share of this machine's measured "
                    "memory bandwidth, speed-ups and peak memory per call.",
        epilog=_BENCH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_argument("--quick", action="store_true",
                       help="headline cases only (1-2.5 minutes on a quiet 2-core machine)")
    bench.add_argument("--losses", type=_losses, metavar="A,B",
                       help="registry loss names (default: all)")
    bench.add_argument("--sizes", type=_sizes, metavar="N,N",
                       help="element counts, e.g. 1e3,1e5 (class losses: N*C; "
                            "default 1e3,1e4,1e5,1e6,1e7)")
    bench.add_argument("--dtypes", type=_dtypes, metavar="D,D",
                       help="float32 and/or float64 (default: both)")
    bench.add_argument("--threads", type=_threads, metavar="T,T",
                       help="thread counts (default: 1 and all cores)")
    bench.add_argument("--against", type=_against, metavar="B,B",
                       help="baselines: numpy, numpy_backend, torch, torch_adapter (fastloss.torch), "
                            "sklearn, jax (default: all installed)")
    bench.add_argument("--json", metavar="FILE", dest="json_path",
                       help="also write every row and the machine facts as JSON")
    bench.add_argument("--plot", metavar="FILE.png", dest="plot_path",
                       help="also plot speed-up over NumPy and bandwidth share (needs matplotlib)")
    bench.add_argument("--load", type=_load, default=0, metavar="N",
                       help="run N busy processes beside the bench (N = the core count: every core "
                            "shared), to measure the contended case")
    bench.add_argument("--simd", type=_simd, metavar="L,L",
                       help="also time the fused call at these instruction-set levels side by side "
                            "(baseline, avx2, avx512, or all: the levels this CPU runs)")
    bench.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    sub.add_parser("info", help="version, backend, OpenMP, threads, SIMD level",
                   description="Show fastloss's version, backend, OpenMP, threads and SIMD "
                               "level, and the versions of NumPy, Cython and PyTorch.")
    sub.add_parser("api", help="print the API reference (docs/API.md, installed with the package)",
                   description="Print fastloss's API reference: docs/API.md of the source, "
                               "installed with the package as fastloss/API.md.")
    config = sub.add_parser(
        "config", help="compiler flags of a C/C++ program using libfastloss (the wheel's copy)",
        description="Print what a C or C++ build needs to use libfastloss, the C library carried "
                    "by this installation (fastloss/lib/libfastloss.so, header libfastloss.h), "
                    "as pkg-config does:  cc prog.c $(python -m fastloss config --cflags --libs)")
    config.add_argument("--cflags", action="store_true", help="-I of the directory of libfastloss.h")
    config.add_argument("--libs", action="store_true",
                        help="-L, -lfastloss and an rpath to the library's directory (no LD_LIBRARY_PATH needed)")
    config.add_argument("--includedir", action="store_true", help="the directory of libfastloss.h")
    config.add_argument("--libdir", action="store_true", help="the directory of libfastloss.so")
    config.add_argument("--modversion", action="store_true", help="the version")
    parser.bench_parser = bench  # for errors found after parsing (usage of 'bench')
    return parser


def _check_output_path(parser, option, path, suffixes=None):
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        parser.error(f"{option}: directory {directory!r} does not exist")
    if suffixes and os.path.splitext(path)[1].lower() not in suffixes:
        parser.error(f"{option}: the file name must end with {', '.join(suffixes)}, got {path!r}")


def _config(parser, args) -> int:
    import fastloss

    try:
        library = fastloss.get_library()
    except FileNotFoundError as exc:
        print(f"python -m fastloss config: {exc}", file=sys.stderr)
        return 1
    libdir, include = os.path.dirname(library), fastloss.get_include()
    words = []
    if args.modversion:
        words.append(fastloss.__version__)
    if args.includedir:
        words.append(include)
    if args.libdir:
        words.append(libdir)
    if args.cflags:
        words.append(f"-I{include}")
    if args.libs:
        words += [f"-L{libdir}", f"-Wl,-rpath,{libdir}", "-lfastloss"]
    if not words:
        parser.parse_args(["config", "--help"])
    print(" ".join(shlex.quote(w) for w in words))
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "info":
        from .bench.core import info_text

        print(info_text())
        return 0
    if args.command == "config":
        return _config(parser, args)
    if args.command == "api":
        reference = os.path.join(os.path.dirname(os.path.abspath(__file__)), "API.md")
        with open(reference, encoding="utf-8") as f:
            sys.stdout.write(f.read())
        return 0

    bench_parser = parser.bench_parser
    if args.json_path:
        _check_output_path(bench_parser, "--json", args.json_path)
    if args.plot_path:
        _check_output_path(bench_parser, "--plot", args.plot_path, (".png", ".svg", ".pdf"))
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            bench_parser.error("--plot needs matplotlib, which is not installed "
                               "(pip install matplotlib)")

    from .bench import core

    config = core.Config(losses=args.losses, sizes=args.sizes, dtypes=args.dtypes,
                         threads=args.threads, against=args.against, quick=args.quick,
                         json_path=args.json_path, plot_path=args.plot_path, seed=args.seed, load=args.load,
                         simd=args.simd,
                         command=shlex.join(["python", "-m", "fastloss", *argv]))
    result = core.run(config)
    print(core.format_report(result), flush=True)
    if args.json_path:
        core.write_json(result, args.json_path)
        print(f"wrote {args.json_path}")
    if args.plot_path:
        core.plot(result, args.plot_path)
        print(f"wrote {args.plot_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
