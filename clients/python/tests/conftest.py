"""A throwaway redis-server per test, with the function library loaded from the repository."""

import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest
import redis

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

LIBRARY = (pathlib.Path(__file__).resolve().parents[3] / "src/redis/functions/ledger.lua").read_text()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server():
    port = free_port()
    workdir = tempfile.mkdtemp()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=10)
    for _ in range(250):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.02)
    client.execute_command("FUNCTION", "LOAD", "REPLACE", LIBRARY)
    yield client
    proc.kill()
    proc.wait()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def library():
    return LIBRARY
