"""The decision engine: every rule of the call path, their order, and the limits' boundaries."""

from __future__ import annotations

import copy
from datetime import timedelta

import pytest

from mcpgov.bundle import Bundle
from mcpgov.decision import (
    ToolCall,
    Verdict,
    check_result,
    compile_policy,
    decide,
    decide_task,
    pause_point,
    result_rows,
)
from mcpgov.session import CallRecord, SessionState, SessionStatus, call_resource
from tests.mcpgov.helpers import NOW, bundle_doc, iso

ALLOW, APPROVAL, REFUSE = Verdict.ALLOW, Verdict.APPROVAL, Verdict.REFUSE
HALTED, PAUSED = SessionStatus.HALTED, SessionStatus.PAUSED
T = NOW.timestamp()
FLAG_CHANGED = "2026-11-24T08:30:00Z"


def bundle(**overrides) -> Bundle:
    return Bundle.model_validate(bundle_doc(**overrides))


def doc_with(mutate) -> Bundle:
    d = bundle_doc()
    mutate(d)
    return Bundle.model_validate(d)


def session(role="code_agent", read_only=False, **kw) -> SessionState:
    return SessionState(session_id="s-1", role=role, read_only=read_only, **kw)


def run(b, st, server, tool, now=T, **arguments):
    """Decide, and when allowed record the call like the gateway does."""
    d = decide(b, st, ToolCall(server, tool, arguments), now)
    if d.verdict == ALLOW:
        is_write = compile_policy(b, st.role).rule(server).tool(tool).is_write
        st.record_forwarded(server, is_write, call_resource(server, arguments), now)
        st.record_outcome(CallRecord("ts", server, tool, str(arguments), "success"))
    return d


def read(b, st, now=T):
    return run(b, st, "time", "get_current_time", now, timezone="UTC")


def write(b, st, path="/tmp/work/a.txt", now=T):
    return run(b, st, "filesystem", "write_file", now, path=path, content="x")


# --- allow -----------------------------------------------------------------------------------------------


def test_allowed_read_and_write():
    b, st = bundle(), session()
    d = read(b, st)
    assert d.verdict == ALLOW and d.allowed and d.trigger is None and d.timeout is None
    assert write(b, st).allowed
    assert st.total_calls == 2


def test_allow_decision_is_shared_and_carries_the_execution_timeout():
    b = doc_with(lambda d: d["rate_limits"]["per_server"].update({"time": {"max_execution_time_seconds": 7}}))
    st = session()
    d1 = decide(b, st, ToolCall("time", "get_current_time", {}), T)
    d2 = decide(b, st, ToolCall("time", "get_current_time", {}), T)
    assert d1 is d2 and d1.timeout == 7.0


def test_decide_does_not_change_the_session():
    b = doc_with(lambda d: d["rate_limits"]["global"].update({"max_calls_per_session": 1}))
    st = session()
    read(b, st)
    before = copy.deepcopy(st)
    for call in (
        ToolCall("time", "get_current_time", {}),
        ToolCall("shell", "run", {}),
        ToolCall("x", "y", {}),
    ):
        decide(b, st, call, T)
    assert st == before


# --- 0. expiry, 1. halted / paused ------------------------------------------------------------------------------


def test_expired_bundle_fails_closed_exactly_at_expiry():
    b = bundle(expires_at=iso(NOW + timedelta(seconds=10)))
    assert read(b, session(), now=T + 9.999).allowed
    d = read(b, session(), now=T + 10)
    assert d.verdict == REFUSE and d.trigger == "bundle_expired" and d.new_state is None
    assert "expired" in d.message and "fails closed" in d.message


@pytest.mark.parametrize("state", [HALTED, PAUSED, "ended"])
def test_halted_paused_or_ended_session_refuses_everything(state):
    st = session()
    st.state, st.trigger, st.state_reason = state, "rate_limit", "Limit reached"
    d = read(bundle(), st)
    assert d.verdict == REFUSE and d.trigger == "session_halted" and d.new_state is None
    assert "Allow to continue" in d.message


