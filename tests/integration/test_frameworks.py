"""
test_frameworks.py - real Django and Flask apps served by corral, driven with `requests`.
"""
import hashlib
import os
import re
import shutil

import pytest
import requests

from helpers import pattern_bytes

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def django_srv(corral_module):
    # --pythonpath + --module: the usual way to serve a Django project
    return corral_module(app="djproj", args=["--pythonpath", corral_module.tmp_path / "djproj",
                                             "--module", "djproj.wsgi"])


def test_django_csrf_form_round_trip(django_srv):
    s = requests.Session()
    url = django_srv.url("/form/")
    r = s.get(url, timeout=30)
    assert r.status_code == 200, r.text
    assert "csrftoken" in s.cookies
    m = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', r.text)
    assert m, r.text
    r = s.post(url, data={"csrfmiddlewaretoken": m.group(1), "message": "héllo corral"},
               timeout=30)
    assert r.status_code == 200, r.text
    assert "You said: héllo corral" in r.text


def test_django_post_without_token_is_403(django_srv):
    s = requests.Session()
    url = django_srv.url("/form/")
    assert s.get(url, timeout=30).status_code == 200
    r = s.post(url, data={"message": "no token"}, timeout=30)
    assert r.status_code == 403
    # and with a token but no cookie
    r = requests.post(url, data={"csrfmiddlewaretoken": "x" * 64, "message": "m"}, timeout=30)
    assert r.status_code == 403


def test_django_request_attributes(django_srv):
    r = requests.get(django_srv.url("/info/?a=1&b=%C3%A9"), timeout=30)
    assert r.status_code == 200
    assert r.json() == {"path": "/info/", "query": {"a": "1", "b": "é"},
                        "host": "127.0.0.1:%d" % django_srv.port, "scheme": "http",
                        "method": "GET"}
    # APPEND_SLASH through CommonMiddleware: a redirect built from the environ
    r = requests.get(django_srv.url("/info"), allow_redirects=False, timeout=30)
    assert r.status_code == 301 and r.headers["Location"].endswith("/info/")
    assert requests.get(django_srv.url("/nope/"), timeout=30).status_code == 404


def test_django_disallowed_host_is_400(django_srv):
    r = requests.get(django_srv.url("/form/"), headers={"Host": "evil.example"}, timeout=30)
    assert r.status_code == 400


@pytest.fixture(scope="module")
def flask_srv(corral_module):
    return corral_module(app="flaskapp.py", args=["--callable", "app"])


def test_flask_json(flask_srv):
    r = requests.get(flask_srv.url("/api/json?x=1"), timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    assert r.json()["ok"] is True and r.json()["args"] == {"x": "1"}
    payload = {"a": [1, 2, 3], "b": "ünïcode", "c": None}
    r = requests.post(flask_srv.url("/api/json"), json=payload, timeout=30)
    assert r.status_code == 200 and r.json() == {"echo": payload}


def test_flask_cookies(flask_srv):
    s = requests.Session()
    r = s.get(flask_srv.url("/cookie/set?v=chocolate"), timeout=30)
    assert r.status_code == 200 and s.cookies.get("flavour") == "chocolate"
    assert s.get(flask_srv.url("/cookie/get"), timeout=30).text == "chocolate"
    assert requests.get(flask_srv.url("/cookie/get"), timeout=30).text == "<none>"


def test_flask_redirect(flask_srv):
    r = requests.get(flask_srv.url("/redirect"), allow_redirects=False, timeout=30)
    assert r.status_code == 302
    assert r.headers["Location"] in ("/target", flask_srv.url("/target"))
    r = requests.get(flask_srv.url("/redirect"), timeout=30)
    assert r.status_code == 200 and r.text == "target reached"
    assert [h.status_code for h in r.history] == [302]


@pytest.mark.parametrize("size", [0, 1000, 3 * 1024 * 1024 + 17])
def test_flask_multipart_upload(flask_srv, size):
    data = pattern_bytes(size, seed=size)
    r = requests.post(flask_srv.url("/upload"),
                      files={"file": ("blob.bin", data, "application/octet-stream")},
                      data={"note": "a note"}, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json() == {"name": "blob.bin", "size": size,
                        "sha256": hashlib.sha256(data).hexdigest(), "field": "a note"}


def test_flask_streaming(flask_srv):
    with requests.get(flask_srv.url("/stream?n=500"), stream=True, timeout=30) as r:
        assert r.status_code == 200
        assert r.headers.get("Transfer-Encoding") == "chunked"
        body = b"".join(r.iter_content(chunk_size=None)).decode()
    assert body == "".join("line %d of 500\n" % i for i in range(500))


def test_flask_404_and_405(flask_srv):
    assert requests.get(flask_srv.url("/missing"), timeout=30).status_code == 404
    assert requests.delete(flask_srv.url("/api/json"), timeout=30).status_code == 405


def test_examples_flaskapp_ini(corral, tmp_path):
    """examples/flaskapp serves as `make run` would, on a free port instead of 8000."""
    example = os.path.join(os.path.dirname(os.path.dirname(HERE)), "examples", "flaskapp")
    site = tmp_path / "flaskapp"
    shutil.copytree(example, site, ignore=shutil.ignore_patterns("__pycache__"))
    ini = (site / "corral.ini").read_text()
    assert "127.0.0.1:8000" in ini
    srv = corral(ini=ini.replace("127.0.0.1:8000", "127.0.0.1:{port}"),
                 ini_name="flaskapp/corral.ini")
    r = requests.get(srv.url("/"), timeout=30)
    assert r.status_code == 200 and "Hello from corral" in r.text
    status = requests.get(srv.url("/api/status"), timeout=30).json()
    assert status["multiprocess"] is True
    s = requests.Session()
    r = s.post(srv.url("/guestbook"), data={"name": "t", "message": "hi there"}, timeout=30)
    assert r.status_code == 200 and r.url.endswith("/guestbook")
