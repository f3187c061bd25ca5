"""The audit trail: redaction, the durable spool, and the shipper against a real HTTP portal double."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcpgov.audit import (
    SPOOL_CHUNK,
    AuditSpool,
    Cursor,
    Shipper,
    ShipperThread,
    read_events,
    spool_is_live,
)
from mcpgov.portal_client import PortalClient
from mcpgov.redact import (
    REDACTED,
    SECRET_VALUE_RE,
    SECRET_VALUE_RES,
    may_hold_secret,
    redact,
    redact_text,
    summarize_arguments,
)
from tests.mcpgov.portal_double import TOKEN

# --- redaction ------------------------------------------------------------------------------------------------


def test_secret_keys_are_redacted_at_any_depth():
    args = {
        "path": "a.txt",
        "password": "hunter2",
        "headers": {"Authorization": "Bearer abc.def.ghi"},
        "config": [{"api_key": "k-123", "client_secret": "s"}],
        "token": "",
        "secret_count": 0,
    }
    out = redact(args)
    assert out["path"] == "a.txt" and out["password"] == REDACTED
    assert out["headers"]["Authorization"] == REDACTED
    assert out["config"][0] == {"api_key": REDACTED, "client_secret": REDACTED}
    assert out["token"] == "" and out["secret_count"] == 0  # nothing to hide
    assert args["password"] == "hunter2"  # the caller's arguments are untouched


@pytest.mark.parametrize(
    "value",
    [
        "curl -H 'Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abcdefghijk'",
        "aws configure set aws_access_key_id AKIAIOSFODNN7EXAMPLE",
        "export aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "token ghp_abcdefghijklmnopqrstuvwxyz0123456789",
        "-----BEGIN PRIVATE KEY-----\nMIIEv...\n-----END PRIVATE KEY-----",
    ],
)
def test_secret_looking_values_are_redacted(value):
    out = redact({"command": value})["command"]
    assert REDACTED in out
    for secret in ("abcdefghijk", "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI", "ghp_abc", "MIIEv"):
        assert secret not in out


def test_nul_and_lone_surrogates_never_make_an_event_undeliverable(tmp_path):
    # an agent's arguments or an upstream's answer with NUL or a lone surrogate: the portal
    # (PostgreSQL) refuses both, so the spool stores ␀ and U+FFFD instead; valid pairs are kept
    spool = AuditSpool(tmp_path, str(uuid.uuid4()))
    intent = spool.intent(
        call_id="c1",
        server="fs",
        tool="write\x00file",
        arguments={"path": "a\x00b", "k\ud800ey": ["\udc00", "smile \U0001f600"]},
        bundle_version=1,
    )
    spool.result(intent, status="ok", result_summary="done\x00", nbytes=1, duration_ms=1.0)
    spool.close()
    raw = (tmp_path / f"{spool.session_id}.jsonl").read_bytes()
    raw.decode("utf-8")  # strict: no surrogate survived
    (_, first), (_, second) = read_events(tmp_path / f"{spool.session_id}.jsonl")[0]
    assert "\\x00" not in repr(first) + repr(second)  # no NUL character anywhere
    assert first["tool"] == "write\u2400file" and first["arguments"]["path"] == "a\u2400b"
    assert first["arguments"]["k\ufffdey"] == ["\ufffd", "smile \U0001f600"]
    assert "\x00" not in first["args_summary"] and second["result_summary"] == "done\u2400"


def _regex_only(text: str) -> str:
    """redact_text as it was before its prefilter: the regexes on every text."""
    if SECRET_VALUE_RE.search(text) is None:
        return text
    for rx in SECRET_VALUE_RES:
        text = rx.sub(REDACTED, text)
    return text


# pieces that make near-misses and hits of every pattern, in any case, ASCII and not
_PIECES = st.sampled_from(
    [
        "Bearer ",
        "bEaReR\t",
        "BEARER",
        "abcdefgh12",
        "AKIA",
        "ASIA",
        "akia",
        "IOSFODNN7EXAMPLE0",
        "eyJ",
        "EYJ",
        "hbGciOiJ.",
        "ghp_",
        "GHP_",
        "github_pat_",
        "gho",
        "_",
        "xoxb-",
        "XOXB-",
        "sk-",
        "SK-",
        "-----BEGIN ",
        "-----begin ",
        "RSA PRIVATE KEY-----",
        "aws_secret_access_key",
        "=",
        "AWS_SECRET_ACCESS_KEY",
        "aws_\u017fecret_acce\u017f\u017f_key",
        "\u017fk-",
        "\uff22earer ",
        " ",
        "\n",
        ":",
        "é",
        "x",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_PIECES, max_size=12).map("".join))
def test_the_redaction_prefilter_never_changes_the_outcome(text):
    assert redact_text(text) == _regex_only(text)
    if SECRET_VALUE_RE.search(text) is not None:
        assert may_hold_secret(text)  # a text the regex redacts always gets the regex


@pytest.mark.parametrize(
    "text",
    [
        "BeArEr abcdefghijkl",
        "AWS_Secret_Access_Key = wJalrXUtnFEMI",
        # U+017F (long s) matches s when case is ignored: not ASCII, so the regex runs
        "aws_\u017fecret_acce\u017f\u017f_key=wJalrXUtnFEMI",
        "key AKIAIOSFODNN7EXAMPLE.",
        "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhZ2VudCJ9.c2lnbmF0dXJlc2ln",
        "xoxb-1234567890-abc",
        "sk-abcdefghijklmnopqrstuvwxyz",
    ],
)
def test_every_secret_pattern_still_redacts_past_the_prefilter(text):
    assert redact_text(text) == _regex_only(text) != text


def test_summary_is_short_and_redacted():
    s = summarize_arguments({"path": "docs/a.md", "content": "x" * 4821, "api_key": "sk-abc"})
    assert s == '{path: "docs/a.md", content: <4821 chars>, api_key: "[REDACTED]"}'


# --- the spool ---------------------------------------------------------------------------------------------------


def _intent(spool, n=0):
    return spool.intent(
        call_id=str(uuid.uuid4()),
        server="filesystem",
        tool="write_file",
        arguments={"path": f"f{n}.txt", "password": "p"},
        bundle_version=3,
    )


def _call(spool, n=0) -> None:
    """One successful call: its INTENT and its RESULT."""
    spool.result(_intent(spool, n), status="success", result_summary="", nbytes=0, duration_ms=0)


def test_spool_records_intent_and_result_in_order(tmp_path):
    spool = AuditSpool(tmp_path, "s1")
    ev = _intent(spool)
    spool.result(ev, status="success", result_summary="written", nbytes=12, duration_ms=3.2)
    spool.close()
    events = [e for _, e in read_events(tmp_path / "s1.jsonl")[0]]
    assert [(e["seq"], e["phase"]) for e in events] == [(1, "intent"), (2, "result")]
    assert events[0]["arguments"] == {"path": "f0.txt", "password": REDACTED}
    assert events[1]["call_id"] == events[0]["call_id"] and events[1]["status"] == "success"
    human = (tmp_path / "s1.log").read_text().splitlines()
    assert len(human) == 1
    assert (
        human[0].startswith("MCP_AUDIT | ")
        and "| session=s1 | server=filesystem | tool=write_file | " in human[0]
    )
    assert 'args={path: "f0.txt", password: "[REDACTED]"}' in human[0]
    assert human[0].endswith("| result=written | duration_ms=3 | status=success")


def test_spool_resumes_after_reopen_and_cuts_a_torn_record(tmp_path):
    spool = AuditSpool(tmp_path, "s1")
    for i in range(3):
        _call(spool, i)
    spool.close()
    with open(tmp_path / "s1.jsonl", "ab") as fh:
        fh.write(b'{"seq":7,"phase":"inte')  # crash in the middle of a write
    spool = AuditSpool(tmp_path, "s1")
    assert spool.seq == 6
    _intent(spool, 9)
    spool.close()
    events = [e for _, e in read_events(tmp_path / "s1.jsonl")[0]]
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5, 6, 7]


def test_a_spool_is_locked_while_its_gateway_lives(tmp_path):
    spool = AuditSpool(tmp_path, "s1")
    assert spool_is_live(tmp_path / "s1.jsonl")
    with pytest.raises(RuntimeError, match="in use"):
        AuditSpool(tmp_path, "s1")
    spool.close()
    assert not spool_is_live(tmp_path / "s1.jsonl")


WRITER = textwrap.dedent(
    """
    import sys, uuid
    from mcpgov.audit import AuditSpool
    spool = AuditSpool(sys.argv[1], "killed")
    for i in range(1000000):
        ev = spool.intent(call_id=str(uuid.uuid4()), server="fs", tool="write_file", arguments={"i": i},
                          bundle_version=1)
        if i == 5:
            print("ready", flush=True)
        if i % 2 == 0:
            spool.result(ev, status="success", result_summary="ok", nbytes=1, duration_ms=1)
    """
)


def _writer(script: str, directory) -> subprocess.Popen:
    """A spool writer in its own process (to be killed), reporting on its stdout."""
    return subprocess.Popen(
        [sys.executable, "-c", script, str(directory)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )


def test_kill_9_loses_no_acknowledged_intent(tmp_path):
    """A writer killed with SIGKILL mid-stream leaves a readable spool; open INTENTs get an honest RESULT."""
    proc = _writer(WRITER, tmp_path)
    assert proc.stdout.readline().strip() == "ready"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    events, _ = read_events(tmp_path / "killed.jsonl")
    seqs = [e["seq"] for _, e in events]
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= 6
    assert not spool_is_live(tmp_path / "killed.jsonl")
    spool = AuditSpool(tmp_path, "killed")
    open_before = dict(spool.open_intents)
    spool.close_open_intents("the gateway stopped before recording the result")
    spool.close()
    events = [e for _, e in read_events(tmp_path / "killed.jsonl")[0]]
    closed = {
        e["call_id"]: e
        for e in events
        if e["phase"] == "result" and e["result_summary"].startswith("outcome unknown")
    }
    assert set(closed) == set(open_before) and all(e["status"] == "fail" for e in closed.values())


def test_calls_in_flight_together_share_one_disk_sync(tmp_path, monkeypatch):
    """Group commit: eight INTENTs written before a sync starts are made durable by that one sync."""
    syncs = []
    real = os.fdatasync

    def counted(fd):
        syncs.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", counted)
    spool = AuditSpool(tmp_path, "s1")

    async def go():
        events = [
            spool.intent(
                call_id=str(uuid.uuid4()),
                server="fs",
                tool="read",
                arguments={},
                bundle_version=1,
                defer_sync=True,
            )
            for _ in range(8)
        ]
        assert spool.synced == 0 and not syncs  # written, not yet synced: nothing forwarded yet
        async with anyio.create_task_group() as tg:
            for ev in events:
                tg.start_soon(spool.commit, ev["seq"])
        assert spool.synced == 8
        # a later event needs a sync of its own; one already durable needs none
        late = _intent(spool, 9)  # not deferred: synced before intent() returns
        assert spool.synced == late["seq"] == 9
        await spool.commit(3)

    anyio.run(go)
    spool.close()
    assert len(syncs) == 2


def test_a_write_back_head_start_makes_nothing_durable_until_the_sync_in_place(tmp_path, monkeypatch):
    """``write_back`` only starts the data on its way: ``synced`` moves with ``commit_in_place``'s sync."""
    syncs = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (syncs.append(fd), real(fd)))
    spool = AuditSpool(tmp_path, "s1")
    ev = _deferred(spool, "lone")
    assert spool.lone_commit(ev["seq"])
    spool.write_back()
    assert spool.synced < ev["seq"] and spool.unsynced and not syncs
    spool.commit_in_place(ev["seq"])
    assert spool.synced == ev["seq"] and not spool.unsynced and syncs == [spool.fd]
    assert not spool.lone_commit(ev["seq"])  # on disk: nothing left to do
    spool.commit_in_place(ev["seq"])
    assert len(syncs) == 1
    spool.close()
    assert [e["call_id"] for _, e in read_events(spool.path)[0]] == ["lone"]
    process = AuditSpool(tmp_path, "s2", durability="process")
    assert not process.lone_commit(_deferred(process, "p")["seq"])
    process.close()


