"""compose/ proved without a docker engine.

No engine runs where these tests run, so the files are checked another way:
- `docker-compose config` (Debian's docker-compose) validates compose/docker-compose.yml and resolves it against an
  env file written by compose/setup-env;
- the redis service's command and health check are read out of the resolved file and run, as the engine would run
  them (`$$` unescaped, `sh -c`), against a local redis-server, with and without a password;
- the worker service's command, environment and health check are run with the swift-celery binary against that
  Redis, and a Python Celery client gets a result through it;
- the Dockerfile's build stage runs compose/build-release.sh, which scripts/test.sh runs too (SWIFT_CELERY_COMPOSE_BUILD=1),
  and its entrypoint is the binary that script makes.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ROOT, swift_binary
from interop_helpers import wait_for

yaml = pytest.importorskip("yaml")

COMPOSE_DIR = ROOT / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
DOCKERFILE = COMPOSE_DIR / "Dockerfile"


def docker_compose() -> str:
    path = shutil.which("docker-compose")
    if path is None:
        pytest.fail("docker-compose is not installed (Debian: apt-get install docker-compose); scripts/test.sh "
                    "installs it")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server_binary() -> str:
    return os.environ.get("SWIFT_CELERY_TEST_REDIS_SERVER") or shutil.which("redis-server") or "redis-server"


def engine(text: str) -> str:
    """What the engine hands the container: compose's `$$` escape becomes `$`."""
    return text.replace("$$", "$")


def write_env(path: Path, password: str | None) -> dict[str, str]:
    """An env file as compose/setup-env writes it (password) or its documented no-password form."""
    if password is None:
        values = {"REDIS_PASSWORD": "", "REDIS_URL": "redis://redis:6379/0",
                  "CELERY_BROKER_URL": "redis://redis:6379/0", "CELERY_RESULT_BACKEND": "redis://redis:6379/0"}
        path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        return values
    subprocess.run([str(COMPOSE_DIR / "setup-env"), str(path)], check=True, capture_output=True)
    values = read_env(path)
    assert values["REDIS_PASSWORD"] != ""
    return values


