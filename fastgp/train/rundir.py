"""The run directory's files: creating it, the metrics log (which a killed run
may leave with a torn last line), and the list of files a run wrote.

Only rank 0 writes; every path goes through :meth:`RunDir.file`, which records
it, so the final message can list exactly what this run wrote.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from typing import Any, Dict, List

from .config import ConfigError


class RunDir:
    def __init__(self, path: str):
        self.path = path
        self.written: List[str] = []  # paths relative to the run directory, first write first

    def file(self, rel: str) -> str:
        """Absolute path of `rel`, recorded as written by this run."""
        if rel not in self.written:
            self.written.append(rel)
        return os.path.join(self.path, rel)

    def create(self, clear: bool) -> None:
        """Makes the folder and its sub-folders (after deleting a previous run's files when `clear`); a path that
        cannot be a folder (a file in the way, no permission) is a ConfigError naming it."""
        try:
            if clear:
                for sub in ("checkpoints", "samples"):
                    shutil.rmtree(os.path.join(self.path, sub), ignore_errors=True)
                for name in ("metrics.jsonl", "summary.json", "samples.png", "losses.png", "samples.csv"):
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(os.path.join(self.path, name))
            for sub in ("checkpoints", "samples"):
                os.makedirs(os.path.join(self.path, sub), exist_ok=True)
        except OSError as e:
            where = e.filename if e.filename else self.path
            raise ConfigError(f"cannot use {self.path!r} as the run directory (--out-dir/--name): {where!r}: "
                              f"{e.strerror or e}") from None

    # ---------------------------------------------------------- metrics
    def read_records(self, path: str, up_to_step: int) -> List[Dict[str, Any]]:
        """Records of a metrics.jsonl up to a step. Lines that do not parse (the torn last line of a killed run)
        are dropped with a note: a killed run always resumes."""
        records, dropped = [], 0
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    dropped += 1
                    continue
                if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                    dropped += 1
                    continue
                if record["step"] <= up_to_step:
                    records.append(record)
        if dropped:
            print(f"fastgp-train: {path}: dropped {dropped} unreadable line(s) (written when a run was killed)",
                  file=sys.stderr)
        return records

    def write_records(self, records: List[Dict[str, Any]]) -> None:
        with open(self.file("metrics.jsonl"), "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)

    def append_record(self, record: Dict[str, Any]) -> None:
        with open(self.file("metrics.jsonl"), "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def write_json(self, rel: str, obj: Dict[str, Any]) -> None:
        with open(self.file(rel), "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")

    # ----------------------------------------------------------- report
    def listing(self, per_folder: int = 4) -> str:
        """The files this run wrote that still exist (retention deletes old checkpoints), a folder's long
        series shortened to its first and last files with the count."""
        alive = [r for r in self.written if os.path.isfile(os.path.join(self.path, r))]
        top = [r for r in alive if os.sep not in r and "/" not in r]
        folders: Dict[str, List[str]] = {}
        for r in alive:
            if r not in top:
                folder, name = r.replace(os.sep, "/").split("/", 1)
                folders.setdefault(folder, []).append(name)
        parts = list(top)
        for folder, names in folders.items():
            names = sorted(names)
            if len(names) > per_folder:
                parts.append(f"{folder}/{names[0]} ... {folder}/{names[-1]} ({len(names)} files)")
            else:
                parts += [f"{folder}/{n}" for n in names]
        return ", ".join(parts)
