"""The control plane: JSON-RPC 2.0 over newline-delimited JSON on the Unix socket.

``protocol`` (the codec) and ``peer`` (ids and pending replies) are pure; ``server`` and
``methods`` are the daemon's side; ``client`` (blocking, stdlib only, for the CLI) and
``aclient`` (trio, for gateways and tests) are the two ends a caller may use.
"""