def test_halted_comes_before_everything_else():
    st = session()
    st.halt("unauthorized_server", "x")
    d = run(bundle(), st, "shell", "run")
    assert d.trigger == "session_halted"


def test_changed_tool_definition_is_refused_and_halts():
    d = decide(bundle(), session(), ToolCall("time", "get_current_time", {}, definition_changed=True), T)
    assert d.trigger == "tool_definition_changed" and d.new_state == HALTED


# --- 2. flags ----------------------------------------------------------------------------------------------


def _flag(**kw):
    base = {
        "name": "mcp.filesystem.write",
        "server": "filesystem",
        "capability": "write",
        "enabled": False,
        "reason": "Production incident — filesystem write suspended",
        "changed_at": FLAG_CHANGED,
    }
    return {**base, **kw}


def test_disabled_write_flag_stops_writes_with_the_kill_switch_message():
    b, st = bundle(flags=[_flag()]), session()
    read(b, st)
    assert run(b, st, "filesystem", "read_text_file", path="/tmp/work/a").allowed
    d = write(b, st)
    assert d.verdict == REFUSE and d.trigger == "kill_switch_flag" and d.new_state == HALTED
    assert d.message.splitlines()[0] == (
        "MCP_KILL_SWITCH: mcp.filesystem.write disabled by governance flag — reason: Production incident — "
        "filesystem write suspended — since 2026-11-24T08:30:00Z"
    )


def test_flag_capability_all_and_global_server():
    b = bundle(flags=[_flag(name="mcp.all", server=None, capability="all")])
    assert read(b, session()).trigger == "kill_switch_flag"
    b = bundle(flags=[_flag(capability="read")])
    assert write(b, session()).allowed
    assert run(b, session(), "filesystem", "list_directory", path="/tmp").trigger == "kill_switch_flag"


def test_flag_role_constraint_unleash_semantics():
    only_db = [{"context_name": "role", "operator": "IN", "values": ["database_agent"]}]
    b = bundle(flags=[_flag(enabled=True, constraints=only_db)])
    assert write(b, session()).trigger == "kill_switch_flag"  # on for database_agent only
    b = bundle(flags=[_flag(enabled=True, constraints=[{**only_db[0], "operator": "NOT_IN"}])])
    assert write(b, session()).allowed
    assert write(bundle(flags=[_flag(enabled=True)]), session()).allowed


def test_flag_comes_before_the_allowlist():
    b = bundle(flags=[_flag(server="shell", capability="all")])
    assert run(b, session(), "shell", "run").trigger == "kill_switch_flag"


# --- 3. role allowlist ----------------------------------------------------------------------------------------


def test_server_not_in_allowlist_is_trigger_1():
    d = run(bundle(), session(role="docs_agent"), "filesystem", "read_text_file", path="/tmp/work/a")
    assert d.trigger == "unauthorized_server" and d.new_state == HALTED
    assert "not in the allowlist of role 'docs_agent'" in d.message
    assert "MCP_KILL_SWITCH_TRIGGERED: unauthorized_server (trigger 1 — UNAUTHORIZED SERVER)" in d.message


def test_forbidden_wins_over_allowed():
    b = doc_with(lambda d: d["roles"]["code_agent"]["allowed_servers"].append("shell"))
    d = run(b, session(), "shell", "run")
    assert d.trigger == "unauthorized_server" and "forbidden for role 'code_agent'" in d.message


def test_unknown_role_and_unknown_server_are_denied():
    assert read(bundle(), session(role="nobody")).trigger == "unauthorized_server"
    d = run(bundle(), session(), "never_heard_of", "x")
    assert d.trigger == "unauthorized_server"


def test_allowlist_comes_before_the_environment():
    b = doc_with(lambda d: d["environment_policy"]["bindings"].pop("time"))
    assert read(b, session(role="nobody")).trigger == "unauthorized_server"
    assert read(b, session()).trigger == "production_environment"


# --- 4. environment -------------------------------------------------------------------------------------------


