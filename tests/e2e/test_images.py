"""The entourage image in the cluster says what the Dockerfile says: user, entrypoint, command, port, binary."""
import json
import os
import shlex
import subprocess

from conftest import ROOT

SOCK = "/run/entourage-cluster/containerd/containerd.sock"


def ctr(*args):
    return subprocess.run(["ctr", "--address", SOCK, "-n", "k8s.io", *args], capture_output=True, check=True).stdout


def image_config(name):
    for line in ctr("images", "ls").decode().splitlines()[1:]:
        fields = line.split()
        if fields[0] == name:
            manifest = json.loads(ctr("content", "get", fields[2]))
            return json.loads(ctr("content", "get", manifest["config"]["digest"]))
    raise AssertionError(f"{name} is not in the node's image store")


def dockerfile_runtime_stage():
    stage = {}
    for line in open(os.path.join(ROOT, "Dockerfile")):
        words = line.split(None, 1)
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "FROM":
            stage = {}
        if len(words) == 2:
            stage.setdefault(words[0], []).append(words[1].strip())
    return stage


def test_entourage_image_has_the_dockerfiles_user_entrypoint_cmd_port_and_binary_path():
    version = next(l.split('"')[1] for l in open(os.path.join(ROOT, "Cargo.toml")) if l.startswith("version"))
    config = image_config(f"ghcr.io/entourage-dev/entourage:{version}")["config"]
    stage = dockerfile_runtime_stage()
    assert config["User"] == stage["USER"][0]
    assert config["Entrypoint"] == json.loads(stage["ENTRYPOINT"][0])
    assert config["Cmd"] == json.loads(stage["CMD"][0])
    assert set(config["ExposedPorts"]) == {f"{p}/tcp" for p in stage["EXPOSE"][0].split()}
    copied = shlex.split(stage["COPY"][0])[-1]
    assert config["Entrypoint"][0] == copied
