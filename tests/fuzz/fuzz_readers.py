"""Coverage-guided fuzzing of mocap's readers of untrusted files (one command).

    python tests/fuzz/fuzz_readers.py                      # 60 s, every target, atheris
    python tests/fuzz/fuzz_readers.py --seconds 600        # the 10-minute run
    python tests/fuzz/fuzz_readers.py --target motion --engine mutation --seconds 120

Targets (``tests/fuzz/targets.py``): ``motion`` (motion.npz), ``config`` (--config YAML),
``checkpoint_config`` (the JSON embedded in a checkpoint, built on the meta device when valid),
``checkpoint`` (a safetensors header) or ``all``. The seeds in ``tests/fuzz/corpus/<target>/``
are copied into a working corpus in a temporary folder (the repository is never written); a
crashing input is saved to ``--artifacts`` (default ``fuzz-artifacts/``) and the run fails.

Engines: ``atheris`` (libFuzzer, coverage-guided over mocap's, numpy's file-format and
zipfile's Python code) when installed, else ``mutation``: random byte mutations of the seeds
(flips, splices, truncations, insertions of interesting values) for the same time budget,
without coverage feedback.
"""

import argparse
import random
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))


def seeds(target: str) -> list[bytes]:
    """Seed inputs of ``target`` (for ``all``: every target's, with its selector byte first)."""
    import targets

    names = targets.NAMES if target == "all" else (target,)
    out = []
    for name in names:
        prefix = bytes([targets.NAMES.index(name)]) if target == "all" else b""
        for path in sorted((HERE / "corpus" / name).glob("*")):
            out.append(prefix + path.read_bytes())
    return out


def entry(target: str):  # type: ignore[no-untyped-def]
    import targets

    return targets.one_input if target == "all" else targets.TARGETS[target]


def run_atheris(target: str, seconds: int, artifacts: Path, extra: list[str]) -> int:
    import atheris
    import numpy  # noqa: F401 - imported uninstrumented first: only the readers' code below
    import torch  # noqa: F401

    with atheris.instrument_imports(include=["mocap", "numpy.lib", "zipfile", "yaml", "targets"]):
        import targets  # noqa: F401

        from mocap import motion, motion_check, world  # noqa: F401
        from mocap.model import checkpoint, checkpoint_config  # noqa: F401
        from mocap.pipeline import config, config_check  # noqa: F401
    work = Path(tempfile.mkdtemp(prefix="mocap-fuzz-corpus-"))
    for k, data in enumerate(seeds(target)):
        (work / f"seed{k}").write_bytes(data)
    artifacts.mkdir(parents=True, exist_ok=True)
    test = entry(target)
    argv = [
        sys.argv[0],
        str(work),
        f"-max_total_time={seconds}",
        f"-artifact_prefix={artifacts}/",
        "-rss_limit_mb=4096",
        "-timeout=30",
        "-print_final_stats=1",
        *extra,
    ]
    atheris.Setup(argv, test)
    try:
        atheris.Fuzz()  # exits the process when done (status 0) or on a crash (non-zero)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


INTERESTING = [
    b"\x00",
    b"\xff",
    b"\x7f",
    b"\x80",
    b"nan",
    b"inf",
    b"-1",
    b"1e308",
    b"{",
    b"[",
    b"'",
]


def mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    """One random mutation of ``data`` (byte flips, splices, truncation, insertions)."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(6)
        pos = rng.randrange(len(b) + 1)
        if op == 0 and b:
            b[min(pos, len(b) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            b[pos:pos] = rng.choice(INTERESTING)
        elif op == 2 and b:
            del b[pos : pos + rng.randint(1, 64)]
        elif op == 3:
            other = rng.choice(pool)
            start = rng.randrange(len(other) + 1)
            b[pos:pos] = other[start : start + rng.randint(1, 256)]
        elif op == 4:
            b = b[:pos]
        else:
            b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    return bytes(b)


def run_mutation(target: str, seconds: int, artifacts: Path, seed: int) -> int:
    """The fallback engine: seeded random mutation for ``seconds``, no coverage feedback."""
    pool = seeds(target)
    test = entry(target)
    rng = random.Random(seed)
    runs, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        data = mutate(rng, rng.choice(pool), pool)
        try:
            test(data)
        except Exception:
            artifacts.mkdir(parents=True, exist_ok=True)
            crash = artifacts / f"crash-{runs}"
            crash.write_bytes(data)
            traceback.print_exc()
            print(f"CRASH after {runs} runs; input saved to {crash}", file=sys.stderr)
            return 1
        runs += 1
        if rng.random() < 0.05:
            pool.append(data)  # keep some mutants as new parents
    print(f"mutation fuzzing: {runs} runs in {seconds} s, no crash ({len(pool)} inputs kept)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--target",
        default="all",
        choices=("all", "motion", "config", "checkpoint_config", "checkpoint"),
    )
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--engine", choices=("auto", "atheris", "mutation"), default="auto")
    parser.add_argument("--artifacts", type=Path, default=Path("fuzz-artifacts"))
    parser.add_argument("--seed", type=int, default=0, help="random seed of the fallback engine")
    args, extra = parser.parse_known_args()
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401

            engine = "atheris"
        except ImportError:
            print("atheris is not installed: random mutation fuzzing instead", file=sys.stderr)
            engine = "mutation"
    if engine == "atheris":
        return run_atheris(args.target, args.seconds, args.artifacts.resolve(), extra)
    return run_mutation(args.target, args.seconds, args.artifacts.resolve(), args.seed)


if __name__ == "__main__":
    sys.exit(main())
