"""The streaming server behind Exec, Attach and PortForward: sans-IO
protocol cores (SPDY/3.1, WebSocket, HTTP upgrade, the Kubernetes
subprotocols) and a thin asyncio shell in server.py."""
