"""The opt-in sandbox for portal-side stdio discovery (MCPGOV_PORTAL_STDIO_DISCOVERY=sandbox): bubblewrap.

A team's stdio command is team code. By default the portal never starts it (discovery happens on the
enforcement side, `mcpgov discover`). An operator who enables the sandbox gets a child with an empty
environment (PATH and HOME only, fixed here), no network (its own network namespace), its own PID, IPC
and UTS namespaces, a read-only view of the system directories and the Python installs (nothing of the
portal's checkout, data or secrets), a small writable /tmp, an unprivileged uid, and limits on memory,
CPU time, wall-clock time, open files and file size. If bubblewrap cannot run here the setting refuses
to work: the portal never falls back to running the command unsandboxed.

When the portal runs as root, bubblewrap sets the sandbox up without a user namespace and the child
drops to the real uid/gid 65534 (setpriv) with every capability cleared. Otherwise bubblewrap maps
uid 65534 in a user namespace (the child is the portal's uid outside, seeing only the read-only mounts).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

from django.conf import settings
from mcp import StdioServerParameters

SANDBOX = "sandbox"
OFF = "off"
MODES = (OFF, SANDBOX)
NOBODY = 65534
SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_FILES = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/alternatives",
    "/etc/mime.types",
)
SANDBOX_TMP = "/tmp"  # noqa: S108 - a fresh tmpfs inside the sandbox, not the host's /tmp
TMP_BYTES = 16 * 1024 * 1024
MAX_OPEN_FILES = 256
MAX_FILE_BYTES = 16 * 1024 * 1024
WALL_SLACK_SECONDS = 5


class SandboxUnavailable(Exception):
    """Portal-side stdio discovery is enabled but bubblewrap cannot run here."""


def stdio_mode() -> str:
    """The configured mode (checked against MODES by the caller and by `manage.py check`)."""
    return str(getattr(settings, "MCPGOV_PORTAL_STDIO_DISCOVERY", OFF) or OFF).strip().lower()


def python_paths() -> list[str]:
    """The interpreter installs the portal runs on (a venv and the Python it was made from)."""
    paths = {sys.prefix, sys.base_prefix, str(Path(os.path.realpath(sys.executable)).parents[1])}
    return sorted(p for p in paths if p and os.path.isdir(p))


def read_only_paths() -> list[str]:
    extra = [str(p) for p in getattr(settings, "MCPGOV_SANDBOX_PATHS", []) or []]
    return sorted({os.path.realpath(p) for p in [*python_paths(), *extra] if os.path.exists(p)})


def _privileged() -> bool:
    return os.geteuid() == 0


def _mount_args(paths: list[str]) -> list[str]:
    args: list[str] = []
    for path in SYSTEM_PATHS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for path in ETC_FILES:
        if os.path.lexists(path):
            args += ["--ro-bind-try", path, path]
    made: set[str] = {"/", "/usr", "/etc", SANDBOX_TMP}
    for path in paths:
        if any(path == p or path.startswith(p.rstrip("/") + "/") for p in SYSTEM_PATHS):
            continue
        # bubblewrap creates missing parents as 0700: make them traversable for the unprivileged child
        for parent in reversed(Path(path).parents):
            if str(parent) not in made:
                made.add(str(parent))
                args += ["--perms", "0755", "--dir", str(parent)]
        args += ["--ro-bind", path, path]
    return args


def bwrap_argv(command: str, args: list[str], *, timeout: float) -> list[str]:
    """The whole command line: bubblewrap, the uid drop, the limits, then the team's command."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable(
            "MCPGOV_PORTAL_STDIO_DISCOVERY=sandbox needs bubblewrap (Debian package bubblewrap); it is not "
            "installed, so stdio servers are not discovered on the portal."
        )
    namespaces = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    if _privileged():
        identity = ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        drop = [
            "/usr/bin/setpriv",
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            "--",
        ]
    else:
        identity = ["--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY), "--disable-userns"]
        drop = []
    memory = int(getattr(settings, "MCPGOV_SANDBOX_MEMORY_MB", 1024)) * 1024 * 1024
    cpu = int(getattr(settings, "MCPGOV_SANDBOX_CPU_SECONDS", 30))
    wall = max(1, int(timeout + WALL_SLACK_SECONDS))
    limits = [
        "/usr/bin/prlimit",
        f"--as={memory}",
        f"--cpu={cpu}",
        f"--nofile={MAX_OPEN_FILES}",
        f"--fsize={MAX_FILE_BYTES}",
        "--core=0",
        "--",
        "/usr/bin/timeout",
        "--signal=KILL",
        f"{wall}s",
    ]
    return [
        bwrap,
        *namespaces,
        *identity,
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        "--setenv",
        "PATH",
        SANDBOX_PATH,
        "--setenv",
        "HOME",
        SANDBOX_TMP,
        "--perms",
        "1777",
        "--size",
        str(TMP_BYTES),
        "--tmpfs",
        SANDBOX_TMP,
        *_mount_args(read_only_paths()),  # after the tmpfs: a path under /tmp stays visible
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--chdir",
        SANDBOX_TMP,
        "--",
        *drop,
        *limits,
        command,
        *args,
    ]


def sandboxed_parameters(command: str, args: list[str], *, timeout: float) -> StdioServerParameters:
    """What the SDK's stdio client starts: bubblewrap (its own environment is cleared for the child)."""
    argv = bwrap_argv(command, args, timeout=timeout)
    return StdioServerParameters(command=argv[0], args=argv[1:], env={}, cwd="/")


@functools.cache
def sandbox_problem() -> str | None:
    """Why the sandbox cannot run here (None: it can). Checked once per process with a real `true`."""
    try:
        argv = bwrap_argv("/usr/bin/true", [], timeout=10)
    except SandboxUnavailable as exc:
        return str(exc)
    for tool in ("/usr/bin/prlimit", "/usr/bin/timeout", *(["/usr/bin/setpriv"] if _privileged() else [])):
        if not os.access(tool, os.X_OK):
            return f"The sandbox needs {tool} (util-linux / coreutils), which is missing."
    try:
        done = subprocess.run(argv, capture_output=True, timeout=30, env={}, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap cannot start: {exc}"
    if done.returncode != 0:
        reason = done.stderr.decode("utf-8", "replace").strip()[-300:] or f"exit status {done.returncode}"
        return f"bubblewrap cannot create the sandbox here ({reason}); stdio servers are not discovered on the portal."
    return None


def require_sandbox() -> None:
    problem = sandbox_problem()
    if problem is not None:
        raise SandboxUnavailable(problem)
