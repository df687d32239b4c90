"""TLS to memcached (``LISTY["TLS"]``, rustls in the engine) against a real
``memcached -Z`` with certificates made for the test by ``openssl``: a good
CA, a wrong CA, a plaintext client refused, a client certificate required
by the server, and settings checked."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.test import override_settings

from listy import _native
from listy.checks import check_settings
from listy.exceptions import CacheUnavailable
from tests.conftest import MEMCACHED, free_port, reset_listy
from tests.testapp.models import Follow

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(where: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem",
            "-days", "2", "-subj", f"/CN={name}", cwd=where)


def make_cert(where: Path, ca: str, name: str, cn: str) -> None:
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=where)
    (where / f"{name}.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=where)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("tls")
    make_ca(where, "ca")
    make_ca(where, "other-ca")
    make_cert(where, "ca", "server", "localhost")
    make_cert(where, "ca", "client", "listy-client")
    return where


def start_tls_memcached(certs: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    opts = f"ssl_chain_cert={certs / 'server.pem'},ssl_key={certs / 'server.key'}" + "".join("," + e for e in extra)
    proc = subprocess.Popen(
        [MEMCACHED, "-Z", "-o", opts, "-U", "0", "-l", "127.0.0.1", "-p", str(port), "-m", "16", "-u", "root"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, f"127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None:
                pytest.skip("this memcached has no TLS (-Z)")
            time.sleep(0.05)
    raise RuntimeError("memcached -Z did not start")


@pytest.fixture(scope="module")
def tls_server(certs: Path) -> Iterator[str]:
    proc, address = start_tls_memcached(certs)
    yield address
    proc.terminate()
    proc.wait(10)


def tls_store(address: str, **tls: str) -> _native.Store:
    return _native.Store.memcached([address], connect_timeout=1.0, timeout=1.0, tls=True, **tls)


def test_a_good_ca_reads_and_writes(certs: Path, tls_server: str) -> None:
    store = tls_store(tls_server, tls_ca_file=str(certs / "ca.pem"))
    store.set_raw("tls-probe", b"over TLS")
    assert store.get_raw("tls-probe") == b"over TLS"
    # SERVER_NAME: the name checked when the address is not in the certificate
    named = tls_store(tls_server.replace("127.0.0.1", "localhost"), tls_ca_file=str(certs / "ca.pem"))
    assert named.get_raw("tls-probe") == b"over TLS"


def test_a_wrong_ca_is_refused(certs: Path, tls_server: str) -> None:
    store = tls_store(tls_server, tls_ca_file=str(certs / "other-ca.pem"))
    with pytest.raises(CacheUnavailable, match="(?i)certificate|unknown ?issuer"):
        store.get_raw("tls-probe")


def test_a_wrong_server_name_is_refused(certs: Path, tls_server: str) -> None:
    store = tls_store(tls_server, tls_ca_file=str(certs / "ca.pem"), tls_server_name="cache.example.org")
    with pytest.raises(CacheUnavailable, match="(?i)certificate|name"):
        store.get_raw("tls-probe")


def test_a_plaintext_client_gets_nothing_from_a_tls_server(tls_server: str) -> None:
    plain = _native.Store.memcached([tls_server], connect_timeout=0.5, timeout=0.5)
    with pytest.raises(CacheUnavailable):
        plain.get_raw("tls-probe")


def test_a_client_certificate_when_the_server_requires_one(certs: Path) -> None:
    proc, address = start_tls_memcached(certs, f"ssl_ca_cert={certs / 'ca.pem'}", "ssl_verify_mode=2")
    try:
        without = tls_store(address, tls_ca_file=str(certs / "ca.pem"))
        with pytest.raises(CacheUnavailable):
            without.set_raw("k", b"v")
        with_cert = tls_store(
            address,
            tls_ca_file=str(certs / "ca.pem"),
            tls_cert_file=str(certs / "client.pem"),
            tls_key_file=str(certs / "client.key"),
        )
        with_cert.set_raw("k", b"v")
        assert with_cert.get_raw("k") == b"v"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.django_db(transaction=True)
def test_listy_over_tls_settings(users, certs: Path, tls_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    me, you = users[:2]
    monkeypatch.setenv("LISTY_SERVERS", tls_server)
    reset_listy()
    try:
        with override_settings(LISTY={**settings.LISTY, "TLS": {"CA_FILE": str(certs / "ca.pem")}}):
            Follow.cache.add(follower=me, followee=you)
            got = Follow.cache.get(follower=me)
            assert got.from_cache and [f.followee_id for f in got] == [you.pk]
        with override_settings(LISTY={**settings.LISTY, "TLS": {"CA_FILE": str(certs / "other-ca.pem")}}):
            got = Follow.cache.get(follower=me)  # the database, not an unverified server
            assert not got.from_cache and [f.followee_id for f in got] == [you.pk]
    finally:
        monkeypatch.undo()
        reset_listy()


@pytest.mark.parametrize(
    ("tls", "says"),
    [
        ({"CA_FILE": "/nonexistent/ca.pem"}, "CA_FILE"),
        ({"CERT_FILE": __file__}, "go together"),
        ({"CA": "x"}, "unknown LISTY['TLS'] keys"),
        ("yes", "must be None, True or a dict"),
    ],
)
def test_bad_tls_settings_are_e004(tls: object, says: str) -> None:
    with override_settings(LISTY={**settings.LISTY, "TLS": tls}):
        messages = check_settings()
    assert [m.id for m in messages] == ["listy.E004"] and says in messages[0].msg
