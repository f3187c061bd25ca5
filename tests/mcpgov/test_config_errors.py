"""Every configuration problem is one line on stderr naming the file and the line or key, and exit 2.

Run as a user runs them: ``python -m mcpgov gateway`` and ``python -m mcpgov gate`` processes, with a real
signed bundle file, and PortalTestDouble where a portal is needed (a wrong token is its 401).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.mcpgov.conftest import PY, ROOT, TIME_ARGS, run_mcpgov
from tests.mcpgov.portal_double import TOKEN

pytestmark = pytest.mark.slow  # each case starts a gateway or gate process


def _run(args: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return run_mcpgov(args, cwd)


def _one_line(r: subprocess.CompletedProcess[str]) -> str:
    """The one error line (log lines such as "mcpgov WARNING …: enforcing bundle v1" may precede it)."""
    lines = [line for line in r.stderr.splitlines() if line.strip() and " WARNING " not in f" {line}"]
    assert r.returncode == 2, r.stderr
    assert r.stdout == ""
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


BAD_CONFIGS = [
    pytest.param("", ":1: the file is empty", id="empty"),
    pytest.param('{"mcpServers": {"time": {"command": "x",\n', ":2: not valid JSON", id="truncated"),
    pytest.param("[1, 2]", ':1: must be a mapping with "mcpServers"', id="list"),
    pytest.param('{"servers": {}}', ':1: has neither "mcpServers" nor "environments"', id="no-servers"),
    pytest.param(
        '{"mcpServers": {\n  "time": {"args": ["-m", "mcp_server_time"]}\n}}',
        ':2: mcpServers.time: needs a "command" (stdio) or a "url" (HTTP)',
        id="no-command",
    ),
    pytest.param(
        '{"mcpServers": {\n  "time": {\n    "command": "python",\n    "args": "-m mcp_server_time"\n  }\n}}',
        ":4: mcpServers.time.args: must be a list of strings, not a string",
        id="args-type",
    ),
    pytest.param(
        '{"mcpServers": {\n  "time": {"command": ["python"]}\n}}',
        ":2: mcpServers.time.command: must be a string, not a list",
        id="command-type",
    ),
    pytest.param(
        '{"mcpServers": {\n  "time": {"command": "python",\n    "env": ["A=1"]}\n}}',
        ":3: mcpServers.time.env: must be a mapping of names to strings, not a list",
        id="env-type",
    ),
    pytest.param(
        '{"mcpServers": "time"}',
        ":1: mcpServers: must be a mapping of server name to server",
        id="servers-type",
    ),
    pytest.param(
        json.dumps(
            {"mcpServers": {"time": {"command": PY, "args": TIME_ARGS}, "tiem": {"command": "x"}}}, indent=1
        ),
        ":12: mcpServers.tiem: unknown server slug 'tiem': not in the catalogue of bundle v1",
        id="unknown-slug",
    ),
]


@pytest.mark.parametrize("command", ["gateway", "gate"])
@pytest.mark.parametrize(("content", "message"), BAD_CONFIGS)
def test_a_bad_mcp_json_is_one_line_naming_file_and_line(world, command, content, message):
    world.write_bundle(world.doc())
    world.config_path.write_text(content)
    args = world.gateway_args() if command == "gateway" else _gate_args(world)
    line = _one_line(_run(args))
    assert f"{world.config_path}{message}" in line


def _gate_args(world) -> list[str]:
    return world.gate_args()


def test_a_missing_config_file(world):
    world.write_bundle(world.doc())
    line = _one_line(_run(world.gateway_args()))
    assert f"{world.config_path}: no such file" in line


def test_seed_yaml_errors_name_the_line(world):
    world.write_bundle(world.doc())
    seed = world.base / "mcp-config.yaml"
    seed.write_text("environments:\n  development:\n    allowed_servers: [\n")
    args = [a if a != str(world.config_path) else str(seed) for a in world.gateway_args()]
    assert f"{seed}:4: not valid YAML" in _one_line(_run(args))
    seed.write_text("environments:\n  development:\n    allowed_servers:\n      - url: http://x\n")
    assert f"{seed}:3: environments.development.allowed_servers[0]: needs a name" in _one_line(_run(args))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", ":1: the pinned keys are not valid JSON"),
        ('{"keys": {}}', ': a JWKS needs a "keys" list'),
        ('{"keys": []}', ": the JWKS holds no keys"),
    ],
)
def test_a_bad_keys_file(world, content, message):
    world.write_bundle(world.doc())
    world.write_config(("time",))
    world.keys.write_text(content)
    assert f"{world.keys}{message}" in _one_line(_run(world.gateway_args()))
    assert f"{world.keys}{message}" in _one_line(_run(_gate_args(world)))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--portal", "http://127.0.0.1:9"], "give --bundle-file or --portal, not both"),
        (["--http", "localhost"], "--http localhost: expected HOST:PORT"),
        (["--http", "127.0.0.1:99999"], "--http 127.0.0.1:99999: expected HOST:PORT"),
        (["--idle-timeout", "0"], "--idle-timeout must be a positive number of seconds"),
    ],
)
def test_bad_flag_combinations(world, extra, message):
    world.write_bundle(world.doc())
    world.write_config(("time",))
    assert message in _one_line(_run(world.gateway_args(*extra)))


def test_token_file_problems(world, portal):
    world.write_config(("time",))
    portal.publish(world.signer.sign_doc(world.doc()), 1)
    base = [a for a in world.gateway_args(portal=portal) if a not in ("--token", TOKEN)]
    missing = world.base / "no-such-token"
    assert f"--token-file {missing}: no such file" in _one_line(_run([*base, "--token-file", str(missing)]))
    unreadable = world.base / "token-dir"
    unreadable.mkdir()
    assert f"--token-file {unreadable}: cannot read it" in _one_line(
        _run([*base, "--token-file", str(unreadable)])
    )
    empty = world.base / "empty-token"
    empty.write_text("\n")
    assert "expected the token alone on one line" in _one_line(_run([*base, "--token-file", str(empty)]))
    good = world.base / "token"
    good.write_text(TOKEN + "\n")
    both = [*base, "--token", TOKEN, "--token-file", str(good)]
    assert "give --token or --token-file, not both" in _one_line(_run(both))
    gate = [*_gate_args(world)[: _gate_args(world).index("--bundle-file")], "--portal", portal.url]
    assert f"--token-file {missing}: no such file" in _one_line(_run([*gate, "--token-file", str(missing)]))


@pytest.mark.parametrize("command", ["gateway", "gate"])
def test_a_wrong_token_is_an_authentication_failure(world, portal, command):
    world.write_config(("time",))
    portal.publish(world.signer.sign_doc(world.doc()), 1)
    if command == "gateway":
        # a bundle cached by an earlier run must not let a gateway with a refused token start
        world.state.mkdir()
        (world.state / "bundle.jws").write_text(world.signer.sign_doc(world.doc()))
        args = world.gateway_args(portal=portal)
    else:
        args = [*_gate_args(world)[: _gate_args(world).index("--bundle-file")], "--portal", portal.url]
        args += ["--token", TOKEN]
    args[args.index(TOKEN)] = "mcpgov_expired"
    line = _one_line(_run(args))
    assert "authentication failed" in line and "refused the enforcement client's token (401" in line
    assert "unreachable" not in line


def test_the_token_file_keeps_the_token_out_of_ps(world, portal):
    world.write_config(("time",))
    portal.publish(world.signer.sign_doc(world.doc()), 1)
    token_file = world.base / "token"
    token_file.write_text(TOKEN + "\n")
    args = [a for a in world.gateway_args(portal=portal) if a not in ("--token", TOKEN)]
    proc = subprocess.Popen(
        [PY, *args, "--token-file", str(token_file)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        init = {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        }
        proc.stdin.write(
            json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init}).encode()
        )
        proc.stdin.write(b"\n")
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline())["id"] == 1
        assert portal.wait_for(lambda: len(portal.sessions) == 1, timeout=60)  # the token worked
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode()
        assert TOKEN not in cmdline and str(token_file) in cmdline
        ps = subprocess.run(["ps", "-ww", "-o", "args=", "-p", str(proc.pid)], capture_output=True, text=True)
        assert TOKEN not in ps.stdout
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    deadline = time.monotonic() + 60
    while not portal.sessions or next(iter(portal.sessions.values()))["state"] != "ended":
        assert time.monotonic() < deadline
        time.sleep(0.1)
