"""The embedded PostgreSQL cluster that ``run.sh`` uses when no DATABASE_URL is given.

Run as ``python -m localdb {start,stop,status,url,check-url}``. The cluster lives
in ``.local/pg/`` (git-ignored) and is reused on every start. It listens on 127.0.0.1
only, on a port of its own (never 5432), with a generated password (scram-sha-256), so
other local users cannot use it and it never collides with a system PostgreSQL.

Running as root: ``initdb`` refuses root, so the server runs as an unprivileged system
user (``postgres`` unless METRONOME_PG_USER says otherwise, created when missing). When
that user cannot reach the project folder (a clone under ``/root``, say), the server's
files go to ``/var/lib/metronome-pg/<hash of the project path>/`` instead, owned by that
user with mode 0700; ``.local/pg/cluster_dir`` records where.

Binaries: PG_BIN if set, else the newest ``/usr/lib/postgresql/*/bin`` (Debian), else
``pg_ctl`` on PATH, else the ``pgserver`` wheel from PyPI (installed into the venv by
``run.sh`` when nothing else is found).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

PROJECT_DIR = Path(__file__).resolve().parent.parent
# METRONOME_PG_DIR moves the state folder (tests use it to try other layouts).
STATE_DIR = Path(os.environ.get("METRONOME_PG_DIR") or PROJECT_DIR / ".local" / "pg").resolve()
DB_USER = "metronome"
DB_NAME = "metronome"
PORT_RANGE = range(54320, 54400)
SYSTEM_BASE = Path("/var/lib/metronome-pg")


class LocalDBError(Exception):
    """A problem a user can fix; its message says how."""


def find_bin_dir() -> Path:
    candidates: list[Path] = []
    if os.environ.get("PG_BIN"):
        candidates.append(Path(os.environ["PG_BIN"]))
    debian = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates += [Path(p) for p in debian]
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(os.path.realpath(on_path)).parent)
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    try:  # last resort, imported only when needed (it is slow and chatty to import)
        import pgserver  # type: ignore[import-not-found]

        bundled = Path(pgserver.__file__).parent / "pginstall" / "bin"
        if (bundled / "initdb").is_file():
            return bundled
    except ImportError:
        pass
    raise LocalDBError(
        "no PostgreSQL server binaries found (looked in PG_BIN, /usr/lib/postgresql/*/bin, "
        "PATH and the pgserver package). Install them (Debian: apt-get install postgresql), "
        "or pip install pgserver into .venv, or set DATABASE_URL to an existing database."
    )


@dataclass(frozen=True)
class RunAs:
    """Who runs initdb/pg_ctl: ourselves, or (as root) an unprivileged system user."""

    uid: int
    gid: int
    name: str

    @property
    def is_self(self) -> bool:
        return self.uid == os.geteuid()


def server_user() -> RunAs:
    if os.geteuid() != 0:
        entry = pwd.getpwuid(os.geteuid())
        return RunAs(entry.pw_uid, entry.pw_gid, entry.pw_name)
    name = os.environ.get("METRONOME_PG_USER", "postgres")
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=True,
        )
        entry = pwd.getpwnam(name)
    if entry.pw_uid == 0:
        raise LocalDBError(f"METRONOME_PG_USER={name} is root; initdb needs an unprivileged user.")
    return RunAs(entry.pw_uid, entry.pw_gid, entry.pw_name)


def can_traverse(user: RunAs, path: Path) -> bool:
    """Whether ``user`` can reach ``path``: every ancestor must grant it search (x)."""
    groups = {user.gid} | {g.gr_gid for g in _groups_of(user.name)}
    for folder in [path, *path.parents]:
        if not folder.exists():
            continue
        st = folder.stat()
        if st.st_uid == user.uid:
            allowed = st.st_mode & stat.S_IXUSR
        elif st.st_gid in groups:
            allowed = st.st_mode & stat.S_IXGRP
        else:
            allowed = st.st_mode & stat.S_IXOTH
        if not allowed:
            return False
    return True


def _groups_of(name: str) -> list:
    import grp

    return [g for g in grp.getgrall() if name in g.gr_mem]


def cluster_dir(user: RunAs) -> Path:
    """Folder owned by the server user that holds ``data/`` and ``server.log``."""
    recorded = STATE_DIR / "cluster_dir"
    if recorded.is_file():
        return Path(recorded.read_text().strip())
    local = STATE_DIR / "cluster"
    if user.is_self or can_traverse(user, STATE_DIR):
        chosen = local
    else:
        digest = hashlib.sha256(str(STATE_DIR).encode()).hexdigest()[:12]
        chosen = SYSTEM_BASE / digest
    return chosen


def _prepare_dirs(user: RunAs) -> Path:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    # As root, the server user must be able to pass through .local/pg to reach its
    # cluster; the secrets in it are 0600 files, so 0755 folders reveal nothing.
    for folder in (STATE_DIR.parent, STATE_DIR):
        os.chmod(folder, 0o700 if user.is_self else 0o755)
    target = cluster_dir(user)
    if target.parent == SYSTEM_BASE:
        SYSTEM_BASE.mkdir(mode=0o755, parents=True, exist_ok=True)
    target.mkdir(mode=0o700, exist_ok=True)
    os.chown(target, user.uid, user.gid)
    os.chmod(target, 0o700)
    _write_private(STATE_DIR / "cluster_dir", f"{target}\n")
    return target


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def _run(user: RunAs, args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL tool as the server user, with no PG* variables leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    if user.is_self:
        return subprocess.run(args, env=env, cwd="/", capture_output=True, text=True)
    return subprocess.run(
        args,
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
        user=user.uid,
        group=user.gid,
        extra_groups=[],
    )


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _choose_port() -> int:
    wanted = os.environ.get("METRONOME_PG_PORT")
    if wanted:
        return int(wanted)
    stored = STATE_DIR / "port"
    if stored.is_file():
        port = int(stored.read_text().strip())
        if _port_free(port):
            return port
    offset = int(hashlib.sha256(str(STATE_DIR).encode()).hexdigest(), 16) % len(PORT_RANGE)
    for i in range(len(PORT_RANGE)):
        port = PORT_RANGE[(offset + i) % len(PORT_RANGE)]
        if _port_free(port):
            return port
    raise LocalDBError(
        f"no free port in {PORT_RANGE.start}-{PORT_RANGE.stop - 1} on 127.0.0.1; "
        "set METRONOME_PG_PORT to a free port."
    )


def _initdb(bin_dir: Path, user: RunAs, cdir: Path) -> None:
    """initdb into a temporary folder, renamed into place only once complete."""
    tmp = cdir / "data.initialising"
    if tmp.exists():
        shutil.rmtree(tmp)
    password = secrets.token_urlsafe(24)
    pwfile = cdir / "initdb.pw"
    _write_private(pwfile, password + "\n")
    os.chown(pwfile, user.uid, user.gid)
    try:
        result = _run(
            user,
            [
                str(bin_dir / "initdb"),
                "-D",
                str(tmp),
                "-U",
                DB_USER,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-instructions",
            ],
        )
        if result.returncode != 0:
            raise LocalDBError(f"initdb failed:\n{result.stdout}{result.stderr}")
        with open(tmp / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# Metronome embedded cluster: loopback TCP only, no Unix socket.\n"
                "listen_addresses = '127.0.0.1'\n"
                "unix_socket_directories = ''\n"
                "max_connections = 200\n"
            )
        os.rename(tmp, cdir / "data")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        pwfile.unlink(missing_ok=True)
    _write_private(STATE_DIR / "password", password + "\n")


def _is_running(bin_dir: Path, user: RunAs, data: Path) -> bool:
    return _run(user, [str(bin_dir / "pg_ctl"), "status", "-D", str(data)]).returncode == 0


def _running_port(data: Path) -> int | None:
    try:
        lines = (data / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, PermissionError):
        return None
    return int(lines[3]) if len(lines) > 3 and lines[3].isdigit() else None


def start() -> str:
    """Ensure the cluster exists, runs and has the database; return its DATABASE_URL."""
    bin_dir = find_bin_dir()
    user = server_user()
    cdir = _prepare_dirs(user)
    data = cdir / "data"
    if not (data / "PG_VERSION").is_file():
        _initdb(bin_dir, user, cdir)
    if _is_running(bin_dir, user, data):
        port = _running_port(data) or int((STATE_DIR / "port").read_text())
    else:
        port = _choose_port()
        result = _run(
            user,
            [
                str(bin_dir / "pg_ctl"),
                "start",
                "-D",
                str(data),
                "-w",
                "-t",
                "60",
                "-l",
                str(cdir / "server.log"),
                "-o",
                f"-p {port}",
            ],
        )
        if result.returncode != 0:
            raise LocalDBError(
                f"PostgreSQL did not start (see {cdir / 'server.log'}):\n"
                f"{result.stdout}{result.stderr}"
            )
    _write_private(STATE_DIR / "port", f"{port}\n")
    url = _url(port)
    _ensure_database(url)
    _write_private(STATE_DIR / "database_url", url + "\n")
    return url


def _url(port: int, dbname: str = DB_NAME) -> str:
    password = (STATE_DIR / "password").read_text().strip()
    return f"postgres://{DB_USER}:{quote(password, safe='')}@127.0.0.1:{port}/{dbname}"


def _ensure_database(url: str) -> None:
    import psycopg

    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DB_NAME}"')


def stop() -> str:
    bin_dir = find_bin_dir()
    user = server_user()
    data = cluster_dir(user) / "data"
    if not (data / "PG_VERSION").is_file():
        return "no embedded PostgreSQL has been created"
    if not _is_running(bin_dir, user, data):
        return "embedded PostgreSQL is not running"
    result = _run(user, [str(bin_dir / "pg_ctl"), "stop", "-D", str(data), "-m", "fast", "-w"])
    if result.returncode != 0:
        raise LocalDBError(f"pg_ctl stop failed:\n{result.stdout}{result.stderr}")
    return "embedded PostgreSQL stopped"


def status() -> str:
    bin_dir = find_bin_dir()
    user = server_user()
    data = cluster_dir(user) / "data"
    if not (data / "PG_VERSION").is_file():
        return "embedded PostgreSQL: not created (./run.sh creates it)"
    if _is_running(bin_dir, user, data):
        return f"embedded PostgreSQL: running on 127.0.0.1:{_running_port(data)}, data in {data}"
    return f"embedded PostgreSQL: stopped, data in {data}"


def check_url(url: str) -> None:
    """Connect once; on failure raise a one-line error that names the host, not the password."""
    import psycopg

    parts = urlsplit(url)
    where = f"{parts.hostname or 'localhost'}:{parts.port or 5432}"
    if parts.scheme not in {"postgres", "postgresql", "pgsql", "postgis"}:
        raise LocalDBError(
            f"DATABASE_URL must be a PostgreSQL URL (postgres://USER:PASSWORD@HOST:PORT/NAME); "
            f"got scheme '{parts.scheme}'"
        )
    conninfo = url.replace("pgsql://", "postgres://", 1).replace("postgis://", "postgres://", 1)
    try:
        psycopg.connect(conninfo, connect_timeout=5).close()
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split())
        if parts.password:
            reason = reason.replace(parts.password, "***")
        raise LocalDBError(
            f"cannot connect to the database at {where} (from DATABASE_URL): {reason}"
        ) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localdb")
    parser.add_argument("command", choices=["start", "stop", "status", "url", "check-url", "bin"])
    parser.add_argument("url", nargs="?")
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            print(start())
        elif args.command == "stop":
            print(stop())
        elif args.command == "status":
            print(status())
        elif args.command == "url":
            print((STATE_DIR / "database_url").read_text().strip())
        elif args.command == "bin":
            print(find_bin_dir())
        else:
            check_url(args.url or os.environ.get("DATABASE_URL", ""))
    except LocalDBError as exc:
        print(f"run.sh: {exc}", file=sys.stderr)
        return 1
    except FileNotFoundError:
        print("run.sh: no embedded PostgreSQL yet; ./run.sh db-start creates it", file=sys.stderr)
        return 1
    return 0
