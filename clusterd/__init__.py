"""clusterd: turn prefix state into DynamicPrefix status, pools and Services.

``clusterd.core`` is pure (range arithmetic, planners); ``clusterd.adapters``
talk to Kubernetes, MQTT, HTTP and the raw socket.
"""

__version__ = "0.1.0"
