"""Where the served app keeps what it receives and writes: a folder of this process's own, gone at exit.

Uploads are patient-derived. Gradio's cache (``GRADIO_TEMP_DIR``) holds every upload, every file the app returns
and the batch CSVs (written there so that gradio tracks them); ``delete_cache`` prunes what it tracks after an hour
and at a clean shutdown. This folder covers the rest: what a crash or a kill leaves behind goes when the app next
starts, and anything gradio doesn't track goes at exit.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

PREFIX = "cnmc-app-"


def private_cache() -> Path:
    """Create this process's cache folder, point gradio at it, and remove those of processes that have ended.

    Call before building the app: gradio reads ``GRADIO_TEMP_DIR`` when its components are made. The folder lies
    in the ``GRADIO_TEMP_DIR`` given, if any, else in the system's temporary folder.
    """
    parent = Path(os.environ.get("GRADIO_TEMP_DIR") or tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    for folder in parent.glob(f"{PREFIX}*"):
        pid = folder.name.removeprefix(PREFIX)
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
    folder = parent / f"{PREFIX}{os.getpid()}"
    shutil.rmtree(folder, ignore_errors=True)  # a folder of an earlier process that had this id
    folder.mkdir(mode=0o700)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    return folder


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0 only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's
        return True
    return True