def test_a_lone_call_syncs_its_intent_in_place_and_overlapping_calls_share_a_thread_sync(
    tmp_path, monkeypatch
):
    """``alone``: the only call in flight syncs on the calling thread; otherwise the group commit's thread."""
    where = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (where.append(threading.get_ident()), real(fd)))
    spool = AuditSpool(tmp_path, "s1")

    async def go():
        lone = _deferred(spool, "lone")
        await spool.commit(lone["seq"], alone=True)
        assert spool.synced == lone["seq"] and where == [threading.get_ident()]
        await spool.commit(lone["seq"], alone=True)  # already on disk: no second sync
        assert len(where) == 1
        pair = [_deferred(spool, "a"), _deferred(spool, "b")]
        async with anyio.create_task_group() as tg:
            for ev in pair:
                tg.start_soon(spool.commit, ev["seq"])
        assert spool.synced == pair[-1]["seq"]
        assert len(where) == 2 and where[1] != threading.get_ident()

    anyio.run(go)
    spool.close()


def test_a_cancelled_waiter_leaves_the_group_commit_to_the_calls_sharing_it(tmp_path, monkeypatch):
    """A call cancelled while its INTENT's sync runs: the sync goes on, the other call is released by it."""
    started, release = threading.Event(), threading.Event()
    syncs = []
    real = os.fdatasync

    def slow(fd):
        syncs.append(fd)
        started.set()
        release.wait(30)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", slow)
    spool = AuditSpool(tmp_path, "s1")

    async def go():
        first, second = _deferred(spool, "first"), _deferred(spool, "second")
        done = []

        async def wait(ev):
            await spool.commit(ev["seq"])
            done.append(ev["call_id"])

        async with anyio.create_task_group() as tg:
            with anyio.CancelScope() as cancelled:
                tg.start_soon(wait, second)
                await anyio.to_thread.run_sync(started.wait, 30)
                async with anyio.create_task_group() as inner:
                    inner.start_soon(wait, first)
                    await anyio.sleep(0.05)
                    inner.cancel_scope.cancel()  # the agent cancels the first call mid-sync
                # an INTENT written while the sync runs is not covered by it
                late = _deferred(spool, "late")
                release.set()
            assert not cancelled.cancel_called
        assert done == ["second"] and spool.synced == second["seq"] < late["seq"]
        await spool.commit(late["seq"], alone=True)
        assert spool.synced == late["seq"]

    anyio.run(go)
    spool.close()
    assert len(syncs) == 2  # one shared by the first two INTENTs, one for the late one


