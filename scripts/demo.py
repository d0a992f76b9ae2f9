"""The lab demo (run it with scripts/demo): an ISP renumbers, the cluster follows.

Everything is real and local: radvd advertises the ISP's prefix in one network
namespace, routerd hears it in another and publishes to Mosquitto, clusterd
keeps a DynamicPrefix and a CiliumLoadBalancerIPPool in a real kube-apiserver
in step. ``--keep`` leaves it all running until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kubernetes import client as k8s  # noqa: E402

from tests.ground import crds  # noqa: E402
from tests.ground.apiserver import apply_crds, load_yaml_docs, start_session_apiserver  # noqa: E402
from tests.ground.clusterd_proc import Clusterd  # noqa: E402
from tests.ground.mosquitto import Mosquitto  # noqa: E402
from tests.ground.mqttclient import Subscriber  # noqa: E402
from tests.ground.netlab import AdvPrefix, Lab, sweep_stale  # noqa: E402
from tests.ground.routerd_proc import Routerd, routerd_toml  # noqa: E402
from tests.ground.waiting import wait_until  # noqa: E402

OLD, NEW = "2001:db8:1::/64", "2001:db8:2::/64"


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


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
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="keep everything running until Ctrl-C")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dp-demo-"))
    sweep_stale()
    procs: list[Any] = []
    lab = None
    kube = None
    broker = None
    try:
        say("a real kube-apiserver and etcd (built from their Go modules)")
        kube = start_session_apiserver(work / "kube")
        apply_crds(kube, [*load_yaml_docs([ROOT / "manifests/crds/dynamic-prefix.io_dynamicprefixes.yaml"]),
                          *crds.cilium_clusterd_kinds()])  # fmt: skip
        print(kube.version, "at", kube.url)
        core = k8s.CoreV1Api(kube.admin())
        core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name="dynamic-prefix")))
        broker = Mosquitto(work / "mqtt", shutil.which("mosquitto") or "/usr/sbin/mosquitto",
                           shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd")  # fmt: skip
        broker.start()
        say(f"the ISP router (radvd) advertises {OLD}")
        lab = Lab(work / "lab").create()
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
        procs.append(cd)
        cd.wait_ready()
        lab.forward(broker.plain_port)
        toml = routerd_toml(lab.host_if, hold_down=0.5, mqtt_port=broker.plain_port)
        procs.append(Routerd(lab, work / "routerd", toml))

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
        if args.keep:
            kubeconfig = kube.kubeconfig(work / "kubeconfig")
            say(f"running; KUBECONFIG={kubeconfig}; Ctrl-C to stop")
            while True:
                time.sleep(3600)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        for p in procs:
            p.stop()
        if lab is not None:
            lab.destroy()
        if broker is not None:
            broker.stop()
        if kube is not None:
            kube.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
