"""Write one benchmark's results as a section of docs/benchmarks.md (other sections are kept)."""

import os
import platform
import re
from datetime import date
from pathlib import Path

import torch

REPORT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
# the CPU features that decide fp32 / bf16 / int8 speed, as /proc/cpuinfo names them
VECTOR_UNITS = [
    ("avx2", "AVX2"),
    ("avx512f", "AVX-512"),
    ("avx512_vnni", "VNNI"),
    ("avx512_bf16", "AVX512-BF16"),
    ("amx_bf16", "AMX"),
]
HEADER = "# Benchmarks\n\nWritten by the scripts in `benchmarks/`; each section says how it was measured.\n"


def machine() -> str:
    """One line describing where the numbers were measured."""
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    vector = [name for flag, name in VECTOR_UNITS if flag in flags]
    cpu += f" ({', '.join(vector) or 'no AVX2'})"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}, {date.today()}"


def write_section(name: str, markdown: str) -> None:
    """Replace (or append) the section ``name`` of docs/benchmarks.md with ``markdown``."""
    text = REPORT.read_text() if REPORT.exists() else HEADER
    begin, end = f"<!-- begin:{name} -->", f"<!-- end:{name} -->"
    block = f"{begin}\n{markdown.rstrip()}\n\n_Measured on: {machine()}_\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = (
        pattern.sub(lambda _: block, text)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + block + "\n"
    )
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(text)
