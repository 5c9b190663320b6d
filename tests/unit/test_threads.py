import threading
from pathlib import Path

import pytest

from worker.threads import name_os_thread


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="OS thread names are read from Linux's /proc")
def test_a_thread_gets_its_os_name_cut_to_what_the_kernel_keeps():
    seen = {}

    def run() -> None:
        seen["ok"] = name_os_thread("publish-stage-of-the-worker")
        seen["comm"] = Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == {"ok": True, "comm": "publish-stage-o"}
