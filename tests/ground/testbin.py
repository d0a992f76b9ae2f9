"""Build and locate the Go test binaries: kube-apiserver, etcd, helm and the LB IPAMs.

Nothing serves these binaries to this machine, so they are built from the
published Go modules through the wrapper modules in ``tests/testbin/`` (their
go.mod/go.sum are committed). Builds land in a cache outside the checkout,
keyed by version and by the wrapper's go.sum, so a clean clone reuses them.
``KUBEBUILDER_ASSETS`` (the envtest convention) wins when it holds the binary.
The load-balancer IPAMs (cilium-operator, MetalLB's controller) are built the
same way, and their modules' CRD manifests are read from the Go module cache.

Standard library only: ``scripts/test`` runs it before any test dependency is
installed (``python -m tests.ground.testbin build``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

TESTBIN = Path(__file__).resolve().parent.parent / "testbin"


def versions() -> dict[str, str]:
    """Read ``tests/testbin/versions.env`` (KEY=VALUE lines)."""
    out: dict[str, str] = {}
    for raw in (TESTBIN / "versions.env").read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


@dataclass(frozen=True)
class Tool:
    """One binary built from a wrapper module."""

    name: str
    module_dir: str
    package: str
    version_key: str
    tags: str = ""
    upstream: str = ""  # the published module the wrapper requires (its CRDs are read from it)

    @property
    def version(self) -> str:
        return versions()[self.version_key]

    def ldflags(self) -> str:
        v = self.version
        if self.name == "kube-apiserver":
            major, minor, _ = v.split(".")
            base = "-X k8s.io/component-base/version."
            return " ".join(
                [
                    f"{base}gitMajor={major}",
                    f"{base}gitMinor={minor}",
                    f"{base}gitVersion=v{v}",
                    f"{base}gitTreeState=clean",
                    f"{base}buildDate=1970-01-01T00:00:00Z",
                ]
            )
        if self.name == "etcd":
            return f"-X go.etcd.io/etcd/api/v3/version.GitSHA=v{v}"
        if self.name == "helm":
            return f"-X helm.sh/helm/v3/internal/version.version=v{v} {self.build_flags()}"
        if self.name == "cilium-operator-generic":
            return f"-X github.com/cilium/cilium/pkg/version.ciliumVersion={v}"
        if self.name == "metallb-controller":
            return ""  # MetalLB's version string is in its source
        raise ValueError(self.name)

    def build_flags(self) -> str:
        """Flags beyond the version (which the cache key names already); they are part of the key."""
        if self.name != "helm":
            return ""
        # Offline (helm template) helm assumes the Kubernetes version these set; without them it
        # assumes v1.20 and refuses charts that need newer. helm's Makefile sets them from client-go.
        major, minor = _client_go_kube_version(TESTBIN / self.module_dir / "go.mod")
        return " ".join(
            f"-X helm.sh/helm/v3/pkg/{pkg}.k8sVersion{part}={value}"
            for pkg in ("chartutil", "lint/rules")
            for part, value in (("Major", major), ("Minor", minor))
        )


def _client_go_kube_version(gomod: Path) -> tuple[str, str]:
    """(major, minor) of the Kubernetes release matching the module's k8s.io/client-go (v0.37.0 -> 1, 37)."""
    for line in gomod.read_text().splitlines():
        parts = line.split()
        if parts[:1] == ["k8s.io/client-go"]:
            major, minor = parts[1].removeprefix("v").split(".")[:2]
            return str(int(major) + 1), minor
    raise ValueError(f"{gomod} does not require k8s.io/client-go")


TOOLS = {
    t.name: t
    for t in (
        Tool(
            "kube-apiserver",
            "apiserver",
            "k8s.io/kubernetes/cmd/kube-apiserver",
            "KUBERNETES_VERSION",
        ),
        Tool("etcd", "etcd", "go.etcd.io/etcd/server/v3", "ETCD_VERSION"),
        Tool("helm", "helm", "helm.sh/helm/v3/cmd/helm", "HELM_VERSION"),
        # Cilium's Makefile builds cilium-operator-generic with this tag: the
        # operator without the cloud IPAM providers (it checks its own name).
        Tool(
            "cilium-operator-generic",
            "cilium-operator",
            "github.com/cilium/cilium/operator",
            "CILIUM_VERSION",
            tags="ipam_provider_operator",
            upstream="github.com/cilium/cilium",
        ),
        Tool(
            "metallb-controller",
            "metallb-controller",
            "go.universe.tf/metallb/controller",
            "METALLB_VERSION",
            upstream="go.universe.tf/metallb",
        ),
    )
    if (TESTBIN / t.module_dir / "go.mod").exists()
}


def cache_root() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dynamic-prefix"
    return Path(os.environ.get("DP_CACHE", default)) / "testbin"


def _key(tool: Tool) -> str:
    go_sum = (TESTBIN / tool.module_dir / "go.sum").read_bytes()
    digest = hashlib.sha256(go_sum + tool.build_flags().encode()).hexdigest()[:12]
    return f"{tool.name}-v{tool.version}-{digest}"


