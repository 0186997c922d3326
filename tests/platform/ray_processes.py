"""Cleanup for tests that start a Ray of their own (a head or a Cluster) beside the session's."""

import psutil


def kill_processes_under(temp_dir: str) -> None:
    """Ray's processes of the cluster rooted at temp_dir, and their children; never another Ray's."""
    found = {}
    for process in psutil.process_iter(["cmdline"]):
        try:
            if any(temp_dir in part for part in process.info["cmdline"] or ()):
                found[process.pid] = process
                found.update((child.pid, child) for child in process.children(recursive=True))
        except psutil.Error:
            pass
    for process in found.values():
        try:
            process.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(list(found.values()), timeout=10)
