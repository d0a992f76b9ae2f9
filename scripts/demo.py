"""The lab demo (sudo scripts/demo): an ISP renumbers, the cluster follows.

Everything is real and local: radvd advertises the ISP's prefix in one network
namespace, routerd hears it in another and publishes to Mosquitto, clusterd
keeps a DynamicPrefix and a CiliumLoadBalancerIPPool in a real kube-apiserver
in step. It needs root (network namespaces). The first run installs what is
missing and builds kube-apiserver and etcd from their Go modules (several
minutes, once). Ctrl-C or SIGTERM stops it and removes everything it started.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kubernetes import client as k8s

ROOT = Path(__file__).resolve().parent.parent
BOLD = sys.stdout.isatty()

OLD, NEW = "2001:db8:1::/64", "2001:db8:2::/64"


def say(text: str) -> None:
    line = f"== {text}"
    print(f"\n\033[1m{line}\033[0m" if BOLD else f"\n{line}", flush=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM stops the demo as Ctrl-C does; a second signal cannot cut the clean-up short."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def show(api: k8s.CustomObjectsApi) -> None:
    pool = api.get_cluster_custom_object("cilium.io", "v2", "ciliumloadbalancerippools", "lb-pool")
    dp = api.get_cluster_custom_object("dynamic-prefix.io", "v1alpha1", "dynamicprefixes", "home")
    st = dp.get("status", {})
    print(f"DynamicPrefix home: currentPrefix={st.get('currentPrefix')} source={st.get('prefixSource')}")
    for h in st.get("history", []):
        print(
            f"  history: {h['prefix']:<20} {h['state']:<9} acquired {h['acquiredAt']}  validUntil {h.get('validUntil')}"
        )
    print("CiliumLoadBalancerIPPool lb-pool spec.blocks:")
    for b in pool["spec"]["blocks"]:
        print(f"  - {json.dumps(b)}")


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="leave it all running (with a KUBECONFIG to look around) until Ctrl-C",
    )
    args = parser.parse_args()  # before anything is imported or started: --help is instant
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    work = Path(tempfile.mkdtemp(prefix="dp-demo-"))
    try:
        with ExitStack() as stack:
            stack.callback(shutil.rmtree, work, ignore_errors=True)
            demo(stack, work, args.keep)
    except KeyboardInterrupt:
        say("stopped; everything the demo started is stopped and removed")
        return 0 if args.keep else 130
    say("done: the cluster followed the renumbering; everything the demo started is stopped and removed")
    print("Run it with --keep to leave it all running and get a KUBECONFIG to look around.")
    return 0


def demo(stack: ExitStack, work: Path, keep: bool) -> None:
    """Bring it all up (each part's clean-up registered before it starts), renumber, show."""
    from kubernetes import client as k8s

    from tests.ground import crds
    from tests.ground.apiserver import apply_crds, load_yaml_docs, start_session_apiserver
    from tests.ground.clusterd_proc import Clusterd
    from tests.ground.mosquitto import Mosquitto
    from tests.ground.mqttclient import Subscriber
    from tests.ground.netlab import AdvPrefix, Lab, sweep_stale
    from tests.ground.routerd_proc import Routerd, routerd_toml
    from tests.ground.waiting import wait_until

    sweep_stale()
    say("a real kube-apiserver and etcd (built from their Go modules)")
    kube = start_session_apiserver(work / "kube")  # stops what it started if it fails
    stack.callback(kube.stop)
    apply_crds(kube, [*load_yaml_docs([ROOT / "manifests/crds/dynamic-prefix.io_dynamicprefixes.yaml"]),
                      *crds.cilium_clusterd_kinds()])  # fmt: skip
    print(kube.version, "at", kube.url)
    core = k8s.CoreV1Api(kube.admin())
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name="dynamic-prefix")))
    broker = Mosquitto(work / "mqtt", shutil.which("mosquitto") or "/usr/sbin/mosquitto",
                       shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd")  # fmt: skip
    stack.callback(broker.stop)
    broker.start()
    say(f"the ISP router (radvd) advertises {OLD}")
    lab = Lab(work / "lab")
    stack.callback(lab.destroy)
    lab.create()
    lab.start_radvd([AdvPrefix(OLD, valid=3600, preferred=1800)])
    api = k8s.CustomObjectsApi(kube.admin())
    api.create_cluster_custom_object("dynamic-prefix.io", "v1alpha1", "dynamicprefixes", {
        "apiVersion": "dynamic-prefix.io/v1alpha1", "kind": "DynamicPrefix", "metadata": {"name": "home"},
        "spec": {"acquisition": {"routerd": {"router": "edge", "interface": lab.host_if}},
                 "addressRanges": [{"name": "lb", "start": "::f000:0:0:0", "end": "::ffff:ffff:ffff:ffff"}]},
    })  # fmt: skip
    api.create_cluster_custom_object("cilium.io", "v2", "ciliumloadbalancerippools", {
        "apiVersion": "cilium.io/v2", "kind": "CiliumLoadBalancerIPPool",
        "metadata": {"name": "lb-pool", "annotations": {"dynamic-prefix.io/name": "home",
                                                        "dynamic-prefix.io/address-range": "lb"}},
        "spec": {"blocks": [{"cidr": "192.0.2.0/24"}]},
    })  # fmt: skip
    say("clusterd (subscribed to Mosquitto) and routerd (in the host namespace)")
    cd = Clusterd(kube, work / "clusterd", mqtt_port=broker.plain_port, webhook=False)
    stack.callback(cd.stop)
    cd.wait_ready()
    lab.forward(broker.plain_port)
    toml = routerd_toml(lab.host_if, hold_down=0.5, mqtt_port=broker.plain_port)
    stack.callback(Routerd(lab, work / "routerd", toml).stop)

    def pool_has(p: str) -> bool:
        pool = api.get_cluster_custom_object("cilium.io", "v2", "ciliumloadbalancerippools", "lb-pool")
        return any(
            b.get("start", "").startswith(p.split("::/", maxsplit=1)[0]) for b in pool["spec"]["blocks"]
        )

    wait_until(lambda: pool_has(OLD), timeout=60, what="the pool to get the first prefix")
    with Subscriber(broker.plain_port, "dynamic-prefix/edge/+/state") as sub:
        msg = sub.wait_for()
        print("MQTT", msg.topic, msg.payload.decode()[:160], "...")
    show(api)
    say(f"the ISP renumbers: radvd advertises {OLD} with lifetimes 0 (RFC 9096) and {NEW}")
    t0 = time.monotonic()
    lab.advertise([AdvPrefix(OLD, valid=0, preferred=0), AdvPrefix(NEW, valid=3600, preferred=1800)])
    wait_until(lambda: pool_has(NEW), timeout=60, what="the pool to get the new prefix")
    print(f"(the pool followed in {time.monotonic() - t0:.2f} s)")
    show(api)
    if keep:
        kubeconfig = kube.kubeconfig(work / "kubeconfig")
        say(f"running; KUBECONFIG={kubeconfig}; Ctrl-C to stop")
        while True:
            time.sleep(3600)
    say("stopping everything the demo started")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