def test_unbound_server_is_trigger_3():
    b = doc_with(lambda d: d["environment_policy"]["bindings"].pop("git"))
    d = run(b, session(), "git", "git_status", repo_path="/tmp/repo")
    assert d.trigger == "production_environment" and "not bound in environment 'development'" in d.message


def test_forbidden_pattern_on_binding_target():
    b = doc_with(lambda d: d["environment_policy"]["bindings"]["filesystem"].update(target="/srv/PROD/data"))
    d = run(b, session(), "filesystem", "read_text_file", path="/srv/prod/data/x")
    assert d.trigger == "production_environment" and "forbidden pattern '*prod*'" in d.message


def test_forbidden_pattern_on_server_slug():
    def mutate(d):
        d["roles"]["code_agent"]["allowed_servers"].append("live_db")
        d["servers"]["live_db"] = {"transport": "http", "url": "http://db.internal/mcp", "tools": {}}
        d["environment_policy"]["bindings"]["live_db"] = {"target": "http://db.internal/mcp"}

    d = run(doc_with(mutate), session(), "live_db", "query")
    assert (
        d.trigger == "production_environment" and "'live_db' matches forbidden pattern '*live*'" in d.message
    )


def _prod_word_bundle(grants=()):
    def mutate(d):
        d["environment_policy"]["forbidden_patterns"] = []
        d["environment_policy"]["bindings"]["git"]["target"] = "https://git.example.com/acme/main"
        d["grants"] = list(grants)

    return doc_with(mutate)


def test_production_words_need_a_live_grant():
    d = run(_prod_word_bundle(), session(), "git", "git_status")
    assert d.trigger == "production_environment" and "words: main" in d.message
    # whole tokens only: "domain" does not contain the word "main"
    b = doc_with(lambda d: d["environment_policy"]["bindings"]["git"].update(target="/srv/domain/repo"))
    assert run(b, session(), "git", "git_status").allowed


def test_grant_window_is_start_inclusive_end_exclusive():
    g = {
        "id": "g1",
        "role": "code_agent",
        "servers": ["git"],
        "starts_at": iso(NOW),
        "ends_at": iso(NOW + timedelta(minutes=30)),
    }
    b = _prod_word_bundle([g])
    assert run(b, session(), "git", "git_status", now=T - 0.001).trigger == "production_environment"
    assert run(b, session(), "git", "git_status", now=T).allowed
    assert run(b, session(), "git", "git_status", now=T + 1799.999).allowed
    assert run(b, session(), "git", "git_status", now=T + 1800).trigger == "production_environment"


def test_grant_for_another_role_or_server_does_not_count():
    grants = [
        {
            "id": "g1",
            "role": "docs_agent",
            "servers": ["git"],
            "starts_at": iso(NOW),
            "ends_at": iso(NOW + timedelta(hours=1)),
        },
        {
            "id": "g2",
            "role": "code_agent",
            "servers": ["time"],
            "starts_at": iso(NOW),
            "ends_at": iso(NOW + timedelta(hours=1)),
        },
    ]
    assert run(_prod_word_bundle(grants), session(), "git", "git_status").trigger == "production_environment"


def test_production_environment_requires_a_grant_for_every_server():
    def mutate(d):
        d["environment"] = d["environment_policy"]["name"] = "production"
        d["environment_policy"]["requires_authorization"] = True
        d["environment_policy"]["forbidden_patterns"] = []
        d["grants"] = [
            {
                "id": "g",
                "role": "code_agent",
                "servers": ["time"],
                "starts_at": iso(NOW),
                "ends_at": iso(NOW + timedelta(hours=1)),
            }
        ]

    b = doc_with(mutate)
    assert read(b, session()).allowed
    d = run(b, session(), "filesystem", "read_text_file", path="/tmp/work/a")
    assert d.trigger == "production_environment" and "requires explicit human authorization" in d.message


def test_environment_comes_before_read_only():
    b = doc_with(lambda d: d["environment_policy"]["bindings"].pop("filesystem"))
    assert write(b, session(read_only=True)).trigger == "production_environment"


