"""Who is calling: TLS and mTLS for both transports, and the peer identity authorization reads."""
