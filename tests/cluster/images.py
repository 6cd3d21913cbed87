#!/usr/bin/env python3
"""Builds the test cluster's images as docker-archive tars, with no registry and no Docker engine.

Each image is one layer made from files of this machine (Debian's packages, the release binary, a pause binary built
from the Kubernetes release's own pause.c), plus an image config. `ctr images import` reads the result. The images:

- entourage: laid out as the Dockerfile's runtime stage lays it out. USER, EXPOSE, ENTRYPOINT, CMD and the binary's
  path are read from the Dockerfile itself, and the base image's files (distroless static: passwd with `nonroot`
  65532, CA certificates, a sticky /tmp) are recreated.
- nginx: Debian's nginx, configured like the official image (master as root, workers as `nginx`, logs to
  /var/log/nginx/{access,error}.log, which are links to stdout and stderr until a volume hides them).
- busybox: Debian's static busybox, as the seed's hand-written sidecars use it.
- tools: busybox with curl, for the test apps.
- grpc: busybox with grpc-peer (tests/cluster/grpcpeer, built by build.sh beside the pause binary), a gRPC server and
  client made of grpc-go's own packages.
- pause: the sandbox image.

Usage: images.py OUT_DIR ENTOURAGE_BINARY PAUSE_BINARY -> writes OUT_DIR/<name>.tar and prints each image's name;
       images.py floor OUT_DIR FLOOR_BINARY -> the bench's do-nothing webhook (make bench-e2e).
"""
import hashlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tarfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Layer:
    """Files of one image layer, keyed by their path in the image."""

    def __init__(self):
        self.entries = {}

    def dir(self, path, mode=0o755, uid=0, gid=0):
        parts = path.strip("/").split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            self.entries.setdefault(parent, ("dir", None, 0o755, 0, 0))
        self.entries[path.strip("/")] = ("dir", None, mode, uid, gid)

    def file(self, path, data, mode=0o644, uid=0, gid=0):
        self.dir(os.path.dirname(path.strip("/")) or ".")
        self.entries[path.strip("/")] = ("file", data, mode, uid, gid)

    def copy(self, src, dest=None, mode=None):
        dest = dest or src
        with open(src, "rb") as f:
            data = f.read()
        self.file(dest, data, mode if mode is not None else os.stat(src).st_mode & 0o7777)

    def link(self, path, target):
        self.dir(os.path.dirname(path.strip("/")) or ".")
        self.entries[path.strip("/")] = ("link", target, 0o777, 0, 0)

    def binary(self, path):
        """A dynamically linked program and every shared library it loads, at the paths the loader looks in."""
        self.copy(path)
        out = subprocess.run(["ldd", path], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            m = re.search(r"(/\S+) \(0x", line)
            if m:
                lib = m.group(1)
                self.copy(os.path.realpath(lib), lib, 0o755)

    def tar(self):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
            for path in sorted(self.entries):
                if path == ".":
                    continue
                kind, data, mode, uid, gid = self.entries[path]
                info = tarfile.TarInfo(path)
                info.mode, info.uid, info.gid, info.mtime = mode, uid, gid, 0
                if kind == "dir":
                    info.type = tarfile.DIRTYPE
                    t.addfile(info)
                elif kind == "link":
                    info.type, info.linkname = tarfile.SYMTYPE, data
                    t.addfile(info)
                else:
                    info.size = len(data)
                    t.addfile(info, io.BytesIO(data))
        return buf.getvalue()


def write_archive(out_dir, name, layer, config):
    """A docker-archive: the layer, the image config naming it by digest, and manifest.json with the tag."""
    layer_tar = layer.tar()
    diff_id = "sha256:" + hashlib.sha256(layer_tar).hexdigest()
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "tests/cluster/images.py"}],
    }
    config_bytes = json.dumps(image_config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    manifest = [{"Config": config_name, "RepoTags": [name], "Layers": ["layer.tar"]}]
    path = os.path.join(out_dir, re.sub(r"[^A-Za-z0-9.-]", "_", name) + ".tar")
    with tarfile.open(path, "w") as t:
        for member, data in (("layer.tar", layer_tar), (config_name, config_bytes),
                             ("manifest.json", json.dumps(manifest).encode())):
            info = tarfile.TarInfo(member)
            info.size, info.mtime = len(data), 0
            t.addfile(info, io.BytesIO(data))
    print(name)
    return path


def dockerfile_runtime_stage(path):
    """USER, EXPOSE, ENTRYPOINT, CMD and the binary's destination from the Dockerfile's last stage."""
    stage = {}
    for line in open(path):
        line = line.strip()
        if line.startswith("FROM "):
            stage = {"FROM": line.split()[1]}
        for key in ("USER", "EXPOSE", "ENTRYPOINT", "CMD"):
            if line.startswith(key + " "):
                stage[key] = line[len(key) + 1:].strip()
        if line.startswith("COPY --from="):
            stage["COPY"] = shlex.split(line)[-1]
    return stage


def entourage_image(binary, version):
    stage = dockerfile_runtime_stage(os.path.join(ROOT, "Dockerfile"))
    if not stage.get("FROM", "").startswith("gcr.io/distroless/static"):
        sys.exit(f"images.py recreates distroless static; the Dockerfile now builds FROM {stage.get('FROM')}")
    layer = Layer()
    # distroless static-debian12: these users and groups, CA certificates, a sticky /tmp and nonroot's home.
    layer.file("etc/passwd", b"root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:"
               b"/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")
    layer.file("etc/group", b"root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n")
    layer.copy("/etc/ssl/certs/ca-certificates.crt", "etc/ssl/certs/ca-certificates.crt", 0o644)
    layer.dir("tmp", 0o1777)
    layer.dir("home/nonroot", 0o700, 65532, 65532)
    layer.copy(binary, stage["COPY"], 0o755)
    config = {
        "User": stage["USER"],
        "Env": [PATH_ENV, "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"],
        "Entrypoint": json.loads(stage["ENTRYPOINT"]),
        "Cmd": json.loads(stage["CMD"]),
        "ExposedPorts": {f"{p}/tcp" if "/" not in p else p: {} for p in stage["EXPOSE"].split()},
        "WorkingDir": "/",
    }
    return f"ghcr.io/entourage-dev/entourage:{version}", layer, config


def busybox_layer():
    layer = Layer()
    layer.copy("/bin/busybox", "bin/busybox", 0o755)
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            layer.link(f"bin/{applet}", "busybox")
    layer.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n")
    layer.file("etc/group", b"root:x:0:\nnobody:x:65534:\n")
    layer.dir("tmp", 0o1777)
    layer.dir("root", 0o700)
    return layer


NGINX_CONF = b"""user nginx;
worker_processes 1;
error_log /var/log/nginx/error.log notice;
pid /run/nginx.pid;
events { worker_connections 1024; }
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    log_format main '$remote_addr - $remote_user [$time_local] "$request" '
                    '$status $body_bytes_sent "$http_referer" "$http_user_agent" "$http_x_forwarded_for"';
    access_log /var/log/nginx/access.log main;
    sendfile on;
    keepalive_timeout 65;
    include /etc/nginx/conf.d/*.conf;
}
"""

NGINX_DEFAULT = b"""server {
    listen 80;
    server_name localhost;
    location / {
        root /usr/share/nginx/html;
        index index.html;
    }
}
"""


def nginx_image():
    layer = Layer()
    layer.binary("/usr/sbin/nginx")
    layer.file("etc/nginx/nginx.conf", NGINX_CONF)
    layer.file("etc/nginx/conf.d/default.conf", NGINX_DEFAULT)
    layer.copy("/etc/nginx/mime.types", "etc/nginx/mime.types", 0o644)
    layer.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnginx:x:101:101:nginx:/nonexistent:/bin/false\n")
    layer.file("etc/group", b"root:x:0:\nnginx:x:101:\n")
    layer.file("usr/share/nginx/html/index.html", b"<!DOCTYPE html>\n<title>Welcome to nginx!</title>\n")
    # Debian's build keeps request bodies and proxy buffers under /var/lib/nginx.
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        layer.dir(f"var/lib/nginx/{d}", 0o700, 101, 101)
    layer.dir("run")
    layer.dir("tmp", 0o1777)
    # As in the official image: the log files are links to the container's output until a volume hides them.
    layer.link("var/log/nginx/access.log", "/dev/stdout")
    layer.link("var/log/nginx/error.log", "/dev/stderr")
    config = {"Env": [PATH_ENV], "Cmd": ["nginx", "-g", "daemon off;"], "ExposedPorts": {"80/tcp": {}},
              "StopSignal": "SIGQUIT", "WorkingDir": "/"}
    return "docker.io/library/nginx:1.22", layer, config


def tools_image():
    layer = busybox_layer()
    layer.binary("/usr/bin/curl")
    layer.copy("/etc/ssl/certs/ca-certificates.crt", "etc/ssl/certs/ca-certificates.crt", 0o644)
    return "docker.io/entourage/e2e-tools:1", layer, {"Env": [PATH_ENV], "Cmd": ["sh"], "WorkingDir": "/"}


def grpc_image(binary):
    layer = busybox_layer()
    layer.copy(binary, "usr/local/bin/grpc-peer", 0o755)
    return "docker.io/entourage/e2e-grpc:1", layer, {"Env": [PATH_ENV], "Entrypoint": ["grpc-peer"], "WorkingDir": "/"}


def floor_image(binary):
    """The bench's floor webhook (bench/tools/floor.rs), laid out like entourage's image."""
    _, layer, config = entourage_image(binary, "floor")
    config["Entrypoint"], config["Cmd"] = ["/entourage"], []
    return "docker.io/entourage/floor:1", layer, config


def main():
    if sys.argv[1] == "floor":
        out_dir, binary = sys.argv[2:4]
        os.makedirs(out_dir, exist_ok=True)
        return write_archive(out_dir, *floor_image(binary))
    out_dir, binary, pause = sys.argv[1:4]
    version = re.search(r'^version = "(.*)"', open(os.path.join(ROOT, "Cargo.toml")).read(), re.M).group(1)
    os.makedirs(out_dir, exist_ok=True)
    images = [entourage_image(binary, version), nginx_image(), tools_image(),
              grpc_image(os.path.join(os.path.dirname(pause), "grpc-peer")),
              ("docker.io/library/busybox:1.36", busybox_layer(), {"Env": [PATH_ENV], "Cmd": ["sh"]})]
    pause_layer = Layer()
    pause_layer.copy(pause, "pause", 0o755)
    images.append(("registry.k8s.io/pause:3.10", pause_layer, {"Entrypoint": ["/pause"], "User": "65535:65535"}))
    for name, layer, config in images:
        write_archive(out_dir, name, layer, config)


if __name__ == "__main__":
    main()