# --- 5. write in a read session --------------------------------------------------------------------------------


def test_write_in_read_only_session_is_trigger_2_and_reads_pass():
    st = session(read_only=True)
    assert read(bundle(), st).allowed
    d = write(bundle(), st)
    assert d.trigger == "write_in_read_session" and d.new_state == HALTED
    assert "declared read-only" in d.message


def test_write_to_a_read_only_binding():
    b = doc_with(lambda d: d["environment_policy"]["bindings"]["filesystem"].update(permission="read_only"))
    d = write(b, session(read_only=False))
    assert d.trigger == "write_in_read_session" and "binding of 'filesystem'" in d.message


def test_tool_without_class_information_counts_as_write_when_the_server_allows_unknown_tools():
    b = doc_with(lambda d: d["servers"]["filesystem"].update(allow_unknown_tools="as_write"))
    d = run(b, session(read_only=True), "filesystem", "create_directory", path="/tmp/work/new")
    assert d.trigger == "write_in_read_session"
    assert run(b, session(read_only=False), "filesystem", "create_directory", path="/tmp/work/new").allowed


def test_unknown_tool_is_refused_by_default_without_halting():
    st = session(read_only=False)
    d = run(bundle(), st, "filesystem", "create_directory", path="/tmp/work/new")
    assert d.verdict == REFUSE and d.trigger == "unknown_tool" and d.new_state is None
    assert "not in the approved tool list" in d.message
    assert run(bundle(), st, "filesystem", "read_text_file", path="/tmp/work/a").allowed


def test_unknown_tool_on_a_forbidden_server_fires_trigger_1_first():
    d = run(bundle(), session(), "shell", "exec", cmd="ls")
    assert d.trigger == "unauthorized_server"


def test_read_only_comes_before_rate_limits():
    b = doc_with(lambda d: d["rate_limits"]["global"].update({"max_calls_per_session": 0}))
    assert write(b, session(read_only=True)).trigger == "write_in_read_session"
    assert write(b, session()).trigger == "rate_limit"


# --- 6. rate limits ----------------------------------------------------------------------------------------------


def limits(glob=None, **per_server):
    def mutate(d):
        d["rate_limits"]["global"].update(glob or {})
        for slug, lim in per_server.items():
            d["rate_limits"]["per_server"][slug] = lim

    return doc_with(mutate)


def test_global_session_limit_allows_exactly_the_limit():
    b, st = limits({"max_calls_per_session": 3}), session()
    assert all(read(b, st).allowed for _ in range(3))
    d = read(b, st)
    assert d.trigger == "rate_limit" and d.new_state == HALTED
    assert "3/3 session calls" in d.message and "Current session: 3/3 total calls (100%)" in d.message


def test_pause_at_percent_then_release_then_halt():
    b, st = limits({"max_calls_per_session": 10, "pause_at_percent": 80}), session()
    assert pause_point(10, 80) == 8
    assert all(read(b, st).allowed for _ in range(8))
    d = read(b, st)
    assert d.verdict == REFUSE and d.new_state == PAUSED and d.pause_key == "global.calls"
    assert d.message.startswith("MCP RATE LIMIT ALERT")
    assert "8/10 session calls (80%" in d.message and "time: 8 calls, 8 reads" in d.message
    st.pause(d.pause_key, d.message)
    assert read(b, st).trigger == "session_halted"
    st.release()
    assert read(b, st).allowed and read(b, st).allowed
    assert read(b, st).new_state == HALTED  # 10/10: the hard stop, no second pause


def test_pause_message_never_contradicts_its_numbers():
    """4 calls at 80%: the pause comes after 3 (75%), the call that would pass 80% is refused and
    the message says so, not "75% — past the pause threshold of 80%"."""
    b, st = limits({"max_calls_per_session": 4, "pause_at_percent": 80}), session()
    assert all(read(b, st).allowed for _ in range(3))
    d = read(b, st)
    assert d.new_state == PAUSED
    assert (
        "Paused at 3/4 session calls (75%): the next call would take it past the pause threshold of 80%."
        in (d.message)
    )
    assert "past the pause threshold of 80%)" not in d.message


