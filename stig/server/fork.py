"""Start a child process by ``os.fork`` alone: the supervisor's children.

``stig serve --workers N`` starts its writer and its workers this way
(stig/server/supervisor.py; docs/workers.md, "How a child is started"):
the supervisor has imported their code once, so a child costs a fork
instead of a fresh interpreter and its imports (~0.3-0.4 s of CPU each).
No exec follows, so what an exec and ``subprocess.Popen(pass_fds=…,
start_new_session=True)`` did, :func:`spawn` does by hand, in this order,
with every signal blocked from before the fork until the child is ready:

* PR_SET_PDEATHSIG: SIGKILL when the supervisor dies (and an exit at once
  if it died before that was set);
* a session of its own (``setsid``): a terminal's ^C is for the supervisor;
* every Python signal handler back to the default (SIGINT to
  ``default_int_handler``, as a fresh interpreter has it), no wake-up fd,
  ``ignore``'s signals ignored, then the supervisor's signal mask back;
* stdin is ``/dev/null``;
* the garbage the supervisor had not collected yet is collected (a socket
  in a cycle would otherwise close its number later, when the child may
  have reused it), then **every descriptor not in** ``keep`` (and not
  stdout or stderr) is closed: the data directory's lock, the other
  children's links and listening sockets, the selector, the pidfds and
  the control socket are all gone before the child's own code runs;
* its name (``/proc/PID/comm``) is ``name``, so ``ps`` tells the children apart.

Then ``main()`` runs, and the child ends with ``os._exit`` whatever
happens: no ``atexit`` handler, no finalizer of an object the supervisor
built and no frame of the supervisor's runs in the child.  Its exit status is ``main``'s
``SystemExit`` code, 0 when it returns, 1 when it raises (the traceback
is printed on stderr).

Only a single-threaded process may fork this way (a thread holding a lock
at the fork would leave it held forever in the child), and only while it
has no LMDB environment open (py-lmdb would refuse the child its own of
the same path, and LMDB's rule is that a child never touches its
parent's): :func:`spawn` checks both and raises otherwise.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable, Collection

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15


class NotSingleThreaded(RuntimeError):
    """The process has more than one thread: it must not fork a child."""


class EnvironmentOpen(RuntimeError):
    """An LMDB environment is open in this process: it must not fork a child."""


def open_environments() -> list[str]:
    """The LMDB lock files this process has open: one per open environment."""
    found = []
    for entry in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{entry}")
        except OSError:
            continue
        if target.endswith("/lock.mdb"):
            found.append(target)
    return found


def threads() -> int:
    """How many threads this process has (from the kernel, so C threads count too)."""
    return len(os.listdir("/proc/self/task"))


def spawn(
    name: str,
    keep: Collection[int],
    main: Callable[[], object],
    ignore: Collection[signal.Signals] = (),
) -> int:
    """Fork a child that runs ``main()`` with only ``keep`` (and stdin,
    stdout, stderr) open, and ends with it; the child's pid."""
    environments = open_environments()
    if environments:
        raise EnvironmentOpen(f"LMDB environment open ({environments[0]}): close it before a fork")
    count = threads()
    if count != 1:
        raise NotSingleThreaded(f"{count} threads: a child must not be forked")
    parent = os.getpid()
    # Nothing buffered is written twice, once by each process.
    sys.stdout.flush()
    sys.stderr.flush()
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        pid = os.fork()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        raise
    if pid:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        return pid
    code = 1
    try:
        _become_child(parent, name, keep, ignore)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        # Through the log (inherited from the parent): its format, or the
        # journal's priority on every line, not a bare traceback on stderr.
        log.critical("%s (pid %d) ended with an exception", name, os.getpid(), exc_info=True)
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _become_child(
    parent: int, name: str, keep: Collection[int], ignore: Collection[signal.Signals]
) -> None:
    """In the child, signals blocked: all the module docstring lists, before ``main``."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died before the prctl: no signal will come
        os._exit(1)
    os.setsid()
    for signum in signal.valid_signals():
        try:
            handler = signal.getsignal(signum)
        except ValueError:
            continue
        if signum == signal.SIGINT:
            signal.signal(signum, signal.default_int_handler)
        elif callable(handler):
            signal.signal(signum, signal.SIG_DFL)
    for signum in ignore:
        signal.signal(signum, signal.SIG_IGN)
    signal.set_wakeup_fd(-1)
    null = os.open(os.devnull, os.O_RDONLY)
    if null != 0:
        os.dup2(null, 0)
        os.close(null)
    gc.collect()
    close_all_but({0, 1, 2, *keep})
    libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


def close_all_but(keep: Collection[int]) -> None:
    """Close every descriptor of this process but ``keep``."""
    for fd in sorted(int(entry) for entry in os.listdir("/proc/self/fd")):
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:  # the directory's own descriptor, closed already
                pass
