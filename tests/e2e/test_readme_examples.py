"""The example session in README "Using it" is what scripts/readme_examples.py prints."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NUMBER = re.compile(r"\d+\.\d+")


def _readme_session() -> list[str]:
    text = (ROOT / "README.md").read_text()
    using = text[text.index("## Using it") :]
    block = using[using.index("```console\n") + len("```console\n") :]
    return block[: block.index("```")].rstrip("\n").splitlines()


def test_readme_session_is_reproduced_by_the_script() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "readme_examples.py")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    produced = result.stdout.rstrip("\n").splitlines()
    documented = _readme_session()
    assert len(produced) == len(documented), "\n".join(produced)
    for made, shown in zip(produced, documented, strict=True):
        # Same words, ranks and verdicts; scores may differ in the last digit across CPUs.
        assert NUMBER.sub("#", made) == NUMBER.sub("#", shown), (made, shown)
        for a, b in zip(NUMBER.findall(made), NUMBER.findall(shown), strict=True):
            assert abs(float(a) - float(b)) <= 0.005, (made, shown)
