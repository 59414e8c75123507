"""``nnunet_dsmm train --executor slurm`` against a real single-node SLURM: munged,
slurmctld and slurmd started by a session fixture (as root, where the Debian packages slurm-wlm and munge
are installed), smoke-size trainings on the CPU. The scripts and the graph are checked without SLURM in
tests/experiments/test_plan.py."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TINY_ID, TINY_NAME, TINY_SCHEDULE, nnunet_env, run_cmd

DATASET_ID, NAME = TINY_ID, TINY_NAME
CHAIN = ("DSMMTeacherTrainer", "DSMMPretrainTrainer", "DSMMTrainer")
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "sinfo")

pytestmark = pytest.mark.slow


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def _conf(folder: Path) -> str:
    host = socket.gethostname().split(".")[0]
    settings = {"ClusterName": "dsmm", "SlurmctldHost": host, "SlurmUser": "root", "SlurmdUser": "root",
                "AuthType": "auth/munge", "ProctrackType": "proctrack/linuxproc", "TaskPlugin": "task/none",
                "SelectType": "select/cons_tres", "SelectTypeParameters": "CR_Core", "SchedulerType": "sched/backfill",
                "StateSaveLocation": folder / "state", "SlurmdSpoolDir": folder / "spool",
                "SlurmctldPidFile": folder / "slurmctld.pid", "SlurmdPidFile": folder / "slurmd.pid",
                "SlurmctldLogFile": folder / "slurmctld.log", "SlurmdLogFile": folder / "slurmd.log",
                "ReturnToService": 2, "MpiDefault": "none", "JobAcctGatherType": "jobacct_gather/none",
                "MinJobAge": 3600}
    return "\n".join([*(f"{key}={value}" for key, value in settings.items()),
                      f"NodeName={host} CPUs={os.cpu_count()} State=UNKNOWN",
                      "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP"]) + "\n"


def _logs(folder: Path) -> str:
    return "\n".join(f"--- {p.name}:\n{p.read_text()[-3000:]}" for p in sorted(folder.glob("*.log")))


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """The environment of a running single-node cluster (``SLURM_CONF``); its daemons stop afterwards."""
    missing = [name for name in DAEMONS if _which(name) is None]
    if missing:
        pytest.skip(f"SLURM is not installed ({', '.join(missing)} missing; apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        pytest.skip("the single-node SLURM of this test runs slurmctld and slurmd as root")
    folder = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool"):
        (folder / sub).mkdir()
    (folder / "slurm.conf").write_text(_conf(folder))
    env = {**os.environ, "SLURM_CONF": str(folder / "slurm.conf")}
    started = []
    if subprocess.run([_which("munge") or "munge", "-n"], capture_output=True).returncode != 0:
        os.makedirs("/run/munge", exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        subprocess.run([_which("munged"), "--force"], check=True)
        started.append(("munged", Path("/run/munge/munged.pid")))
    daemons = [subprocess.Popen([_which(name), "-D"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
               for name in ("slurmctld", "slurmd")]
    try:
        for _ in range(60):
            state = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True).stdout
            if state.strip() == "idle":
                break
            time.sleep(1)
        else:
            pytest.fail(f"the single-node SLURM did not come up (sinfo: {state!r}); daemons' logs:\n{_logs(folder)}")
        yield env, folder
    finally:
        for daemon in daemons:
            daemon.terminate()
            daemon.wait(timeout=30)
        for _, pid_file in started:
            if pid_file.is_file():
                os.kill(int(pid_file.read_text()), 15)


def _scontrol(job_id: str, env: dict) -> str:
    return subprocess.run(["scontrol", "show", "job", job_id], env=env, capture_output=True, text=True).stdout


def _wait_gone(job_ids: list[str], env: dict, folder: Path, timeout: float = 1200) -> None:
    """Wait until SLURM no longer lists ``job_ids`` as pending or running."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        listed = subprocess.run(["squeue", "-h", "-o", "%i %T %r"], env=env, capture_output=True, text=True).stdout
        if not any(line.split()[0] in job_ids for line in listed.splitlines()):
            return
        time.sleep(3)
    pytest.fail(f"jobs {job_ids} still queued after {timeout} s:\n{listed}\n{_logs(folder)}")


