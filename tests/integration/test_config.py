"""
test_config.py - the command line and ini files: error messages and exit status 2, the
[corral] section and %d, --help/--version, app loading (--wsgi-file, --module, --callable and
the `app` fallback, import errors), and the options an app can observe.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys

import pytest

import helpers

APPS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps")


def copy_app(tmp_path, name):
    dst = tmp_path / name
    shutil.copy(os.path.join(APPS, name), dst)
    return str(dst)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_closed(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return False
    except OSError:
        return True


def error_lines(res):
    return [line for line in res.stderr.splitlines() if line.strip()]


# --- configuration errors -----------------------------------------------------------------------

def test_unknown_option(run_corral, tmp_path):
    port = free_port()
    res = run_corral(["--http", "127.0.0.1:%d" % port, "--wsgi-file",
                      copy_app(tmp_path, "routes.py"), "--definitely-not-an-option", "1"])
    assert res.returncode == 2, res
    lines = error_lines(res)
    assert len(lines) == 1, "one line on stderr: %r" % res.stderr
    assert "--definitely-not-an-option: " in lines[0]
    assert port_closed(port)


@pytest.mark.parametrize("opt,value", [
    ("--processes", "abc"),
    ("--threads", "many"),
    ("--buffer-size", "big"),
    ("--http-timeout", "soon"),
    ("--limit-post", "lots"),
    ("--listen", "x1"),
])
def test_bad_option_value(run_corral, tmp_path, opt, value):
    port = free_port()
    res = run_corral(["--http", "127.0.0.1:%d" % port, "--wsgi-file",
                      copy_app(tmp_path, "routes.py"), opt, value])
    assert res.returncode == 2, res
    lines = error_lines(res)
    assert len(lines) == 1 and (opt + ": ") in lines[0], res.stderr
    assert port_closed(port)


def test_missing_option_value(run_corral, tmp_path):
    res = run_corral(["--wsgi-file", copy_app(tmp_path, "routes.py"), "--http"])
    assert res.returncode == 2, res
    assert "--http: " in res.stderr


def test_missing_ini_file(run_corral, tmp_path):
    missing = tmp_path / "nowhere" / "site.ini"
    res = run_corral(["--ini", missing])
    assert res.returncode == 2, res
    assert str(missing) in res.stderr
    assert len(error_lines(res)) == 1, res.stderr


def test_broken_ini_line(run_corral, tmp_path):
    port = free_port()
    ini = tmp_path / "site.ini"
    ini.write_text("[corral]\nhttp = 127.0.0.1:%d\nwsgi-file = %s\nthis line is broken\n"
                   % (port, copy_app(tmp_path, "routes.py")))
    res = run_corral(["--ini", ini])
    assert res.returncode == 2, res
    lines = error_lines(res)
    assert len(lines) == 1 and re.search(r"site\.ini:4: ", lines[0]), res.stderr
    assert port_closed(port)


def test_bad_value_in_ini_names_file_line_key(run_corral, tmp_path):
    ini = tmp_path / "site.ini"
    ini.write_text("[corral]\n# a comment\nprocesses = lots\nhttp = 127.0.0.1:%d\n"
                   "wsgi-file = %s\n" % (free_port(), copy_app(tmp_path, "routes.py")))
    res = run_corral(["--ini", ini])
    assert res.returncode == 2, res
    lines = error_lines(res)
    assert len(lines) == 1 and re.search(r"site\.ini:3: processes: \S", lines[0]), res.stderr


# --- ini ----------------------------------------------------------------------------------------

INI = """\
; corral test site
[other]
processes = not-ours

