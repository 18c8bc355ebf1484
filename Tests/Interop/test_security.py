"""Security: the least-privilege Redis ACL user documented in docs/security.md runs the worker; passwords never
appear in logs, error messages, `ps` output or /proc/PID/cmdline; TLS verifies the server and refuses a wrong CA
clearly; oversized messages are refused before parsing (`--max-message-size`)."""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from conftest import ROOT, RESULT_TIMEOUT, WorkerProcess, stopped_cleanly, swift_binary, unique
from interop_helpers import encode, envelope, wait_for

pytestmark = pytest.mark.swift_only

T = RESULT_TIMEOUT
CLEAN_ENV = ("CELERY_BROKER_URL", "REDIS_URL", "CELERY_RESULT_BACKEND", "REDIS_PASSWORD")


def environment(**extra):
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    env.update(extra)
    return env


def process_views(pid: int) -> str:
    """What other users of the machine can see of a process: its command line, as /proc and ps show it."""
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    ps = subprocess.run(["ps", "-ww", "-o", "args=", "-p", str(pid)], capture_output=True, text=True).stdout
    return cmdline + "\n" + ps


class EnvWorker(WorkerProcess):
    """A Swift worker whose URLs come from the environment instead of --broker/--result-backend."""

    def __init__(self, *args, env=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.env = env or {}

    def command(self):
        cmd, _, cwd = super().command()
        index = cmd.index("--broker")
        del cmd[index:index + 4]  # --broker URL --result-backend URL
        return cmd, environment(**self.env), cwd


def run_until(cmd, env, predicate, timeout=20.0):
    """Runs cmd, reads its output until predicate(output) or timeout, then stops it; returns the output and what
    `ps` showed of the process meanwhile."""
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, encoding="utf-8", errors="replace")
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    views = ""
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            views = process_views(proc.pid)
        except (FileNotFoundError, ProcessLookupError):
            pass
        if predicate("".join(lines)):
            break
        time.sleep(0.1)
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    reader.join(5)
    return "".join(lines), views


# -- passwords ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def auth():
    url = os.environ.get("SWIFT_CELERY_TEST_REDIS_AUTH_URL")
    password = os.environ.get("SWIFT_CELERY_TEST_REDIS_AUTH_PASSWORD")
    port = os.environ.get("SWIFT_CELERY_TEST_REDIS_AUTH_PORT")
    if not (url and password and port):
        pytest.skip("needs the password-protected test server (scripts/test-redis.sh)")
    return url, password, int(port)


def run_one_task(url: str, queue: str):
    import redis

    client = redis.Redis.from_url(url)
    env = envelope("tasks.add", (20, 22), queue=queue)
    client.lpush(queue, encode(env))
    key = f"celery-task-meta-{env['headers']['id']}"
    assert wait_for(lambda: client.get(key), T), "the task did not run"
    assert json.loads(client.get(key))["result"] == 42
    client.close()


def test_password_in_the_broker_flag_is_masked_and_never_logged(auth):
    url, password, _ = auth
    worker = WorkerProcess("swift", url, queue=unique("sec-flag"), name=f"{unique('sec')}@localhost",
                           flags=["-l", "trace"]).start()
    try:
        run_one_task(url, worker.queue)
        views = process_views(worker.pid)
        assert password not in views, views
        assert "***" in views, f"the URL argument is not masked: {views}"
    finally:
        stopped_cleanly(worker)
    log = "".join(worker.lines)
    assert "worker ready" in log and ":***@" in log, log  # the URL is logged, redacted
    assert password not in log


def test_password_from_the_environment_never_shown(auth):
    url, password, _ = auth
    bare = url.replace(f":{password}@", "@")
    worker = EnvWorker("swift", url, queue=unique("sec-env"), name=f"{unique('sec')}@localhost", flags=["-l", "debug"],
                       env={"CELERY_BROKER_URL": bare, "REDIS_PASSWORD": password}).start()
    try:
        run_one_task(url, worker.queue)
        assert password not in process_views(worker.pid)
    finally:
        stopped_cleanly(worker)
    assert password not in "".join(worker.lines)


