"""The entrypoint of a warm pool member (pool.py): the agent's identity arrives after the container started.

The reference agent reads WORKSPACE_ID and the rest of its env once, at process start (spec 07 §4), so a
started-but-unassigned container cannot run it yet. A member runs `python3 -c WAITER <image argv>`
instead: it pays for the interpreter and, for a `python -m pkg` command, for importing `pkg`'s modules
up front (and the modules MOLECULE_POOL_PRELOAD names, which the agent would import lazily) and for the
resolver's first call (glibc loads its modules and reads its files on the first `getaddrinfo`, 1-3 ms
that the registration request paid), then polls every 5 ms for `/configs/.pool-identity.json` (an
inotify wait measured slower here: docs/decisions.md "Warm pool"). The claim writes the config files,
then that file (renamed into place, so once it is there it is whole: pool_dirs.deliver). The waiter
deletes it (it holds the workspace secrets), applies its env and runs the image's own command: in this
interpreter for `python -m pkg` (the imports are already done), else by exec.
"""

from __future__ import annotations

IDENTITY_FILE = ".pool-identity.json"

WAITER = r"""
import importlib, json, os, pkgutil, runpy, sys, time
argv = sys.argv[1:]
mod = None
if len(argv) >= 3 and os.path.basename(argv[0]).startswith("python") and argv[1] == "-m":
    mod = argv[2]
    try:
        pkg = importlib.import_module(mod)
        for info in pkgutil.iter_modules(getattr(pkg, "__path__", [])):
            if info.name != "__main__":
                try:
                    importlib.import_module(mod + "." + info.name)
                except Exception:
                    pass
    except Exception:
        pass
for name in (os.environ.pop("MOLECULE_POOL_PRELOAD", "") or "").split(","):
    if name.strip():
        try:
            importlib.import_module(name.strip())
        except Exception:
            pass
try:  # the resolver's first call loads its modules and files (1-3 ms): paid now, not by the registration
    import socket
    socket.getaddrinfo("localhost", None)
except Exception:
    pass
path = os.path.join(os.environ.get("WORKSPACE_CONFIG_PATH") or "/configs", "@IDENTITY@")
while True:
    try:
        with open(path, encoding="utf-8") as f:
            env = json.load(f)
        break
    except (OSError, ValueError):
        time.sleep(0.005)
try:
    os.unlink(path)
except OSError:
    pass
os.environ.update({str(k): str(v) for k, v in env.items()})
if mod is not None:
    sys.argv = [mod] + argv[3:]
    runpy.run_module(mod, run_name="__main__", alter_sys=True)
else:
    os.execvp(argv[0], argv)
""".replace("@IDENTITY@", IDENTITY_FILE)
