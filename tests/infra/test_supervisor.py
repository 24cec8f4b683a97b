"""The process runner behind `obol run` and the `stack` fixture, with dummy children."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
import time

import pytest

from obol_cli.supervisor import Supervisor

from .helpers import alive, wait_gone


def py(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def wait_for_output(sink: io.StringIO, text: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in sink.getvalue():
        assert time.monotonic() < deadline, f"{text!r} not in output:\n{sink.getvalue()}"
        time.sleep(0.02)


def test_output_is_prefixed_with_the_child_name_and_kept_as_tail() -> None:
    sink = io.StringIO()
    with Supervisor(sink, label_width=6) as supervisor:
        child = supervisor.start(
            "alpha", py("import sys; print('to stdout'); print('to stderr', file=sys.stderr)"), {}
        )
        assert supervisor.wait_any() is child
        child.join_output(timeout=5)
        assert child.returncode == 0
        assert sorted(child.tail()) == ["to stderr", "to stdout"]
    lines = sink.getvalue().splitlines()
    assert "alpha  | to stdout" in lines
    assert "alpha  | to stderr" in lines


def test_children_get_the_given_environment() -> None:
    sink = io.StringIO()
    with Supervisor(sink) as supervisor:
        supervisor.start("env", py("import os; print(os.environ['OBOL_X'])"), {"OBOL_X": "42"})
        supervisor.wait_any().join_output(timeout=5)
    assert "env      | 42" in sink.getvalue().splitlines()


def test_stop_terminates_gracefully_then_kills_stragglers_and_grandchildren() -> None:
    sink = io.StringIO()
    supervisor = Supervisor(sink, stop_timeout=1.0)
    graceful = supervisor.start(
        "graceful",
        py("""
            import signal, sys, time
            def bye(*_):
                print('bye', flush=True)
                sys.exit(0)
            signal.signal(signal.SIGTERM, bye)
            print('up', flush=True)
            time.sleep(1000)
        """),
        {},
    )
    stubborn = supervisor.start(
        "stubborn",
        py("""
            import signal, subprocess, time
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            print('grandchild', subprocess.Popen(['sleep', '1000']).pid, flush=True)
            time.sleep(1000)
        """),
        {},
    )
    wait_for_output(sink, "graceful | up")
    wait_for_output(sink, "stubborn | grandchild")
    grandchild = int(stubborn.tail()[-1].split()[1])
    started = time.monotonic()
    supervisor.stop()
    assert time.monotonic() - started < 5
    assert graceful.returncode == 0
    assert stubborn.returncode == -9  # SIGKILL after the grace period
    assert "graceful | bye" in sink.getvalue()
    assert not wait_gone([graceful.pid, stubborn.pid, grandchild])


def test_wait_any_returns_the_child_that_exited() -> None:
    with Supervisor(io.StringIO()) as supervisor:
        supervisor.start("sleeper", ["sleep", "1000"], {})
        quitter = supervisor.start("quitter", py("import sys; sys.exit(7)"), {})
        assert supervisor.wait_any() is quitter
        assert quitter.returncode == 7
        assert alive(supervisor["sleeper"].pid)
    assert not alive(supervisor["sleeper"].pid)


def test_names_are_unique() -> None:
    with Supervisor(io.StringIO()) as supervisor:
        supervisor.start("one", ["true"], {})
        with pytest.raises(ValueError, match="already started"):
            supervisor.start("one", ["true"], {})


def test_children_die_with_a_parent_killed_by_sigkill() -> None:
    """The parent-death signal: even SIGKILL of obol leaves no child behind."""
    parent = subprocess.Popen(
        py("""
            import sys, time
            from obol_cli.supervisor import Supervisor
            supervisor = Supervisor(sys.stdout)
            print(supervisor.start('sleeper', ['sleep', '1000'], {}).pid, flush=True)
            time.sleep(1000)
        """),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert alive(child)
    parent.kill()
    parent.wait()
    assert not wait_gone([child])