def test_pause_point_boundaries():
    assert pause_point(200, 80) == 160
    assert pause_point(3, 80) == 2
    assert pause_point(1, 80) is None  # floor(0.8) = 0: never pause before the first call
    assert pause_point(10, 100) is None
    assert pause_point(10, None) is None


def test_pause_applies_to_per_server_session_limits():
    b, st = limits({"pause_at_percent": 50}, filesystem={"max_write_calls_per_session": 4}), session()
    assert write(b, st, "/tmp/work/a").allowed and write(b, st, "/tmp/work/a").allowed
    d = write(b, st, "/tmp/work/a")
    assert (
        d.new_state == PAUSED
        and d.pause_key == "filesystem.writes"
        and "2/4 write calls to filesystem" in d.message
    )


def test_hard_limit_wins_over_pause():
    b, st = (
        limits({"max_calls_per_session": 4, "pause_at_percent": 50}, time={"max_calls_per_session": 2}),
        session(),
    )
    st.pauses_passed.add("time.calls")
    assert read(b, st).allowed and read(b, st).allowed
    # global is at its pause point (2/4) and time at its hard limit (2/2): the hard limit wins
    d = read(b, st)
    assert d.new_state == HALTED and "2/2 calls to time" in d.message


def test_global_per_minute_is_a_sliding_window():
    b, st = limits({"max_calls_per_minute": 2}), session()
    assert read(b, st, now=T).allowed and read(b, st, now=T + 1).allowed
    d = read(b, st, now=T + 59.999)
    assert d.trigger == "rate_limit" and "2/2 calls in the last minute" in d.message
    assert read(b, st, now=T + 60).allowed  # the call at T left the window
    assert read(b, st, now=T + 60.5).trigger == "rate_limit"


def test_per_server_limits():
    b = limits(time={"max_calls_per_session": 2})
    st = session()
    read(b, st), read(b, st)
    assert read(b, st).trigger == "rate_limit"
    assert write(b, st).allowed  # other servers unaffected

    b, st = limits(filesystem={"max_read_calls_per_session": 1, "max_write_calls_per_session": 1}), session()
    assert run(b, st, "filesystem", "read_text_file", path="a").allowed
    assert run(b, st, "filesystem", "read_text_file", path="a").trigger == "rate_limit"
    assert write(b, st).allowed
    assert "1/1 write calls to filesystem" in write(b, st).message

    b, st = limits(time={"max_calls_per_minute": 1}), session()
    assert read(b, st, now=T).allowed
    assert "calls to time in the last minute" in read(b, st, now=T + 30).message
    assert read(b, st, now=T + 60).allowed


def test_refused_calls_do_not_count():
    b, st = limits({"max_calls_per_session": 2}), session()
    run(b, st, "shell", "run")
    assert st.total_calls == 0 and read(b, st).allowed and read(b, st).allowed


def test_rate_limit_comes_before_cascade():
    b, st = limits(filesystem={"max_write_calls_per_session": 2}), session()
    write(b, st, "/a"), write(b, st, "/b")
    assert write(b, st, "/c").trigger == "rate_limit"


# --- 7. cascade write chain -------------------------------------------------------------------------------------


def test_third_write_across_different_resources_halts():
    b, st = bundle(), session()
    assert write(b, st, "/tmp/work/a").allowed and write(b, st, "/tmp/work/b").allowed
    d = write(b, st, "/tmp/work/c")
    assert d.trigger == "cascade_write_chain" and d.new_state == HALTED
    assert "write 3 in a row" in d.message and "filesystem:/tmp/work/c" in d.message


def test_repeated_writes_to_one_resource_are_not_a_cascade():
    b, st = bundle(), session()
    assert all(write(b, st, "/tmp/work/a").allowed for _ in range(5))
    assert write(b, st, "/tmp/work/b").allowed
    assert write(b, st, "/tmp/work/c").trigger == "cascade_write_chain"


