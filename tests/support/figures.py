"""What the traffic tests measured, per feature and client language: printed as a table and kept
as JSON, so that a person or a session can quote the figures after the run.

    figures = Figures("weighted split")      # one per test module (the `figures` fixture there)
    figures.add("go", v2_share=29.8, calls=1000, verdict="...")
    figures.table()                          # feature x language

Files: `.run/traffic/<feature>.json` in the repository (and the same under the test mesh's run
folder), rewritten after every `add`, so a run that stops half-way keeps what it measured.
`python tests/support/figures.py` prints every feature's table from those files.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

__all__ = ["RESULTS_DIR", "Figures"]

RESULTS_DIR = Path(__file__).resolve().parents[2] / ".run" / "traffic"  # the repository's .run/


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


class Figures:
    def __init__(self, feature: str, run_dir: Path | None = None) -> None:
        self.feature = feature
        self.rows: dict[str, dict] = {}
        self.paths = [RESULTS_DIR / f"{_slug(feature)}.json"]
        if run_dir is not None:
            self.paths.append(Path(run_dir) / "traffic" / f"{_slug(feature)}.json")

    def add(self, language: str, **figures) -> str:
        """Record one row (a language's figures) and return it as a table line."""
        self.rows[language] = {**figures, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        document = {"feature": self.feature, "rows": self.rows}
        for path in self.paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(document, indent=2, default=str) + "\n")
        return self.line(language)

    def line(self, language: str) -> str:
        figures = {k: v for k, v in self.rows[language].items() if k != "measured_at"}
        return f"{self.feature} | {language:<10} | " + ", ".join(f"{k}={v}" for k, v in figures.items())

    def table(self) -> str:
        return "\n".join([f"== {self.feature} (feature x language: measured) =="]
                         + [self.line(language) for language in self.rows])


def tables(directory: Path = RESULTS_DIR) -> str:
    """Every feature's table from the JSON files of the last run(s)."""
    out = []
    for path in sorted(Path(directory).glob("*.json")):
        document = json.loads(path.read_text())
        figures = Figures(document["feature"])
        figures.rows = document["rows"]
        out.append(figures.table())
    return "\n\n".join(out) if out else f"no figures in {directory}"


if __name__ == "__main__":  # .venv/bin/python tests/support/figures.py: the last run's tables
    print(tables())