def cached_path(name: str) -> Path:
    """Where the binary is (or will be) cached."""
    tool = TOOLS[name]
    return cache_root() / _key(tool) / name


def find(name: str) -> Path | None:
    """Return an existing binary: ``KUBEBUILDER_ASSETS`` first, then the cache."""
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets and (Path(assets) / name).is_file():
        return Path(assets) / name
    path = cached_path(name)
    return path if path.is_file() else None


def go_binary() -> str | None:
    """The go command, if one new enough to build Kubernetes 1.36 is on PATH."""
    go = shutil.which("go")
    if go is None:
        return None
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=False)
    ver = out.stdout.strip().removeprefix("go").split(".")
    if len(ver) >= 2 and ver[0] == "1" and ver[1].isdigit() and int(ver[1]) >= 26:
        return go
    return None


def build(name: str) -> Path:
    """Build one tool into the cache unless it is there already; return its path."""
    found = find(name)
    if found:
        return found
    go = go_binary()
    if go is None:
        raise RuntimeError(f"cannot build {name}: Go >= 1.26 is not on PATH (scripts/test fetches it)")
    tool = TOOLS[name]
    dest = cached_path(name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another run that is building {name} v{tool.version}")
            fcntl.flock(lock, fcntl.LOCK_EX)  # a parallel run waits for the same build
        if dest.is_file():
            return dest
        tmp = dest.with_suffix(".tmp")
        say(f"building {name} v{tool.version} (once; cached in {dest.parent})")
        tags = [f"-tags={tool.tags}"] if tool.tags else []
        _progress(
            name,
            [
                go,
                "build",
                "-trimpath",
                *tags,
                "-ldflags",
                f"-s -w {tool.ldflags()}",
                "-o",
                str(tmp),
                tool.package,
            ],
            TESTBIN / tool.module_dir,
            {**os.environ, "CGO_ENABLED": "0"},
        )
        tmp.rename(dest)
    return dest


def say(text: str) -> None:
    print(f"==> {text}", file=sys.stderr, flush=True)


def _progress(name: str, argv: list[str], cwd: Path, env: dict[str, str], every: float = 30.0) -> None:
    """Run a build, saying every ``every`` seconds that it is still going, and how long it took."""
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, cwd=cwd, env=env)
    while True:
        try:
            code = proc.wait(timeout=every)
            break
        except subprocess.TimeoutExpired:
            say(f"still building {name} ({_elapsed(t0)})")
    if code != 0:
        raise subprocess.CalledProcessError(code, argv)
    say(f"built {name} in {_elapsed(t0)}")


def _elapsed(t0: float) -> str:
    m, s = divmod(int(time.monotonic() - t0), 60)
    return f"{m}m{s:02d}s"


def module_source(name: str) -> Path:
    """The directory of the upstream module a tool is built from (for its CRD manifests).

    ``go mod download`` in the wrapper module fetches it if the cache lacks it,
    checked against the committed go.sum; without Go the default module cache
    is looked up directly.
    """
    tool = TOOLS[name]
    go = go_binary()
    if go is not None:
        out = subprocess.run(
            [go, "mod", "download", "-json", f"{tool.upstream}@v{tool.version}"],
            cwd=TESTBIN / tool.module_dir,
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"go mod download {tool.upstream}: {out.stdout}{out.stderr}")
        return Path(json.loads(out.stdout)["Dir"])
    cache = os.environ.get("GOMODCACHE") or str(
        Path(os.environ.get("GOPATH", Path.home() / "go")) / "pkg" / "mod"
    )
    path = Path(cache) / f"{tool.upstream}@v{tool.version}"
    if not path.is_dir():
        raise RuntimeError(f"{path} is missing and Go >= 1.26 is not on PATH to download it")
    return path


def cilium_operator_version(binary: Path) -> str:
    """``cilium-operator --version`` (the version comes from the build's ldflags)."""
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).strip().splitlines()[0]


def metallb_version(binary: Path) -> str:
    """MetalLB's module version as recorded in the binary's Go build info (it has no --version)."""
    found = re.search(rb"(?:mod|dep)\tgo\.universe\.tf/metallb\t(v[^\t\n]+)", binary.read_bytes())
    return (
        f"MetalLB controller {found.group(1).decode()}" if found else "MetalLB controller (version unknown)"
    )


def main(argv: list[str]) -> int:
    if argv[:1] != ["build"]:
        print("usage: python -m tests.ground.testbin build [tool ...]", file=sys.stderr)
        return 2
    names = argv[1:] or list(TOOLS)
    if go_binary() is None and not all(find(n) for n in names):
        print(
            "Go >= 1.26 not found: not building the test binaries; the tests that need them say so",
            file=sys.stderr,
        )
        return 0
    missing = [n for n in names if find(n) is None]
    if missing:
        say(
            f"first run: building {', '.join(missing)} from Go modules (nothing publishes these "
            f"binaries for this machine). This takes several minutes, once; later runs reuse {cache_root()}."
        )
    for i, n in enumerate(names, 1):
        print(f"[{i}/{len(names)}] {n}: {build(n)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
