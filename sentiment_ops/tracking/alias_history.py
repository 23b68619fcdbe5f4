"""The move history of an alias, kept in tags of the registered model.

Why tags in chunks: MLflow's PostgreSQL schema holds registered-model tag values in
``varchar(5000)`` (SQLite and the file store do not enforce it), so one JSON tag holding the
whole history broke after ~42 moves. The history is a log split into tags that each stay far
below that limit, plus a small head::

    sentops.alias_log.<alias>.head   {"format": 2, "count": N, "chunk_events": 50}
    sentops.alias_log.<alias>.<k>    [row, ...]   moves k*50 … k*50+49 (at most ~3,800 characters)
    row = [at, from_version, to_version, action, back]

``back`` is the index of the move that a rollback returns to (-1: none). Promote pushes
(``back`` = the previous top), rollback pops (the new move takes the popped-to move's
``back``), so rollback reads the head, the last chunk and one more chunk: its cost does not
grow with the length of the history.

A move is written as intent → alias → confirm: its row is first written to its chunk one
past the head's count (the intent), then the alias is set, then the head's count advances
(the confirmation). A row past the count is pending: a reader treats it as done exactly when
the alias points at its version (the crash came after the alias moved), else as never made;
the next write persists that verdict. Two tag writes and one alias write per move.

The first history format (one JSON list in ``sentops.alias_history.<alias>``, last 100
moves) is still read, and migrated to this one by the next write.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sentiment_ops.errors import SentopsError

LEGACY_TAG = "sentops.alias_history.{alias}"
HEAD_TAG = "sentops.alias_log.{alias}.head"
CHUNK_TAG = "sentops.alias_log.{alias}.{index}"
CHUNK_EVENTS = 50  # moves per chunk tag: ~2,500 characters, ~3,800 with 10-digit versions
MAX_TAG_CHARS = 4500  # below PostgreSQL's varchar(5000) for registered-model tag values
FORMAT = 2

SetTag = Callable[[str, str], None]
DeleteTag = Callable[[str], None]


@dataclass
class AliasEvent:
    """One move of an alias, as ``sentops models --history`` shows it."""

    at: str
    alias: str
    from_version: int | None
    to_version: int
    action: str  # promote | rollback


@dataclass(frozen=True)
class Move:
    at: str
    from_version: int | None
    to_version: int
    action: str
    back: int  # index of the move a rollback returns to; -1 when there is none

    def row(self) -> list[Any]:
        return [self.at, self.from_version, self.to_version, self.action, self.back]

    @classmethod
    def from_row(cls, row: list[Any]) -> Move:
        at, frm, to, action, back = row
        return cls(str(at), None if frm is None else int(frm), int(to), str(action), int(back))

    def event(self, alias: str) -> AliasEvent:
        return AliasEvent(self.at, alias, self.from_version, self.to_version, self.action)


class AliasLog:
    """The history of one alias as read from the registered model's tags (one read)."""

    def __init__(self, alias: str, tags: Mapping[str, str]) -> None:
        self.alias = alias
        self._tags = tags
        self._chunks: dict[int, list[Move]] = {}
        self.legacy_present = LEGACY_TAG.format(alias=alias) in tags
        self.pending: Move | None = None
        head_raw = tags.get(HEAD_TAG.format(alias=alias))
        if head_raw:
            try:
                head = json.loads(head_raw)
                self.count = int(head["count"])
                self.chunk_events = int(head.get("chunk_events", CHUNK_EVENTS))
            except (ValueError, KeyError, TypeError) as exc:
                raise SentopsError(f"alias {alias!r}: unreadable history head tag: {exc}") from exc
            self.stored_count = self.count
            k, i = divmod(self.count, self.chunk_events)
            rows = self._parse_chunk(k)
            self.pending = rows[i] if i < len(rows) else None  # an intent never confirmed
        else:
            self.chunk_events = CHUNK_EVENTS
            legacy = _legacy_moves(alias, tags.get(LEGACY_TAG.format(alias=alias)))
            for i in range(0, len(legacy), self.chunk_events):
                self._chunks[i // self.chunk_events] = legacy[i : i + self.chunk_events]
            self.count = len(legacy)
            self.stored_count = 0  # nothing in the current format yet: the next write migrates

    # -- reading -------------------------------------------------------------------------
    def _parse_chunk(self, k: int) -> list[Move]:
        raw = self._tags.get(CHUNK_TAG.format(alias=self.alias, index=k))
        try:
            return [Move.from_row(r) for r in json.loads(raw)] if raw else []
        except (ValueError, TypeError) as exc:
            raise SentopsError(f"alias {self.alias!r}: unreadable history chunk {k}: {exc}") from exc

    def _chunk(self, k: int) -> list[Move]:
        """The confirmed moves of chunk ``k`` (rows past the head's count are not)."""
        if k not in self._chunks:
            self._chunks[k] = self._parse_chunk(k)[: max(0, self.stored_count - k * self.chunk_events)]
        return self._chunks[k]

    def move(self, index: int) -> Move:
        k, i = divmod(index, self.chunk_events)
        rows = self._chunk(k)
        if not 0 <= index < self.count or i >= len(rows):
            raise SentopsError(f"alias {self.alias!r}: history move {index} is missing (count {self.count})")
        return rows[i]

    def moves(self, last: int | None = None) -> list[Move]:
        """The moves, oldest first; only the last ``last`` when given."""
        start = 0 if last is None else max(0, self.count - last)
        out: list[Move] = []
        for k in range(start // self.chunk_events, math.ceil(self.count / self.chunk_events)):
            out.extend(self._chunk(k))
        return out[start - (start // self.chunk_events) * self.chunk_events :][: self.count - start]

    def events(self, last: int | None = None) -> list[AliasEvent]:
        return [m.event(self.alias) for m in self.moves(last)]

    @property
    def top(self) -> int:
        """Index of the last move (-1 for an empty history)."""
        return self.count - 1

    # -- changing ---------------------------------------------------------------------------
    def reconcile(self, current: int | None) -> None:
        """Settle an unconfirmed move (in memory): it happened exactly when the alias points
        at its version."""
        pending, self.pending = self.pending, None
        if pending is not None and current == pending.to_version:
            self.append(pending)

    def append(self, move: Move) -> None:
        k = self.count // self.chunk_events
        self._chunks[k] = [*self._chunk(k), move]
        self.count += 1

    def _write_chunk(self, set_tag: SetTag, k: int, rows: list[Move]) -> None:
        value = json.dumps([m.row() for m in rows], separators=(",", ":"))
        _check_size(self.alias, value)
        set_tag(CHUNK_TAG.format(alias=self.alias, index=k), value)

    def _write_head(self, set_tag: SetTag) -> None:
        head = {"format": FORMAT, "count": self.count, "chunk_events": self.chunk_events}
        set_tag(HEAD_TAG.format(alias=self.alias), json.dumps(head, separators=(",", ":")))
        self.stored_count = self.count

    def save(self, set_tag: SetTag, delete_tag: DeleteTag) -> None:
        """Write what changed in memory since the read (a settled intent, a migration)."""
        if self.stored_count == self.count and not self.legacy_present:
            return
        for k in range(self.stored_count // self.chunk_events, math.ceil(self.count / self.chunk_events)):
            self._write_chunk(set_tag, k, self._chunk(k))
        self._write_head(set_tag)
        if self.legacy_present:  # migrated: the head now wins over the old tag
            delete_tag(LEGACY_TAG.format(alias=self.alias))
            self.legacy_present = False

    def write_intent(self, set_tag: SetTag, delete_tag: DeleteTag, move: Move) -> None:
        """Step 1: the move's row one past the confirmed count."""
        self.save(set_tag, delete_tag)
        k = self.count // self.chunk_events
        self._write_chunk(set_tag, k, [*self._chunk(k), move])

    def drop_intent(self, set_tag: SetTag) -> None:
        """Undo step 1 (after the alias could not be moved)."""
        k = self.count // self.chunk_events
        self._write_chunk(set_tag, k, self._chunk(k))

    def confirm(self, set_tag: SetTag, move: Move) -> None:
        """Step 3: the head's count takes the move in."""
        self.append(move)
        self._write_head(set_tag)


def _check_size(alias: str, value: str) -> None:
    if len(value) > MAX_TAG_CHARS:  # cannot happen with sane version numbers; never write a broken tag
        raise SentopsError(f"alias {alias!r}: a history tag would hold {len(value)} characters (max {MAX_TAG_CHARS})")


def _legacy_moves(alias: str, raw: str | None) -> list[Move]:
    """The first format (a JSON list of events) as moves, with the rollback pointers rebuilt
    by replaying it as a stack."""
    if not raw:
        return []
    try:
        events = json.loads(raw)
    except ValueError as exc:
        raise SentopsError(f"alias {alias!r}: unreadable history tag: {exc}") from exc
    moves: list[Move] = []
    stack: list[int] = []  # indexes of the moves whose versions a rollback walks back through
    for i, e in enumerate(events):
        frm, to, action = e.get("from_version"), int(e["to_version"]), str(e.get("action", "promote"))
        if action == "rollback":
            if stack and moves[stack[-1]].to_version == frm:
                stack.pop()
            if stack and moves[stack[-1]].to_version == to:
                back = moves[stack[-1]].back
                stack[-1] = i
            else:
                back = stack[-1] if stack else -1
                stack.append(i)
        else:
            back = stack[-1] if stack else -1
            stack.append(i)
        moves.append(Move(str(e["at"]), None if frm is None else int(frm), to, action, back))
    return moves