def test_a_read_breaks_the_chain():
    b, st = bundle(), session()
    write(b, st, "/a"), write(b, st, "/b")
    read(b, st)
    assert write(b, st, "/c").allowed and write(b, st, "/d").allowed
    assert write(b, st, "/e").trigger == "cascade_write_chain"


def test_cascade_across_servers_and_threshold_from_bundle():
    b, st = bundle(), session()
    write(b, st, "/tmp/repo")
    assert run(b, st, "git", "git_commit", repo_path="/tmp/repo", message="m").allowed  # other server
    assert (
        run(b, st, "git", "git_commit", repo_path="/tmp/other", message="m").trigger == "cascade_write_chain"
    )
    b2 = doc_with(lambda d: d["triggers"].update(cascade_write_threshold=2))
    st = session()
    write(b2, st, "/a")
    assert write(b2, st, "/b").trigger == "cascade_write_chain"


def test_release_restarts_the_chain():
    b, st = bundle(), session()
    write(b, st, "/a"), write(b, st, "/b")
    d = write(b, st, "/c")
    st.halt(d.trigger, d.message)
    st.release()
    assert write(b, st, "/c").allowed


# --- 8. approval -----------------------------------------------------------------------------------------------


def test_approval_required_tool():
    b = doc_with(lambda d: d["servers"]["filesystem"]["tools"]["edit_file"].update(approval_required=True))
    d = run(b, session(), "filesystem", "edit_file", path="/tmp/work/a")
    assert d.verdict == APPROVAL and d.trigger == "approval_required" and d.new_state is None
    # the earlier rules still come first
    assert (
        run(b, session(read_only=True), "filesystem", "edit_file", path="/a").trigger
        == "write_in_read_session"
    )


# --- messages ---------------------------------------------------------------------------------------------------


def test_trigger_message_names_the_trigger_and_shows_the_last_three_calls_redacted():
    b, st = bundle(), session(read_only=True)
    for tz in ("UTC", "Europe/Paris", "Asia/Tokyo", "America/Lima"):
        read(b, st)
        st.last_calls[-1].args_summary = f"{{timezone: {tz!r}}}"
    d = run(b, st, "filesystem", "write_file", path="/tmp/work/x", api_key="sk-live-123", content="x")
    lines = d.message.splitlines()
    assert (
        lines[0]
        == "MCP_KILL_SWITCH_TRIGGERED: write_in_read_session (trigger 2 — WRITE OPERATION IN READ SESSION)"
    )
    assert "sk-live-123" not in d.message and 'api_key: "[REDACTED]"' in d.message
    assert "Last 3 calls:" in lines
    shown = [line for line in lines if line.startswith("  ")]
    assert len(shown) == 3 and "UTC" not in "".join(shown) and "America/Lima" in shown[-1]
    assert all("→ success" in line for line in shown)


# --- after the call ---------------------------------------------------------------------------------------------


def test_large_result_undeclared_is_withheld():
    b, call = bundle(), ToolCall("time", "get_current_time", {})
    assert check_result(b, session(), call, result_bytes=1_048_576) is None  # exactly the threshold: fine
    d = check_result(b, session(), call, result_bytes=1_048_577)
    assert d.trigger == "large_data_return" and d.new_state == HALTED and "withheld" in d.message
    assert check_result(b, session(declared_large_data=True), call, result_bytes=5_000_000) is None


def test_max_response_bytes_applies_even_when_declared():
    b = limits(time={"max_response_bytes": 100})
    call = ToolCall("time", "get_current_time", {})
    assert check_result(b, session(declared_large_data=True), call, result_bytes=100) is None
    d = check_result(b, session(declared_large_data=True), call, result_bytes=101)
    assert d.trigger == "large_data_return" and "max_response_bytes 100" in d.message


