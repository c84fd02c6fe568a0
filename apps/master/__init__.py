"""The master: accounts, WebSocket routing, fan-out storage to every standard node."""
