"""Bring up a one-node Slurm on localhost (munged, slurmctld, slurmd) for the cluster test, as root.

Everything lives in one temporary folder (config, state, spool, logs, the munge key and socket); the
daemons run in the foreground under Popen so they are stopped by their own PIDs afterwards, leaving
nothing behind. Debian's slurm-wlm and munge are installed with apt-get when missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ["slurm-wlm", "munge"]


def ensure_installed() -> None:
    """apt-get install slurm-wlm and munge when the daemons are missing (root only)."""
    if all(shutil.which(x) for x in ("slurmctld", "slurmd", "munged", "sbatch", "squeue")):
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", *PACKAGES], check=True, env=env, capture_output=True)


SLURM_CONF = """\
ClusterName=resrecover-test
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={munge_socket}
CredType=cred/munge
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# Take the node's size from this file, not the hardware, so the shipped profile's per-rule requests
# (written for real cluster nodes) can be scheduled on a 2-core test machine.
SlurmdParameters=config_overrides
InactiveLimit=0
KillWait=5
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=30
GresTypes=gpu
NodeName={host} CPUs=32 RealMemory=256000 Gres=gpu:2 State=UNKNOWN
PartitionName=batch Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
PartitionName=gpu Nodes=ALL Default=NO MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SYSTEM_CONF_DIR = Path("/etc/slurm")
BACKUP_SUFFIX = ".resrecover-test-backup"


@dataclass
class LocalSlurm:
    root: Path
    procs: list = field(default_factory=list)
    installed: list = field(default_factory=list)

    @property
    def env(self) -> dict:
        return dict(os.environ, SLURM_CONF=str(self.root / "slurm.conf"))

    def _install_system_config(self) -> None:
        """Also put the config at Slurm's compiled-in path: srun inside a batch job (Snakemake's job
        step) does not see SLURM_CONF and would otherwise look for a config server in DNS. Any
        existing file is kept aside and put back by :meth:`stop`."""
        SYSTEM_CONF_DIR.mkdir(parents=True, exist_ok=True)
        for name in ("slurm.conf", "gres.conf"):
            target = SYSTEM_CONF_DIR / name
            if target.exists() or target.is_symlink():
                target.rename(target.with_name(name + BACKUP_SUFFIX))
            shutil.copy(self.root / name, target)
            self.installed.append(target)

    def _restore_system_config(self) -> None:
        for target in self.installed:
            target.unlink(missing_ok=True)
            backup = target.with_name(target.name + BACKUP_SUFFIX)
            if backup.exists() or backup.is_symlink():
                backup.rename(target)
        self.installed.clear()

    def start(self, timeout: float = 60) -> "LocalSlurm":
        root = self.root
        for sub in ("state", "spool", "munge"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(root / "munge", 0o700)
        key = root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        munge_socket = root / "munge" / "munge.socket"
        host = socket.gethostname().split(".")[0]
        # Two GPUs without device files: Slurm schedules the shipped profile's `gpu` requests; the
        # jobs themselves find no CUDA and run on the CPU, as the workflow does anywhere without one.
        for i in range(2):
            (root / f"gpu{i}").touch()
        (root / "gres.conf").write_text(f"AutoDetect=off\nNodeName={host} Name=gpu File={root}/gpu[0-1]\n")
        (root / "slurm.conf").write_text(
            SLURM_CONF.format(
                host=host,
                root=root,
                munge_socket=munge_socket,
                ctld_port=_free_port(),
                slurmd_port=_free_port(),
            )
        )
        self._install_system_config()
        self._spawn(
            [
                "munged", "--foreground", "--force",
                f"--key-file={key}", f"--socket={munge_socket}",
                f"--pid-file={root / 'munge' / 'munged.pid'}", f"--log-file={root / 'munge' / 'munged.log'}",
                f"--seed-file={root / 'munge' / 'munged.seed'}",
            ],
            "munged",
        )
        self._wait(lambda: munge_socket.exists(), timeout, "munged socket")
        self._spawn(["slurmctld", "-D", "-i", "-f", str(root / "slurm.conf")], "slurmctld")
        self._spawn(["slurmd", "-D", "-f", str(root / "slurm.conf"), "-N", host], "slurmd")
        self._wait(self._node_idle, timeout, "slurm node to become idle")
        return self

    def _spawn(self, cmd, name):
        log = open(self.root / f"{name}.stdout", "w")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.procs.append((name, proc))

    def _node_idle(self) -> bool:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited early: {self.log_tail(name)}")
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], env=self.env, capture_output=True, text=True)
        return out.returncode == 0 and "idle" in out.stdout

    def _wait(self, ready, timeout, what):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if ready():
                return
            time.sleep(0.5)
        raise RuntimeError(f"timed out waiting for {what}; logs: {self.log_tail('slurmctld')} {self.log_tail('slurmd')}")

    def log_tail(self, name: str, n: int = 2000) -> str:
        for candidate in (self.root / f"{name}.log", self.root / f"{name}.stdout"):
            if candidate.exists():
                return candidate.read_text()[-n:]
        return ""

    def stop(self) -> None:
        """Stop the daemons this object started, by PID (slurmd, slurmctld, then munged)."""
        for name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs.clear()
        self._restore_system_config()
