"""tbptt-service: the HTTP and WebSocket service around the learning core (``models``)."""
