"""The streaming server behind Exec, Attach and PortForward: sans-IO
protocol cores (SPDY/3.1, WebSocket, HTTP upgrade, the Kubernetes
subprotocols), their asyncio connection shells (spdy_connection.py,
ws_connection.py) and server.py, which accepts, routes and upgrades."""