def test_max_rows_returned():
    b = limits(time={"max_rows_returned": 2})
    call = ToolCall("time", "q", {})
    assert check_result(b, session(), call, result_bytes=10, rows=2) is None
    assert check_result(b, session(), call, result_bytes=10, rows=3).trigger == "large_data_return"
    assert result_rows({"rows": [1, 2, 3]}) == 3
    assert result_rows({"row_count": 7}) == 7 and result_rows({"rows_returned": 0}) == 0
    assert (
        result_rows({"other": 1}) is None
        and result_rows(None) is None
        and result_rows({"row_count": True}) is None
    )


def test_trigger_codes_match_the_enforcer_api_contract():
    import re
    from pathlib import Path

    from mcpgov.bundle import Trigger

    api = (Path(__file__).resolve().parents[2] / "docs" / "enforcer-api.md").read_text()
    start = api.index('"trigger": null |')
    block = api[start : api.index('"bundle_version": 12', start)]
    assert set(re.findall(r'"([a-z_]+)"', block)) - {"trigger"} == set(Trigger)


# --- the wider surface: resources/read and prompts/get as reads; requests of a server to the agent ---------


def resource_read(server: str, uri: str) -> ToolCall:
    return ToolCall(server, "resources/read", {"uri": uri}, method="resources/read", uri=uri)


def test_a_resource_read_is_a_read_of_its_server_never_an_unknown_tool():
    b = bundle()
    st = session(read_only=True)
    assert decide(b, st, resource_read("filesystem", "file:///tmp/work/a.md"), T).verdict == ALLOW
    # the same name as a tools/call is an unknown tool, refused
    assert decide(b, st, ToolCall("filesystem", "resources/read", {"uri": "x"}), T).trigger == "unknown_tool"
    prompt = ToolCall("filesystem", "prompts/get", {"name": "p"}, method="prompts/get")
    assert decide(b, st, prompt, T).verdict == ALLOW


@pytest.mark.parametrize(
    ("server", "uri", "trigger"),
    [
        ("filesystem", "file:///srv/prod/db.env", "production_environment"),  # forbidden pattern on the URI
        ("shell", "file:///etc/passwd", "unauthorized_server"),
        ("unknown_server", "x://y", "unauthorized_server"),
    ],
)
def test_resource_reads_fire_the_triggers_of_their_server_and_uri(server, uri, trigger):
    d = decide(bundle(), session(), resource_read(server, uri), T)
    assert (d.verdict, d.trigger, d.new_state) == (REFUSE, trigger, HALTED)


def test_resource_reads_count_as_reads_against_the_limits_and_flags():
    b = doc_with(
        lambda d: d["rate_limits"]["per_server"].update({"filesystem": {"max_read_calls_per_session": 1}})
    )
    st = session()
    assert decide(b, st, resource_read("filesystem", "file:///tmp/work/a"), T).verdict == ALLOW
    st.record_forwarded("filesystem", False, ("filesystem", "file:///tmp/work/a"), T)
    assert decide(b, st, resource_read("filesystem", "file:///tmp/work/b"), T).trigger == "rate_limit"
    flagged = doc_with(
        lambda d: d["flags"].append(
            {
                "name": "mcp.filesystem.read",
                "server": "filesystem",
                "capability": "read",
                "enabled": False,
                "changed_at": FLAG_CHANGED,
            }
        )
    )
    assert (
        decide(flagged, session(), resource_read("filesystem", "file:///tmp/work/a"), T).trigger
        == "kill_switch_flag"
    )


def _sr(**policy):
    from mcpgov.decision import decide_server_request

    def ask(method, params, state=None, server="time"):
        b = doc_with(lambda d: d["servers"][server].update({"server_requests": policy}))
        return decide_server_request(compile_policy(b, "code_agent"), state, server, method, params, T)

    return ask