def test_slurm_chains_the_stages_with_afterok_and_resubmits_a_cancelled_job(slurm, tiny_planned, tmp_path):
    slurm_env, daemons = slurm
    env = {**nnunet_env(tiny_planned), **TINY_SCHEDULE, **slurm_env, "nnUNet_results": str(tmp_path / "results")}
    command = ["nnunet_dsmm", "train", "-d", str(DATASET_ID), "-c", "3d_fullres", "-f", "0", "-tr", "DSMMTrainer",
               "-device", "cpu", "--executor", "slurm", "--sbatch-option=--cpus-per-task=1",
               "--setup", f"export PATH={Path(sys.executable).parent}:$PATH"]  # as a venv activation
    submitted = run_cmd(command, env).stdout
    assert submitted.count("submitted as job") == 3, submitted
    folder = tmp_path / "results" / NAME / "nnunet_dsmm_slurm" / "DSMMPlans__3d_fullres"
    record = json.loads((folder / "slurm_jobs.json").read_text())["jobs"]
    ids = {trainer: record[f"{trainer}_fold0"]["id"] for trainer in CHAIN}
    assert record["DSMMPretrainTrainer_fold0"]["after"] == [ids["DSMMTeacherTrainer"]]
    assert sorted(record["DSMMTrainer_fold0"]["after"]) == sorted([ids["DSMMTeacherTrainer"],
                                                                   ids["DSMMPretrainTrainer"]])
    shown = _scontrol(ids["DSMMTrainer"], slurm_env)
    assert "JobState=PENDING" in shown and f"afterok:{ids['DSMMPretrainTrainer']}" in shown, shown
    assert f"afterok:{ids['DSMMTeacherTrainer']}" in _scontrol(ids["DSMMPretrainTrainer"], slurm_env)
    script = (folder / "DSMMTrainer_fold0.sbatch").read_text()
    assert f"export nnUNet_results={tmp_path / 'results'}" in script and "export DSMM_NUM_EPOCHS=1" in script
    # a second call while they wait or run keeps them; the dry run shows their state
    listing = run_cmd(command + ["--dry-run"], env).stdout
    assert f"runs on SLURM job {ids['DSMMTrainer']} PENDING" in listing, listing

    subprocess.run(["scancel", ids["DSMMTrainer"]], env=slurm_env, check=True)
    _wait_gone(list(ids.values()), slurm_env, daemons)
    fold = tmp_path / "results" / NAME
    for trainer in CHAIN[:2]:
        assert (fold / f"{trainer}__DSMMPlans__3d_fullres" / "fold_0" / "checkpoint_final.pth").is_file(), \
            _scontrol(ids[trainer], slurm_env) + _logs(daemons)
    assert "JobState=CANCELLED" in _scontrol(ids["DSMMTrainer"], slurm_env)
    last = fold / "DSMMTrainer__DSMMPlans__3d_fullres" / "fold_0"
    assert not (last / "checkpoint_final.pth").exists()
    log = (fold / "DSMMTeacherTrainer__DSMMPlans__3d_fullres" / "fold_0" / "nnunet_dsmm_train.log").read_text()
    assert f"(SLURM job {ids['DSMMTeacherTrainer']})" in log and "Epoch 0" in log

    again = run_cmd(command, env).stdout
    assert f"DSMMTeacherTrainer fold 0: done (job {ids['DSMMTeacherTrainer']} COMPLETED)" in again, again
    assert f"(was job {ids['DSMMTrainer']} CANCELLED)" in again and again.count("submitted as job") == 1
    new_id = json.loads((folder / "slurm_jobs.json").read_text())["jobs"]["DSMMTrainer_fold0"]["id"]
    assert new_id != ids["DSMMTrainer"] and "Dependency=(null)" in _scontrol(new_id, slurm_env)
    _wait_gone([new_id], slurm_env, daemons)
    assert (last / "checkpoint_final.pth").is_file(), _scontrol(new_id, slurm_env) + (last / "nnunet_dsmm_train.log"
                                                                                       ).read_text()[-3000:]
    assert "JobState=COMPLETED" in _scontrol(new_id, slurm_env)
    assert "0 job(s) submitted, 0 kept" in run_cmd(command, env).stdout
