"""The report of an import: what changed (or, in a dry run, would change), object by object."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ImportChange:
    action: str  # "added" | "changed" | "removed"
    kind: str  # "server", "role", "environment", "binding", "global rate limits", "server rate limits"
    name: str
    detail: str = ""

    SYMBOLS = {"added": "+", "changed": "~", "removed": "-"}

    def __str__(self) -> str:
        text = f"{self.SYMBOLS[self.action]} {self.kind} {self.name}".rstrip()
        return f"{text}: {self.detail}" if self.detail else text


@dataclass
class ImportReport:
    """What an import changed (or, for a dry run, would change), object by object."""

    team: str
    blocks: tuple[str, ...]
    dry_run: bool
    changes: list[ImportChange] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def count(self, action: str) -> int:
        return sum(1 for c in self.changes if c.action == action)

    def add(self, action: str, kind: str, name: str, detail: str = "") -> None:
        self.changes.append(ImportChange(action, kind, name, detail))

    @property
    def lines(self) -> list[str]:
        blocks = ", ".join(self.blocks)
        if self.dry_run:
            head = f"Dry run of an import of {blocks} into team {self.team}: nothing was saved."
        else:
            head = f"Imported {blocks} into team {self.team}."
        if not self.changes:
            return [head, "No changes: the team's policy already matches the file."]
        totals = ", ".join(f"{self.count(a)} {a}" for a in ("added", "changed", "removed"))
        return [
            head,
            *(str(c) for c in self.changes),
            f"{'Would be' if self.dry_run else 'In all'}: {totals}.",
        ]

    def __str__(self) -> str:
        return "\n".join(self.lines)
