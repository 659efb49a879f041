"""Build the fake NVML driver (tests/fake_nvml/build/libnvidia-ml.so.1)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE / "fake_nvml.c"
OUT_DIR = HERE / "build"
LIB = OUT_DIR / "libnvidia-ml.so.1"


def build() -> Path:
    """Compile if missing or older than the source; return the directory to
    put on LD_LIBRARY_PATH."""
    if not LIB.exists() or LIB.stat().st_mtime < SRC.stat().st_mtime:
        OUT_DIR.mkdir(exist_ok=True)
        tmp = LIB.with_suffix(f".tmp{os.getpid()}")
        subprocess.run(["gcc", "-O1", "-Wall", "-Werror", "-Wno-format-truncation", "-shared", "-fPIC",
                        "-o", str(tmp), str(SRC)], check=True)
        os.replace(tmp, LIB)
    return OUT_DIR


def env_for(scenario: Path, base: dict | None = None) -> dict:
    env = dict(base if base is not None else os.environ)
    env["LD_LIBRARY_PATH"] = str(build()) + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    env["PYCONTAIN_FAKE_NVML_SCENARIO"] = str(scenario)
    return env


if __name__ == "__main__":
    print(build())