def test_sampling_is_refused_by_default_and_capped_when_allowed():
    sampling = {"messages": [], "maxTokens": 5000}
    assert not _sr()("sampling/createMessage", sampling).allowed
    allowed = _sr(sampling=True, sampling_max_tokens=100)("sampling/createMessage", sampling)
    assert allowed.allowed and allowed.changes == {"maxTokens": 100}
    assert (
        _sr(sampling=True, sampling_max_tokens=100)("sampling/createMessage", {"maxTokens": 50}).changes == {}
    )
    with_tools = {"maxTokens": 10, "tools": [{"name": "rm"}]}
    assert "sampling_tools" in _sr(sampling=True)("sampling/createMessage", with_tools).reason
    assert _sr(sampling=True, sampling_tools=True)("sampling/createMessage", with_tools).allowed


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://example.com/a", True),
        ("https://login.example.com/a", True),
        ("https://LOGIN.Example.COM./a", True),
        ("http://example.com/a", False),  # https only
        ("https://example.com.evil.net/a", False),
        ("https://notexample.com/a", False),
        ("https://user@evil.net/?u=example.com", False),
        ("javascript:alert(1)", False),
        ("https://[::1/", False),
    ],
)
def test_url_elicitation_only_to_allowlisted_https_domains(url, allowed):
    ask = _sr(elicitation_url_domains=["example.com"])
    assert ask("elicitation/create", {"mode": "url", "url": url, "message": "m"}).allowed is allowed
    assert not _sr()(
        "elicitation/create", {"mode": "url", "url": "https://example.com/", "message": "m"}
    ).allowed


def test_form_elicitation_and_roots_follow_their_switches_and_the_server_rules():
    form = {"mode": "form", "message": "name?", "requestedSchema": {}}
    assert _sr()("elicitation/create", form).allowed and _sr()("roots/list", {}).allowed
    assert not _sr(elicitation=False)("elicitation/create", form).allowed
    assert not _sr(roots=False)("roots/list", {}).allowed
    # a server the role may not use, or a session that is not active, gets nothing from the agent
    assert (
        "forbidden" in _sr(sampling=True)("sampling/createMessage", {"maxTokens": 1}, server="shell").reason
    )
    halted = session()
    halted.halt("rate_limit", "r")
    assert not _sr(sampling=True)("sampling/createMessage", {"maxTokens": 1}, state=halted).allowed
    assert not _sr()("tasks/get", {}).allowed


# --- tasks: what a poll of a task already created may do ------------------------------------------------


def task_poll(b, st, server="filesystem", tool="write_file", now=T):
    return decide_task(compile_policy(b, st.role), st, ToolCall(server, tool, {"path": "/tmp/work/a"}), now)


def test_task_polls_are_not_calls_rate_limits_and_cascades_do_not_apply():
    b = bundle(rate_limits={"global": {"max_calls_per_session": 1}, "per_server": {}})
    st = session()
    assert write(b, st).allowed  # the call that created the task used the one call
    for _ in range(5):
        assert task_poll(b, st).allowed
    assert st.total_calls == 1
    assert write(b, st, path="/tmp/work/b").trigger == "rate_limit"


def test_task_polls_refused_when_halted_or_ended_but_not_when_paused():
    b = bundle()
    st = session()
    st.halt("unauthorized_server", "Server 'shell' is forbidden")
    d = task_poll(b, st)
    assert d.verdict == REFUSE and d.trigger == "session_halted" and d.new_state is None
    assert "halted by trigger unauthorized_server" in d.message
    st = session()
    st.end("bye")
    assert task_poll(b, st).verdict == REFUSE
    st = session()
    st.pause("global", "80% of the calls")
    assert task_poll(b, st).allowed  # the call was allowed before the pause; a person decides the next one


def test_task_polls_stop_on_a_kill_switch_flag_for_the_tasks_capability_and_halt():
    st = session()
    d = task_poll(bundle(flags=[_flag()]), st)
    assert d.verdict == REFUSE and d.trigger == "kill_switch_flag" and d.new_state == HALTED
    assert d.message.startswith("MCP_KILL_SWITCH: mcp.filesystem.write disabled by governance flag")
    # a write flag does not stop a read task
    assert task_poll(bundle(flags=[_flag()]), session(), "filesystem", "read_text_file").allowed


def test_task_polls_fail_closed_on_an_expired_bundle():
    b = bundle()
    later = compile_policy(b, "code_agent").expires_at + 1
    assert task_poll(b, session(), now=later).trigger == "bundle_expired"
