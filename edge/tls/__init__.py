"""TLS termination: tenant certificates (checks and storage), and the
handshake side of HTTPS listeners."""