def _deferred(spool: AuditSpool, call_id: str) -> dict:
    return spool.intent(
        call_id=call_id, server="fs", tool="read", arguments={}, bundle_version=1, defer_sync=True
    )


def test_durability_process_never_waits_for_the_disk_before_forwarding(tmp_path, monkeypatch):
    syncs = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (syncs.append(fd), real(fd)))
    spool = AuditSpool(tmp_path, "s1", durability="process")
    ev = spool.intent(call_id="c", server="fs", tool="read", arguments={}, bundle_version=1, defer_sync=True)
    anyio.run(spool.commit, ev["seq"])
    assert syncs == [] and spool.synced == 0  # forwarded without waiting for the disk
    anyio.run(spool.flush_async)  # the periodic flush, off the event loop, still bounds an OS crash's loss
    assert len(syncs) == 1 and spool.synced == 1
    spool.close()
    assert [e["call_id"] for _, e in read_events(tmp_path / "s1.jsonl")[0]] == ["c"]


COMMITTER = textwrap.dedent(
    """
    import sys, anyio
    from mcpgov.audit import AuditSpool
    spool = AuditSpool(sys.argv[1], "killed")

    async def main():
        i = 0
        while True:
            ev = spool.intent(call_id=f"c{i}", server="fs", tool="write_file", arguments={"i": i},
                              bundle_version=1, defer_sync=True)
            await spool.commit(ev["seq"])
            print(f"forward {ev['call_id']}", flush=True)  # what the gateway would forward now
            i += 1

    anyio.run(main)
    """
)


