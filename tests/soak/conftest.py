"""Fixtures for the soak and kill tests: a private throwaway PostgreSQL that
the tests may stop, restart and kill connections on."""

import os
import pathlib
import subprocess
import sys
import tempfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PG = ROOT / "scripts" / "pg-throwaway.sh"
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))


class Cluster:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="ringmetrics-soak-")
        os.chmod(self.dir, 0o777)
        self.dsn = subprocess.check_output([str(PG), "start", self.dir], text=True).strip()

    def _pg_ctl(self, *args: str) -> None:
        cmd = ["pg_ctl", "-D", f"{self.dir}/data", "-w", "-t", "60", *args]
        pg_ctl = next(pathlib.Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), None)
        if pg_ctl:
            cmd[0] = str(pg_ctl)
        if os.getuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def restart(self) -> None:
        """Stop (fast: terminates every connection) and start on the same port."""
        port = self.dsn.split("port=")[1].split()[0]
        self._pg_ctl("-m", "fast", "stop")
        self._pg_ctl(
            "-l",
            f"{self.dir}/server.log",
            "-o",
            f"-p {port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            "start",
        )

    def stop(self) -> None:
        subprocess.run([str(PG), "stop", self.dir], check=False)
        subprocess.run(["rm", "-rf", self.dir], check=False)


@pytest.fixture
def cluster():
    c = Cluster()
    try:
        yield c
    finally:
        c.stop()