@pytest.mark.parametrize("how", ["flag", "env", "redis-password"])
def test_wrong_password_is_reported_without_it(auth, how):
    url, password, port = auth
    wrong = "wrong-" + secrets.token_hex(8)
    bad_url = f"redis://:{wrong}@127.0.0.1:{port}/0"
    cmd = [str(swift_binary()), "worker", "-Q", unique("sec-wrong"), "-l", "debug"]
    env = environment()
    if how == "flag":
        cmd += ["--broker", bad_url]
    elif how == "env":
        env["CELERY_BROKER_URL"] = bad_url
    else:
        env.update(CELERY_BROKER_URL=f"redis://127.0.0.1:{port}/0", REDIS_PASSWORD=wrong)
    output, views = run_until(cmd, env, lambda out: "Redis unavailable, retrying" in out)
    assert "Redis unavailable, retrying" in output, output
    assert re.search(r"WRONGPASS|wrong password|invalid username-password|authentication", output, re.I), output
    assert wrong not in output
    assert wrong not in views and password not in views


def test_ping_with_a_wrong_password_names_the_cause_not_the_password(auth):
    _, _, port = auth
    wrong = "wrong-" + secrets.token_hex(8)
    result = subprocess.run([str(swift_binary()), "ping", "--broker", f"redis://:{wrong}@127.0.0.1:{port}/0"],
                            capture_output=True, text=True, timeout=30, env=environment(), stdin=subprocess.DEVNULL)
    assert result.returncode == 1
    assert "wrong password" in result.stderr
    assert wrong not in result.stdout + result.stderr


@pytest.mark.parametrize("url", [
    "redis://:{pw}@127.0.0.1:notaport/0",
    "redis://user:{pw}@[::1/0",
    "redis://:{pw}@127.0.0.1:6379/0?socket_timeout=soon",
    "rediss://:{pw}@localhost:6379/0?ssl_cert_reqs=maybe",
])
def test_malformed_urls_never_echo_the_password(url):
    secret = "s3cret-" + secrets.token_hex(6)
    result = subprocess.run([str(swift_binary()), "worker", "--broker", url.format(pw=secret)], capture_output=True,
                            text=True, timeout=30, env=environment(), stdin=subprocess.DEVNULL)
    assert result.returncode != 0
    assert result.stdout + result.stderr, "no error message"
    assert secret not in result.stdout + result.stderr


# -- ACL -------------------------------------------------------------------------------------------------------


def documented_acl_rule() -> list[str]:
    """The `ACL SETUSER swift-celery ...` line of docs/security.md, split as redis-cli would."""
    text = (ROOT / "docs" / "security.md").read_text()
    match = re.search(r"^(ACL SETUSER swift-celery .+)$", text, re.M)
    assert match, "docs/security.md has no ACL SETUSER swift-celery line"
    return shlex.split(match.group(1))


@pytest.fixture(scope="module")
def acl_user(redis_client):
    words = documented_acl_rule()
    password = secrets.token_hex(16)
    user = f"swift-celery-test-{secrets.token_hex(4)}"
    args = [user if w == "swift-celery" else (f">{password}" if w.startswith(">") else w) for w in words[2:]]
    redis_client.execute_command("ACL", "SETUSER", *args)
    redis_client.execute_command("ACL", "LOG", "RESET")
    yield user, password
    redis_client.execute_command("ACL", "DELUSER", user)


def denials(redis_client, user):
    return [entry for entry in redis_client.execute_command("ACL", "LOG", "128")
            if (entry.get(b"username") or entry.get("username")) in (user, user.encode())]


