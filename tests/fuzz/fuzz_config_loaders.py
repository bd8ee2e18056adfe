"""Atheris (libFuzzer) harness for the config loaders; not run by pytest (see README.md here).

Each input goes through `loader_oracle.check` (load_text, import_text, validation, to_native,
from_dict, compile_snapshot) as UTF-8 text; an input that is not UTF-8 goes through
`check_bytes` (load_file / import_resources of a file holding those bytes). Anything but success
or a well-formed ConfigError is a crash, which libFuzzer saves as `crash-<sha1>` for replay:

    python3 tests/fuzz/fuzz_config_loaders.py crash-<sha1>

`--seed DIR` first copies the real corpus (../shared/appmesh-corpus, examples/) into DIR
(created if missing), so pass DIR again as libFuzzer's corpus directory to start from it.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["meshplane"]):
    from loader_oracle import check, check_bytes, corpus_files

SCRATCH = Path(tempfile.mkdtemp(prefix="meshplane-atheris-")) / "input.bin"


def test_one_input(data: bytes) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        check_bytes(data, SCRATCH)
        return
    check(text, "fuzz.yaml")


def seed(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(corpus_files()):
        shutil.copyfile(path, folder / f"seed-{i:04d}-{path.name}")


def main(argv: list[str]) -> None:
    if "--seed" in argv:
        at = argv.index("--seed")
        seed(Path(argv[at + 1]))
        del argv[at : at + 2]
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