def test_sigkill_after_the_group_commit_loses_no_intent_of_a_forwarded_call(tmp_path):
    """Every call the writer was about to forward (its INTENT committed) is in the spool after SIGKILL."""
    proc = _writer(COMMITTER, tmp_path)
    forwarded = []
    for _ in range(50):
        forwarded.append(proc.stdout.readline().split()[1])
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    path = tmp_path / "killed.jsonl"
    events, end = read_events(path)
    assert [e["seq"] for _, e in events] == list(range(1, len(events) + 1))
    assert set(forwarded) <= {e["call_id"] for _, e in events if e["phase"] == "intent"}
    # the writer was killed inside its preallocated space: the rest of the file is NUL bytes
    assert path.stat().st_size > end and not path.read_bytes()[end:].strip(b"\0")
    # the next writer (restart recovery) cuts that space off and carries on right after the data
    spool = AuditSpool(tmp_path, "killed")
    assert spool.seq == len(events) and spool.end == end
    spool.close_open_intents("the gateway stopped before recording the result")
    spool.close()
    after, end_after = read_events(path)
    assert [e["seq"] for _, e in after] == list(range(1, len(after) + 1)) and len(after) > len(events)
    assert path.stat().st_size == end_after  # closed: its data only


def test_a_live_spool_is_preallocated_and_read_up_to_its_data(tmp_path):
    """Records go into space the file already has (no size change per sync); readers stop at its NULs;
    the file grows by chunks ahead of the writer, off the call path; a closed spool is its data only."""
    spool = AuditSpool(tmp_path, "s1")
    path = tmp_path / "s1.jsonl"
    assert path.stat().st_size >= SPOOL_CHUNK and spool.end == 0
    first = _intent(spool)
    size = path.stat().st_size
    assert size >= SPOOL_CHUNK > spool.end  # the INTENT's sync did not change the file's size
    [(end, event)] = read_events(path)[0]
    assert end == spool.end and event["call_id"] == first["call_id"]
    # write well past several chunks: every record reads back, in order, none torn by a growth
    big = {"content": "x" * 3000}
    for i in range(3 * SPOOL_CHUNK // 3000):
        ev = spool.intent(call_id=f"c{i}", server="fs", tool="write", arguments=big, bundle_version=1)
        spool.result(ev, status="success", result_summary="", nbytes=0, duration_ms=0)
    events, data_end = read_events(path)
    assert data_end == spool.end > 3 * SPOOL_CHUNK
    assert [e["seq"] for _, e in events] == list(range(1, spool.seq + 1))
    assert path.stat().st_size >= spool.end  # grown ahead of (or, at worst, by) the writer
    spool.close()
    assert path.stat().st_size == data_end
    assert [e["seq"] for _, e in read_events(path)[0]] == list(range(1, len(events) + 1))


def test_a_torn_record_and_unsynced_records_after_a_gap_are_cut_at_reopen(tmp_path, caplog):
    """A power loss can leave a record's prefix before NULs, or a later (unsynced) record's page on disk
    while an earlier one's is not: reading stops at the first NUL, and the reopened spool cuts the rest,
    so new records follow the last whole one."""
    spool = AuditSpool(tmp_path, "s1")
    for i in range(3):
        _intent(spool, i)
    end = spool.end
    spool.close()
    path = tmp_path / "s1.jsonl"
    with open(path, "r+b") as fh:
        fh.seek(end)
        fh.write(b'{"seq":4,"phase":"inte' + b"\0" * 5000 + b'{"seq":5,"phase":"intent"}\n' + b"\0" * 5000)
    assert [e["seq"] for _, e in read_events(path)[0]] == [1, 2, 3]
    spool = AuditSpool(tmp_path, "s1")
    assert "cutting a torn record" in caplog.text
    assert spool.seq == 3 and spool.end == end
    _intent(spool, 9)
    spool.close()
    assert [e["seq"] for _, e in read_events(path)[0]] == [1, 2, 3, 4]
    assert b'"seq":5' not in path.read_bytes()


# --- the shipper ----------------------------------------------------------------------------------------------------


def _fill(tmp_path, sid, n_calls):
    spool = AuditSpool(
        tmp_path,
        sid,
        meta={
            "id": sid,
            "role": "code_agent",
            "read_only": True,
            "declared_large_data": False,
            "agent": "",
            "started_at": "2026-11-24T09:00:00Z",
            "bundle_version": 3,
        },
    )
    for i in range(n_calls):
        _call(spool, i)
    spool.close()


def _shipper(tmp_path, portal, **kw):
    client = PortalClient(portal.url, TOKEN, timeout=5)
    shipper = Shipper(
        tmp_path,
        client.post_events,
        client.open_session,
        min_backoff=0.05,
        max_backoff=0.2,
        poll_interval=0.05,
        **kw,
    )
    return client, shipper


def test_shipper_sends_everything_in_order_in_batches(tmp_path, portal):
    _fill(tmp_path, "s1", 30)  # 60 events

    async def go():
        client, shipper = _shipper(tmp_path, portal, batch_size=25)
        try:
            assert await shipper.ship_all() == 60
        finally:
            await client.aclose()

    anyio.run(go)
    assert [e["seq"] for e in portal.events["s1"]] == list(range(1, 61))
    assert portal.posts == 3 and portal.duplicates == 0
    assert Cursor.load(tmp_path / "s1.ack").seq == 60
    assert portal.sessions["s1"]["role"] == "code_agent"


def test_outage_then_recovery_loses_nothing(tmp_path, portal):
    _fill(tmp_path, "s1", 5)
    portal.outage = True

    async def go():
        client, shipper = _shipper(tmp_path, portal)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(shipper.run)
                await anyio.sleep(0.5)
                assert shipper.failures >= 2 and portal.events.get("s1") is None
                portal.outage = False
                with anyio.fail_after(10):
                    while len(portal.events.get("s1", [])) < 10:
                        await anyio.sleep(0.05)
                tg.cancel_scope.cancel()
        finally:
            await client.aclose()

    anyio.run(go)
    assert [e["seq"] for e in portal.events["s1"]] == list(range(1, 11))
    assert portal.duplicates == 0


def test_lost_acknowledgement_is_retried_without_duplicating(tmp_path, portal):
    """The portal stores a batch but the answer never arrives: the retry is recognised as a duplicate."""
    _fill(tmp_path, "s1", 3)
    portal.drop_next_event_response = True

    async def go():
        client, shipper = _shipper(tmp_path, portal)
        try:
            with pytest.raises(Exception):  # noqa: B017 - the transport error of the dropped answer
                await shipper.ship_all()
            assert Cursor.load(tmp_path / "s1.ack").seq == 0
            assert await shipper.ship_all() == 6
        finally:
            await client.aclose()

    anyio.run(go)
    assert [e["seq"] for e in portal.events["s1"]] == [1, 2, 3, 4, 5, 6]
    assert portal.duplicates == 6  # the portal ignored the replayed batch (idempotent by (session, seq))


def test_restart_resumes_from_the_durable_cursor(tmp_path, portal):
    _fill(tmp_path, "s1", 2)

    async def ship():
        client, shipper = _shipper(tmp_path, portal)
        try:
            return await shipper.ship_all()
        finally:
            await client.aclose()

    assert anyio.run(ship) == 4
    # the gateway restarts: more events for the same session, then a new shipper process
    spool = AuditSpool(tmp_path, "s1")
    spool.result(_intent(spool, 7), status="fail", result_summary="boom", nbytes=0, duration_ms=1)
    spool.close()
    posts = portal.posts
    assert anyio.run(ship) == 2
    assert portal.posts == posts + 1 and portal.duplicates == 0
    assert [e["seq"] for e in portal.events["s1"]] == [1, 2, 3, 4, 5, 6]
    assert portal.events["s1"][-1]["status"] == "fail"


def test_sequence_gap_moves_the_cursor_back(tmp_path, portal):
    _fill(tmp_path, "s1", 2)
    # a cursor that claims more than the portal holds (e.g. the portal's database was restored)
    events, _ = read_events(tmp_path / "s1.jsonl")
    Cursor(2, events[1][0]).save(tmp_path / "s1.ack")

    async def go():
        client, shipper = _shipper(tmp_path, portal)
        try:
            return await shipper.ship_all()
        finally:
            await client.aclose()

    anyio.run(go)
    assert [e["seq"] for e in portal.events["s1"]] == [1, 2, 3, 4]


def test_orphaned_spool_gets_its_open_intents_closed_before_shipping(tmp_path, portal):
    spool = AuditSpool(tmp_path, "s1", meta={"id": "s1", "role": "code_agent"})
    _intent(spool)
    spool.close()  # the gateway died: lock released, no RESULT written

    async def go():
        client, shipper = _shipper(tmp_path, portal)
        try:
            await shipper.ship_all()
        finally:
            await client.aclose()

    anyio.run(go)
    phases = [(e["phase"], e["status"]) for e in portal.events["s1"]]
    assert phases == [("intent", None), ("result", "fail")]
    assert portal.events["s1"][1]["result_summary"].startswith("outcome unknown")


def test_audit_check_cli(portal):
    portal.sessions["s-ok"] = {"state": "ended"}
    portal.sessions["s-no"] = {"state": "ended"}
    portal.acknowledged["s-ok"] = {
        "acknowledged": True,
        "acknowledged_by": "rita",
        "acknowledged_at": "2026-11-24T10:00:00Z",
        "note": "",
    }

    def check(sid):
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "mcpgov",
                "audit-check",
                "--session",
                sid,
                "--portal",
                portal.url,
                "--token",
                TOKEN,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )

    r = check("s-ok")
    assert r.returncode == 0 and "acknowledged by rita" in r.stderr
    r = check("s-no")
    assert r.returncode == 1 and "NOT been acknowledged" in r.stderr
    r = check("s-unknown")
    assert r.returncode == 1 and "no such session" in r.stderr