def test_worker_runs_under_the_documented_acl_user(redis_client, redis_url, acl_user):
    from swift_tasks import make_app

    user, password = acl_user
    url = redis_url.replace("redis://", f"redis://{user}:{password}@", 1)
    queue = unique("celery-acl")  # the rule's key patterns cover queues named celery*
    # Everything on that needs Redis rights: task events, remote control (always on), chords, the global rate limit.
    worker = WorkerProcess("swift", url, queue=queue, name=f"{unique('acl')}@localhost", flags=["-E"]).start()
    app = make_app("interop-acl", broker=redis_url, backend=redis_url, queue=queue)
    try:
        assert app.send_task("tasks.add", (2, 3), queue=queue).get(timeout=T) == 5
        from celery import chord

        header = [app.signature("tasks.add", (i, i), queue=queue) for i in range(4)]
        assert chord(header, app.signature("tasks.xsum", queue=queue)).apply_async().get(timeout=T) == 12
        d = [worker.name]
        assert app.control.ping(destination=d, timeout=5) == [{worker.name: {"ok": "pong"}}]
        assert worker.name in (app.control.inspect(destination=d, timeout=5).stats() or {})
        revoked = app.control.revoke(str(uuid.uuid4()), destination=d, reply=True, timeout=5)
        assert "flagged as revoked" in revoked[0][worker.name]["ok"]
        assert app.send_task("tasks.throttled", ("celery-acl-throttle",), queue=queue).get(timeout=T) > 0
        assert app.send_task("tasks.flaky", (2,), queue=queue).get(timeout=T) == 2  # retries publish
        assert app.send_task("tasks.add", (1, 1), queue=queue, countdown=1).get(timeout=T) == 2  # held ETA
        chain = app.signature("tasks.add", (1, 2), queue=queue) | app.signature("tasks.add", (10,), queue=queue)
        assert chain.apply_async().get(timeout=T) == 13
        with pytest.raises(Exception):
            app.send_task("tasks.fail", ("acl",), queue=queue).get(timeout=T)
        redis_client.lpush(queue, b"not json at all")  # dead-letter path
        assert app.send_task("tasks.add", (4, 4), queue=queue).get(timeout=T) == 8
        expired = app.send_task("tasks.add", (1, 1), queue=queue, expires=-1)
        assert wait_for(lambda: expired.state == "REVOKED", T)
        # ping under the same user: INFO, and a JSON round trip on a swift-celery:ping:* key
        ping = subprocess.run([str(swift_binary()), "ping", "--broker", url], capture_output=True, text=True,
                              timeout=30, env=environment(), stdin=subprocess.DEVNULL)
        assert ping.returncode == 0, ping.stderr
        assert password not in ping.stdout + ping.stderr
    except BaseException:
        # Shown under "Captured stdout" when this fails (a chain's result once timed out in CI, once in many runs).
        print(f"--- worker log ---\n{worker.log()}\n--- {queue}: {redis_client.llen(queue)} waiting ---")
        raise
    finally:
        app.close()
        refused = denials(redis_client, user)
        assert refused == [], refused
        stopped_cleanly(worker)
    assert "NOPERM" not in "".join(worker.lines), worker.log()
    assert denials(redis_client, user) == []
    assert password not in "".join(worker.lines)


def test_beat_runs_under_the_documented_acl_user(redis_client, redis_url, acl_user, tmp_path):
    user, password = acl_user
    url = redis_url.replace("redis://", f"redis://{user}:{password}@", 1)
    queue = unique("celery-acl-beat")
    schedule = tmp_path / "beat.yaml"
    schedule.write_text(f"entries:\n  - name: every-second\n    task: tasks.add\n    schedule: 1s\n"
                        f"    args: [1, 2]\n    options: {{queue: {queue}}}\n")
    prefix = f"swift-celery:beat-acl-{uuid.uuid4().hex[:8]}:"
    beat = subprocess.Popen([str(swift_binary()), "beat", "--schedule", str(schedule), "--broker", url,
                             "--key-prefix", prefix], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=environment(), stdin=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: redis_client.llen(queue) >= 2, 20), "beat pushed nothing under the ACL user"
        beat.send_signal(signal.SIGHUP)  # reload: a sync under the same user
        count = redis_client.llen(queue)
        assert wait_for(lambda: redis_client.llen(queue) > count, 10)
    finally:
        beat.send_signal(signal.SIGTERM)
        output = beat.communicate(timeout=30)[0]
    assert beat.returncode == 0, output
    assert denials(redis_client, user) == [], output
    assert password not in output
    redis_client.delete(queue)


def test_acl_rule_refuses_keys_outside_its_patterns(redis_client, redis_url, acl_user):
    """The rule is least privilege: the worker's user cannot read other keys or run other commands."""
    import redis

    user, password = acl_user
    client = redis.Redis.from_url(redis_url.replace("redis://", f"redis://{user}:{password}@", 1))
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.get("some-application-secret")
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.flushdb()
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.config_get("requirepass")
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.keys("*")
    client.close()


# -- TLS -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls():
    url, directory = os.environ.get("SWIFT_CELERY_TEST_REDIS_TLS_URL"), os.environ.get("SWIFT_CELERY_TEST_TLS_DIR")
    if not (url and directory):
        pytest.skip("needs the TLS test server (scripts/test-redis.sh)")
    return url, directory