def read_env(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def resolved_config(env_file: Path) -> dict:
    """`docker-compose config` with only this env file (no variables of the test's own environment)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    done = subprocess.run([docker_compose(), "--env-file", str(env_file), "-f", str(COMPOSE_FILE), "config"],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"docker-compose config failed:\n{done.stderr}"
    return yaml.safe_load(done.stdout)


class ComposeRedis:
    """The redis service's command, run on this machine: /data is a temporary folder, the port a free one."""

    def __init__(self, service: dict, password: str, data: Path):
        command = [engine(part) for part in service["command"]]
        assert command[:2] == ["sh", "-c"], command
        self.port = free_port()
        self.password = password
        script = command[2].replace("/data", str(data)).replace("redis-server", redis_server_binary(), 1)
        # Extra options only where a container has its own network namespace: the port and a loopback bind.
        script += f" --port {self.port} --bind 127.0.0.1 --save ''"
        env = {**os.environ, "REDIS_PASSWORD": password}
        self.proc = subprocess.Popen(["sh", "-c", script], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.data = data
        wait_for(self._listening, timeout=15)

    def _listening(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"redis service command exited with {self.proc.returncode}:\n"
                                 f"{self.proc.stdout.read() if self.proc.stdout else ''}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def client(self, password: str | None = None):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, password=password, socket_timeout=5)

    def url(self, template: str) -> str:
        """A URL from the env file, pointed at this server instead of the `redis` service name."""
        return template.replace("@redis:6379", f"@127.0.0.1:{self.port}").replace("//redis:6379",
                                                                                 f"//127.0.0.1:{self.port}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)


def run_healthcheck(service: dict, port: int, password: str) -> int:
    check = [engine(part) for part in service["healthcheck"]["test"]]
    assert check[0] == "CMD-SHELL", check
    # In the container the check talks to the default 127.0.0.1:6379; here the server has its own port.
    script = check[1].replace("redis-cli", f"redis-cli -p {port}")
    env = {**os.environ, "REDIS_PASSWORD": password}
    return subprocess.run(["sh", "-c", script], env=env, capture_output=True, timeout=10).returncode


@pytest.fixture(params=["password", "no-password"])
def deployment(request, tmp_path):
    env_file = tmp_path / ".env"
    values = write_env(env_file, None if request.param == "no-password" else "generated")
    config = resolved_config(env_file)
    data = tmp_path / "data"
    data.mkdir()
    server = ComposeRedis(config["services"]["redis"], values["REDIS_PASSWORD"], data)
    yield config, values, server
    server.stop()


def test_compose_file_is_valid_and_says_what_the_operators_asked_for(tmp_path):
    values = write_env(tmp_path / ".env", "generated")
    config = resolved_config(tmp_path / ".env")
    services = config["services"]
    redis_service = services["redis"]
    assert redis_service["image"] == "redis:7-alpine"
    assert redis_service["restart"] == "unless-stopped"
    assert any(p.get("target") == 6379 if isinstance(p, dict) else p.endswith(":6379")
               for p in redis_service["ports"])
    mounts = [v if isinstance(v, str) else f"{v['source']}:{v['target']}" for v in redis_service["volumes"]]
    assert any(m == "redis-data:/data" or m.startswith("redis-data:/data:") for m in mounts), mounts
    assert "redis-data" in config["volumes"]
    assert "--appendonly yes" in redis_service["command"][2]
    health = redis_service["healthcheck"]
    assert (health["interval"], health["timeout"], health["retries"]) == ("10s", "5s", 5)
    assert redis_service["environment"]["REDIS_PASSWORD"] == values["REDIS_PASSWORD"]
    for name in ("worker", "beat"):
        service = services[name]
        assert service["depends_on"] == {"redis": {"condition": "service_healthy"}}, name
        assert set(service["networks"]) == set(redis_service["networks"]) == {"swift-celery"}
        assert service["environment"]["CELERY_BROKER_URL"] == values["CELERY_BROKER_URL"]
        assert service["environment"]["REDIS_URL"] == values["REDIS_URL"]
        assert values["REDIS_PASSWORD"] in service["environment"]["CELERY_BROKER_URL"]
    assert services["worker"]["environment"]["CELERY_RESULT_BACKEND"] == values["CELERY_RESULT_BACKEND"]
    assert "healthcheck" in services["worker"]
    assert services["producer"]["profiles"] == ["examples"]
    assert services["flower"]["profiles"] == ["flower"]


def test_setup_env_writes_a_24_character_password_once(tmp_path):
    target = tmp_path / ".env"
    first = subprocess.run([str(COMPOSE_DIR / "setup-env"), str(target)], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    values = read_env(target)
    password = values["REDIS_PASSWORD"]
    assert re.fullmatch(r"[A-Za-z0-9]{24}", password), password
    for key in ("REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
        assert values[key] == f"redis://:{password}@redis:6379/0"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    before = target.read_bytes()
    second = subprocess.run([str(COMPOSE_DIR / "setup-env"), str(target)], capture_output=True, text=True)
    assert second.returncode == 0
    assert "left as it is" in second.stderr
    assert target.read_bytes() == before
    # Another run elsewhere makes another password.
    other = tmp_path / "other.env"
    subprocess.run([str(COMPOSE_DIR / "setup-env"), str(other)], check=True, capture_output=True)
    assert read_env(other)["REDIS_PASSWORD"] != password


def test_env_file_is_ignored_and_the_example_is_committed():
    ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", "compose/.env"])
    assert ignored.returncode == 0, "compose/.env must be ignored by git"
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files", "--error-unmatch", "compose/.env.example"],
                             capture_output=True)
    assert tracked.returncode == 0, "compose/.env.example must be committed"


def test_redis_command_sets_aof_and_password_only_when_given(deployment):
    _, values, server = deployment
    import redis

    password = values["REDIS_PASSWORD"] or None
    client = server.client(password)
    assert client.ping()
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert client.config_get("dir")["dir"] == str(server.data)
    client.set("compose-test", "persisted")
    wait_for(lambda: any(server.data.rglob("*.aof")), timeout=10)
    if password:
        with pytest.raises(redis.exceptions.AuthenticationError):
            server.client().ping()
        assert client.config_get("requirepass")["requirepass"] == password
    else:
        assert client.config_get("requirepass")["requirepass"] == ""
    client.close()


def test_redis_healthcheck_pings_with_or_without_a_password(deployment):
    config, values, server = deployment
    redis_service = config["services"]["redis"]
    password = values["REDIS_PASSWORD"]
    assert run_healthcheck(redis_service, server.port, password) == 0
    if password:
        # A check with the wrong password, or none, against a server with one: unhealthy, not a false PONG.
        assert run_healthcheck(redis_service, server.port, "wrong-" + password) != 0
        assert run_healthcheck(redis_service, server.port, "") != 0
    server.stop()
    assert run_healthcheck(redis_service, server.port, password) != 0


def test_worker_service_runs_tasks_and_its_healthcheck_follows_redis(deployment):
    config, values, server = deployment
    binary = swift_binary()
    if not binary.exists():
        pytest.fail(f"swift-celery binary not found at {binary}")
    worker_service = config["services"]["worker"]
    env = {key: server.url(value) for key, value in worker_service["environment"].items()}
    command = [str(binary), *[engine(part) for part in worker_service["command"]]]
    proc = subprocess.Popen(command, env={"PATH": os.environ.get("PATH", ""), **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        import threading

        ready = threading.Event()

        def read():
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                if "worker ready" in line:
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        assert ready.wait(60), "".join(lines)

        from swift_tasks import make_app

        app = make_app("compose-test", broker=env["CELERY_BROKER_URL"], backend=env["CELERY_RESULT_BACKEND"],
                       queue="celery")
        try:
            assert app.send_task("tasks.add", args=(20, 22), queue="celery").get(timeout=15) == 42
        finally:
            app.close()

        health = [engine(part) for part in worker_service["healthcheck"]["test"]]
        assert health[0] == "CMD" and health[1] == "/usr/local/bin/swift-celery", health
        check = [str(binary), *health[2:]]
        check_env = {"PATH": os.environ.get("PATH", ""), **env}
        healthy = subprocess.run(check, env=check_env, capture_output=True, text=True, timeout=30)
        assert healthy.returncode == 0, healthy.stdout + healthy.stderr
        if values["REDIS_PASSWORD"]:
            assert values["REDIS_PASSWORD"] not in healthy.stdout + healthy.stderr
        server.stop()
        down = subprocess.run(check, env=check_env, capture_output=True, text=True, timeout=30)
        assert down.returncode == 1, down.stdout + down.stderr
        if values["REDIS_PASSWORD"]:
            assert values["REDIS_PASSWORD"] not in down.stdout + down.stderr
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    if values["REDIS_PASSWORD"]:
        assert values["REDIS_PASSWORD"] not in "".join(lines), "the worker logged the Redis password"


def test_dockerfile_builds_with_the_script_ci_runs_and_enters_the_binary():
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, flags=re.MULTILINE)
    assert len(stages) == 2 and stages[0][1] == "build", stages
    runs = re.findall(r"^RUN\s+(.+)$", text, flags=re.MULTILINE)
    assert "compose/build-release.sh /out" in runs
    # The link order build-release.sh reads must be in the build context.
    assert re.search(r"^COPY compose/symbol-order.txt compose/symbol-order.txt$", text, flags=re.MULTILINE)
    assert "libjansson4" in text and "libjansson-dev" in text
    assert re.search(r'^COPY --from=build /out/swift-celery /usr/local/bin/swift-celery$', text, flags=re.MULTILINE)
    assert re.search(r'^ENTRYPOINT \["/usr/local/bin/swift-celery"\]$', text, flags=re.MULTILINE)


@pytest.mark.skipif(os.environ.get("SWIFT_CELERY_COMPOSE_BUILD") != "1",
                    reason="the release build takes minutes; scripts/test.sh sets SWIFT_CELERY_COMPOSE_BUILD=1")
def test_build_release_script_makes_a_binary_that_runs(tmp_path, redis_url):
    output = tmp_path / "out"
    started = time.monotonic()
    done = subprocess.run([str(COMPOSE_DIR / "build-release.sh"), str(output)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    binary = output / "swift-celery"
    assert binary.exists()
    # The entrypoint with the worker health check's arguments, against the test Redis.
    ping = subprocess.run([str(binary), "ping", "--timeout", "3"], env={"REDIS_URL": redis_url},
                          capture_output=True, text=True, timeout=30)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    # Only libc-level libraries, jansson and the compression libraries: what the slim runtime stage installs.
    libraries = subprocess.run(["ldd", str(binary)], capture_output=True, text=True).stdout
    assert "libswiftCore" not in libraries, libraries
    for library in ("libjansson", "libz.so", "libbz2", "liblzma"):
        assert library in libraries, libraries
    runtime = re.search(r"^FROM \$\{RUNTIME_IMAGE\}$.*", (COMPOSE_DIR / "Dockerfile").read_text(),
                        flags=re.MULTILINE | re.DOTALL).group(0)
    for package in ("libjansson4", "zlib1g", "libbz2-1.0", "liblzma5"):
        assert package in runtime, f"the runtime stage does not install {package}"
    # Relative relocations packed and no symbols exported (build-release.sh says why): the sizes an idle worker's
    # RSS depends on.
    dynamic = subprocess.run(["readelf", "-d", str(binary)], capture_output=True, text=True).stdout
    assert "(RELR)" in dynamic, dynamic
    exported = subprocess.run(["nm", "-D", "--defined-only", str(binary)], capture_output=True, text=True).stdout
    assert len(exported.splitlines()) < 100, f"{len(exported.splitlines())} exported symbols"
    # Linked in the order of compose/symbol-order.txt: the functions an idle worker runs lie together at the start
    # of .text. (Of its first 1,000, about 40% land in the first tenth of .text, against 6% without the order: a
    # listed function in a large section of a prebuilt library moves that whole section forward, which spreads the
    # ordered part over a third of .text.)
    order = (COMPOSE_DIR / "symbol-order.txt").read_text().split()[:1000]
    addresses = {}
    symbols = subprocess.run(["nm", "--defined-only", str(binary)], capture_output=True, text=True).stdout
    for line in symbols.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "tT":
            addresses.setdefault(parts[2], int(parts[0], 16))
    sections = subprocess.run(["readelf", "-SW", str(binary)], capture_output=True, text=True).stdout
    fields = next(line for line in sections.splitlines() if " .text " in line).split()
    at = fields.index(".text")
    text_start, text_size = int(fields[at + 2], 16), int(fields[at + 4], 16)
    placed = [addresses[name] for name in order if name in addresses]
    assert len(placed) > 900, f"only {len(placed)} of the first 1,000 ordered functions are in the binary"
    early = sum(1 for address in placed if address - text_start < text_size // 10) / len(placed)
    assert early > 0.25, f"{early:.0%} of the ordered functions in the first tenth of .text: the order was not applied"
    print(f"build-release.sh took {time.monotonic() - started:.0f} s")


def test_beat_service_command_reads_the_schedule_compose_mounts(tmp_path):
    values = write_env(tmp_path / ".env", "generated")
    config = resolved_config(tmp_path / ".env")
    beat = config["services"]["beat"]
    command = [engine(part) for part in beat["command"]]
    mounts = [v if isinstance(v, str) else f"{v['source']}:{v['target']}" for v in beat["volumes"]]
    source = next(m.split(":")[0] for m in mounts if ":/etc/swift-celery/beat.yaml" in m)
    assert Path(source) == COMPOSE_DIR / "beat.yaml"
    schedule_index = command.index("--schedule") + 1
    assert command[schedule_index] == "/etc/swift-celery/beat.yaml"
    command[schedule_index] = source
    env = {"PATH": os.environ.get("PATH", ""), **beat["environment"]}
    done = subprocess.run([str(swift_binary()), *command, "--dry-run"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "add-every-minute" in done.stdout and "cache-counter-hourly" in done.stdout
    assert values["REDIS_PASSWORD"] not in done.stdout + done.stderr