def test_long_arguments_are_cut_in_the_event_but_summarised_with_their_length(tmp_path):
    spool = AuditSpool(tmp_path, "s1")
    ev = spool.intent(
        call_id="c1",
        server="filesystem",
        tool="write_file",
        bundle_version=1,
        arguments={"path": "big.txt", "content": "a" * 10_000 + " Bearer abcdefghijklmnop"},
    )
    spool.close()
    assert ev["arguments"]["content"] == "a" * 4096 + "…(+5928 chars)"
    assert ev["args_summary"] == '{path: "big.txt", content: <10024 chars>}'


def test_upstream_that_never_answers_times_out():
    """The raw channel's execution timeout, against a real process that reads and never answers."""
    import asyncio

    from mcpgov.upstream import RawChannel, UpstreamTimeout

    async def go():
        proc = await asyncio.create_subprocess_exec(
            "sleep", "30", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        try:
            raw = RawChannel(proc)
            t0 = asyncio.get_running_loop().time()
            with pytest.raises(UpstreamTimeout, match=r"timed out after 0\.3s"):
                await raw.request("tools/call", {"name": "x"}, 0.3)
            assert 0.25 < asyncio.get_running_loop().time() - t0 < 2
            assert raw.pending == {}
        finally:
            proc.kill()
            await proc.wait()

    anyio.run(go)


def test_the_threaded_shipper_delivers_a_live_spool_off_the_callers_loop(tmp_path, portal):
    """Events of a spool this process holds reach the portal from the shipper's own thread, in order."""
    client = PortalClient(portal.url, TOKEN, timeout=5)
    loop_threads = []

    def make():
        import threading

        loop_threads.append(threading.current_thread().name)
        own = client.sibling(lambda: None)
        return Shipper(
            tmp_path, own.post_events, own.open_session, poll_interval=0.05, linger=0.01
        ), own.aclose

    shipping = ShipperThread(make)
    shipping.start()
    spool = AuditSpool(tmp_path, "live", meta={"id": "live", "role": "code_agent"})
    spool.listeners.append(shipping.nudge)

    async def go():
        shipping.run()
        for i in range(20):
            _call(spool, i)
        with anyio.fail_after(30):
            while len(portal.events.get("live", [])) < 40:
                await anyio.sleep(0.02)
        assert await shipping.drain(10)

    try:
        anyio.run(go)
    finally:
        spool.close()
        shipping.stop()
    assert loop_threads == ["mcpgov-audit-shipper"]
    assert [e["seq"] for e in portal.events["live"]] == list(range(1, 41))
    assert portal.duplicates == 0
    assert portal.posts < 40  # batched: never one POST per event
    assert Cursor.load(tmp_path / "live.ack").seq == 40


def test_a_401_seen_by_the_shipper_is_the_kill_switch_of_the_gateways_client(tmp_path, portal):
    """The shipper's own client sees the revocation first: the gateway's client refuses from then on."""
    _fill(tmp_path, "late", 1)  # a session the portal has not seen yet: opening it answers 401
    portal.revoke()
    client = PortalClient(portal.url, TOKEN, timeout=5)

    async def go():
        import asyncio

        loop = asyncio.get_running_loop()

        def make():
            own = client.sibling(lambda: loop.call_soon_threadsafe(client.mark_revoked))
            return Shipper(tmp_path, own.post_events, own.open_session), own.aclose

        shipping = ShipperThread(make)
        shipping.start()
        try:
            with pytest.raises(Exception):  # noqa: B017 - the portal's 401 on opening the session
                await shipping.ship_all()
            with anyio.fail_after(10):
                while not client.revoked:
                    await anyio.sleep(0.01)
        finally:
            shipping.stop()
            await client.aclose()

    anyio.run(go)
    assert portal.events.get("late") is None


# the gateway's shipper as it runs in production (control.shipper_thread), in a process of its own that
# keeps writing calls until it is killed
SHIPPING_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from mcpgov.audit import AuditSpool
    from mcpgov.control import shipper_thread
    from mcpgov.portal_client import PortalClient

    directory, url, token = sys.argv[1:4]

    async def main():
        shipping = shipper_thread(PortalClient(url, token, timeout=5), Path(directory))
        spool = AuditSpool(directory, "killed", meta={"id": "killed", "role": "code_agent"})
        spool.listeners.append(shipping.nudge)
        shipping.run()
        for i in range(1000000):
            ev = spool.intent(call_id=f"c{i}", server="fs", tool="read_file", arguments={"i": i}, bundle_version=1)
            spool.result(ev, status="success", result_summary="ok", nbytes=1, duration_ms=1)
            print(f"written {ev['seq'] + 1}", flush=True)
            await asyncio.sleep(0.002)

    asyncio.run(main())
    """
)


def _deliver_orphans(tmp_path, portal) -> None:
    """What the next gateway does at start: ship (and end) the spools stopped gateways left."""

    async def go():
        client, shipper = _shipper(tmp_path, portal)
        try:
            await shipper.ship_all()
        finally:
            await client.aclose()

    anyio.run(go)


def test_a_shipping_gateway_killed_mid_batch_loses_nothing_and_duplicates_nothing(tmp_path, portal):
    """SIGKILL while batches are flowing (the cursor file behind what the portal holds): the next
    gateway ships the orphan, and the portal ends up with every event exactly once, in order."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SHIPPING_WRITER, str(tmp_path), portal.url, TOKEN],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    try:
        # batches have reached the portal and the writer keeps going: kill it mid-stream
        t0 = time.monotonic()
        while len(portal.events.get("killed", [])) < 40 and time.monotonic() - t0 < 60:
            proc.stdout.readline()
        assert len(portal.events.get("killed", [])) >= 40
        for _ in range(20):
            proc.stdout.readline()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    shipped_before = len(portal.events["killed"])
    posts_before = portal.posts
    assert posts_before < shipped_before // 2  # batched: many events per POST
    _deliver_orphans(tmp_path, portal)
    events = [e for _, e in read_events(tmp_path / "killed.jsonl")[0]]
    assert len(events) > shipped_before
    stored = [e["seq"] for e in portal.events["killed"]]
    assert stored == list(range(1, len(events) + 1))  # all of them, once each, in order
    assert {e["call_id"] for e in portal.events["killed"]} == {e["call_id"] for e in events}


def test_the_threaded_shipper_rides_out_an_outage_of_a_live_spool(tmp_path, portal):
    """The portal is down while a held spool keeps being written, then back: everything is delivered
    once, in few POSTs; the cursor file, written at most once a second meanwhile, is current after drain."""
    client = PortalClient(portal.url, TOKEN, timeout=5)

    def make():
        own = client.sibling(lambda: None)
        shipper = Shipper(
            tmp_path,
            own.post_events,
            own.open_session,
            min_backoff=0.05,
            max_backoff=0.2,
            linger=0.05,
            max_linger=0.25,
            cursor_interval=1.0,
        )
        return shipper, own.aclose

    shipping = ShipperThread(make)
    shipping.start()
    spool = AuditSpool(tmp_path, "live", meta={"id": "live", "role": "code_agent"})
    spool.listeners.append(shipping.nudge)

    async def go():
        shipping.run()
        portal.outage = True
        for i in range(30):
            _call(spool, i)
            await anyio.sleep(0.005)
        with anyio.fail_after(30):
            while shipping.failures < 2:
                await anyio.sleep(0.02)
        assert portal.events.get("live") is None
        portal.outage = False
        for i in range(30, 60):
            _call(spool, i)
            await anyio.sleep(0.005)
        with anyio.fail_after(30):
            while len(portal.events.get("live", [])) < 120:
                await anyio.sleep(0.02)
        assert await shipping.drain(10)

    try:
        anyio.run(go)
    finally:
        spool.close()
        shipping.stop()
        anyio.run(client.aclose)
    assert [e["seq"] for e in portal.events["live"]] == list(range(1, 121))
    assert portal.duplicates == 0
    assert portal.posts < 60  # batched: never one POST per call
    assert Cursor.load(tmp_path / "live.ack").seq == 120