def test_worker_over_tls_with_a_client_certificate(tls):
    url, directory = tls
    url += f"&ssl_certfile={directory}/client.pem&ssl_keyfile={directory}/client.key"
    worker = WorkerProcess("swift", url, queue=unique("sec-tls"), name=f"{unique('tls')}@localhost").start()
    try:
        import redis

        port = int(re.search(r":(\d+)/", url).group(1))
        client = redis.Redis(host="localhost", port=port, ssl=True, ssl_ca_certs=f"{directory}/ca.pem")
        env = envelope("tasks.add", (3, 4), queue=worker.queue)
        client.lpush(worker.queue, encode(env))
        key = f"celery-task-meta-{env['headers']['id']}"
        assert wait_for(lambda: client.get(key), T)
        assert json.loads(client.get(key))["result"] == 7
        client.close()
    finally:
        stopped_cleanly(worker)


@pytest.mark.parametrize("change, expected", [
    (lambda url, d: url.replace(f"{d}/ca.pem", f"{d}/other-ca.pem"), r"certificate does not verify"),
    (lambda url, d: url + f"&ssl_certfile={d}/missing.pem&ssl_keyfile={d}/client.key", r"ssl_certfile=\S*missing\.pem"),
])
def test_bad_certificates_get_a_clear_error(tls, change, expected):
    url, directory = tls
    bad = change(url, directory)
    cmd = [str(swift_binary()), "worker", "--broker", bad, "-Q", unique("sec-badtls")]
    output, _ = run_until(cmd, environment(), lambda out: "retrying" in out or "Error" in out, timeout=20)
    assert "worker ready" not in output, output
    assert re.search(expected, output, re.I), output


def _tls_ping(url):
    return subprocess.run([str(swift_binary()), "ping", "--broker", url, "--count", "1", "--timeout", "10"],
                          capture_output=True, text=True, env=environment(), timeout=60)


def _tls_hosts():
    return ["localhost", "127.0.0.1"] + (["[::1]"] if os.environ.get("SWIFT_CELERY_TEST_REDIS_TLS_IPV6") == "1" else [])


@pytest.mark.parametrize("host", _tls_hosts())
def test_ping_over_tls_by_name_and_by_ip(tls, host):
    """issue #31: by IP no SNI is sent (TLS forbids it) and the certificate's IP subjectAltName is checked."""
    _, directory = tls
    port = os.environ["SWIFT_CELERY_TEST_REDIS_TLS_PORT"]
    result = _tls_ping(f"rediss://{host}:{port}/0?ssl_ca_certs={directory}/ca.pem")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"ok: rediss://{host}:{port}/0"), result.stdout


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_ping_refuses_a_certificate_for_other_names(tls, host):
    _, directory = tls
    port = os.environ["SWIFT_CELERY_TEST_REDIS_TLS_WRONG_NAME_PORT"]
    result = _tls_ping(f"rediss://{host}:{port}/0?ssl_ca_certs={directory}/ca.pem")
    assert result.returncode == 1, result.stdout
    assert "TLS failure" in result.stderr, result.stderr


# -- message content is data ------------------------------------------------------------------------------------


def test_no_code_path_loads_or_runs_code_named_by_a_message():
    """The worker's sources (and the shipped tasks) contain no dynamic loading, process spawning or reflection by
    name: a message can only select a handler compiled into the registry (pickle is refused, see test_poison)."""
    forbidden = re.compile(r"\b(dlopen|dlsym|NSClassFromString|NSSelectorFromString|posix_spawn|popen|execv\w*|"
                           r"system)\s*\(|\bProcess\s*\(")
    hits = []
    for folder in ("Sources", "tasks"):
        for path in sorted((ROOT / folder).rglob("*.swift")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if forbidden.search(line.split("//")[0]):
                    hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not hits, "\n".join(hits)


@pytest.mark.parametrize("value, message", [
    ("12q", "--max-message-size must be a number of bytes"), ("-1", "--max-message-size must be a number of bytes"),
    ("1.5M", "--max-message-size must be a number of bytes"),
    ("99999999999999999999", "--max-message-size must be a number of bytes"),
    ("", "Missing value for '--max-message-size"),
])
def test_bad_max_message_size_is_refused(value, message):
    result = subprocess.run([str(swift_binary()), "worker", f"--max-message-size={value}"], capture_output=True,
                            text=True, timeout=30, env=environment(), stdin=subprocess.DEVNULL)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr, result.stderr
