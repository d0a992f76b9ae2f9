"""routerd: watch the edge's IPv6 prefixes and publish their full state.

``routerd.core`` is pure (bytes and ``now`` in, data out); ``routerd.adapters``
move bytes between the world (raw socket, netlink, MQTT, HTTP, stdout) and the
core. routerd imports nothing from clusterd, kubernetes or aiohttp: it runs on
OpenWrt with the feed's python3, pyroute2, paho-mqtt and pydantic.
"""

__version__ = "0.1.0"