[corral]
http = 127.0.0.1:{port}
chdir = %d
module = environ:application
processes = 2
# two values for a repeatable option
env = CORRAL_A=1
env = CORRAL_B=two words
"""


def test_ini_corral_section(corral, tmp_path):
    srv = corral(ini=INI, files={"environ.py": open(os.path.join(APPS, "environ.py")).read()})
    status, _, body = srv.get("/")
    assert status == 200
    out = json.loads(body)
    assert out["process"]["cwd"] == str(tmp_path)  # chdir = %d
    assert out["process"]["environ"]["CORRAL_A"] == "1"
    assert out["process"]["environ"]["CORRAL_B"] == "two words"
    assert out["env"]["wsgi.multiprocess"] is True
    srv.wait_workers(2)


def test_command_line_after_ini_wins(corral, tmp_path):
    srv = corral(ini=INI, args=["--processes", "1"],
                 files={"environ.py": open(os.path.join(APPS, "environ.py")).read()})
    out = json.loads(srv.get("/")[2])
    assert out["env"]["wsgi.multiprocess"] is False
    srv.wait_workers(1)


def test_uwsgi_section_and_aliases(corral, tmp_path):
    """A uWSGI-style ini: [uwsgi] section, option aliases, compatibility flags, and %d with its
    trailing slash (uWSGI's meaning) in front of a file name."""
    ini = ("[uwsgi]\n"
           "http-socket = 127.0.0.1:{port}\n"
           "wsgi-file = %droutes.py\n"
           "master = true\n"
           "workers = 2\n"
           "enable-threads = true\n")
    srv = corral(ini=ini, files={"routes.py": open(os.path.join(APPS, "routes.py")).read()})
    assert srv.get("/hello")[2] == b"hello"
    srv.wait_workers(2)


# --- --help and --version -----------------------------------------------------------------------

def test_help(run_corral):
    res = run_corral(["--help"])
    assert res.returncode == 0, res
    for opt in ("--http", "--module", "--wsgi-file", "--processes", "--threads", "--ini",
                "--lazy-apps", "--limit-post", "--buffer-size"):
        assert opt in res.stdout, opt


def test_version(run_corral):
    res = run_corral(["--version"])
    assert res.returncode == 0, res
    assert "corral" in res.stdout.lower() and re.search(r"\d", res.stdout), res.stdout


# --- app loading --------------------------------------------------------------------------------

def test_import_error_exits_once_with_traceback(run_corral, tmp_path):
    port = free_port()
    res = run_corral(["--http", "127.0.0.1:%d" % port, "--processes", "2",
                      "--wsgi-file", copy_app(tmp_path, "import_error.py")], timeout=30)
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert out.count("kaboom-import-marker") >= 1, out
    assert out.count("Traceback (most recent call last)") == 1, out
    imports = (tmp_path / "imports.txt").read_text().split()
    assert len(imports) == 1, "imported %d times: a respawn loop?" % len(imports)
    assert port_closed(port)


def test_import_error_with_lazy_apps_does_not_loop(run_corral, tmp_path):
    res = run_corral(["--http", "127.0.0.1:%d" % free_port(), "--processes", "2",
                      "--lazy-apps", "--wsgi-file", copy_app(tmp_path, "import_error.py")],
                     timeout=30)
    assert res.returncode != 0
    assert "kaboom-import-marker" in res.stdout + res.stderr
    imports = (tmp_path / "imports.txt").read_text().split()
    assert 1 <= len(imports) <= 4, "imported %d times: a respawn loop?" % len(imports)


@pytest.mark.parametrize("source,expect", [
    ("application = 42\n", "callable"),
    ("x = 1\n", "application"),
    ("def application(:\n", "SyntaxError"),
], ids=["not-callable", "no-callable", "syntax-error"])
def test_unusable_app_exits(run_corral, tmp_path, source, expect):
    app = tmp_path / "bad.py"
    app.write_text(source)
    port = free_port()
    res = run_corral(["--http", "127.0.0.1:%d" % port, "--wsgi-file", app], timeout=30)
    assert res.returncode != 0
    assert expect in res.stdout + res.stderr, res
    assert port_closed(port)


def test_missing_module_exits(run_corral):
    res = run_corral(["--http", "127.0.0.1:%d" % free_port(), "--module",
                      "no_such_module_corral_xyz:app"], timeout=30)
    assert res.returncode != 0
    assert "no_such_module_corral_xyz" in res.stdout + res.stderr


def test_callable_option(corral):
    srv = corral(app="named_callable.py", args=["--callable", "myapp"])
    assert srv.get("/")[2] == b"myapp"


def test_default_callable_is_application(corral):
    srv = corral(app="named_callable.py")
    assert srv.get("/")[2] == b"application"


def test_app_fallback(corral):
    srv = corral(app="app_fallback.py")
    assert srv.get("/")[2] == b"app-fallback"


def test_module_with_pythonpath(corral, tmp_path):
    lib1 = tmp_path / "lib1"
    lib2 = tmp_path / "lib2"
    files = {"lib1/mymod.py": open(os.path.join(APPS, "environ.py")).read(),
             "lib2/other.py": "X = 1\n"}
    srv = corral(files=files, args=["--pythonpath", lib1, "--pythonpath", lib2,
                                    "--module", "mymod:application"])
    out = json.loads(srv.get("/")[2])
    path = out["process"]["sys_path"]
    assert str(lib1) in path and str(lib2) in path
    assert path.index(str(lib1)) < path.index(str(lib2)), path


def test_module_with_callable_option(corral, tmp_path):
    srv = corral(files={"lib/named.py": open(os.path.join(APPS, "named_callable.py")).read()},
                 args=["--pythonpath", tmp_path / "lib", "--module", "named",
                       "--callable", "myapp"])
    assert srv.get("/")[2] == b"myapp"


def test_chdir(corral, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    srv = corral(app="environ.py", args=["--chdir", site])
    assert json.loads(srv.get("/")[2])["process"]["cwd"] == str(site)


def test_env(corral):
    srv = corral(app="routes.py", args=["--env", "CORRAL_FOO=bar", "--env", "CORRAL_EQ=a=b",
                                        "--env", "CORRAL_EMPTY="])
    assert srv.get("/osenv?k=CORRAL_FOO")[2] == b"bar"
    assert srv.get("/osenv?k=CORRAL_EQ")[2] == b"a=b"
    assert srv.get("/osenv?k=CORRAL_EMPTY")[2] == b""


def test_port_out_of_range_is_an_error(run_corral, tmp_path):
    """--http :99999 is refused at start-up (getaddrinfo would bind port 34463)."""
    res = run_corral(["--http", "127.0.0.1:99999", "--wsgi-file", copy_app(tmp_path, "routes.py")])
    assert res.returncode != 0, res
    assert "127.0.0.1:99999" in res.stderr and "65535" in res.stderr, res.stderr
    assert port_closed(99999 & 0xFFFF)


def test_venv_that_is_not_a_virtualenv_is_an_error(run_corral, tmp_path):
    """--venv naming a plain directory fails at start-up, naming the option, as uWSGI does."""
    res = run_corral(["--http", "127.0.0.1:%d" % free_port(), "--wsgi-file",
                      copy_app(tmp_path, "routes.py"), "--venv", str(tmp_path)])
    assert res.returncode != 0, res
    assert "--venv %s: not a virtualenv" % tmp_path in res.stderr + res.stdout, res


def test_venv(corral, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    site = venv / "lib" / ("python%d.%d" % sys.version_info[:2]) / "site-packages"
    (site / "venv_only_marker.py").write_text("WHERE = 'inside the venv'\n")
    src = ("import sys, venv_only_marker\n"
           "def application(environ, start_response):\n"
           "    body = ('%s|%s' % (venv_only_marker.WHERE, sys.prefix)).encode()\n"
           "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
           "    return [body]\n")
    srv = corral(source=src, args=["--venv", venv])
    where, prefix = srv.get("/")[2].decode().split("|")
    assert where == "inside the venv"
    assert os.path.realpath(prefix) == os.path.realpath(str(venv))


def test_pidfile(corral, tmp_path):
    pidfile = tmp_path / "corral.pid"
    srv = corral(app="routes.py", args=["--pidfile", pidfile])
    helpers.wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 10, "the pidfile")
    assert int(pidfile.read_text().strip()) == srv.pid


def test_log_file(corral, tmp_path):
    logfile = tmp_path / "corral-own.log"
    srv = corral(app="routes.py", args=["--log-file", logfile])
    assert srv.get("/raise/before")[0] == 500
    helpers.wait_for(lambda: logfile.exists() and "boom-before-start" in logfile.read_text(),
                     10, "the traceback in --log-file")
    assert "boom-before-start" not in srv.log()


@pytest.mark.parametrize("disabled", [False, True], ids=["logging", "disable-logging"])
def test_request_logging(corral, disabled):
    srv = corral(app="routes.py", args=["--disable-logging"] if disabled else [])
    assert srv.get("/unique-access-marker-7731")[0] == 404
    assert srv.get("/raise/before")[0] == 500  # errors always log: a sync point
    log = srv.wait_log("boom-before-start")
    if disabled:
        assert "unique-access-marker-7731" not in log
    else:
        helpers.wait_for(lambda: "unique-access-marker-7731" in srv.log(), 10,
                         "the request line in the access log")


def test_buffer_size_option(corral):
    srv = corral(app="routes.py", args=["--buffer-size", "4096"])
    with srv.raw() as c:
        assert c.request("GET", "/hello", headers={"X-Fill": "v" * 3000}).status == 200
        r = c.request("GET", "/hello", headers={"X-Fill": "v" * 5000})
        assert r.status == 431
        assert c.wait_closed(10) == b""


SPILL_APP = r'''
import os

def application(environ, start_response):
    # the spool's temporary file, if the body spilled: an unnamed file in $TMPDIR
    spilled = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink("/proc/self/fd/" + fd)
        except OSError:
            continue
        if target.startswith(os.environ["TMPDIR"]) and target.endswith("(deleted)"):
            spilled += 1
    mode = environ["QUERY_STRING"]
    inp = environ["wsgi.input"]
    if mode == "readline":
        body = b"".join(iter(lambda: inp.readline(5000), b""))
    elif mode == "readn":
        body = b"".join(iter(lambda: inp.read(5000), b""))
    else:
        body = inp.read()
    start_response("200 OK", [("X-Spilled", str(spilled)), ("Content-Length", str(len(body)))])
    return [body]
'''


def test_post_buffering_spills_large_bodies(corral, tmp_path):
    """Bodies above --post-buffering go to a temporary file (seen from inside the worker as
    an unnamed file in $TMPDIR), smaller ones stay in memory; both read back exactly."""
    spool = tmp_path / "spool"
    spool.mkdir()
    srv = corral(source=SPILL_APP, args=["--post-buffering", "1024"], env={"TMPDIR": str(spool)})
    body = helpers.pattern_bytes(3 * 1024 * 1024, seed=21)
    for mode in ("read", "readline", "readn"):
        with srv.raw() as c:
            r = c.request("POST", "/?" + mode, body)
        assert r.status == 200 and helpers.sha256(r.body) == helpers.sha256(body), mode
        assert r.header("x-spilled") == "1", (mode, r.headers)
    with srv.raw() as c:
        r = c.request("POST", "/?read", b"x" * 1000)
    assert r.body == b"x" * 1000 and r.header("x-spilled") == "0"


def test_listen_option_accepted(corral):
    srv = corral(app="routes.py", args=["--listen", "16"])
    assert srv.get("/hello")[2] == b"hello"
